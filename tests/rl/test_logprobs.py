"""Token log-probs and entropy from logits against NumPy, and the fused pass against the plain formulas."""
import re

import jax
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


def _reference_scores(logits, targets, temperature):
  """The plain formulas (the previous implementation): autodiff scatters into [batch, length, vocab]."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature, axis=-1)
  logprobs = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
  return logprobs, -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
@pytest.mark.parametrize("entropy", ["none", "logged", "loss"])
def test_fused_values_and_gradients_equal_the_plain_formulas(dtype, temperature, entropy):
  rng = np.random.default_rng(7)
  logits = jnp.asarray(4 * rng.normal(size=(3, 5, 97)), dtype)
  targets = jnp.asarray(rng.integers(0, 97, size=(3, 5)))
  weights = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)  # random cotangents for both outputs

  def fused(x):
    logprobs, ent = rl.token_logprobs_and_entropy(x, targets, temperature, entropy=entropy)
    loss = jnp.sum(weights[0] * logprobs)
    return loss + (jnp.sum(weights[1] * ent) if ent is not None else 0.0), (logprobs, ent)

  def plain(x):
    logprobs, ent = _reference_scores(x, targets, temperature)
    if entropy == "logged":
      ent = _reference_scores(jax.lax.stop_gradient(x), targets, temperature)[1]
    loss = jnp.sum(weights[0] * logprobs)
    return loss + (jnp.sum(weights[1] * ent) if entropy != "none" else 0.0), (logprobs, ent)

  (_, (got_lp, got_ent)), got_grad = jax.jit(jax.value_and_grad(fused, has_aux=True))(logits)
  (_, (want_lp, want_ent)), want_grad = jax.jit(jax.value_and_grad(plain, has_aux=True))(logits)
  assert got_lp.dtype == jnp.float32 and got_grad.dtype == dtype
  np.testing.assert_allclose(got_lp, want_lp, rtol=1e-6, atol=1e-6)
  if entropy == "none":
    assert got_ent is None
  else:
    assert got_ent.dtype == jnp.float32
    np.testing.assert_allclose(got_ent, want_ent, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_grad, np.float32), np.asarray(want_grad, np.float32), rtol=1e-6,
                             atol=1e-6 if dtype == jnp.float32 else 1e-2)  # bf16 gradients: one bf16 ulp
  if dtype == jnp.float32:
    assert np.abs(np.asarray(got_grad)).max() > 1e-2  # not a degenerate example


def test_fused_gradient_holds_no_scatter_and_one_vocab_buffer():
  """The gradient of log-prob + entropy has no scatter and holds at most one [batch, length, vocab]
  fp32 temporary besides its output; the plain formulas' gradient holds more."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 16, 4096)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 4096, size=(4, 16)))

  def grad_of(scores):
    return jax.jit(jax.grad(lambda x: sum(jnp.sum(v) for v in scores(x))))

  fused = grad_of(lambda x: rl.token_logprobs_and_entropy(x, targets, 0.7, entropy="loss"))
  plain = grad_of(lambda x: _reference_scores(x, targets, 0.7))
  has_scatter = lambda f: re.search(r"= \S+ scatter\(", f.lower(logits).compile().as_text()) is not None
  assert not has_scatter(fused) and has_scatter(plain)
  temp = lambda f: f.lower(logits).compile().memory_analysis().temp_size_in_bytes
  assert temp(fused) < 1.1 * logits.nbytes, (temp(fused), logits.nbytes)
  assert temp(plain) > 1.9 * logits.nbytes, (temp(plain), logits.nbytes)


def test_entropy_mode_is_checked():
  with pytest.raises(ValueError, match=r"entropy='yes' must be one of \('none', 'logged', 'loss'\)"):
    rl.token_logprobs_and_entropy(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2), int), entropy="yes")
