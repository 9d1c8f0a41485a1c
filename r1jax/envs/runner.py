"""The episode runner: samples G episodes per prompt, turn by turn, with an environment between turns.

    prompts --prefill/decode--> actions --env.step--> observations --extend/decode--> actions ...

Every row of the sampler is one episode. After each turn the actions are decoded and handed to
the environment (worker threads, `env.timeout_s` per step); an episode it continues gets its
observation appended to the row's cache (`Sampler.extend`: token-in/token-out, the sampled tokens
are kept as sampled and the observation is tokenised once as a chat-template delta). When every
episode has ended, each row becomes one learner row: the prompt, then its actions and
observations in order (`Trajectory`), with an action mask so that observation tokens never
enter the loss.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Any, Callable, Sequence

import jax
import numpy as np

from r1jax.envs.base import FAILED, Environment, Episode, RewardSample, Status, StepResult
from r1jax.envs.observations import ObservationEncoder
from r1jax.rewards import scorer
from r1jax import sharding
from r1jax.sampling import Prompt, PromptBatch, SamplingControls, bucket_length

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trajectory:
  """One row's completion region: actions and observations in order.

  Attributes:
    actions: per turn, (tokens int32 [n], sampler log-probs float32 [n]), the stop token included.
    observations: per continued turn, the observation `Prompt` (tokens and vision inputs).
  """

  actions: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
  observations: list[Prompt] = dataclasses.field(default_factory=list)

  def segments(self):
    """(kind, tokens, log-probs or None, prompt or None) in order: action, observation, action, ..."""
    for turn, (tokens, logprobs) in enumerate(self.actions):
      yield "action", tokens, logprobs, None
      if turn < len(self.observations):
        yield "observation", self.observations[turn].input_ids, None, self.observations[turn]

  def __len__(self) -> int:
    """Tokens of the completion region (actions and observations)."""
    return sum(len(tokens) for _, tokens, _, _ in self.segments())


@dataclasses.dataclass
class Episodes:
  """What one call of the runner produced, rows prompt-major (row = prompt * G + g)."""

  episodes: list[Episode]
  trajectories: list[Trajectory]
  prompts: PromptBatch  # the left-padded prompts the rows continue
  completion_width: int  # the learner's completion columns (`completion_columns`)
  stats: dict[str, float]


def _log_failures(episodes: Sequence[Episode]) -> None:
  """One warning per call naming how many episodes failed and the first error (also in `episode/*`)."""
  failed = [e for e in episodes if e.status in FAILED or e.status == Status.CONTEXT_LIMIT]
  if failed:
    first = failed[0]
    _log.warning("episodes: %d of %d ended without finishing (%s); first: %s: %s", len(failed), len(episodes),
                 ", ".join(f"{s.value}={sum(e.status == s for e in failed)}" for s in Status
                           if any(e.status == s for e in failed)),
                 first.status.value, first.error or "step ran past env.timeout_s")


def status_counts(episodes: Sequence[Episode]) -> dict[str, float]:
  """`episode/<status>`: how many episodes ended each way."""
  return {f"episode/{status.value}": float(sum(e.status == status for e in episodes)) for status in Status}


def completion_width(env: Environment, max_new_tokens: int) -> int:
  """The most columns a trajectory can take after the prompt: every turn's budget and every observation's."""
  return env.max_turns * max_new_tokens + (env.max_turns - 1) * env.max_observation_tokens


def completion_columns(trajectories: Sequence[Trajectory], full_width: int) -> int:
  """The learner's completion columns: the longest trajectory's length (of any process: their rows
  form one batch), bucketed (`bucket_length`), at most `full_width`.

  So the learner runs over the columns some row uses, in a few shapes (one compile each), not
  always over every turn's whole budget.
  """
  longest = int(sharding.process_values([max(map(len, trajectories), default=0)]).max())
  return min(bucket_length(max(longest, 1)), full_width)


class EpisodeRunner:
  """Runs episodes of `env` for prompt batches (see the module docstring).

  Args:
    sampler: the policy's `Sampler` (single-process mesh for multi-turn environments).
    env: the environment; `SingleTurn` for single-step recipes.
    controls: sampling controls of every turn.
    decode: token rows -> texts (the actions the environment reads).
    encoder: turns observations into tokens; required when `env.max_turns > 1`.
    num_workers: threads running environment steps.
  """

  def __init__(self, sampler, env: Environment, controls: SamplingControls, decode: Callable[[np.ndarray], list[str]],
               encoder: ObservationEncoder | None = None, num_workers: int = 4):
    if env.max_turns < 1:
      raise ValueError(f"environment {type(env).__name__} has max_turns={env.max_turns}; it must be >= 1")
    if env.max_turns > 1 and encoder is None:
      raise ValueError(f"environment {type(env).__name__} has {env.max_turns} turns: the runner needs an "
                       "ObservationEncoder to tokenise its observations")
    self.sampler, self.env, self.controls, self.decode, self.encoder = sampler, env, controls, decode, encoder
    self.num_workers = num_workers

  def __call__(self, params, prompts: Sequence[Prompt], contexts: Sequence[dict], ground_truths: Sequence[Any], *,
               num_samples: int, key: jax.Array, forced_prefix: tuple[np.ndarray, str] | None = None) -> Episodes:
    """Runs G episodes of every prompt.

    `forced_prefix` (token ids, text): appended to every prompt, so every first action starts
    with it (e.g. LOVE-R1's answer prefix for a no-zoom baseline); the environment and the
    reward see the text in front of the sampled action. A context's own `forced_prefix` text
    (e.g. LOVE-R1's grounding records) is already at the end of its prompt's tokens (the data
    pipeline appends it) and is put in front of that prompt's first actions the same way; the
    two cannot be combined.
    """
    own = [c.get("forced_prefix", "") for c in contexts]
    if forced_prefix is not None and any(own):
      raise ValueError("a forced_prefix was given for prompts that carry their own context['forced_prefix'] "
                       f"({sum(map(bool, own))} of {len(own)})")
    if forced_prefix is not None:
      ids, _ = forced_prefix
      prompts = [dataclasses.replace(p, input_ids=np.concatenate([np.asarray(p.input_ids), ids]).astype(np.int32))
                 for p in prompts]
    rows = len(prompts) * num_samples
    env, max_new = self.env, self.controls.max_new_tokens
    repeat = lambda values: [values[r // num_samples] for r in range(rows)]
    episodes = [Episode(context=c) for c in repeat(list(contexts))]
    for episode, truth in zip(episodes, repeat(list(ground_truths))):
      episode.state = env.reset(episode.context, truth)
    trajectories = [Trajectory() for _ in range(rows)]
    multi_turn = env.max_turns > 1
    prefilled = self.sampler.prefill(params, prompts, num_samples=num_samples, max_new_tokens=max_new)
    first_prompts = prefilled.prompts
    active = np.ones(rows, bool)
    stats = {"episode/turns": 0.0}
    for turn in range(env.max_turns):
      out = self.sampler.decode(params, prefilled, key=jax.random.fold_in(key, turn), controls=self.controls,
                                keep_cache=multi_turn and turn + 1 < env.max_turns)
      tokens, logprobs, lengths = (np.asarray(x) for x in (out.tokens, out.logprobs, out.lengths))
      texts = self.decode(tokens[active])
      for row, text in zip(np.flatnonzero(active), texts):
        if turn == 0:
          text = (forced_prefix[1] if forced_prefix is not None else own[row // num_samples]) + text
        trajectories[row].actions.append((tokens[row, :lengths[row]].copy(), logprobs[row, :lengths[row]].copy()))
        episodes[row].actions.append(text)
      if turn == 0:
        stats["rollout/truncated_frac"] = float(np.mean(~np.asarray(out.finished)))
      stats["episode/turns"] += float(active.sum()) / rows
      observations = self._step(episodes, trajectories, active, turn)
      active = np.array([o is not None for o in observations])
      if not active.any():
        break
      prefilled = self.sampler.extend(params, out.continuation, observations, max_new_tokens=max_new)
    stats.update(status_counts(episodes))
    _log_failures(episodes)
    full_width = completion_width(env, max_new) if multi_turn else max_new
    return Episodes(episodes, trajectories, first_prompts, completion_columns(trajectories, full_width), stats)

  def _step(self, episodes: list[Episode], trajectories: list[Trajectory], active: np.ndarray,
            turn: int) -> list[Prompt | None]:
    """Steps the active episodes; returns the observation of each row that continues, else None."""
    env = self.env
    rows = np.flatnonzero(active)
    if getattr(env, "batched", False):  # duck-typed environments step one episode at a time
      outcomes = self._step_batch([episodes[r] for r in rows], turn)
    else:
      with concurrent.futures.ThreadPoolExecutor(max(1, min(self.num_workers, len(rows)))) as pool:
        outcomes = list(pool.map(lambda r: scorer.call_with_timeout(env.step, env.timeout_s, episodes[r], turn),
                                 rows))
    observations: list[Prompt | None] = [None] * len(episodes)
    for row, (status, value) in zip(rows, outcomes):
      episode = episodes[row]
      if status == scorer.TIMEOUT:
        episode.status = Status.TIMEOUT
        continue
      if status == scorer.ERROR or not isinstance(value, StepResult):
        episode.status = Status.ENV_ERROR
        episode.error = (f"{type(value).__name__}: {value}" if status == scorer.ERROR
                         else f"step returned {type(value).__name__}, not a StepResult")
        continue
      episode.infos.append(dict(value.info))
      if value.done:
        episode.status = Status.DONE
      elif turn + 1 >= env.max_turns:
        episode.status = Status.MAX_TURNS
      else:
        try:
          observation = self.encoder.encode(value.observation, int(trajectories[row].actions[-1][0][-1]))
        except Exception as error:  # noqa: BLE001  (a bad observation ends its episode, counted)
          episode.status, episode.error = Status.ENV_ERROR, f"observation: {type(error).__name__}: {error}"
          continue
        if len(observation.input_ids) > env.max_observation_tokens:
          episode.status = Status.CONTEXT_LIMIT
          episode.error = (f"observation of {len(observation.input_ids)} tokens > max_observation_tokens="
                           f"{env.max_observation_tokens}")
          continue
        trajectories[row].observations.append(observation)
        observations[row] = observation
    return observations


  def _step_batch(self, episodes: list[Episode], turn: int) -> list[tuple[int, Any]]:
    """(status, StepResult or error) per episode from one `env.step_batch` call; an error, a
    timeout or a wrong number of results is every episode's outcome."""
    env = self.env
    status, value = scorer.call_with_timeout(env.step_batch, env.timeout_s, episodes, turn)
    if status == scorer.OK and (not isinstance(value, (list, tuple)) or len(value) != len(episodes)):
      status, value = scorer.ERROR, ValueError(
          f"step_batch returned {len(value) if isinstance(value, (list, tuple)) else type(value).__name__} results "
          f"for {len(episodes)} episodes")
    return list(zip([status] * len(episodes), value)) if status == scorer.OK else [(status, value)] * len(episodes)


def reward_fields(episodes: Episodes, env: Environment) -> dict[str, Any]:
  """The rollout's per-sample fields of multi-turn episodes (`train.rollout.collect_rollout`).

  Returns:
    turn_index: int32 [rows, completion_width]: the turn of each action token, -1 elsewhere.
    episode_failed: bool [rows]: an environment error or timeout (the row is masked).
    reward_samples: `RewardSample`s from `env.samples` of every episode that did not fail; an
      episode whose `samples` raises fails with ENV_ERROR.
  """
  rows = len(episodes.trajectories)
  turn_index = np.full((rows, episodes.completion_width), -1, np.int32)
  samples = []
  for row, (episode, trajectory) in enumerate(zip(episodes.episodes, episodes.trajectories)):
    column = 0
    for turn, (tokens, _) in enumerate(trajectory.actions):
      turn_index[row, column:column + len(tokens)] = turn
      column += len(tokens) + (len(trajectory.observations[turn].input_ids) if turn < len(trajectory.observations)
                               else 0)
    if episode.status in FAILED:
      continue
    try:
      samples += [RewardSample(row, sample) for sample in env.samples(episode)]
    except Exception as error:  # noqa: BLE001  (counted and masked like a failed step)
      episode.status, episode.error = Status.ENV_ERROR, f"samples: {type(error).__name__}: {error}"
  failed = np.array([e.status in FAILED for e in episodes.episodes])
  episodes.stats.update(status_counts(episodes.episodes))
  return {"turn_index": turn_index, "episode_failed": failed, "reward_samples": samples}
