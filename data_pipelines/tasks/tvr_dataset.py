"""The 'star_tvr' dataset: synthetic TVR pairs (tvr.py) as an unlimited, seeded grain source.

    config.data = data_pipelines.default_config(name="star_tvr", split="train")
    config.data.cross_view_fraction = 0.5        # any star_tvr option below

Splits (`config.data.split`):
* 'train': 2**31 - 1 records; record i is drawn from (config.data.seed, i) alone, so any
  order, shard or worker count sees the same records. A pair equal to a held-out one (same
  objects, changes and view) is redrawn, so the held-out splits stay unseen.
* 'test_in_view', 'test_cross_view': the first `test_size` records of two fixed sequences that do
  not depend on config.data.seed; record i of a split is the same for every test_size. Evaluate
  them with shuffle=False, num_epochs=1.

Records use the EasyR1 layout of records.py, so `system_prompt` and `prompt_template` apply;
'response' is the SFT target. `write_split` stores a split as JSONL + PNG files, readable with the
'files' dataset.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np

from data_pipelines import records
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.sources import RawRecord
from data_pipelines.tasks import tvr

SPLITS = ("train", "test_in_view", "test_cross_view")
TRAIN_SIZE = 2 ** 31 - 1
# First entropy word of each split's seed sequence: the splits draw from disjoint streams.
_SPLIT_TAGS = {"train": 0x7476_7200, "test_in_view": 0x7476_7201, "test_cross_view": 0x7476_7202}
_TEST_SEED = 0  # held-out splits are fixed: they ignore config.data.seed


def _rng(split: str, seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index])


def held_out_transformation(split: str, index: int, task: tvr.TvrTask) -> tvr.Transformation:
  """Record `index` of a held-out split, before rendering."""
  return tvr.sample_transformation(_rng(split, _TEST_SEED, index), task,
                                   cross_view=split == "test_cross_view")


class TvrSource:
  """Random-access TVR records of one split (picklable; records are generated on access).

  Returns `RawRecord`s whose fields are `tvr.example_record`'s, with 'id' = 'star_tvr/split/i'.
  """

  def __init__(self, split: str, *, task: tvr.TvrTask = tvr.TvrTask(), seed: int = 0,
               test_size: int = 200, cross_view_fraction: float = 0.5):
    if split not in SPLITS:
      raise ValueError(f"config.data.split={split!r} must be one of {SPLITS}")
    if test_size < 1:
      raise ValueError(f"config.data.test_size={test_size} must be >= 1")
    if not 0 <= cross_view_fraction <= 1:
      raise ValueError(f"config.data.cross_view_fraction={cross_view_fraction} must be in [0, 1]")
    self.split, self.task, self.seed = split, task, seed
    self.test_size, self.cross_view_fraction = test_size, cross_view_fraction
    self._held_out = frozenset()
    if split == "train":
      self._held_out = frozenset(held_out_transformation(s, i, task).key
                                 for s in SPLITS[1:] for i in range(test_size))

  def __len__(self) -> int:
    return TRAIN_SIZE if self.split == "train" else self.test_size

  def transformation(self, index: int) -> tvr.Transformation:
    """Record `index` before rendering."""
    if not 0 <= index < len(self):
      raise IndexError(f"star_tvr {self.split} index {index} out of range [0, {len(self)})")
    if self.split != "train":
      return held_out_transformation(self.split, index, self.task)
    rng = _rng(self.split, self.seed, index)
    cross_view = bool(rng.random() < self.cross_view_fraction)
    while True:
      transformation = tvr.sample_transformation(rng, self.task, cross_view=cross_view)
      if transformation.key not in self._held_out:
        return transformation

  def __getitem__(self, index: int) -> RawRecord:
    example_id = f"star_tvr/{self.split}/{index}"
    fields = tvr.example_record(self.transformation(index), self.task, example_id)
    return RawRecord(fields, where=example_id, base_dir="")


# Only the prompt text's wrapping is configurable; the record keys are this module's.
_LAYOUT_KEYS = dict(layout="easyr1", prompt_key="problem", answer_key="answer",
                    image_key="images", video_key="videos")


@register_dataset("star_tvr", options=dict(
    split="train", test_size=200, cross_view_fraction=0.5,
    **{field.name: field.default for field in dataclasses.fields(tvr.TvrTask)}))
def build_star_tvr(cfg: DataConfig) -> DatasetSpec:
  """Synthetic STAR-R1 TVR pairs (see the module docstring and tvr.py).

  Options: split ('train' | 'test_in_view' | 'test_cross_view'), test_size (held-out records),
  cross_view_fraction (of train records), and every `tvr.TvrTask` field (image_size, grid_size,
  min_objects, max_objects, attributes, num_colors, change_counts, views, max_shift,
  max_jitter_deg).
  """
  options = dict(cfg.options)
  task = tvr.TvrTask(**{field.name: options.pop(field.name)
                        for field in dataclasses.fields(tvr.TvrTask)})
  source = TvrSource(options["split"], task=task, seed=cfg.seed, test_size=options["test_size"],
                     cross_view_fraction=options["cross_view_fraction"])
  layout = dataclasses.replace(cfg.layout, **_LAYOUT_KEYS)
  return DatasetSpec(source=source,
                     to_example=functools.partial(records.to_example, options=layout))


def write_split(path: str, split: str, num_examples: int, *, task: tvr.TvrTask = tvr.TvrTask(),
                seed: int = 0, cross_view_fraction: float = 0.5) -> str:
  """Writes the first `num_examples` records of `split` as `path/<split>.jsonl` + PNG files.

  Images go to `path/images/<split>_<i>_{initial,final}.png` and the JSONL names them relative
  to itself, so the file reads back with the 'files' dataset. Held-out splits give the records
  the 'star_tvr' dataset gives (for test_size >= num_examples); 'train' those of `seed`.

  Returns:
    The JSONL path.
  """
  source = TvrSource(split, task=task, seed=seed, test_size=max(num_examples, 1),
                     cross_view_fraction=cross_view_fraction)
  if not 0 < num_examples <= len(source):
    raise ValueError(f"num_examples={num_examples} must be in [1, {len(source)}]")
  os.makedirs(os.path.join(path, "images"), exist_ok=True)
  jsonl_path = os.path.join(path, f"{split}.jsonl")
  with open(jsonl_path, "w", encoding="utf-8") as f:
    for index in range(num_examples):
      fields: dict[str, Any] = dict(source[index].fields)
      names = [os.path.join("images", f"{split}_{index}_{which}.png")
               for which in ("initial", "final")]
      for name, png in zip(names, fields["images"], strict=True):
        with open(os.path.join(path, name), "wb") as image_file:
          image_file.write(png)
      fields["images"] = names
      f.write(json.dumps(fields) + "\n")
  return jsonl_path
