"""Qwen2.5 port vs transformers' Qwen2ForCausalLM (PyTorch CPU): fp32 logits within 1e-4."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from tests.models.hf_fixtures import tiny_qwen2, torch_logits

CONFIGS = {
    "tied_gqa2": dict(heads=4, kv_heads=2, tied=True),
    "untied_mha": dict(heads=4, kv_heads=4, tied=False),
    "gqa4": dict(hidden=64, heads=8, kv_heads=2, layers=3),
    "odd_heads": dict(hidden=24, heads=3, kv_heads=1, inter=40, rope_theta=1e6),
}


def _left_padded_batch(vocab, rng):
  lengths = [7, 4, 1]
  ids = np.zeros((3, 7), np.int64)
  mask = np.zeros((3, 7), np.int64)
  for row, n in enumerate(lengths):
    ids[row, 7 - n:] = rng.integers(1, vocab, n)
    mask[row, 7 - n:] = 1
  return ids, mask


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(tmp_path, name):
  ref = tiny_qwen2(tmp_path, **CONFIGS[name])
  model, params = models.load_pretrained(str(tmp_path))
  rng = np.random.default_rng(0)
  ids = rng.integers(0, ref.config.vocab_size, (2, 9))
  ours = np.asarray(models.forward_logits(model, params, ids))
  np.testing.assert_allclose(ours, torch_logits(ref, ids), atol=1e-4, rtol=0)

  ids, mask = _left_padded_batch(ref.config.vocab_size, rng)
  ours = np.asarray(models.forward_logits(model, params, ids, attention_mask=mask))
  np.testing.assert_allclose(ours, torch_logits(ref, ids, mask), atol=1e-4, rtol=0)


@pytest.mark.parametrize("runtime", [dict(scan_layers=True), dict(remat="full"),
                                     dict(scan_layers=True, remat="dots_saveable")])
def test_scan_and_remat_keep_parity(tmp_path, runtime):
  ref = tiny_qwen2(tmp_path, layers=3)
  model, params = models.load_pretrained(str(tmp_path), **runtime)
  ids, mask = _left_padded_batch(ref.config.vocab_size, np.random.default_rng(1))
  ours = np.asarray(models.forward_logits(model, params, ids, attention_mask=mask))
  np.testing.assert_allclose(ours, torch_logits(ref, ids, mask), atol=1e-4, rtol=0)


def test_bf16_compute_stays_close_to_fp32(tmp_path):
  ref = tiny_qwen2(tmp_path)
  ids = np.random.default_rng(2).integers(0, ref.config.vocab_size, (2, 8))
  model32, params32 = models.load_pretrained(str(tmp_path))
  model16, params16 = models.load_pretrained(str(tmp_path), dtype=jnp.float32, compute_dtype=jnp.bfloat16)
  full = np.asarray(models.forward_logits(model32, params32, ids))
  half = np.asarray(models.forward_logits(model16, params16, ids))
  assert half.dtype == np.float32 and np.isfinite(half).all()
  # bf16 has ~3 significant digits; logits here are O(0.1-1).
  assert np.abs(half - full).max() < 5e-2 * max(1.0, np.abs(full).max())
  assert not np.array_equal(half, full)  # it really computed in bf16
