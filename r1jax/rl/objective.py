"""The GRPO-family objective: policy loss x TIS weight + beta * KL - entropy bonus, aggregated.

Per completion token t of sequence i (advantages are per sequence):

    l[i, t] = w[i, t] * pg[i, t] + beta * kl[i, t] - entropy_coeff * H[i, t]

with pg the registered policy loss (`ppo_clip` / `gspo`), w the truncated importance weight
against the sampler (1 when `tis_mode` is None), kl the configured estimator against the
reference policy, and H the token entropy. As in verl the TIS weight multiplies the policy
term only. l is aggregated by `loss_agg_mode` into a deferred (sum, count) pair; since the
aggregations are linear in l, this equals verl's agg(pg) + beta * agg(kl).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from r1jax.rl.aggregation import agg_loss
from r1jax.rl.kl import kl_penalty
from r1jax.rl.metrics import Metrics, max_metric, mean_metric, min_metric
from r1jax.rl.policy_losses import LOG_RATIO_CLAMP, PolicyLossConfig, get_policy_loss
from r1jax.rl.rollout_correction import mismatch_metrics, truncated_is_weights


@functools.partial(jax.jit, static_argnames=("config",))
def grpo_loss(
    config: PolicyLossConfig,
    logprobs: jax.Array,
    old_logprobs: Optional[jax.Array],
    ref_logprobs: Optional[jax.Array],
    advantages: jax.Array,
    completion_mask: jax.Array,
    sampler_logprobs: Optional[jax.Array] = None,
    entropy: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array, Metrics]:
  """The loss of one (micro-)batch as (loss_sum, count, metrics); the loss is loss_sum / count.

  Differentiate `loss_sum` (or loss_sum / count); over micro-batches, accumulate gradients
  of loss_sum and divide by the summed count for the exact full-batch gradient.

  Args:
    config: PolicyLossConfig (static under jit).
    logprobs: [batch, length] log-probs of the completion tokens under the policy being trained.
    old_logprobs: [batch, length] log-probs under the policy that the PPO ratio is taken
      against (the learner's own recomputation at sampling time), or None for a purely
      on-policy step, where it is stop_gradient(logprobs) and every ratio is 1.
    ref_logprobs: [batch, length] reference-policy log-probs; required when config.beta > 0,
      may be None when beta == 0 (given anyway, the KL is logged without entering the loss).
    advantages: [batch] one advantage per completion, or [batch, length] one per token (a
      multi-turn episode whose turns train as separate reward samples, `r1jax.envs`).
    completion_mask: [batch, length], 1 on the completion tokens that count.
    sampler_logprobs: [batch, length] log-probs the sampler reported; enables the mismatch
      metrics, and the TIS correction when config.tis_mode is set (then required).
    entropy: [batch, length] token entropy (r1jax.rl.logprobs.token_entropy); logged when
      given, required when config.entropy_coeff != 0.

  Returns:
    loss_sum, count: float32 scalars, see r1jax.rl.aggregation for each mode's definition.
    metrics: name -> deferred (value, count) pair, see r1jax.rl.metrics. Always present:
      `loss`, `pg_loss` (the TIS-weighted policy term alone, aggregated like the loss),
      `ppo_kl` (token mean of old - new, each clamped to +-LOG_RATIO_CLAMP = 20 as in verl's
      vanilla loss, for GSPO too), `ratio/mean`, `ratio/min`, `ratio/max`,
      `clip_frac/low`, `clip_frac/high`, `clip_frac/dual` (token fractions),
      `zero_advantage_frac` (fraction of valid sequences with advantage exactly 0).
      With reference log-probs: `kl`. With entropy: `entropy`. With sampler log-probs:
      `mismatch/kl`, `mismatch/k3`, and when TIS is on `tis/weight` and
      `tis/truncated_frac` (per token, or per sequence in sequence mode).
  """
  if logprobs.ndim != 2 or completion_mask.shape != logprobs.shape:
    raise ValueError(f"logprobs {logprobs.shape} and completion_mask {completion_mask.shape} must be [batch, length]")
  if advantages.shape not in (logprobs.shape[:1], logprobs.shape):
    raise ValueError(f"advantages {advantages.shape} must be [batch] = {logprobs.shape[:1]} or [batch, length] = "
                     f"{logprobs.shape}")
  if config.beta > 0 and ref_logprobs is None:
    raise ValueError(f"ref_logprobs is required when PolicyLossConfig.beta={config.beta} > 0")
  if config.tis_mode is not None and sampler_logprobs is None:
    raise ValueError(f"sampler_logprobs is required when PolicyLossConfig.tis_mode={config.tis_mode!r}")
  if config.entropy_coeff != 0 and entropy is None:
    raise ValueError(f"entropy is required when PolicyLossConfig.entropy_coeff={config.entropy_coeff} != 0")

  mask = completion_mask.astype(bool)

  def masked(x):
    # Padding may hold anything (even -inf); zero it so no NaN reaches values or gradients.
    return jnp.where(mask, x.astype(jnp.promote_types(x.dtype, jnp.float32)), 0.0)

  logprobs = masked(logprobs)
  old_logprobs = jax.lax.stop_gradient(logprobs) if old_logprobs is None else masked(old_logprobs)
  advantages = advantages.astype(jnp.promote_types(advantages.dtype, jnp.float32))
  token_advantages = advantages if advantages.ndim == 2 else advantages[:, None]
  pg = get_policy_loss(config.policy_loss)(config, logprobs, old_logprobs, token_advantages, mask)
  token_loss = pg.loss
  metrics = {}

  if sampler_logprobs is not None:
    sampler_logprobs = masked(sampler_logprobs)
    metrics.update(mismatch_metrics(old_logprobs, sampler_logprobs, mask))
    if config.tis_mode is not None:
      tis = truncated_is_weights(old_logprobs, sampler_logprobs, mask, config.tis_mode, config.tis_cap)
      token_loss = token_loss * tis.weights
      metrics["tis/weight"] = mean_metric(tis.weights, tis.unit_mask)
      metrics["tis/truncated_frac"] = mean_metric(tis.truncated, tis.unit_mask)
  metrics["pg_loss"] = agg_loss(token_loss, mask, config.loss_agg_mode, config.loss_scale_factor)

  if ref_logprobs is not None:
    kl = kl_penalty(logprobs, masked(ref_logprobs), config.kl_estimator)
    metrics["kl"] = mean_metric(kl, mask)
    if config.beta > 0:
      token_loss = token_loss + config.beta * kl
  if entropy is not None:
    entropy = masked(entropy)
    metrics["entropy"] = mean_metric(entropy, mask)
    if config.entropy_coeff != 0:
      token_loss = token_loss - config.entropy_coeff * entropy

  loss_sum, count = agg_loss(token_loss, mask, config.loss_agg_mode, config.loss_scale_factor)
  valid_sequences = jnp.any(mask, axis=-1)
  metrics.update({
      "loss": (loss_sum, count),
      "ppo_kl": mean_metric(jnp.clip(old_logprobs - logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP), mask),
      "ratio/mean": mean_metric(pg.ratio, mask),
      "ratio/min": min_metric(pg.ratio, mask),
      "ratio/max": max_metric(pg.ratio, mask),
      "clip_frac/low": mean_metric(pg.clipped_low, mask),
      "clip_frac/high": mean_metric(pg.clipped_high, mask),
      "clip_frac/dual": mean_metric(pg.clipped_dual, mask),
      "zero_advantage_frac": mean_metric(
          jnp.all((token_advantages == 0) | ~mask, axis=-1).astype(jnp.float32), valid_sequences),
  })
  return loss_sum, count, jax.lax.stop_gradient(metrics)
