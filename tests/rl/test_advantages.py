"""Advantage estimators against a plain NumPy reference, plus hand-computed groups."""
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl

NUM_GROUPS, GROUP_SIZE = 7, 5


def reference_advantages(name, rewards, mask, epsilon):
  """Group by group, in float64, straight from the definitions."""
  rewards = rewards.astype(np.float64)
  centered = np.zeros_like(rewards)
  out = np.zeros_like(rewards)
  for g in range(rewards.shape[0]):
    members = np.flatnonzero(mask[g])
    r = rewards[g, members]
    if len(r) < 2 or r.max() == r.min():
      continue  # No relative signal: advantage 0 (reinforce_pp still whitens the 0 below).
    centered[g, members] = r - r.mean()
    if name == "grpo":
      out[g, members] = (r - r.mean()) / (r.std(ddof=1) + epsilon)
    elif name == "dr_grpo":
      out[g, members] = r - r.mean()
    elif name == "rloo":
      out[g, members] = [r[i] - np.delete(r, i).mean() for i in range(len(r))]
  if name == "reinforce_pp":
    x = centered[mask]
    out[mask] = (x - x.mean()) / np.sqrt(x.var(ddof=1) + epsilon)
  return out


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(NUM_GROUPS, GROUP_SIZE)).astype(np.float32)
  rewards[1] = rng.integers(0, 2, size=GROUP_SIZE)  # Binary rewards: ties inside a group.
  rewards[2] = 0.7  # A flat group.
  mask = rng.random((NUM_GROUPS, GROUP_SIZE)) > 0.25
  mask[1] = True
  mask[3] = False  # A fully masked group (batch padding).
  mask[4] = [False, True, False, False, False]  # One valid member.
  mask[5, 0] = False
  rewards[5, 0] = 1e6  # A masked outlier must not move the statistics.
  return rewards, mask


# Each estimator's default epsilon.
@pytest.mark.parametrize("name,epsilon", [("grpo", 1e-6), ("dr_grpo", 1e-6), ("rloo", 1e-6), ("reinforce_pp", 1e-8)])
def test_matches_numpy_reference(batch, name, epsilon):
  rewards, mask = batch
  got = rl.get_advantage(name)(jnp.asarray(rewards), jnp.asarray(mask))
  assert got.shape == rewards.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, reference_advantages(name, rewards, mask, epsilon), rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(got)[~mask] == 0)


def padded(rows, row_masks):
  """Hand-written groups placed in a [NUM_GROUPS, GROUP_SIZE] batch (masked padding elsewhere),
  so the estimators reuse the executables compiled for the reference test."""
  rewards = np.zeros((NUM_GROUPS, GROUP_SIZE), np.float32)
  mask = np.zeros((NUM_GROUPS, GROUP_SIZE), bool)
  for i, (row, row_mask) in enumerate(zip(rows, row_masks)):
    rewards[i, : len(row)] = row
    mask[i, : len(row)] = row_mask
  return jnp.asarray(rewards), jnp.asarray(mask)


def test_hand_computed_groups():
  rewards, mask = padded([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 5.0, 1.0]], [[True] * 4, [True, True, False, True]])
  # mean 0.5, sample std sqrt(1/3): 0.5 / 0.57735 = 0.866025.
  expected = [0.866025, -0.866025, -0.866025, 0.866025]
  np.testing.assert_allclose(np.asarray(rl.grpo(rewards, mask))[0, :4], expected, atol=1e-5)
  # Second group without the masked 5.0: rewards [1, 0, 1], mean 2/3.
  np.testing.assert_allclose(np.asarray(rl.dr_grpo(rewards, mask))[1, :4], [1 / 3, -2 / 3, 0.0, 1 / 3], atol=1e-6)
  # Leave-one-out: 1 - mean(0, 1) = 0.5 and 0 - mean(1, 1) = -1.
  np.testing.assert_allclose(np.asarray(rl.rloo(rewards, mask))[1, :4], [0.5, -1.0, 0.0, 0.5], atol=1e-6)
  np.testing.assert_allclose(np.asarray(rl.rloo(rewards, mask))[0, :4], [2 / 3, -2 / 3, -2 / 3, 2 / 3], atol=1e-6)


def test_flat_groups_get_exactly_zero():
  # 0.1 summed in float32 does not divide back to 0.1; the range test still gives exact zeros.
  rewards, mask = padded([[0.1] * GROUP_SIZE] * 2, [[True] * GROUP_SIZE] * 2)
  for name in ("grpo", "dr_grpo", "rloo"):
    assert np.all(np.asarray(rl.get_advantage(name)(rewards, mask)) == 0.0), name


def test_group_metrics_count_flat_groups(batch):
  rewards, mask = batch
  metrics = rl.finalize_metrics(rl.group_metrics(jnp.asarray(rewards), jnp.asarray(mask)))
  has_member = mask.any(axis=1)
  flat = [not (m.sum() >= 2 and r[m].max() > r[m].min()) for r, m in zip(rewards, mask)]
  np.testing.assert_allclose(metrics["zero_advantage_group_frac"], np.mean(np.array(flat)[has_member]), rtol=1e-6)
  np.testing.assert_allclose(metrics["reward"], rewards[mask].mean(), rtol=1e-6)


def test_registry_names_and_errors():
  assert set(rl.ADVANTAGES.names()) >= {"grpo", "dr_grpo", "rloo", "reinforce_pp"}
  with pytest.raises(KeyError, match="unknown advantage estimator 'gae'"):
    rl.get_advantage("gae")
  with pytest.raises(ValueError, match="registered twice"):
    rl.register_advantage("grpo")(lambda rewards, group_mask=None: rewards)
  with pytest.raises(ValueError, match=r"rewards must be \[num_groups, group_size\]"):
    rl.grpo(jnp.zeros(4))
