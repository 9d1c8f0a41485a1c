"""Outcome advantage estimators over groups of completions sampled for the same prompt.

Every estimator maps rewards `[num_groups, group_size]` and a group mask of the same shape
(True = this completion takes part; None = all do) to advantages `[num_groups, group_size]`.
Masked members are left out of every statistic and get advantage 0. Names and formulas
follow verl's `core_algos`; with n valid members, mean and std (ddof=1, as torch.std) over
them:

* `grpo`: (r - mean) / (std + epsilon)                   (DeepSeekMath GRPO)
* `dr_grpo`: r - mean, no std scaling                     (Dr. GRPO, arXiv:2503.20783)
* `rloo`: r - mean of the other n - 1 = n/(n-1) (r - mean)  (RLOO, arXiv:2402.14740)
* `reinforce_pp`: r - mean, then whitened over all valid members of the batch,
  (x - batch mean) / sqrt(batch var (ddof=1) + epsilon)  (REINFORCE++-baseline, arXiv:2501.03262)

Two choices differ from verl and are deliberate:

* A group whose valid members all have the same reward (including a group of one valid
  member) carries no relative signal, and its group-relative part is exactly 0. verl instead
  treats a single-member group as baseline 0 / std 1 (meant for n=1 sampling), which after
  masking would turn one surviving completion's raw reward into an advantage; and float
  round-off in `r - mean` over equal rewards, divided by `std + 1e-6`, can leave tiny
  non-zero advantages that the range test here avoids.
* `reinforce_pp` whitens over sequences, each valid member once. verl whitens the advantage
  broadcast over response tokens, which weights each sequence by its length; the estimator
  sees rewards only, and the advantage is a per-sequence quantity.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from r1jax.rl.metrics import Metrics, mean_metric
from r1jax.rl.registry import Registry
from r1jax.rl.shaping import groups_with_reward_variance

AdvantageFn = Callable[..., jax.Array]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")
register_advantage = ADVANTAGES.register
get_advantage = ADVANTAGES.get


def _mask_or_ones(rewards: jax.Array, group_mask: Optional[jax.Array]) -> jax.Array:
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [num_groups, group_size], got shape {rewards.shape}")
  if group_mask is None:
    return jnp.ones(rewards.shape, bool)
  if group_mask.shape != rewards.shape:
    raise ValueError(f"group_mask {group_mask.shape} must match rewards {rewards.shape}")
  return group_mask.astype(bool)


def _group_centered(rewards: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(r - group mean, valid members per group [num_groups, 1]); 0 off-mask and in groups without signal."""
  rewards = jnp.where(mask, rewards.astype(jnp.promote_types(rewards.dtype, jnp.float32)), 0.0)
  count = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.float32)
  mean = jnp.sum(rewards, axis=-1, keepdims=True) / jnp.maximum(count, 1.0)
  has_signal = groups_with_reward_variance(rewards, mask)[:, None]
  return jnp.where(mask & has_signal, rewards - mean, 0.0), count


@register_advantage("grpo")
@jax.jit
def grpo(rewards: jax.Array, group_mask: Optional[jax.Array] = None, *, epsilon: float = 1e-6) -> jax.Array:
  """(r - group mean) / (group std + epsilon); [num_groups, group_size] in and out."""
  mask = _mask_or_ones(rewards, group_mask)
  centered, count = _group_centered(rewards, mask)
  std = jnp.sqrt(jnp.sum(jnp.square(centered), axis=-1, keepdims=True) / jnp.maximum(count - 1.0, 1.0))
  return centered / (std + epsilon)


@register_advantage("dr_grpo")
@jax.jit
def dr_grpo(rewards: jax.Array, group_mask: Optional[jax.Array] = None, *, epsilon: float = 1e-6) -> jax.Array:
  """r - group mean; [num_groups, group_size] in and out. `epsilon` is accepted and unused."""
  del epsilon  # No std scaling: that is the point of Dr. GRPO.
  centered, _ = _group_centered(rewards, _mask_or_ones(rewards, group_mask))
  return centered


@register_advantage("rloo")
@jax.jit
def rloo(rewards: jax.Array, group_mask: Optional[jax.Array] = None, *, epsilon: float = 1e-6) -> jax.Array:
  """r - mean of the group's other valid members; [num_groups, group_size] in and out."""
  del epsilon
  centered, count = _group_centered(rewards, _mask_or_ones(rewards, group_mask))
  # Groups with fewer than two members are already 0; the max only avoids 0/0 there.
  return centered * count / jnp.maximum(count - 1.0, 1.0)


@register_advantage("reinforce_pp")
@jax.jit
def reinforce_pp(rewards: jax.Array, group_mask: Optional[jax.Array] = None, *, epsilon: float = 1e-8) -> jax.Array:
  """r - group mean, whitened over every valid member of the batch; [num_groups, group_size] in and out."""
  mask = _mask_or_ones(rewards, group_mask)
  centered, _ = _group_centered(rewards, mask)
  total = jnp.sum(mask, dtype=jnp.float32)
  batch_mean = jnp.sum(centered) / jnp.maximum(total, 1.0)
  deviation = jnp.where(mask, centered - batch_mean, 0.0)
  batch_var = jnp.sum(jnp.square(deviation)) / jnp.maximum(total - 1.0, 1.0)
  return deviation * jax.lax.rsqrt(batch_var + epsilon)


@jax.jit
def group_metrics(rewards: jax.Array, group_mask: Optional[jax.Array] = None) -> Metrics:
  """Reward diagnostics as deferred (sum, count) pairs (see r1jax.rl.metrics).

  Returns:
    `reward`: mean reward over valid members.
    `zero_advantage_group_frac`: among groups with a valid member, the fraction whose valid
      rewards are all equal, so the group baseline leaves them no signal (what DAPO dynamic
      sampling filters out).
  """
  mask = _mask_or_ones(rewards, group_mask)
  has_member = jnp.any(mask, axis=-1)
  no_signal = ~groups_with_reward_variance(rewards, mask)
  return {
      "reward": mean_metric(rewards.astype(jnp.promote_types(rewards.dtype, jnp.float32)), mask),
      "zero_advantage_group_frac": mean_metric(no_signal.astype(jnp.float32), has_member),
  }
