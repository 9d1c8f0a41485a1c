"""What the synthetic task generators share: training items drawn apart from the held-out ones, and
reuse of a split already on disk (a generator writes its parameters next to its files, `params.json`,
and writes again only when they differ)."""
from __future__ import annotations

import json
from typing import Any, Callable, Collection, Hashable, TypeVar

import numpy as np

Item = TypeVar("Item")


def items_apart_from(num_items: int, rng_for: Callable[[int], np.random.Generator],
                     sample: Callable[[np.random.Generator], Item], held_out: Collection[Hashable],
                     key: Callable[[Item], Hashable] = lambda item: item) -> list[Item]:
  """Items 0 .. num_items - 1, item i drawn from `rng_for(i)` (so each is reproducible on its own) and
  drawn again from the same generator while `key(item)` is among the held-out ones."""
  items = []
  for index in range(num_items):
    rng = rng_for(index)
    item = sample(rng)
    while key(item) in held_out:
      item = sample(rng)
    items.append(item)
  return items


def written_with(params_path: str, params: dict[str, Any]) -> bool:
  """Whether `params_path` holds exactly `params` (compared as JSON: tuples read back as lists)."""
  try:
    with open(params_path, encoding="utf-8") as f:
      return json.load(f) == json.loads(json.dumps(params))
  except (OSError, ValueError):
    return False
