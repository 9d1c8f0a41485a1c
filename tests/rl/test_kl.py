"""KL estimators against NumPy, hand values and their clamps."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl


def reference_kl(name, logprobs, ref_logprobs):
  logprobs, ref_logprobs = logprobs.astype(np.float64), ref_logprobs.astype(np.float64)
  if name == "kl":
    return logprobs - ref_logprobs
  if name == "mse_kl":
    return 0.5 * (logprobs - ref_logprobs) ** 2
  log_ratio = np.clip(ref_logprobs - logprobs, -20, 20)
  return np.clip(np.exp(log_ratio) - log_ratio - 1, -10, 10)


@pytest.mark.parametrize("name,alias", [("kl", "k1"), ("mse_kl", "k2"), ("low_var_kl", "k3")])
def test_matches_numpy_and_alias(name, alias):
  rng = np.random.default_rng(1)
  logprobs = np.log(rng.uniform(0.05, 1.0, size=(4, 6))).astype(np.float32)
  ref_logprobs = (logprobs + rng.normal(scale=0.5, size=(4, 6))).astype(np.float32)
  got = rl.kl_penalty(jnp.asarray(logprobs), jnp.asarray(ref_logprobs), name)
  np.testing.assert_allclose(got, reference_kl(name, logprobs, ref_logprobs), rtol=1e-6, atol=1e-6)
  assert rl.get_kl_estimator(alias) is rl.get_kl_estimator(name)


def test_hand_values_and_clamp():
  logprobs, ref_logprobs = jnp.array([0.0, -1.0, 0.0]), jnp.array([-1.0, 0.0, -30.0])
  np.testing.assert_allclose(rl.kl_penalty(logprobs, ref_logprobs, "kl"), [1.0, -1.0, 30.0])
  np.testing.assert_allclose(rl.kl_penalty(logprobs, ref_logprobs, "mse_kl"), [0.5, 0.5, 450.0])
  # k3 at log r = -1: e^-1 + 1 - 1 = 0.367879; at log r = 1: e - 2 = 0.718282; log r = -30 clamps
  # to -20 (e^-20 + 19 = 19.000000002) and then to the ceiling 10.
  np.testing.assert_allclose(rl.kl_penalty(logprobs, ref_logprobs, "low_var_kl"), [0.367879, 0.718282, 10.0], atol=1e-6)


def test_unknown_estimator_is_named():
  with pytest.raises(KeyError, match="unknown KL estimator 'full'"):
    rl.kl_penalty(jnp.zeros(2), jnp.zeros(2), "full")


def test_verl_mse_name_is_k2():
  # verl's kl_loss_type=mse (its name for k2) must carry over, not raise.
  assert rl.get_kl_estimator("mse") is rl.get_kl_estimator("k2") is rl.get_kl_estimator("mse_kl")
  np.testing.assert_allclose(rl.kl_penalty(jnp.array([0.0, -1.0]), jnp.array([-1.0, 1.0]), "mse"), [0.5, 2.0])
  assert rl.PolicyLossConfig(beta=0.01, kl_estimator="mse").kl_estimator == "mse"
