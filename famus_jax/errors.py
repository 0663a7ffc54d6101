"""Exceptions raised by famus_jax."""


class ConfigError(ValueError):
  """A configuration field has an invalid value; the message names the field."""


class DataNotFoundError(FileNotFoundError):
  """A requested data set could not be found at the configured location."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss or gradient; the message names the step."""
