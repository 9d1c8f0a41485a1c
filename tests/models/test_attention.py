"""The decode-step attention kernel equals the general one."""
import jax
import numpy as np

from r1jax.models.layers import dot_product_attention
from r1jax.models.llm import decode_attention


def test_decode_attention_equals_dot_product_attention():
  keys = iter(jax.random.split(jax.random.key(0), 3))
  q = jax.random.normal(next(keys), (3, 1, 4, 8))
  k, v = (jax.random.normal(next(keys), (3, 6, 2, 8)) for _ in range(2))
  mask = np.arange(6)[None, None] <= np.array([-1, 2, 5])[:, None, None]
  np.testing.assert_allclose(decode_attention(q, k, v, mask), dot_product_attention(q, k, v, mask), atol=1e-6)
