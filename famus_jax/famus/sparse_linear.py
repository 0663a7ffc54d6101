"""Evaluate a linear function with symbolic zero inputs, skipping the work they cause.

The step linearises the training forward pass once (`jax.linearize`), and the
meta gradient needs its JVP for a tangent that is non-zero only on the layers
>= the floor. Calling the linear function with materialised zeros makes XLA
propagate them through every layer (zeros are not skipped), and a fresh
`jax.jvp` restricted to the top layers recomputes the forward pass. Here the
linear function is traced to a jaxpr (its residuals from the training forward
pass become constants) and evaluated equation by equation, with the inputs
marked zero kept symbolic:

  * an equation whose tangent-derived inputs are all symbolic zeros is
    skipped, its outputs are symbolic zeros (a linear function maps 0 to 0;
    every equation of a linear jaxpr is linear in its tangent-derived inputs);
  * `add` with one symbolic-zero operand of the output's shape forwards the
    other operand;
  * any other equation gets its symbolic zeros materialised and is bound as is.

The result is the same numbers as calling the function with zeros (the tests
check equality), at the cost of the tangent's own layers: the lower layers'
tangent propagation is never emitted, and the residuals are reused, so no
forward pass is recomputed. Measured on XLA:CPU, ResNet-32, batch 100, tangent
on the last block: +0.0 s CPU over forward + VJP, against +0.27 s for a fresh
restricted JVP and +0.53 s for the linearised JVP with zeros.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore


class _SymbolicZero:
  __slots__ = ()

  def __repr__(self):
    return 'SymbolicZero'


ZERO = _SymbolicZero()
_ADD = ('add', 'add_any')


def _materialise(value, var):
  return jnp.zeros(var.aval.shape, var.aval.dtype) if value is ZERO else value


def apply_with_zeros(linear_fn: Callable, example, tangent):
  """linear_fn(tangent) where leaves of `tangent` that are None are zeros.

  example: a pytree with the structure and shapes of linear_fn's argument
  (e.g. the params); tangent: the same structure with arrays or None leaves.
  """
  closed = jax.make_jaxpr(linear_fn)(example)
  jaxpr = closed.jaxpr
  env, tangent_vars = {}, set()

  def read(var):
    if isinstance(var, jcore.Literal):
      return var.val
    return env.get(var, ZERO)

  for var, const in zip(jaxpr.constvars, closed.consts):
    env[var] = const
  leaves = jax.tree.leaves(tangent, is_leaf=lambda x: x is None)
  if len(leaves) != len(jaxpr.invars):
    raise ValueError(f'tangent has {len(leaves)} leaves, the function takes '
                     f'{len(jaxpr.invars)}')
  for var, leaf in zip(jaxpr.invars, leaves):
    tangent_vars.add(var)
    if leaf is not None:
      env[var] = leaf

  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    derived = [not isinstance(v, jcore.Literal) and v in tangent_vars for v in eqn.invars]
    if any(derived):
      tangent_vars.update(eqn.outvars)
      if all(x is ZERO for x, d in zip(values, derived) if d):
        continue  # outputs stay symbolic zeros
      if eqn.primitive.name in _ADD and any(x is ZERO for x in values):
        other = next(x for x in values if x is not ZERO)
        if tuple(jnp.shape(other)) == tuple(eqn.outvars[0].aval.shape):
          env[eqn.outvars[0]] = other
          continue
      values = [_materialise(x, v) for x, v in zip(values, eqn.invars)]
    outs = eqn.primitive.bind(*values, **eqn.params)
    if not eqn.primitive.multiple_results:
      outs = [outs]
    for var, out in zip(eqn.outvars, outs):
      env[var] = out

  results = [_materialise(read(v), v) for v in jaxpr.outvars]
  out_tree = jax.tree.structure(jax.eval_shape(linear_fn, example))
  return jax.tree.unflatten(out_tree, results)
