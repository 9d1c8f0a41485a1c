"""DAPO reward shaping by length and the dynamic-sampling group filter (arXiv:2503.14476).

Both are pure functions of arrays; the loop that keeps sampling until the batch is full of
groups with signal lives in the trainer.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("max_response_length", "overlong_buffer_len", "penalty_factor"))
def soft_overlong_punishment(
    response_lengths: jax.Array,
    *,
    max_response_length: int,
    overlong_buffer_len: int,
    penalty_factor: float = 1.0,
) -> jax.Array:
  """DAPO soft overlong punishment, a reward term added to the task reward.

  With L_max = `max_response_length` and L_cache = `overlong_buffer_len`, a response of
  |y| tokens gets

      0                                      if |y| <= L_max - L_cache
      -(|y| - (L_max - L_cache)) / L_cache * penalty_factor   otherwise,

  reaching -penalty_factor at |y| = L_max. As in verl (`overlong_buffer.len`,
  `overlong_buffer.penalty_factor`) there is no floor for |y| > L_max, which the sampler's
  length limit rules out.

  Args:
    response_lengths: generated tokens per completion, [batch] (int or float).
    max_response_length: L_max, the sampler's max new tokens.
    overlong_buffer_len: L_cache, the length of the linear ramp before L_max.
    penalty_factor: the punishment at L_max.

  Returns:
    Rewards to add, [batch] float32, all <= 0.
  """
  if not 0 < overlong_buffer_len <= max_response_length:
    raise ValueError(
        f"overlong_buffer_len={overlong_buffer_len} must be in (0, max_response_length={max_response_length}]"
    )
  expected_length = max_response_length - overlong_buffer_len
  exceed = response_lengths.astype(jnp.float32) - expected_length
  return jnp.minimum(-exceed / overlong_buffer_len * penalty_factor, 0.0)


@jax.jit
def groups_with_reward_variance(rewards: jax.Array, group_mask: Optional[jax.Array] = None) -> jax.Array:
  """Which groups have a learning signal: valid members whose rewards are not all equal.

  DAPO dynamic sampling keeps only these groups. Equality is tested exactly (max == min over
  valid members) rather than with std > 0, so float round-off cannot keep a flat group.
  Groups with fewer than two valid members have no variance and are dropped (verl keeps a
  single-member group; our advantage estimators give it 0, see r1jax.rl.advantages).

  Args:
    rewards: [num_groups, group_size].
    group_mask: same shape, True for members that take part; None means all.

  Returns:
    [num_groups] bool.
  """
  if group_mask is None:
    group_mask = jnp.ones(rewards.shape, bool)
  group_mask = group_mask.astype(bool)
  high = jnp.max(jnp.where(group_mask, rewards, -jnp.inf), axis=-1)
  low = jnp.min(jnp.where(group_mask, rewards, jnp.inf), axis=-1)
  # An empty group has high = -inf < low = +inf; one member has high == low.
  return high > low
