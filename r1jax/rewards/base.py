"""The reward interface shared by every recipe, and the registry that names them.

A reward is a pure function

    reward(completion: str, ground_truth: Mapping[str, Any], **context) -> RewardResult

`completion` is the decoded model output (any string: rewards never raise on it).
`ground_truth` holds the dataset's own fields for the sample (see each recipe's docstring).
`context` carries what a reward needs beyond text: image sizes before/after `smart_resize`,
video duration, earlier zoom intervals, the rollout step, injected judges. Unknown context keys
are ignored so one trainer can pass the same context to every recipe.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol


@dataclasses.dataclass(frozen=True)
class RewardResult:
  """The score of one completion.

  Attributes:
    total: the scalar the advantage estimator sees.
    components: named float parts of the score (format, accuracy, parse status, ...),
      logged as per-component means. Every recipe documents its keys.
    info: free-form, non-numeric details (parsed answer, error text); not logged as metrics.
  """

  total: float
  components: Mapping[str, float] = dataclasses.field(default_factory=dict)
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class RewardFn(Protocol):

  def __call__(self, completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
    ...


_REGISTRY: dict[str, RewardFn] = {}
_REQUIRED_JUDGES: dict[str, tuple[str, ...]] = {}
_OPTIONAL_JUDGES: dict[str, tuple[str, ...]] = {}


def register(name: str, *, judges: tuple[str, ...] = (),
             optional_judges: tuple[str, ...] = ()) -> Callable[[RewardFn], RewardFn]:
  """Decorator registering a reward function under `name`.

  `judges` names the context keys of the judges the reward cannot score without (e.g. 3D-R1's
  "embedder"); the trainer builds them at start-up (`judges.judge_context`) and stops with an error
  saying how to provide one that is missing, instead of scoring every sample without it.
  `optional_judges` names judges the reward scores without (a term is then 0, e.g. InfiGUI-R1's
  sub-goal judge): provided ones are passed in the same way, a missing one is said at start-up.
  """

  def wrap(fn: RewardFn) -> RewardFn:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"reward {name!r} is registered twice")
    _REGISTRY[name] = fn
    _REQUIRED_JUDGES[name] = tuple(judges)
    _OPTIONAL_JUDGES[name] = tuple(optional_judges)
    return fn

  return wrap


def required_judges(name: str) -> tuple[str, ...]:
  """The judge context keys that the reward registered as `name` requires."""
  get(name)
  return _REQUIRED_JUDGES[name]


def optional_judges(name: str) -> tuple[str, ...]:
  """The judge context keys that the reward registered as `name` uses when they are provided."""
  get(name)
  return _OPTIONAL_JUDGES[name]


def get(name: str) -> RewardFn:
  """Returns the reward registered as `name` (importing all recipe modules first)."""
  from r1jax import rewards  # noqa: F401  (importing the package registers every recipe)

  if name not in _REGISTRY:
    raise KeyError(f"unknown reward {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  from r1jax import rewards  # noqa: F401

  return sorted(_REGISTRY)
