"""One RL rollout: sample G episodes per prompt, score them, and turn rewards into advantages.

    prompts --episode runner (r1jax.envs)--> trajectories --rewards (host worker pool)--> rewards
            --advantage estimator, per group--> advantages, with DAPO dynamic sampling and overlong shaping

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

from r1jax import frozen_judge, rl
from r1jax.envs.base import RewardSample
from r1jax.errors import RunStoppedError
from r1jax.rewards import scorer
from r1jax.train import rows

_log = logging.getLogger(__name__)


class RewardFailureError(RunStoppedError):
  """More of a step's samples failed to score than `reward.max_error_frac` allows."""


@dataclasses.dataclass
class Rollout:
  batch: dict[str, Any]  # the learner batch (host arrays), rows prompt-major
  rewards: np.ndarray  # [groups, group size] shaped rewards used for the advantages (0 off the group mask)
  metrics: dict[str, float]
  completions: list[str]  # the scored text of each sample of the kept groups
  samples: list[dict[str, Any]]  # per scored sample of the first prompt: text, scores, info, status, error


def collect_rollout(*, sample: Callable[[dict, jax.Array], Any], prompt_batches: Iterator[dict[str, Any]],
                    reward_fn, decode: Callable[[np.ndarray], list[str]], rl_config, sampling_config,
                    reward_config, rng: jax.Array, groups_wanted: int, pad_id: int,
                    judge_context: dict[str, Any] | None = None) -> Rollout:
  """Samples and scores prompt batches until `groups_wanted` prompts' groups are collected.

  Args:
    sample: (prompt batch, key) -> (learner batch of B*G rows with completion arrays, sampler
      stats). Multi-turn episodes (`r1jax.envs`) add `reward_samples` (`RewardSample`s), `turn_index`
      int [rows, completion_len] (the turn of each action token, -1 elsewhere) and
      `episode_failed` bool [rows] (an environment error or timeout: the row is masked).
    prompt_batches: the data iterator (each next() is B prompts).
    reward_fn: the registered reward; run through `scorer.score_batch` with a per-sample timeout.
    decode: completion token rows -> strings.
    judge_context: judges added to every sample's reward context (`rewards.judge_context`); a
      `FrozenModelJudge` is asked once for all of a round's samples first (`frozen_judge.judge_rollout`).

  Groups: the samples of one prompt (`prompt_id`) with the same `RewardSample.group`
  (single-turn: the G samples of a prompt). Advantages are computed per group, by group
  membership, never by row order; a row whose samples train different turns gets per-token advantages [rows, completion_len].

  A sample that is not scored (its reward raised or timed out) or that its reward masks (a `mask`
  component of 1, e.g. LOVE-R1's second zoom) is *excluded*: it is left out of its group's mean and
  std and of the loss (its tokens' completion mask zeroed), never counted as a reward of 0. Failures
  are counted (`reward/errors`, `reward/timeouts`), logged with the first message, and abort the
  run when more than `reward.max_error_frac` of a step's samples fail.

  Without dynamic sampling one prompt batch is used as is. With it, prompts none of whose groups
  has reward variance (over their included samples) are dropped and more batches are drawn, at
  most `rl.max_sampling_rounds` rounds; if the cap is hit, the batch is filled by repeating kept
  prompts with their completion masks zeroed (they add nothing to the loss) so the learner keeps
  one static shape.
  """
  group_size = sampling_config.num_samples
  kept: list[dict[str, Any]] = []  # per kept prompt: its rows and its groups
  metrics: dict[str, float] = {"rollout/rounds": 0.0}
  failures = _Failures(reward_config)
  component_sums: dict[str, list[float]] = {}
  all_rewards, all_lengths, all_included = [], [], []
  samples: list[dict[str, Any]] = []
  t_sample = t_reward = 0.0
  num_prompts = 0
  per_token = False
  for round_index in range(max(1, rl_config.max_sampling_rounds if rl_config.dynamic_sampling else 1)):
    prompts = next(prompt_batches)
    start = time.perf_counter()
    batch, sample_stats = sample(prompts, jax.random.fold_in(rng, round_index))
    t_sample += time.perf_counter() - start
    for key, value in sample_stats.items():
      metrics[key] = metrics.get(key, 0.0) + float(value)

    start = time.perf_counter()
    specs = batch.pop("reward_samples", None) or [RewardSample(row) for row in range(rows.num_rows(batch))]
    per_token |= any(spec.turns is not None for spec in specs)
    columns = _sample_columns(batch, specs)
    texts = _sample_texts(batch, specs, decode)
    contexts = [dict(batch["reward_context"][spec.row], **spec.context, **(judge_context or {})) for spec in specs]
    truths = [batch["ground_truth"][spec.row] for spec in specs]
    for key, count in frozen_judge.judge_rollout(judge_context, texts, truths, contexts).items():
      metrics[key] = metrics.get(key, 0.0) + count
    scores = scorer.score_batch(reward_fn, texts, truths, contexts, timeout_s=reward_config.timeout_s,
                                num_workers=reward_config.num_workers)
    t_reward += time.perf_counter() - start
    failures.add(scores, truths)
    included = (scores.status == scorer.OK) & (scores.components.get("mask", np.zeros(len(specs))) == 0)
    for name, values in scores.components.items():
      component_sums.setdefault(name, []).extend(np.asarray(values, np.float64)[scores.status == scorer.OK].tolist())
    if not samples:
      first = [i for i, spec in enumerate(specs) if spec.row < group_size]
      samples = _sample_records([texts[i] for i in first], scores, included, first)

    lengths = columns.sum(axis=1)
    rewards = np.asarray(scores.totals, np.float32)
    if rl_config.overlong_buffer > 0:
      rewards = rewards + np.asarray(rl.soft_overlong_punishment(
          jnp.asarray(lengths), max_response_length=sampling_config.max_new_tokens,
          overlong_buffer_len=rl_config.overlong_buffer, penalty_factor=rl_config.overlong_penalty))
    all_rewards.append(rewards)
    all_lengths.append(lengths)
    all_included.append(included)
    # Only the tokens of included samples stay in the loss.
    trained = np.zeros_like(np.asarray(batch["completion_mask"], bool))
    for i, spec in enumerate(specs):
      if included[i]:
        trained[spec.row] |= columns[i]
    batch = dict(batch, completion_mask=batch["completion_mask"] * trained.astype(batch["completion_mask"].dtype))

    # A prompt's rows are those with its `prompt_id` (without ids: G consecutive rows).
    prompt_of_row = np.asarray(batch["prompt_id"]) if "prompt_id" in batch else \
        np.arange(rows.num_rows(batch)) // group_size
    prompt_ids, first_rows = np.unique(prompt_of_row, return_index=True)
    num_prompts += len(prompt_ids)
    for prompt in prompt_ids[np.argsort(first_rows)]:
      prompt_rows = np.flatnonzero(prompt_of_row == prompt)
      local = {int(r): k for k, r in enumerate(prompt_rows)}  # row -> its index in the kept block
      groups: dict[str, list[int]] = {}
      for i, spec in enumerate(specs):
        if spec.row in local:
          groups.setdefault(spec.group, []).append(i)
      group_list = [[(rewards[i], bool(included[i]), local[specs[i].row], columns[i], texts[i]) for i in g]
                    for g in groups.values()]
      if rl_config.dynamic_sampling and not any(_has_variance(g) for g in group_list):
        continue
      if len(kept) < groups_wanted:
        kept.append({"rows": rows.take_rows(batch, prompt_rows), "groups": group_list})
    metrics["rollout/rounds"] += 1
    if _on_every_process(len(kept) == groups_wanted):
      break
  failures.check()

  filler = 0
  while len(kept) < groups_wanted:  # dynamic sampling hit its cap (or every group was flat)
    source = kept[filler % len(kept)] if kept else {
        "rows": rows.take_rows(batch, np.arange(group_size)),
        "groups": [[(0.0, False, r, np.zeros_like(trained[r]), "") for r in range(group_size)]]}
    kept.append({"rows": dict(source["rows"], completion_mask=np.zeros_like(source["rows"]["completion_mask"])),
                 "groups": [[(r, False, row, c, "") for r, _, row, c, _ in g] for g in source["groups"]]})
    filler += 1

  learner = rows.concat_rows([k["rows"] for k in kept], pad_id)
  block_start = np.cumsum([0] + [rows.num_rows(k["rows"]) for k in kept])
  flat_groups = [(block_start[p], g) for p, k in enumerate(kept) for g in k["groups"]]
  width = max(len(g) for _, g in flat_groups)
  grouped_rewards = np.zeros((len(flat_groups), width), np.float32)
  group_mask = np.zeros((len(flat_groups), width), bool)
  for j, (_, g) in enumerate(flat_groups):
    grouped_rewards[j, :len(g)] = [m[0] for m in g]
    group_mask[j, :len(g)] = [m[1] for m in g]
  advantages = np.asarray(rl.get_advantage(rl_config.advantage)(jnp.asarray(grouped_rewards),
                                                                 jnp.asarray(group_mask)), np.float32)
  if per_token:
    token_advantages = np.zeros(learner["completion_mask"].shape, np.float32)
    for j, (start, g) in enumerate(flat_groups):
      for k, (_, _, row, cols, _) in enumerate(g):
        token_advantages[start + row][cols] = advantages[j, k]
    learner["advantages"] = token_advantages
  else:  # one sample per row, over all its tokens
    row_advantages = np.zeros(rows.num_rows(learner), np.float32)
    for j, (start, g) in enumerate(flat_groups):
      for k, (_, _, row, _, _) in enumerate(g):
        row_advantages[start + row] = advantages[j, k]
    learner["advantages"] = row_advantages

  included = np.concatenate(all_included)
  raw = np.concatenate(all_rewards)[included] if included.any() else np.zeros(1, np.float32)
  lengths = np.concatenate(all_lengths)
  metrics.update({
      "reward/mean": float(raw.mean()), "reward/std": float(raw.std()), "reward/max": float(raw.max()),
      "reward/excluded": float((~included).sum()),
      "response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
      "rollout/kept_group_frac": (len(kept) - filler) / max(1, num_prompts),
      "rollout/filler_groups": float(filler),
      "perf/sample_s": t_sample, "perf/reward_s": t_reward,
      **failures.metrics(),
      **{f"reward/{name}": float(np.mean(values)) for name, values in component_sums.items() if values},
  })
  # The pipeline's cumulative counts (examples read, records skipped by reason), as SFT logs them.
  metrics.update({f"data/{k}": float(v) for k, v in prompts.get("data_stats", {}).items()})
  group_stats = rl.finalize_metrics(rl.group_metrics(jnp.asarray(grouped_rewards), jnp.asarray(group_mask)))
  metrics["rollout/zero_advantage_group_frac"] = float(group_stats["zero_advantage_group_frac"])
  return Rollout(batch=learner, rewards=grouped_rewards, metrics=metrics,
                 completions=[m[4] for _, g in flat_groups for m in g], samples=samples)


def _has_variance(group) -> bool:
  """The group's included rewards are not all equal (DAPO dynamic sampling keeps such groups)."""
  values = [reward for reward, included, *_ in group if included]
  return len(values) > 1 and max(values) > min(values)


def _sample_columns(batch: dict[str, Any], specs: list[RewardSample]) -> np.ndarray:
  """bool [samples, completion_len]: the completion tokens each sample trains."""
  mask = np.asarray(batch["completion_mask"]).astype(bool)
  failed = np.asarray(batch.get("episode_failed", np.zeros(len(mask), bool)))
  turn_index = batch.get("turn_index")
  out = np.zeros((len(specs), mask.shape[1]), bool)
  for i, spec in enumerate(specs):
    if failed[spec.row]:
      continue
    out[i] = mask[spec.row] if spec.turns is None else mask[spec.row] & np.isin(turn_index[spec.row], spec.turns)
  return out


def _sample_texts(batch: dict[str, Any], specs: list[RewardSample], decode) -> list[str]:
  """Each sample's completion text: its own, or the decoded completion of its row."""
  missing = [i for i, spec in enumerate(specs) if spec.completion is None]
  decoded = decode(np.asarray(batch["completion_ids"])[[specs[i].row for i in missing]]) if missing else []
  texts = [spec.completion for spec in specs]
  for i, text in zip(missing, decoded):
    texts[i] = text
  return texts


def _on_every_process(done: bool) -> bool:
  """True when `done` holds on every process: sampling is a collective, so all hosts draw the same
  number of rounds (one that has its groups samples along and keeps nothing more)."""
  if jax.process_count() == 1:
    return done
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.process_allgather(np.bool_(done)).all())


def _sample_records(completions: list[str], scores: scorer.BatchScores, included: np.ndarray,
                    indices: list[int]) -> list[dict[str, Any]]:
  """JSON-ready records of the first prompt's samples (`indices` into the step's samples), with
  what the reward said about each."""
  errors = dict(scores.errors)
  status_names = {scorer.OK: "ok", scorer.ERROR: "error", scorer.TIMEOUT: "timeout"}
  return [{"completion": text, "reward": float(scores.totals[i]), "included": bool(included[i]),
           "status": status_names[int(scores.status[i])], "error": errors.get(i, ""),
           "components": {name: float(values[i]) for name, values in scores.components.items()},
           "info": scores.infos[i]} for text, i in zip(completions, indices)]


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
