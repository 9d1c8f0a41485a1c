"""The environment protocol: what happens between two model turns of an episode.

An episode starts from one sampled prompt row. After every turn (the model's action, its sampled
tokens decoded to text) the runner calls `Environment.step`; the environment either ends the
episode or returns an observation (text plus images or video clips) that the runner appends to
the row's cache before the next turn (`r1jax.envs.runner`). When the episode ends, the
environment says which turns train as which reward samples (`Environment.samples`): a single
sample over all turns (trajectory credit), or one per turn with its own reward context and group
(LOVE-R1's decoupled steps).

A single-turn recipe is an environment with one turn (`SingleTurn`): one runner, one code path.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Sequence


class Status(str, enum.Enum):
  """How an episode ended (counted per step in the `episode/*` metrics)."""

  DONE = "done"  # the environment ended it
  MAX_TURNS = "max_turns"  # still running after the environment's last allowed turn
  CONTEXT_LIMIT = "context_limit"  # an observation did not fit the row's budget
  ENV_ERROR = "env_error"  # `step` raised: the episode's rows are masked
  TIMEOUT = "timeout"  # `step` ran past `env.timeout_s`: the episode's rows are masked


# Statuses whose episodes never enter the loss or the group statistics.
FAILED = (Status.ENV_ERROR, Status.TIMEOUT)


@dataclasses.dataclass(frozen=True)
class Observation:
  """What the environment shows the model before its next turn: one user message.

  Attributes:
    content: HF chat content items, e.g. [{"type": "text", "text": "Subset zoom-in video clip
      [3, 9]:"}, {"type": "video"}]; the i-th image / video item refers to images[i] / videos[i].
    images: uint8 [H, W, 3] arrays (or PIL images), in item order.
    videos: uint8 [T, H, W, 3] frame stacks, in item order.
    video_fps: frames per second of each video (sets its M-RoPE time axis).
    max_pixels: per-frame / per-image pixel cap for the processor (None: its default).
  """

  content: Sequence[Mapping[str, Any]]
  images: Sequence[Any] = ()
  videos: Sequence[Any] = ()
  video_fps: Sequence[float] = ()
  max_pixels: int | None = None


@dataclasses.dataclass(frozen=True)
class StepResult:
  """The environment's answer to one action: end the episode, or show an observation."""

  done: bool
  observation: Observation | None = None
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.done and self.observation is None:
      raise ValueError("a StepResult that continues the episode (done=False) needs an observation")


@dataclasses.dataclass(frozen=True)
class Sample:
  """One reward sample of an ended episode.

  Attributes:
    turns: the indices of the actions whose tokens this sample trains (and whose advantage they get).
    completion: the text the reward scores.
    context: added to the prompt's reward context for this sample (e.g. LOVE-R1's `step`).
    group: samples of one prompt with the same group form one advantage group (default: all).
  """

  turns: tuple[int, ...]
  completion: str
  context: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  group: str = "episode"


@dataclasses.dataclass
class Episode:
  """One row's episode as the runner records it.

  Attributes:
    context: the prompt's reward context (ground truth under "ground_truth").
    actions: the decoded text of each turn.
    infos: each `StepResult.info`.
    status: how it ended (None while running).
    error: the exception message of an ENV_ERROR.
    state: the environment's own per-episode state (`Environment.reset`).
  """

  context: Mapping[str, Any]
  actions: list[str] = dataclasses.field(default_factory=list)
  infos: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
  status: Status | None = None
  error: str = ""
  state: Any = None


class Environment:
  """Base class: a single-turn environment; multi-step recipes override `step` and `samples`.

  Attributes:
    max_turns: the most model turns of an episode.
    max_observation_tokens: the most tokens one observation may add (its vision tokens
      included); a longer one ends the episode with CONTEXT_LIMIT. It fixes the learner row's
      width, so the learner compiles once.
    timeout_s: wall-clock limit of one `step` call (of one `step_batch` call when batched).
    batched: the runner calls `step_batch` once per turn for all the episodes still running,
      instead of `step` per episode on worker threads: a step that runs a frozen model
      (`r1jax.frozen`) calls it once for the whole batch, on device.
  """

  max_turns: int = 1
  max_observation_tokens: int = 0
  timeout_s: float = 30.0
  batched: bool = False

  def reset(self, context: Mapping[str, Any], ground_truth: Any) -> Any:
    """A new episode's state from its prompt's reward context and ground truth."""
    del context, ground_truth
    return None

  def step(self, episode: Episode, turn: int) -> StepResult:
    """Reacts to `episode.actions[turn]`; called from a worker thread, under `timeout_s`."""
    del episode, turn
    return StepResult(done=True)

  def step_batch(self, episodes: Sequence[Episode], turn: int) -> list[StepResult]:
    """Reacts to every running episode's `actions[turn]` at once (`batched` environments); one
    StepResult per episode, in order. Called from the runner's thread, under `timeout_s`: an
    error or a timeout fails every episode of the call."""
    return [self.step(episode, turn) for episode in episodes]

  def samples(self, episode: Episode) -> list[Sample]:
    """The reward samples of an ended episode: by default one that scores the last action and
    trains every turn. The first sample is the episode's headline in evaluation."""
    return [Sample(turns=tuple(range(len(episode.actions))), completion=episode.actions[-1])]

  def episode_metrics(self, episode: Episode) -> dict[str, float]:
    """Evaluation metrics of an ended episode beyond its reward (averaged over the episodes
    that report them)."""
    del episode
    return {}


class SingleTurn(Environment):
  """One prompt, one completion, one reward: the environment of every single-step recipe."""


@dataclasses.dataclass(frozen=True)
class RewardSample:
  """A reward sample of a learner row (`batch["reward_samples"]`; default: one per row).

  Attributes:
    row: the learner row whose tokens it trains.
    sample: an ended episode's `Sample` (the turns it trains, its text, context and group);
      None: the row's whole completion, decoded, in the prompt's one group.
  """

  row: int
  sample: Sample | None = None

  @property
  def turns(self) -> tuple[int, ...] | None:
    return None if self.sample is None else tuple(self.sample.turns)

  @property
  def completion(self) -> str | None:
    return None if self.sample is None else self.sample.completion

  @property
  def context(self) -> dict[str, Any]:
    return {} if self.sample is None else dict(self.sample.context)

  @property
  def group(self) -> str:
    return "episode" if self.sample is None else self.sample.group
