"""Clipped policy-gradient losses per token, their config, and the registry that names them.

A policy loss maps (config, logprobs, old_logprobs, advantages, mask) to a `PolicyLossOutput`
of per-token arrays `[batch, length]`; `r1jax.rl.objective.grpo_loss` adds the importance
correction, KL and entropy terms and aggregates. Formulas follow verl `core_algos`
(`compute_policy_loss_vanilla`, `compute_policy_loss_gspo`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from r1jax.rl.aggregation import AGGREGATIONS
from r1jax.rl.kl import KL_ESTIMATORS
from r1jax.rl.registry import Registry

TIS_MODES = (None, "token", "sequence")
# |log-ratio| bound before the exp, as verl's vanilla loss clamps it: exp stays finite on garbage
# tokens. `objective.grpo_loss` clamps the logged `ppo_kl` with it too, as verl does.
LOG_RATIO_CLAMP = 20.0


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  """Everything the GRPO-family loss needs; frozen and hashable, so it is a static jit argument.

  Attributes:
    policy_loss: a registered policy loss: `ppo_clip` (token ratios) or `gspo` (sequence ratio).
    epsilon_low: the ratio is clipped below at 1 - epsilon_low (verl `clip_ratio_low`).
    epsilon_high: ... and above at 1 + epsilon_high; > epsilon_low is DAPO's clip-higher
      (0.28 vs 0.2). GSPO uses much smaller ranges (3e-4 / 4e-4 in the paper).
    clip_ratio_c: dual-clip bound for negative advantages (arXiv:1912.09729): the loss of a
      token with A < 0 is capped at -A * clip_ratio_c. None turns dual-clip off. `ppo_clip` only.
    loss_agg_mode: a registered aggregation, see r1jax.rl.aggregation. GSPO's paper objective
      is `seq-mean-token-mean`.
    loss_scale_factor: the constant divisor of `seq-mean-token-sum-norm` (None: padded length).
    beta: KL-to-reference coefficient. 0 means no reference model is needed at all.
    kl_estimator: `kl` (k1), `mse` (k2, also `mse_kl`) or `low_var_kl` (k3), as verl names them.
    tis_mode: truncated importance sampling against the sampler's log-probs: None (off; the
      mismatch is still logged when sampler log-probs are given), `token` or `sequence`.
    tis_cap: the truncation C of TIS weights min(pi_learner / pi_sampler, C).
    entropy_coeff: weight of an entropy bonus (loss -= entropy_coeff * entropy); needs the
      per-token entropy passed to the loss.
  """

  policy_loss: str = "ppo_clip"
  epsilon_low: float = 0.2
  epsilon_high: float = 0.2
  clip_ratio_c: Optional[float] = 3.0
  loss_agg_mode: str = "token-mean"
  loss_scale_factor: Optional[float] = None
  beta: float = 0.0
  kl_estimator: str = "low_var_kl"
  tis_mode: Optional[str] = None
  tis_cap: float = 2.0
  entropy_coeff: float = 0.0

  def __post_init__(self):
    for field, registry in (
        ("policy_loss", POLICY_LOSSES),
        ("loss_agg_mode", AGGREGATIONS),
        ("kl_estimator", KL_ESTIMATORS),
    ):
      if getattr(self, field) not in registry:
        raise ValueError(f"PolicyLossConfig.{field}={getattr(self, field)!r} is not one of {registry.names()}")
    if not 0 <= self.epsilon_low < 1 or self.epsilon_high < 0:
      raise ValueError(
          f"PolicyLossConfig.epsilon_low={self.epsilon_low} must be in [0, 1) and "
          f"epsilon_high={self.epsilon_high} >= 0"
      )
    if self.clip_ratio_c is not None and self.clip_ratio_c <= 1:
      raise ValueError(f"PolicyLossConfig.clip_ratio_c={self.clip_ratio_c} must be > 1 (or None)")
    if self.loss_scale_factor is not None and self.loss_scale_factor <= 0:
      raise ValueError(f"PolicyLossConfig.loss_scale_factor={self.loss_scale_factor} must be > 0")
    if self.beta < 0:
      raise ValueError(f"PolicyLossConfig.beta={self.beta} must be >= 0")
    if self.tis_mode not in TIS_MODES:
      raise ValueError(f"PolicyLossConfig.tis_mode={self.tis_mode!r} is not one of {TIS_MODES}")
    if self.tis_cap <= 0:
      raise ValueError(f"PolicyLossConfig.tis_cap={self.tis_cap} must be > 0")

  @property
  def needs_reference(self) -> bool:
    """Whether the trainer has to keep and run a reference model."""
    return self.beta > 0


class PolicyLossOutput(NamedTuple):
  """Per-token results of a policy loss, all [batch, length]; indicators are 0/1 float32."""

  loss: jax.Array
  ratio: jax.Array  # The importance ratio the loss used (GSPO: the sequence ratio, per token).
  clipped_low: jax.Array  # A < 0 and ratio < 1 - epsilon_low: gradient cut by the clip.
  clipped_high: jax.Array  # A > 0 and ratio > 1 + epsilon_high.
  clipped_dual: jax.Array  # A < 0 and ratio > clip_ratio_c: loss capped by dual-clip.


PolicyLossFn = Callable[[PolicyLossConfig, jax.Array, jax.Array, jax.Array, jax.Array], PolicyLossOutput]

POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register
get_policy_loss = POLICY_LOSSES.get


def _clip_indicators(config, ratio, advantages):
  low = (advantages < 0) & (ratio < 1.0 - config.epsilon_low)
  high = (advantages > 0) & (ratio > 1.0 + config.epsilon_high)
  return low.astype(jnp.float32), high.astype(jnp.float32)


def _clipped_surrogate(config, ratio, advantages):
  """max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)): the PPO pessimistic bound, as a loss."""
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - config.epsilon_low, 1.0 + config.epsilon_high)
  return jnp.maximum(unclipped, clipped)


@register_policy_loss("ppo_clip")
def ppo_clip(config, logprobs, old_logprobs, advantages, mask):
  """PPO-clip on token ratios r = exp(logprobs - old_logprobs), clip-higher and dual-clip.

  Args:
    config: PolicyLossConfig.
    logprobs, old_logprobs: [batch, length], finite everywhere (the caller zeroes padding).
    advantages: [batch, 1] or [batch, length].
    mask: [batch, length] bool (unused: every output is per token).
  """
  del mask
  ratio = jnp.exp(jnp.clip(logprobs - old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
  loss = _clipped_surrogate(config, ratio, advantages)
  dual = jnp.zeros_like(loss)
  if config.clip_ratio_c is not None:
    capped = jnp.minimum(loss, -advantages * config.clip_ratio_c)
    dual = ((advantages < 0) & (ratio > config.clip_ratio_c)).astype(jnp.float32)
    loss = jnp.where(advantages < 0, capped, loss)
  low, high = _clip_indicators(config, ratio, advantages)
  return PolicyLossOutput(loss, ratio, low, high, dual)


@register_policy_loss("gspo")
def gspo(config, logprobs, old_logprobs, advantages, mask):
  """GSPO (arXiv:2507.18071): one clipped ratio per sequence, the length-normalised likelihood ratio.

  s_i = exp(mean_t (logprobs - old_logprobs)) over the sequence's valid tokens. Its gradient
  is taken through the token-level form s_i,t = sg(s_i) * pi(y_t) / sg(pi(y_t)), whose value
  is s_i and whose gradient is s_i * grad log pi(y_t); with a token-mean over the sequence
  this is exactly grad s_i. Clipping acts on s_i, so a sequence's tokens clip together.
  The log-ratio is clamped at 10 for stability, as verl does.
  """
  mask = mask.astype(jnp.float32)
  seq_log_ratio = jnp.sum((logprobs - old_logprobs) * mask, axis=-1, keepdims=True) / jnp.maximum(
      jnp.sum(mask, axis=-1, keepdims=True), 1.0
  )
  log_ratio = logprobs - jax.lax.stop_gradient(logprobs) + jax.lax.stop_gradient(seq_log_ratio)
  ratio = jnp.exp(jnp.minimum(log_ratio, 10.0))
  loss = _clipped_surrogate(config, ratio, advantages)
  low, high = _clip_indicators(config, ratio, advantages)
  return PolicyLossOutput(loss, ratio, low, high, jnp.zeros_like(loss))
