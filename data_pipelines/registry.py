"""Datasets registered by name and configured by `config.data`.

A dataset is a builder `(DataConfig) -> DatasetSpec`: a random-access source of raw records
plus the function that turns one raw record into an `Example`. Everything after that (media
decoding, tokenisation, shuffling, sharding, batching) is shared by all datasets.

    @register_dataset("my_task", options={"difficulty": 1})
    def build_my_task(cfg: DataConfig) -> DatasetSpec:
      return DatasetSpec(source=MyRecords(cfg.path), to_example=functools.partial(
          my_record_to_example, difficulty=cfg.options["difficulty"]))

`options` declares extra `config.data` keys with their defaults; unknown keys stay errors.
`source` and `to_example` are pickled into the grain worker processes, so they must be
module-level functions, `functools.partial`s of them, or picklable objects.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipelines import config as config_lib


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset builder returns.

  Attributes:
    source: random-access raw records (`__len__`, `__getitem__`), picklable.
    to_example: raw record -> `records.Example`; raises `errors.BadExampleError` for a record
      that must be skipped (naming it), any other exception is a bug and propagates.
  """
  source: Sequence[Any]
  to_example: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class _Entry:
  builder: Callable[[config_lib.DataConfig], DatasetSpec]
  options: Mapping[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, *, options: Mapping[str, Any] | None = None):
  """Decorator registering a dataset builder under `name` with its extra config keys."""
  options = dict(options or {})
  clashes = sorted(set(options) & set(config_lib.default_config().keys()))
  if clashes:
    raise ValueError(f"dataset {name!r} options {clashes} clash with common config.data keys")

  def wrap(builder):
    entry = _Entry(builder, options)
    if name in _REGISTRY and _REGISTRY[name].builder is not builder:
      raise ValueError(f"dataset {name!r} is registered twice")
    _REGISTRY[name] = entry
    return builder

  return wrap


def _import_registrations() -> None:
  """Imports the modules that register datasets (built-ins, then tasks/ if present)."""
  importlib.import_module("data_pipelines.datasets")
  try:
    importlib.import_module("data_pipelines.tasks")
  except ModuleNotFoundError as e:
    if e.name != "data_pipelines.tasks":
      raise


def _entry(name: str) -> _Entry:
  _import_registrations()
  if name not in _REGISTRY:
    raise KeyError(f"unknown dataset config.data.name={name!r}; registered: {names()}")
  return _REGISTRY[name]


def get_dataset(name: str) -> Callable[[config_lib.DataConfig], DatasetSpec]:
  """Returns the builder registered as `name`."""
  return _entry(name).builder


def dataset_options(name: str) -> Mapping[str, Any]:
  """The extra `config.data` keys (with defaults) dataset `name` accepts."""
  return _entry(name).options


def names() -> list[str]:
  _import_registrations()
  return sorted(_REGISTRY)


def build(data_config) -> tuple[config_lib.DataConfig, DatasetSpec]:
  """Validates `config.data` (a ConfigDict, dict or DataConfig) and builds its dataset."""
  if not isinstance(data_config, config_lib.DataConfig):
    data_config = config_lib.from_config(data_config)
  return data_config, get_dataset(data_config.name)(data_config)
