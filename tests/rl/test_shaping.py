"""DAPO soft overlong punishment and the dynamic-sampling group filter."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl


def test_overlong_punishment_hand_values():
  # L_max 20, buffer 5: free up to 15 tokens, then linear down to -penalty at 20.
  lengths = jnp.array([0, 10, 15, 16, 18, 20])
  got = rl.soft_overlong_punishment(lengths, max_response_length=20, overlong_buffer_len=5, penalty_factor=0.5)
  np.testing.assert_allclose(got, [0, 0, 0, -0.1, -0.3, -0.5], atol=1e-7)


def test_overlong_punishment_matches_numpy():
  rng = np.random.default_rng(6)
  lengths = rng.integers(0, 513, size=32)
  got = rl.soft_overlong_punishment(jnp.asarray(lengths), max_response_length=512, overlong_buffer_len=128)
  expected = np.minimum(-(lengths - (512 - 128)) / 128, 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="overlong_buffer_len=600 must be in"):
    rl.soft_overlong_punishment(jnp.asarray(lengths), max_response_length=512, overlong_buffer_len=600)


def test_groups_with_reward_variance():
  rewards = jnp.array([
      [1.0, 0.0, 1.0, 1.0],  # Mixed: kept.
      [1.0, 1.0, 1.0, 1.0],  # All correct: no signal.
      [0.0, 5.0, 0.0, 0.0],  # Mixed only through a masked member: no signal.
      [0.3, 0.2, 0.0, 0.0],  # One valid member: no signal.
      [0.0, 1.0, 0.0, 1.0],  # Fully masked: no signal.
  ])
  mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(rl.groups_with_reward_variance(rewards, mask), [True, False, False, False, False])
  np.testing.assert_array_equal(rl.groups_with_reward_variance(rewards), [True, False, True, True, True])
