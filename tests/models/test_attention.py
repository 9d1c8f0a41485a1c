"""The decode-step attention kernels equal the general one."""
import jax
import numpy as np

from r1jax.models.layers import dot_product_attention
from r1jax.models.llm import decode_attention, shared_prefix_decode_attention


def test_decode_attention_equals_dot_product_attention():
  keys = iter(jax.random.split(jax.random.key(0), 3))
  q = jax.random.normal(next(keys), (3, 1, 4, 8))
  k, v = (jax.random.normal(next(keys), (3, 6, 2, 8)) for _ in range(2))
  mask = np.arange(6)[None, None] <= np.array([-1, 2, 5])[:, None, None]
  np.testing.assert_allclose(decode_attention(q, k, v, mask), dot_product_attention(q, k, v, mask), atol=1e-6)


def test_shared_prefix_attention_equals_attention_over_the_repeated_prompt():
  """Rows 0-2 share prompt 0 and rows 3-5 prompt 1 (left-padded by 2); each row has 4 own slots."""
  prompts, group, prefix_len, own_len, kv_heads, heads, dim = 2, 3, 5, 4, 2, 4, 8
  rows = prompts * group
  keys = iter(jax.random.split(jax.random.key(1), 5))
  q = jax.random.normal(next(keys), (rows, 1, heads, dim))
  prefix_k, prefix_v = (jax.random.normal(next(keys), (prompts, prefix_len, kv_heads, dim)) for _ in range(2))
  own_k, own_v = (jax.random.normal(next(keys), (rows, own_len, kv_heads, dim)) for _ in range(2))
  prefix_mask = np.array([[True] * 5, [False, False, True, True, True]])
  own_mask = np.arange(own_len)[None, None] <= np.array([0, 1, 3, 2, 0, 3])[:, None, None]

  full_k = np.concatenate([np.repeat(prefix_k, group, axis=0), own_k], axis=1)
  full_v = np.concatenate([np.repeat(prefix_v, group, axis=0), own_v], axis=1)
  full_mask = np.concatenate([np.repeat(prefix_mask, group, axis=0)[:, None], own_mask], axis=-1)
  expected = decode_attention(q, full_k, full_v, full_mask)

  transposed = lambda x: np.swapaxes(x, 1, 2)  # [prompts, kv_heads, prefix_len, dim]
  got = shared_prefix_decode_attention(q, own_k, own_v, own_mask,
                                       (transposed(prefix_k), transposed(prefix_v), prefix_mask))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  # Nothing visible at all gives zeros, as `decode_attention`.
  nothing = shared_prefix_decode_attention(q, own_k, own_v, np.zeros_like(own_mask),
                                           (transposed(prefix_k), transposed(prefix_v), np.zeros_like(prefix_mask)))
  np.testing.assert_array_equal(nothing, 0.0)
