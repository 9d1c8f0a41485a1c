"""Environments: what happens between two model turns (`base`), run by the episode runner (`runner`).

Entry points: `get(name)(config, hooks)` builds the environment a config names (`config.env.name`);
`register(name)` adds one. A single-step recipe uses "single_turn".
"""
from __future__ import annotations

from typing import Callable

from r1jax.envs.base import (FAILED, Environment, Episode, Observation, RewardSample, Sample,  # noqa: F401
                             SingleTurn, Status, StepResult)

_REGISTRY: dict[str, Callable] = {"single_turn": lambda config, hooks: SingleTurn()}


def register(name: str):
  """Decorator: `factory(config, hooks) -> Environment` under `name` (the run's ConfigDict and its
  `train.loop.DataHooks`, through which an environment reads media from the data side)."""
  def wrap(factory):
    if name in _REGISTRY and _REGISTRY[name] is not factory:
      raise ValueError(f"environment {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory
  return wrap


def get(name: str) -> Callable:
  """The factory of environment `name`; raises naming the known ones."""
  _import_registrations()
  if name not in _REGISTRY:
    raise ValueError(f"unknown environment config.env.name={name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def _import_registrations() -> None:
  from r1jax.envs import love_r1  # noqa: F401  pylint: disable=g-import-not-at-top
