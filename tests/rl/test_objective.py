"""grpo_loss: NumPy reference per config, hand cases, finite-difference gradients, accumulation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl
from tests.rl.test_aggregation import reference_loss
from tests.rl.test_kl import reference_kl

BATCH, LENGTH = 6, 7


def reference_grpo_loss(config, logprobs, old, ref, advantages, mask, sampler=None, entropy=None):
  """verl's formulas written out in float64; returns (loss, per-token ratio)."""
  mask = mask.astype(bool)
  logprobs, old = (np.where(mask, x.astype(np.float64), 0.0) for x in (logprobs, old))
  a = advantages.astype(np.float64)[:, None]
  if config.policy_loss == "ppo_clip":
    ratio = np.exp(np.clip(logprobs - old, -20, 20))
  else:
    tokens = np.maximum(mask.sum(-1, keepdims=True), 1)
    seq_log_ratio = ((logprobs - old) * mask).sum(-1, keepdims=True) / tokens
    ratio = np.broadcast_to(np.exp(np.minimum(seq_log_ratio, 10.0)), logprobs.shape)
  pg = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - config.epsilon_low, 1 + config.epsilon_high))
  if config.policy_loss == "ppo_clip" and config.clip_ratio_c is not None:
    pg = np.where(a < 0, np.minimum(pg, -a * config.clip_ratio_c), pg)
  if config.tis_mode is not None:
    log_w = np.where(mask, old - sampler, 0.0)
    if config.tis_mode == "sequence":
      log_w = log_w.sum(-1, keepdims=True)
    pg = pg * np.minimum(np.exp(np.clip(log_w, -20, 20)), config.tis_cap)
  loss = pg
  if config.beta > 0:
    loss = loss + config.beta * reference_kl(config.kl_estimator, logprobs, np.where(mask, ref, 0.0))
  if config.entropy_coeff:
    loss = loss - config.entropy_coeff * entropy
  return reference_loss(config.loss_agg_mode, loss, mask, config.loss_scale_factor), ratio


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(3)
  logprobs = np.log(rng.uniform(0.05, 1.0, size=(BATCH, LENGTH))).astype(np.float32)
  old = (logprobs + rng.normal(scale=0.3, size=logprobs.shape)).astype(np.float32)
  ref = (logprobs + rng.normal(scale=0.3, size=logprobs.shape)).astype(np.float32)
  sampler = (old + rng.normal(scale=0.2, size=logprobs.shape)).astype(np.float32)
  entropy = rng.uniform(0.0, 3.0, size=logprobs.shape).astype(np.float32)
  advantages = rng.normal(size=BATCH).astype(np.float32)
  advantages[1] = 0.0
  lengths = np.array([7, 4, 1, 0, 5, 6])
  mask = np.arange(LENGTH)[None] < lengths[:, None]
  for x in (logprobs, old, ref, sampler):
    x[~mask] = -np.inf  # Padding may hold anything.
  return dict(logprobs=logprobs, old=old, ref=ref, sampler=sampler, entropy=entropy, advantages=advantages, mask=mask)


CONFIGS = [
    rl.PolicyLossConfig(epsilon_high=0.28, beta=0.04, kl_estimator="low_var_kl"),
    rl.PolicyLossConfig(clip_ratio_c=None, loss_agg_mode="seq-mean-token-mean", beta=0.1, kl_estimator="kl",
                        tis_mode="token", tis_cap=1.5),
    rl.PolicyLossConfig(loss_agg_mode="seq-mean-token-sum", beta=0.05, kl_estimator="mse_kl", tis_mode="sequence"),
    rl.PolicyLossConfig(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=16.0, entropy_coeff=0.01),
    rl.PolicyLossConfig(policy_loss="gspo", epsilon_low=0.1, epsilon_high=0.15, loss_agg_mode="seq-mean-token-mean",
                        beta=0.02),
    rl.PolicyLossConfig(policy_loss="gspo", tis_mode="token", tis_cap=1.2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.policy_loss}-{c.loss_agg_mode}-tis={c.tis_mode}")
def test_loss_and_metrics_match_numpy(batch, config):
  b = batch
  loss_sum, count, metrics = rl.grpo_loss(
      config, jnp.asarray(b["logprobs"]), jnp.asarray(b["old"]), jnp.asarray(b["ref"]),
      jnp.asarray(b["advantages"]), jnp.asarray(b["mask"]), jnp.asarray(b["sampler"]), jnp.asarray(b["entropy"]),
  )
  expected, ratio = reference_grpo_loss(config, b["logprobs"], b["old"], b["ref"], b["advantages"], b["mask"],
                                        b["sampler"], b["entropy"])
  np.testing.assert_allclose(loss_sum / count, expected, rtol=1e-6, atol=1e-6)

  mask = b["mask"]
  a = np.broadcast_to(b["advantages"][:, None], mask.shape)
  lp, old, ref, sampler = (np.where(mask, b[k].astype(np.float64), 0.0) for k in ("logprobs", "old", "ref", "sampler"))
  got = rl.finalize_metrics(metrics)
  expected_metrics = {
      "loss": expected,
      "ratio/mean": ratio[mask].mean(),
      "ratio/min": ratio[mask].min(),
      "ratio/max": ratio[mask].max(),
      "clip_frac/low": np.mean(((a < 0) & (ratio < 1 - config.epsilon_low))[mask]),
      "clip_frac/high": np.mean(((a > 0) & (ratio > 1 + config.epsilon_high))[mask]),
      "ppo_kl": np.clip(old - lp, -20, 20)[mask].mean(),
      "kl": reference_kl(config.kl_estimator, lp, ref)[mask].mean(),
      "entropy": b["entropy"][mask].mean(),
      "mismatch/kl": (sampler - old)[mask].mean(),
      "zero_advantage_frac": 1 / 5,  # Row 1 of the 5 rows with tokens.
  }
  if config.tis_mode == "token":
    raw = np.exp(old - sampler)[mask]
    expected_metrics["tis/weight"] = np.minimum(raw, config.tis_cap).mean()
    expected_metrics["tis/truncated_frac"] = np.mean(raw > config.tis_cap)
  for name, value in expected_metrics.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6, err_msg=name)
  assert ("tis/weight" in got) == (config.tis_mode is not None)


def test_hand_computed_ppo_clip():
  # One token per sequence, old log-prob 0: ratios 1.5 (A=1), 4 (A=-1), 0.5 (A=-1).
  config = rl.PolicyLossConfig(epsilon_low=0.2, epsilon_high=0.28, clip_ratio_c=3.0)
  logprobs = jnp.log(jnp.array([[1.5], [4.0], [0.5]]))
  loss_sum, count, metrics = rl.grpo_loss(config, logprobs, jnp.zeros((3, 1)), None, jnp.array([1.0, -1.0, -1.0]),
                                          jnp.ones((3, 1)))
  # Clip-higher caps the first at -1.28; dual-clip caps the second at 3; the third is clipped to 0.8.
  assert float(loss_sum / count) == pytest.approx((-1.28 + 3.0 + 0.8) / 3, abs=1e-6)
  got = rl.finalize_metrics(metrics)
  assert [float(got[f"clip_frac/{k}"]) * 3 for k in ("high", "dual", "low")] == pytest.approx([1, 1, 1])
  assert float(got["ratio/max"]) == pytest.approx(4.0) and float(got["ratio/min"]) == pytest.approx(0.5)


@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo"])
def test_ppo_kl_clamps_each_token_like_verl(policy_loss):
  # verl's vanilla loss clamps log(new / old) to [-20, 20] before its ppo_kl, so a runaway token
  # counts 20, not 50: old - new = 50, 0.5 and -30 give (20 + 0.5 - 20) / 3.
  config = rl.PolicyLossConfig(policy_loss=policy_loss)
  old = jnp.array([[0.0, 0.0, 0.0]])
  logprobs = jnp.array([[-50.0, -0.5, 30.0]])
  _, _, metrics = rl.grpo_loss(config, logprobs, old, None, jnp.array([1.0]), jnp.ones((1, 3)))
  assert float(rl.finalize_metrics(metrics)["ppo_kl"]) == pytest.approx((20 + 0.5 - 20) / 3)


def test_gspo_gradient_is_sequence_ratio_times_token_mean():
  # log-ratios [0.1, 0.3]: s = exp(0.2) for both tokens; d loss / d logprob_t = -A s / 2 for each token,
  # whereas token-level PPO would give -A r_t / 2 with r_t = exp(0.1), exp(0.3).
  # epsilon_high = 0.5 keeps every ratio inside the clip range.
  config = rl.PolicyLossConfig(policy_loss="gspo", epsilon_high=0.5, loss_agg_mode="seq-mean-token-mean")
  old = jnp.array([[-1.0, -2.0]])

  @functools.partial(jax.jit, static_argnums=1)
  def value_and_grad(logprobs, config):
    def loss(lp):
      loss_sum, count, _ = rl.grpo_loss(config, lp, old, None, jnp.array([1.0]), jnp.ones((1, 2)))
      return loss_sum / count

    return jax.value_and_grad(loss)(logprobs)

  logprobs = old + jnp.array([[0.1, 0.3]])
  value, grad = value_and_grad(logprobs, config)
  assert float(value) == pytest.approx(-np.exp(0.2), abs=1e-6)
  np.testing.assert_allclose(grad, [[-np.exp(0.2) / 2] * 2], atol=1e-6)
  ppo = rl.PolicyLossConfig(epsilon_high=0.5, loss_agg_mode="seq-mean-token-mean")
  np.testing.assert_allclose(value_and_grad(logprobs, ppo)[1], [[-np.exp(0.1) / 2, -np.exp(0.3) / 2]], atol=1e-6)


@pytest.mark.parametrize("config", [
    rl.PolicyLossConfig(epsilon_high=0.28, beta=0.1, tis_mode="token", tis_cap=1.3, entropy_coeff=0.05,
                        loss_agg_mode="seq-mean-token-mean"),
    rl.PolicyLossConfig(policy_loss="gspo", beta=0.2, kl_estimator="mse_kl", tis_mode="sequence"),
], ids=["ppo_clip", "gspo"])
def test_gradient_matches_finite_differences(config):
  """d loss / d logits through token_logprobs, token_entropy and grpo_loss, in float64."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(2, 3, 5)))
    targets = jnp.asarray(rng.integers(0, 5, size=(2, 3)))
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])
    base = rl.token_logprobs(logits, targets, 0.7)
    old, ref, sampler = (base + jnp.asarray(rng.normal(scale=0.3, size=base.shape)) for _ in range(3))
    advantages = jnp.array([1.3, -0.8])

    def loss(logits):
      logprobs = rl.token_logprobs(logits, targets, 0.7)
      entropy = rl.token_entropy(logits, 0.7)
      loss_sum, count, _ = rl.grpo_loss(config, logprobs, old, ref, advantages, mask, sampler, entropy)
      return loss_sum / count

    grad = jax.jit(jax.grad(loss))(logits)
    assert grad.dtype == jnp.float64
    # Central differences, every logit at once: one vmapped call over 2 * 30 perturbed copies.
    step = 1e-6
    shifts = step * np.eye(logits.size).reshape(-1, *logits.shape)
    values = jax.jit(jax.vmap(loss))(jnp.concatenate([logits + shifts, logits - shifts]))
    numeric = (values[: logits.size] - values[logits.size :]) / (2 * step)
    assert np.abs(numeric).max() > 1e-2  # The example is not degenerate.
    np.testing.assert_allclose(np.asarray(grad).ravel(), numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(grad[1, 2], 0.0)  # The padded position gets no gradient.


def test_zero_advantages_and_beta_zero_give_zero_gradient(batch):
  b = {k: jnp.asarray(v) for k, v in batch.items()}
  config = rl.PolicyLossConfig(policy_loss="ppo_clip", tis_mode="token", beta=0.0)
  assert not config.needs_reference

  @jax.jit
  def grad(advantages, ref):
    return jax.grad(
        lambda lp: rl.grpo_loss(config, lp, b["old"], ref, advantages, b["mask"], b["sampler"])[0]
    )(b["logprobs"])

  zero = jnp.zeros(BATCH)
  np.testing.assert_array_equal(grad(zero, None), 0.0)
  np.testing.assert_array_equal(grad(zero, b["ref"]), 0.0)  # The KL is logged, not in the loss.
  with_ref = grad(b["advantages"], b["ref"])
  assert np.all(np.isfinite(with_ref)) and np.abs(with_ref).max() > 0  # -inf padding gives no NaN.
  np.testing.assert_array_equal(with_ref, grad(b["advantages"], None))


def test_micro_batches_accumulate_to_the_full_batch(batch):
  config = rl.PolicyLossConfig(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=7.0, beta=0.05,
                               tis_mode="sequence")
  names = ("logprobs", "old", "ref", "advantages", "mask", "sampler")

  @jax.jit
  def loss_and_grad(logprobs, *rest):
    def loss_sum(lp):
      total, count, metrics = rl.grpo_loss(config, lp, *rest)
      return total, (count, metrics)

    (total, (count, metrics)), grad = jax.value_and_grad(loss_sum, has_aux=True)(logprobs)
    return total, count, metrics, grad

  def run(rows):
    return loss_and_grad(*(jnp.asarray(batch[k][rows]) for k in names))

  full_sum, full_count, full_metrics, full_grad = run(slice(None))
  halves = [run(slice(0, 3)), run(slice(3, 6))]
  total_count = halves[0][1] + halves[1][1]
  np.testing.assert_allclose((halves[0][0] + halves[1][0]) / total_count, full_sum / full_count, rtol=1e-6)
  merged = rl.finalize_metrics(rl.accumulate_metrics(halves[0][2], halves[1][2]))
  for name, value in rl.finalize_metrics(full_metrics).items():
    np.testing.assert_allclose(merged[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  # Gradients: the summed grad(loss_sum) over micro-batches / total count == grad of the full-batch loss.
  accumulated = np.concatenate([halves[0][3], halves[1][3]]) / total_count
  np.testing.assert_allclose(accumulated, full_grad / full_count, rtol=1e-6, atol=1e-7)


def test_config_and_input_errors_name_the_field():
  with pytest.raises(ValueError, match="PolicyLossConfig.loss_agg_mode='seq-sum'"):
    rl.PolicyLossConfig(loss_agg_mode="seq-sum")
  with pytest.raises(ValueError, match="PolicyLossConfig.policy_loss='ppo'"):
    rl.PolicyLossConfig(policy_loss="ppo")
  with pytest.raises(ValueError, match="PolicyLossConfig.clip_ratio_c=0.5"):
    rl.PolicyLossConfig(clip_ratio_c=0.5)
  with pytest.raises(ValueError, match="PolicyLossConfig.tis_mode='batch'"):
    rl.PolicyLossConfig(tis_mode="batch")
  x, mask, adv = jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.zeros(2)
  call = functools.partial(rl.grpo_loss, logprobs=x, old_logprobs=x, advantages=adv, completion_mask=mask)
  with pytest.raises(ValueError, match="ref_logprobs is required when PolicyLossConfig.beta=0.1"):
    call(rl.PolicyLossConfig(beta=0.1), ref_logprobs=None)
  with pytest.raises(ValueError, match="sampler_logprobs is required when PolicyLossConfig.tis_mode='token'"):
    call(rl.PolicyLossConfig(tis_mode="token"), ref_logprobs=None)
  with pytest.raises(ValueError, match="entropy is required"):
    call(rl.PolicyLossConfig(entropy_coeff=0.01), ref_logprobs=None)
  with pytest.raises(ValueError, match=r"advantages \(3,\) must be \[batch\]"):
    rl.grpo_loss(rl.PolicyLossConfig(), x, x, None, jnp.zeros(3), mask)
