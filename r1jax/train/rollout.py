"""One RL rollout: sample G completions per prompt, score them, and turn rewards into advantages.

    prompts --Sampler--> completions --rewards (host worker pool)--> rewards [groups, G]
            --advantage estimator--> advantages, with DAPO dynamic sampling and overlong shaping

The result is a learner batch (`r1jax.train.learner`) plus per-sample records for metrics.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import rl
from r1jax.errors import RunStoppedError
from r1jax.rewards import scorer
from r1jax.train import rows

_log = logging.getLogger(__name__)


class RewardFailureError(RunStoppedError):
  """More of a step's samples failed to score than `reward.max_error_frac` allows."""


@dataclasses.dataclass
class Rollout:
  batch: dict[str, Any]  # the learner batch (host arrays), rows prompt-major
  rewards: np.ndarray  # [groups, G] shaped rewards used for the advantages
  metrics: dict[str, float]
  completions: list[str]  # decoded, one per row
  samples: list[dict[str, Any]]  # per scored sample of the first group: text, scores, info, status, error


def collect_rollout(*, sample: Callable[[dict, jax.Array], Any], prompt_batches: Iterator[dict[str, Any]],
                    reward_fn, decode: Callable[[np.ndarray], list[str]], rl_config, sampling_config,
                    reward_config, rng: jax.Array, groups_wanted: int, pad_id: int,
                    judge_context: dict[str, Any] | None = None) -> Rollout:
  """Samples and scores prompt batches until `groups_wanted` groups are collected.

  Args:
    sample: (prompt batch, key) -> (learner batch of B*G rows with completion arrays, sampler stats).
    prompt_batches: the data iterator (each next() is B prompts).
    reward_fn: the registered reward; run through `scorer.score_batch` with a per-sample timeout.
    decode: completion token rows -> strings.
    judge_context: judges added to every sample's reward context (`rewards.judge_context`).

  A sample that is not scored (its reward raised or timed out) or that its reward masks (a `mask`
  component of 1, e.g. LOVE-R1's second zoom) is *excluded*: it is left out of its group's mean and
  std and of the loss (completion mask zeroed), never counted as a reward of 0. Failures are counted
  (`reward/errors`, `reward/timeouts`), logged with the first message, and abort the run when more
  than `reward.max_error_frac` of a step's samples fail.

  Without dynamic sampling one prompt batch is used as is. With it, groups whose rewards have no
  variance (over their included samples) are dropped and more batches are drawn, at most
  `rl.max_sampling_rounds` rounds; if the cap is hit, the batch is filled by repeating kept groups
  with their completion masks zeroed (they add nothing to the loss) so the learner keeps one static
  shape.
  """
  group_size = sampling_config.num_samples
  kept, kept_rewards, texts = [], [], []
  metrics: dict[str, float] = {"rollout/rounds": 0.0}
  failures = _Failures(reward_config)
  component_sums: dict[str, list[float]] = {}
  all_rewards, all_lengths, all_included = [], [], []
  samples: list[dict[str, Any]] = []
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
    contexts = [dict(c, **judge_context) for c in batch["reward_context"]] if judge_context \
        else batch["reward_context"]
    scores = scorer.score_batch(reward_fn, completions, batch["ground_truth"], contexts,
                                timeout_s=reward_config.timeout_s, num_workers=reward_config.num_workers)
    t_reward += time.perf_counter() - start
    failures.add(scores, batch["ground_truth"])
    included = (scores.status == scorer.OK) & (scores.components.get("mask", np.zeros(len(completions))) == 0)
    for name, values in scores.components.items():
      component_sums.setdefault(name, []).extend(np.asarray(values, np.float64)[scores.status == scorer.OK].tolist())
    if not samples:
      samples = _sample_records(completions[:group_size], scores, included)

    lengths = batch["completion_mask"].sum(axis=1)
    rewards = np.asarray(scores.totals, np.float32)
    if rl_config.overlong_buffer > 0:
      rewards = rewards + np.asarray(rl.soft_overlong_punishment(
          jnp.asarray(lengths), max_response_length=sampling_config.max_new_tokens,
          overlong_buffer_len=rl_config.overlong_buffer, penalty_factor=rl_config.overlong_penalty))
    all_rewards.append(rewards)
    all_lengths.append(lengths)
    all_included.append(included)
    batch = dict(batch, completion_mask=batch["completion_mask"] * included[:, None].astype(
        batch["completion_mask"].dtype))
    grouped = rewards.reshape(-1, group_size)
    num_groups += len(grouped)
    keep = np.ones(len(grouped), bool)
    if rl_config.dynamic_sampling:
      keep = np.asarray(rl.groups_with_reward_variance(jnp.asarray(grouped),
                                                       jnp.asarray(included.reshape(-1, group_size))))
    for g in np.flatnonzero(keep):
      if len(kept) == groups_wanted:
        break
      rows_of_group = np.arange(g * group_size, (g + 1) * group_size)
      kept.append(rows.take_rows(batch, rows_of_group))
      kept_rewards.append(grouped[g])
      texts.extend(completions[r] for r in rows_of_group)
    metrics["rollout/rounds"] += 1
    if _on_every_process(len(kept) == groups_wanted):
      break
  failures.check()

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
  # Excluded samples and fillers have empty completion masks: they leave the group statistics.
  group_mask = np.stack([k["completion_mask"].any(axis=1) for k in kept])
  advantages = rl.get_advantage(rl_config.advantage)(jnp.asarray(grouped_rewards), jnp.asarray(group_mask))
  learner["advantages"] = np.asarray(advantages, np.float32).reshape(-1)

  included = np.concatenate(all_included)
  raw = np.concatenate(all_rewards)[included] if included.any() else np.zeros(1, np.float32)
  lengths = np.concatenate(all_lengths)
  metrics.update({
      "reward/mean": float(raw.mean()), "reward/std": float(raw.std()), "reward/max": float(raw.max()),
      "reward/excluded": float((~included).sum()),
      "response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
      "rollout/kept_group_frac": (len(kept) - filler) / max(1, num_groups),
      "rollout/filler_groups": float(filler),
      "perf/sample_s": t_sample, "perf/reward_s": t_reward,
      **failures.metrics(),
      **{f"reward/{name}": float(np.mean(values)) for name, values in component_sums.items() if values},
  })
  # The pipeline's cumulative counts (examples read, records skipped by reason), as SFT logs them.
  metrics.update({f"data/{k}": float(v) for k, v in prompts.get("data_stats", {}).items()})
  group_stats = rl.finalize_metrics(rl.group_metrics(jnp.asarray(grouped_rewards), jnp.asarray(group_mask)))
  metrics["rollout/zero_advantage_group_frac"] = float(group_stats["zero_advantage_group_frac"])
  return Rollout(batch=learner, rewards=grouped_rewards, metrics=metrics, completions=texts, samples=samples)


def _on_every_process(done: bool) -> bool:
  """True when `done` holds on every process: sampling is a collective, so all hosts draw the same
  number of rounds (one that has its groups samples along and keeps nothing more)."""
  if jax.process_count() == 1:
    return done
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.process_allgather(np.bool_(done)).all())


def _sample_records(completions: list[str], scores: scorer.BatchScores, included: np.ndarray) -> list[dict[str, Any]]:
  """JSON-ready records of the first samples of a step, with what the reward said about each."""
  errors = dict(scores.errors)
  status_names = {scorer.OK: "ok", scorer.ERROR: "error", scorer.TIMEOUT: "timeout"}
  return [{"completion": text, "reward": float(scores.totals[i]), "included": bool(included[i]),
           "status": status_names[int(scores.status[i])], "error": errors.get(i, ""),
           "components": {name: float(values[i]) for name, values in scores.components.items()},
           "info": scores.infos[i]} for i, text in enumerate(completions)]


class _Failures:
  """Counts a step's reward errors and timeouts, logs them, and enforces `reward.max_error_frac`."""

  def __init__(self, reward_config):
    self.name = reward_config.name or "reward"
    self.max_frac = float(reward_config.max_error_frac)
    self.timeout_s = reward_config.timeout_s
    self.errors = self.timeouts = self.samples = 0
    self.first: tuple[str, list[str]] | None = None  # (message, ground-truth fields of that sample)

  def add(self, scores: scorer.BatchScores, ground_truths) -> None:
    self.samples += len(scores.status)
    self.errors += scores.num_errors
    self.timeouts += scores.num_timeouts
    if self.first is None and scores.errors:
      index, message = scores.errors[0]
      self.first = (message, sorted(map(str, ground_truths[index])) if hasattr(ground_truths[index], "keys") else [])
    elif self.first is None and scores.num_timeouts:
      self.first = (f"timed out (config.reward.timeout_s={self.timeout_s})", [])

  def check(self) -> None:
    failed = self.errors + self.timeouts
    if not failed:
      return
    message, fields = self.first or ("", [])
    summary = (f"reward {self.name!r}: {failed} of {self.samples} samples were not scored this step "
               f"({self.errors} errors, {self.timeouts} timeouts); first: {message}")
    if failed > self.max_frac * self.samples:
      raise RewardFailureError(f"{summary}; ground-truth fields of that sample: {fields}. More than "
                               f"config.reward.max_error_frac={self.max_frac} of the samples failed, so the run "
                               "stops: check the ground truth against the recipe's schema (its module docstring)")
    _log.warning("%s (excluded from their groups)", summary)

  def metrics(self) -> dict[str, float]:
    return {"reward/errors": float(self.errors), "reward/timeouts": float(self.timeouts)}
