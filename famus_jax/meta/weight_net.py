"""MW-Net's meta model: a loss-to-weight MLP (Shu et al. 2019, Sec. 3).

V_i = Psi(L_i; theta) = sigmoid(W2 relu(W1 L_i + b1) + b2), input the detached
per-example loss, shape (n, 1) -> (n,).
"""

import flax.linen as nn
import jax.numpy as jnp


class WeightNet(nn.Module):
  """Linear(1, hidden) - ReLU - Linear(hidden, 1) - sigmoid."""
  hidden: int

  @nn.compact
  def __call__(self, losses: jnp.ndarray) -> jnp.ndarray:
    """losses (n,) -> weights (n,) in (0, 1)."""
    h = nn.relu(nn.Dense(self.hidden, name='fc1')(losses[:, None]))
    return nn.sigmoid(nn.Dense(1, name='fc2')(h))[:, 0]
