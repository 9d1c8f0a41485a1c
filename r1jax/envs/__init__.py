"""Environments: what happens between two model turns (`base`), run by the episode runner (`runner`).

Entry points: `build(config, hooks, frozen)` builds the environment a config names
(`config.env.name`); `register(name, frozen=(...))` adds one. A single-step recipe uses "single_turn".
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from r1jax.envs.base import (FAILED, Environment, Episode, Observation, RewardSample, Sample,  # noqa: F401
                             SingleTurn, Status, StepResult)

_REGISTRY: dict[str, Callable] = {"single_turn": lambda config, hooks: SingleTurn()}
_FROZEN: dict[str, tuple[str, ...]] = {}


def register(name: str, *, frozen: tuple[str, ...] = ()):
  """Decorator: `factory(config, hooks) -> Environment` under `name` (the run's ConfigDict and its
  `train.loop.DataHooks`, through which an environment reads media from the data side).

  `frozen` names the frozen models (`config.frozen.<name>`, `r1jax.frozen`) the environment cannot
  run without; its factory then takes them as a third argument, {name: FrozenModel}, and a run
  whose config lacks one stops at start-up naming the config key.
  """
  def wrap(factory):
    if name in _REGISTRY and _REGISTRY[name] is not factory:
      raise ValueError(f"environment {name!r} is registered twice")
    _REGISTRY[name] = factory
    _FROZEN[name] = tuple(frozen)
    return factory
  return wrap


def get(name: str) -> Callable:
  """The factory of environment `name`; raises naming the known ones."""
  _import_registrations()
  if name not in _REGISTRY:
    raise ValueError(f"unknown environment config.env.name={name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def required_frozen(name: str) -> tuple[str, ...]:
  """The frozen models environment `name` registered as required."""
  get(name)
  return _FROZEN.get(name, ())


def build(config, hooks, frozen: Mapping[str, Any] | None = None) -> Environment:
  """The environment of `config.env.name`, given the frozen models it registered (`register`)."""
  from r1jax import frozen as frozen_lib  # pylint: disable=g-import-not-at-top  (frozen imports the trainer)
  name = config.env.name
  factory, needed = get(name), required_frozen(name)
  if not needed:
    return factory(config, hooks)
  return factory(config, hooks, frozen_lib.require(frozen or {}, needed, f"environment {name!r}"))


def _import_registrations() -> None:
  from r1jax.envs import love_r1, omni_r1  # noqa: F401  pylint: disable=g-import-not-at-top
