"""The judges a recipe's reward requires, built when a run starts.

A reward registers the context keys of the judges it cannot score without
(`register(name, judges=(...))`). `judge_context` builds each of them from `config.reward` before
the first step, so a missing model stops the run at once with how to get it, instead of every
sample scoring without it. The loop passes the stage's frozen models (`config.frozen`,
`r1jax.frozen`) as `provided`: a judge key that names one gets that model, or the judge a recipe
builds from it (`register_frozen_judge`). A judge r1jax cannot
build from config (an LLM judge behind a client the user writes) is passed in the same way.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from r1jax.errors import RunStoppedError
from r1jax import frozen
from r1jax.rewards import base, three_d_r1, xiangqi_engine

_log = logging.getLogger(__name__)


class MissingJudgeError(RunStoppedError):
  """A reward requires a judge that is neither provided nor buildable from the config."""


# Context key -> builder from config.reward.
_BUILDERS: dict[str, Callable[[Any], Any]] = {
    # 3D-R1's semantic term (its only user): the embedding model loaded at start-up on the default
    # device and asked once per rollout (`three_d_r1.SemanticJudge`).
    "embedder": lambda reward_config: three_d_r1.SemanticJudge.from_config(reward_config),
    # Fairy-Stockfish when installed, else the built-in searcher; never missing, it logs which.
    "xiangqi_judge": lambda reward_config: xiangqi_engine.default_judge(),
}
# Context key -> (frozen model, config.reward) -> judge: how a recipe turns the frozen model of that
# name (`config.frozen.<key>`) into its judge, e.g. a `frozen_judge.FrozenModelJudge` with its template.
_FROZEN_BUILDERS: dict[str, Callable[[frozen.FrozenModel, Any], Any]] = {}


def register_frozen_judge(key: str, factory: Callable[[frozen.FrozenModel, Any], Any]) -> None:
  """Makes `factory(frozen model, config.reward)` the judge under context key `key` whenever the
  run's frozen model `key` is provided (`judge_context`)."""
  if key in _FROZEN_BUILDERS and _FROZEN_BUILDERS[key] is not factory:
    raise ValueError(f"a frozen-model judge builder for {key!r} is registered twice")
  _FROZEN_BUILDERS[key] = factory


def frozen_model_judges(reward_name: str) -> tuple[str, ...]:
  """The judges `reward_name` requires that config.reward cannot build: in a run, frozen models
  (`config.frozen.<key>`)."""
  return tuple(key for key in base.required_judges(reward_name) if key not in _BUILDERS)


def judge_context(reward_name: str, reward_config, provided: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """{context key: judge} for every judge `reward_name` requires; raises MissingJudgeError naming the
  recipe, the judge and how to provide it when one cannot be had."""
  provided = dict(provided or {})
  out = {}
  for key in base.optional_judges(reward_name):  # used when provided; without one its term is 0, said here once
    if key in provided:
      out[key] = _from_provided(key, provided[key], reward_config)
    else:
      _log.warning("reward %r: no %r judge (neither config.frozen.%s.init_from nor one passed in): its term "
                   "scores 0 in this run", reward_name, key, key)
  for key in base.required_judges(reward_name):
    if key in provided:
      out[key] = _from_provided(key, provided[key], reward_config)
      continue
    builder = _BUILDERS.get(key)
    if builder is None:
      raise MissingJudgeError(f"reward {reward_name!r} requires the judge {key!r}, which r1jax cannot build from "
                              f"config.reward: set config.frozen.{key}.init_from to a local HF folder (a frozen "
                              "model judge), or pass it in the reward context")
    try:
      out[key] = builder(reward_config)
    except (FileNotFoundError, ValueError) as e:
      raise MissingJudgeError(f"reward {reward_name!r} requires the judge {key!r}: {e}") from e
  return out


def _from_provided(key: str, judge: Any, reward_config) -> Any:
  """A provided judge as the reward gets it: a frozen model through its recipe's builder, if any."""
  builder = _FROZEN_BUILDERS.get(key)
  return builder(judge, reward_config) if builder is not None and isinstance(judge, frozen.FrozenModel) else judge
