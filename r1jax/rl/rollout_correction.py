"""Sampler/learner mismatch: truncated importance sampling (TIS) weights and mismatch metrics.

The sampler (KV-cache decode, maybe bf16) and the learner (full forward pass) assign slightly
different probabilities to the same tokens, so the tokens are off-policy for the learner.
TIS reweights the policy-gradient term by w = min(pi_learner / pi_sampler, C), a constant
(no gradient), at one of two levels (verl rollout correction, "token" and "sequence"):

* `token`: w[b, t] = min(exp(learner[b, t] - sampler[b, t]), C);
* `sequence`: w[b, :] = min(exp(sum_t (learner - sampler)), C), one weight per sequence.

Log-ratios are clamped to [-20, 20] before the exp, as verl does.
The learner log-probs here are the ones the PPO ratio is taken against (`old_logprobs`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1jax.rl import kl
from r1jax.rl.metrics import Metrics, mean_metric


class TisWeights(NamedTuple):
  weights: jax.Array  # [batch, length], constant along length in sequence mode.
  truncated: jax.Array  # [batch, length] 0/1: the raw ratio exceeded the cap.
  unit_mask: jax.Array  # [batch, length]: one entry per token (token mode) or per valid sequence.


def truncated_is_weights(
    learner_logprobs: jax.Array,
    sampler_logprobs: jax.Array,
    mask: jax.Array,
    mode: str,
    cap: float,
) -> TisWeights:
  """TIS weights, without gradient.

  Args:
    learner_logprobs, sampler_logprobs: [batch, length], finite everywhere.
    mask: [batch, length] bool, the completion tokens.
    mode: `token` or `sequence`.
    cap: the truncation C.
  """
  mask = mask.astype(bool)
  log_ratio = jnp.where(mask, jax.lax.stop_gradient(learner_logprobs) - sampler_logprobs, 0.0)
  if mode == "token":
    unit_mask = mask
  elif mode == "sequence":
    log_ratio = jnp.broadcast_to(jnp.sum(log_ratio, axis=-1, keepdims=True), log_ratio.shape)
    # Count each valid sequence once, at its first position.
    unit_mask = jnp.zeros_like(mask).at[:, 0].set(jnp.any(mask, axis=-1))
  else:
    raise ValueError(f"TIS mode {mode!r} is not 'token' or 'sequence'")
  raw = jnp.exp(jnp.clip(log_ratio, -20.0, 20.0))
  return TisWeights(jnp.minimum(raw, cap), (raw > cap).astype(jnp.float32), unit_mask)


def mismatch_metrics(learner_logprobs: jax.Array, sampler_logprobs: jax.Array, mask: jax.Array) -> Metrics:
  """Per-token KL(sampler || learner) estimates over completion tokens, as (sum, count) pairs.

  The tokens were drawn from the sampler, so with log r = learner - sampler, k1 = -log r and
  k3 = r - 1 - log r estimate KL(sampler || learner) (see r1jax.rl.kl).
  """
  learner_logprobs = jax.lax.stop_gradient(learner_logprobs)
  return {
      "mismatch/kl": mean_metric(kl.k1(sampler_logprobs, learner_logprobs), mask),
      "mismatch/k3": mean_metric(kl.k3(sampler_logprobs, learner_logprobs), mask),
  }
