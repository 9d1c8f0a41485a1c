"""One RL rollout: sample G completions per prompt, score them, and turn rewards into advantages.

    prompts --Sampler--> completions --rewards (host worker pool)--> rewards [groups, G]
            --advantage estimator--> advantages, with DAPO dynamic sampling and overlong shaping

The result is a learner batch (`r1jax.train.learner`) plus per-sample records for metrics.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import rl
from r1jax.rewards import scorer
from r1jax.train import rows


@dataclasses.dataclass
class Rollout:
  batch: dict[str, Any]  # the learner batch (host arrays), rows prompt-major
  rewards: np.ndarray  # [groups, G] shaped rewards used for the advantages
  metrics: dict[str, float]
  completions: list[str]  # decoded, one per row


def collect_rollout(*, sample: Callable[[dict, jax.Array], Any], prompt_batches: Iterator[dict[str, Any]],
                    reward_fn, decode: Callable[[np.ndarray], list[str]], rl_config, sampling_config,
                    reward_config, rng: jax.Array, groups_wanted: int, pad_id: int) -> Rollout:
  """Samples and scores prompt batches until `groups_wanted` groups are collected.

  Args:
    sample: (prompt batch, key) -> (learner batch of B*G rows with completion arrays, sampler stats).
    prompt_batches: the data iterator (each next() is B prompts).
    reward_fn: the registered reward; run through `scorer.score_batch` with a per-sample timeout.
    decode: completion token rows -> strings.

  Without dynamic sampling one prompt batch is used as is. With it, groups whose rewards have no
  variance are dropped and more batches are drawn, at most `rl.max_sampling_rounds` rounds; if the
  cap is hit, the batch is filled by repeating kept groups with their completion masks zeroed (they
  add nothing to the loss) so the learner keeps one static shape.
  """
  group_size = sampling_config.num_samples
  kept, kept_rewards, texts = [], [], []
  metrics: dict[str, float] = {"rollout/rounds": 0.0}
  score_totals = {"reward/errors": 0.0, "reward/timeouts": 0.0}
  component_sums: dict[str, list[float]] = {}
  all_rewards, all_lengths = [], []
  t_sample = t_reward = 0.0
  num_groups = 0
  for round_index in range(max(1, rl_config.max_sampling_rounds if rl_config.dynamic_sampling else 1)):
    prompts = next(prompt_batches)
    start = time.perf_counter()
    batch, sample_stats = sample(prompts, jax.random.fold_in(rng, round_index))
    t_sample += time.perf_counter() - start
    for key, value in sample_stats.items():
      metrics[key] = metrics.get(key, 0.0) + float(value)

    start = time.perf_counter()
    completions = decode(batch["completion_ids"])
    scores = scorer.score_batch(reward_fn, completions, batch["ground_truth"], batch["reward_context"],
                                timeout_s=reward_config.timeout_s, num_workers=reward_config.num_workers)
    t_reward += time.perf_counter() - start
    score_totals["reward/errors"] += scores.num_errors
    score_totals["reward/timeouts"] += scores.num_timeouts
    for name, values in scores.components.items():
      component_sums.setdefault(name, []).extend(np.asarray(values, np.float64).tolist())

    lengths = batch["completion_mask"].sum(axis=1)
    rewards = np.asarray(scores.totals, np.float32)
    if rl_config.overlong_buffer > 0:
      rewards = rewards + np.asarray(rl.soft_overlong_punishment(
          jnp.asarray(lengths), max_response_length=sampling_config.max_new_tokens,
          overlong_buffer_len=rl_config.overlong_buffer, penalty_factor=rl_config.overlong_penalty))
    all_rewards.append(rewards)
    all_lengths.append(lengths)
    grouped = rewards.reshape(-1, group_size)
    num_groups += len(grouped)
    keep = np.ones(len(grouped), bool)
    if rl_config.dynamic_sampling:
      keep = np.asarray(rl.groups_with_reward_variance(jnp.asarray(grouped)))
    for g in np.flatnonzero(keep):
      if len(kept) == groups_wanted:
        break
      rows_of_group = np.arange(g * group_size, (g + 1) * group_size)
      kept.append(rows.take_rows(batch, rows_of_group))
      kept_rewards.append(grouped[g])
      texts.extend(completions[r] for r in rows_of_group)
    metrics["rollout/rounds"] += 1
    if len(kept) == groups_wanted:
      break

  filler = 0
  while len(kept) < groups_wanted:  # dynamic sampling hit its cap (or every group was flat)
    source = kept[filler % len(kept)] if kept else None
    if source is None:  # nothing had variance: train on the last round with zero advantages
      source = rows.take_rows(batch, np.arange(group_size))
      kept_rewards.append(grouped[0])
    else:
      kept_rewards.append(kept_rewards[filler % len(kept_rewards)])
    source = dict(source, completion_mask=np.zeros_like(source["completion_mask"]))
    kept.append(source)
    texts.extend([""] * group_size)
    filler += 1

  learner = rows.concat_rows(kept, pad_id)
  grouped_rewards = np.stack(kept_rewards)
  group_mask = np.stack([k["completion_mask"].any(axis=1) for k in kept])
  advantages = rl.get_advantage(rl_config.advantage)(jnp.asarray(grouped_rewards), jnp.asarray(group_mask))
  learner["advantages"] = np.asarray(advantages, np.float32).reshape(-1)

  raw = np.concatenate(all_rewards)
  lengths = np.concatenate(all_lengths)
  metrics.update({
      "reward/mean": float(raw.mean()), "reward/std": float(raw.std()), "reward/max": float(raw.max()),
      "response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
      "rollout/kept_group_frac": (len(kept) - filler) / max(1, num_groups),
      "rollout/filler_groups": float(filler),
      "perf/sample_s": t_sample, "perf/reward_s": t_reward,
      **score_totals,
      **{f"reward/{name}": float(np.mean(values)) for name, values in component_sums.items()},
  })
  group_stats = rl.finalize_metrics(rl.group_metrics(jnp.asarray(grouped_rewards), jnp.asarray(group_mask)))
  metrics["rollout/zero_advantage_group_frac"] = float(group_stats["zero_advantage_group_frac"])
  return Rollout(batch=learner, rewards=grouped_rewards, metrics=metrics, completions=texts)
