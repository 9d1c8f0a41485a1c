"""The 'love_r1' dataset: LOVE-R1's released JSON / JSONL records (love_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="love_r1", path="train.json")
    config.data.video_dir = "/data/videos"   # relative 'path's resolve here ('' : next to the file)
    config.data.mode = "sft"                 # 'rl': step-1 prompts; 'sft': one example per CoT step
    config.data.overview_max_frames = 64     # frame budgets; 0 keeps the paper's rule

`config.data.path` takes what the 'files' dataset takes (a file, comma-separated files, a folder
or a glob). The synthetic long-video task (love_r1_synthetic.py) writes the same layout.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import love_r1, love_r1_synthetic


@dataclasses.dataclass(frozen=True)
class CotStep:
  """One SFT example of a CoT record: step 1 (the first assistant turn) or step 2."""
  raw: sources.RawRecord
  step: int


class CotSteps:
  """Mode 'sft': one entry per assistant turn of each record (1 or 2), read once at start.

  A record without assistant turns (or with more than two) keeps one entry, so that
  `love_r1.to_example` skips it and the skip is counted and named like any bad record.
  """

  def __init__(self, records):
    self._records = records
    self._entries: list[tuple[int, int]] = []
    for index in range(len(records)):
      raw = records[index]
      turns = love_r1.assistant_turns(raw.fields) if raw.fields is not None else []
      steps = 2 if len(turns) == 2 else 1
      self._entries += [(index, step) for step in range(1, steps + 1)]

  def __len__(self) -> int:
    return len(self._entries)

  def __getitem__(self, index: int) -> CotStep:
    record, step = self._entries[index]
    return CotStep(self._records[record], step)


OPTIONS = dict(mode="rl", video_dir="", prompt_style="released", overview_max_frames=0, overview_max_pixels=0,
               zoom_max_frames=0, zoom_max_pixels=0,
               # The synthetic task (love_r1_synthetic.py), written on first use into synthetic_dir.
               synthetic="", synthetic_items=0, synthetic_dir="", synthetic_test_size=200,
               synthetic_min_slots=6, synthetic_max_slots=15, synthetic_brief=False, imperfect_fraction=0.3)


@register_dataset("love_r1", options=OPTIONS)
def build_love_r1(cfg: DataConfig) -> DatasetSpec:
  """LOVE-R1 records from `config.data.path` (see data_pipelines/tasks/love_r1.py).

  Options: mode ('rl' | 'sft'), video_dir (where relative video paths resolve; '' = the data
  file's folder, else config.data.media_root), overview_max_frames, overview_max_pixels,
  zoom_max_frames, zoom_max_pixels (caps on the paper's frame rules; 0 = the paper's).
  """
  options: dict[str, Any] = dict(cfg.options)
  path = cfg.path
  if options["synthetic"]:
    path = _write_synthetic(cfg, options)
  elif not path:
    raise ValueError("dataset 'love_r1' needs config.data.path (the JSON / JSONL records) or "
                     "config.data.synthetic='train' | 'test' (the synthetic task)")
  if options["prompt_style"] not in love_r1.PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={options['prompt_style']!r} must be one of {love_r1.PROMPT_STYLES}")
  if options["mode"] not in love_r1.MODES:
    raise ValueError(f"config.data.mode={options['mode']!r} must be one of {love_r1.MODES}")
  budgets = love_r1.FrameBudgets.from_options(options)
  records = sources.file_source(path)
  source = CotSteps(records) if options["mode"] == "sft" else records
  return DatasetSpec(source=source, to_example=functools.partial(
      love_r1.to_example, mode=options["mode"],
      video_dir=options["video_dir"] or cfg.layout.media_root, budgets=budgets,
      prompt_style=options["prompt_style"]))


def _write_synthetic(cfg: DataConfig, options: dict[str, Any]) -> str:
  """Writes (or reuses) the synthetic split and returns its records file for the mode."""
  split, items = options["synthetic"], options["synthetic_items"]
  if split not in love_r1_synthetic.SPLITS or items < 1 or not options["synthetic_dir"]:
    raise ValueError(f"config.data.synthetic={split!r} needs one of {love_r1_synthetic.SPLITS}, "
                     f"synthetic_items >= 1 (got {items}) and synthetic_dir (got {options['synthetic_dir']!r})")
  task = love_r1_synthetic.LongVideoTask(min_slots=options["synthetic_min_slots"],
                                         max_slots=options["synthetic_max_slots"])
  out = love_r1_synthetic.write_split(options["synthetic_dir"], split, items, task=task, seed=cfg.seed,
                                      test_size=options["synthetic_test_size"],
                                      imperfect_fraction=options["imperfect_fraction"],
                                      brief=options["synthetic_brief"])
  return out["cot"] if options["mode"] == "sft" else out["rl"]
