"""Loss aggregation modes: NumPy reference, hand values and exact micro-batch accumulation."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl

MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def reference_loss(mode, loss, mask, loss_scale_factor=None):
  """The scalar loss as verl's agg_loss defines it (fully masked rows excluded from seq-means)."""
  loss = np.where(mask, loss.astype(np.float64), 0.0)
  valid = mask.sum(-1) > 0
  seq_sums = loss.sum(-1)[valid]
  if mode == "token-mean":
    return loss.sum() / mask.sum()
  if mode == "seq-mean-token-mean":
    return np.mean(seq_sums / mask.sum(-1)[valid])
  if mode == "seq-mean-token-sum":
    return np.mean(seq_sums)
  return np.mean(seq_sums) / (loss.shape[-1] if loss_scale_factor is None else loss_scale_factor)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(2)
  loss = rng.normal(size=(6, 8)).astype(np.float32)
  lengths = np.array([8, 3, 0, 5, 1, 6])
  mask = np.arange(8)[None] < lengths[:, None]
  loss[~mask] = np.nan  # Padding never reaches the result.
  return loss, mask


@pytest.mark.parametrize("mode", MODES)
def test_matches_numpy_and_accumulates_exactly(batch, mode):
  loss, mask = batch
  total, count = rl.agg_loss(jnp.asarray(loss), jnp.asarray(mask), mode)
  np.testing.assert_allclose(total / count, reference_loss(mode, loss, mask), rtol=1e-6, atol=1e-6)
  # Micro-batches of 2 sequences, one of them holding the fully masked row.
  parts = [rl.agg_loss(jnp.asarray(loss[i : i + 2]), jnp.asarray(mask[i : i + 2]), mode) for i in range(0, 6, 2)]
  np.testing.assert_allclose(sum(p[0] for p in parts) / sum(p[1] for p in parts), total / count, rtol=1e-6, atol=1e-6)


def test_counts_are_tokens_or_sequences(batch):
  loss, mask = batch
  assert rl.agg_loss(jnp.asarray(loss), jnp.asarray(mask), "token-mean")[1] == 23
  for mode in MODES[1:]:
    assert rl.agg_loss(jnp.asarray(loss), jnp.asarray(mask), mode)[1] == 5  # Row 2 has no tokens.


def test_hand_values():
  loss = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 0.0, 0.0, 0.0]])
  mask = jnp.array([[1, 1, 1, 1], [1, 0, 0, 0]])
  results = {mode: float(np.divide(*rl.agg_loss(loss, mask, mode))) for mode in MODES}
  assert results["token-mean"] == pytest.approx(20 / 5)
  assert results["seq-mean-token-mean"] == pytest.approx((2.5 + 10) / 2)
  assert results["seq-mean-token-sum"] == pytest.approx((10 + 10) / 2)
  assert results["seq-mean-token-sum-norm"] == pytest.approx((10 + 10) / 2 / 4)  # C = padded length 4.
  total, count = rl.agg_loss(loss, mask, "seq-mean-token-sum-norm", loss_scale_factor=100.0)
  assert float(total / count) == pytest.approx(10 / 100)


def test_bad_mode_and_shapes_are_named():
  with pytest.raises(KeyError, match="unknown loss aggregation mode 'seq-sum'"):
    rl.agg_loss(jnp.zeros((2, 3)), jnp.ones((2, 3)), "seq-sum")
  with pytest.raises(ValueError, match=r"must both be \[batch, length\]"):
    rl.agg_loss(jnp.zeros((2, 3)), jnp.ones((2, 4)), "token-mean")
