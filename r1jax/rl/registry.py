"""A string-keyed registry, one instance per kind of RL building block.

Advantage estimators, policy losses, KL estimators and loss aggregations are each
looked up by the name a config gives (`config.adv_estimator = "rloo"`), so a recipe
chooses an algorithm without forking the trainer.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

FnT = TypeVar("FnT", bound=Callable)


class Registry(Generic[FnT]):
  """Maps names to functions of one kind; errors name the kind and list what exists."""

  def __init__(self, kind: str):
    self.kind = kind
    self._fns: dict[str, FnT] = {}

  def register(self, name: str) -> Callable[[FnT], FnT]:
    """Decorator registering a function under `name`; a second, different one is an error."""

    def wrap(fn: FnT) -> FnT:
      if name in self._fns and self._fns[name] is not fn:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._fns[name] = fn
      return fn

    return wrap

  def get(self, name: str) -> FnT:
    if name not in self._fns:
      raise KeyError(f"unknown {self.kind} {name!r}; registered: {self.names()}")
    return self._fns[name]

  def names(self) -> list[str]:
    return sorted(self._fns)

  def __contains__(self, name: object) -> bool:
    return name in self._fns
