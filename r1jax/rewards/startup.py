"""The judges a recipe's reward requires, built when a run starts.

A reward registers the context keys of the judges it cannot score without
(`register(name, judges=(...))`). `judge_context` builds each of them from `config.reward` before
the first step, so a missing model stops the run at once with how to get it, instead of every
sample scoring without it. The loop passes the stage's frozen models (`config.frozen`,
`r1jax.frozen`) as `provided`: a judge key that names one gets that model. A judge r1jax cannot
build from config (an LLM judge behind a client the user writes) is passed in the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from r1jax.errors import RunStoppedError
from r1jax.rewards import base, judges, xiangqi_engine


class MissingJudgeError(RunStoppedError):
  """A reward requires a judge that is neither provided nor buildable from the config."""


# Context key -> builder from config.reward.
_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "embedder": lambda reward_config: judges.resolve_text_embedder(reward_config.get("text_embedder", "")),
    # Fairy-Stockfish when installed, else the built-in searcher; never missing, it logs which.
    "xiangqi_judge": lambda reward_config: xiangqi_engine.default_judge(),
}


def judge_context(reward_name: str, reward_config, provided: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """{context key: judge} for every judge `reward_name` requires; raises MissingJudgeError naming the
  recipe, the judge and how to provide it when one cannot be had."""
  provided = dict(provided or {})
  out = {}
  for key in base.required_judges(reward_name):
    if key in provided:
      out[key] = provided[key]
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
