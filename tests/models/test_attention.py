"""Attention kernels: the reference against a plain formula, every implementation against the
reference (outputs and gradients), and the decode-step kernels against the general one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.models.config import ModelConfig, TextConfig
from r1jax.models.layers import dot_product_attention, padded_causal_attention
from r1jax.models.llm import attention_implementation, decode_attention, shared_prefix_decode_attention

# Rows as the learner builds them: left-padded prompts, completions, right padding; the last row
# has no real token at all.
LENGTH = 12
FIRST_AND_END = [(0, 12), (3, 12), (5, 9), (11, 12), (0, 0)]


def _rows():
  slots = np.arange(LENGTH)
  return np.stack([(slots >= first) & (slots < end) for first, end in FIRST_AND_END])


def _qkv(seed, batch, heads=6, kv_heads=2, dim=8):
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (batch, LENGTH, heads, dim))
  k, v = (jax.random.normal(key, (batch, LENGTH, kv_heads, dim)) for key in keys[1:])
  return q, k, v


def _causal_visibility(valid):
  return np.tril(np.ones((LENGTH, LENGTH), bool))[None] & valid[:, None, :]


def _plain_attention(q, k, v, mask):
  """softmax(q k^T / sqrt(d)) v per query head with its KV head repeated; zeros without a visible key."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  groups = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
  scores = np.where(mask[:, None], scores, -np.inf)
  top = np.max(scores, axis=-1, keepdims=True)
  weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
  total = weights.sum(-1, keepdims=True)
  return np.einsum("bhts,bshd->bthd", weights / np.where(total > 0, total, 1), v)


def test_reference_attention_equals_the_plain_formula():
  valid = _rows()
  q, k, v = _qkv(0, len(valid))
  mask = _causal_visibility(valid)
  np.testing.assert_allclose(dot_product_attention(q, k, v, mask), _plain_attention(q, k, v, mask),
                             rtol=1e-5, atol=1e-6)
  # A mask broadcast over the batch (as the vision tower gives it) and no mask at all.
  causal = np.tril(np.ones((1, LENGTH, LENGTH), bool))
  np.testing.assert_allclose(dot_product_attention(q, k, v, causal), _plain_attention(q, k, v, causal),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dot_product_attention(q, k, v, None),
                             _plain_attention(q, k, v, np.ones((1, LENGTH, LENGTH), bool)), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"attention mask of shape \(5, 3\)"):
    dot_product_attention(q, k, v, np.ones((5, 3), bool))


def test_padded_causal_attention_equals_the_reference_with_gradients():
  """jax.nn.dot_product_attention's XLA implementation over rotated rows, as cuDNN runs it."""
  valid = _rows()
  q, k, v = _qkv(1, len(valid))
  mask = _causal_visibility(valid)
  cotangent = jax.random.normal(jax.random.key(2), q.shape)
  reference = lambda q, k, v: dot_product_attention(q, k, v, mask)
  fused = lambda q, k, v: padded_causal_attention(q, k, v, valid, "xla")
  out_and_grads = jax.jit(lambda f, q, k, v: (lambda out, vjp: (out, vjp(cotangent)))(*jax.vjp(f, q, k, v)),
                          static_argnums=0)
  out, grads = out_and_grads(reference, q, k, v)
  fused_out, fused_grads = out_and_grads(fused, q, k, v)
  np.testing.assert_allclose(fused_out, out, rtol=1e-5, atol=1e-6)
  for got, expected in zip(fused_grads, grads):
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Queries before a row's first real token (and every query of an empty row) output zeros.
  no_key = ~mask.any(-1)
  assert no_key[1, :3].all() and no_key[4].all()
  np.testing.assert_array_equal(np.asarray(fused_out)[no_key], 0.0)


def _mrope_model(impl):
  text = TextConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_layers=2, num_heads=6, num_kv_heads=2,
                    mrope_section=(2, 1, 1))
  return models.build_model(ModelConfig(text, attention_impl=impl))


def test_decoder_logits_and_gradients_equal_for_every_cpu_implementation():
  """Scanned layers (the key mask goes through `nn.scan`); the prefill test below runs a loop of layers."""
  valid = _rows()
  rng = np.random.default_rng(3)
  ids = rng.integers(0, 64, valid.shape)
  positions = rng.integers(0, 20, (3,) + valid.shape)  # M-RoPE: attention must not depend on them
  results = {}
  for impl in ("xla", "jax_xla"):
    model = models.build_model(_mrope_model(impl).config.replace(scan_layers=True))
    params = model.init(jax.random.key(0), ids[:1, :4])

    def loss(params):
      logits, _ = model.apply(params, ids, positions=positions, attention_mask=valid)
      return jnp.sum(jnp.where(valid[..., None], logits, 0) ** 2), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    results[impl] = (logits, grads)
  (logits, grads), (fused_logits, fused_grads) = results["xla"], results["jax_xla"]
  np.testing.assert_allclose(fused_logits, logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda got, expected: np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5),
               fused_grads, grads)


def test_prefill_cache_is_the_same_with_a_fused_implementation():
  valid = _rows()
  ids = np.random.default_rng(4).integers(0, 64, valid.shape)
  caches = []
  for impl in ("xla", "jax_xla"):
    model = _mrope_model(impl)
    params = model.init(jax.random.key(0), ids[:1, :4])
    cache = models.init_cache(model.config, len(valid), LENGTH)
    logits, cache = jax.jit(lambda params, cache: model.apply(params, ids, attention_mask=valid, cache=cache))(
        params, cache)
    caches.append((logits, cache))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), *caches)


def test_attention_impl_is_validated_and_resolved():
  text = TextConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_layers=1, num_heads=6, num_kv_heads=2)
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    ModelConfig(text, attention_impl="flash")
  assert attention_implementation(ModelConfig(text)) == "xla"  # "auto" on CPU: the einsum reference
  assert attention_implementation(ModelConfig(text, dtype="bfloat16")) == "xla"
  assert attention_implementation(ModelConfig(text, attention_impl="jax_xla")) == "jax_xla"
  with pytest.raises(ValueError, match="attention_impl='cudnn' needs a GPU"):
    attention_implementation(ModelConfig(text, attention_impl="cudnn", dtype="bfloat16"))


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
