"""Token log-probs and entropy from logits against NumPy."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl


def reference_log_softmax(logits, temperature):
  z = logits.astype(np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def logits_and_targets():
  rng = np.random.default_rng(5)
  logits = (3 * rng.normal(size=(3, 4, 11))).astype(np.float32)
  return logits, rng.integers(0, 11, size=(3, 4))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprobs_and_entropy_match_numpy(logits_and_targets, temperature):
  logits, targets = logits_and_targets
  log_p = reference_log_softmax(logits, temperature)
  got = rl.token_logprobs(jnp.asarray(logits), jnp.asarray(targets), temperature)
  assert got.shape == targets.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np.take_along_axis(log_p, targets[..., None], -1)[..., 0], rtol=1e-6, atol=1e-6)
  entropy = rl.token_entropy(jnp.asarray(logits), temperature)
  np.testing.assert_allclose(entropy, -(np.exp(log_p) * log_p).sum(-1), rtol=1e-6, atol=1e-6)


def test_bfloat16_logits_are_scored_in_float32(logits_and_targets):
  logits, targets = logits_and_targets
  low = jnp.asarray(logits, jnp.bfloat16)
  got = rl.token_logprobs(low, jnp.asarray(targets))
  assert got.dtype == jnp.float32
  # Same answer as float32 on the bf16-rounded logits: nothing else is done in bf16.
  rounded = np.asarray(low.astype(jnp.float32))
  expected = np.take_along_axis(reference_log_softmax(rounded, 1.0), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_hand_values_and_errors():
  # Uniform over 4 tokens: log p = -log 4 and entropy log 4, at any temperature.
  logits = jnp.zeros((1, 2, 4))
  np.testing.assert_allclose(rl.token_logprobs(logits, jnp.array([[0, 3]]), 0.5), [[-np.log(4)] * 2], atol=1e-6)
  np.testing.assert_allclose(rl.token_entropy(logits), [[np.log(4)] * 2], atol=1e-6)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    rl.token_logprobs(logits, jnp.array([[0, 3]]), 0.0)
  with pytest.raises(ValueError, match=r"must be targets \(1, 3\) \+ \[vocab\]"):
    rl.token_logprobs(logits, jnp.zeros((1, 3), int))
