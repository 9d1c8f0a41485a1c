"""The 'longvila_r1' dataset: LongVideo-Reason JSON / JSONL records (longvila_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="longvila_r1", path="train.jsonl")
    config.data.video_dir = "/data/LongVideo-Reason"  # relative 'videos' resolve here ('' : next to the file)
    config.data.mode = "sft"                          # 'rl': prompts; 'sft': prompt + CoT target
    config.data.nframes = 512                         # uniform frames over the whole video
    config.data.frame_pixels = 448 * 448              # every frame's pixel budget, fixed per run

`config.data.path` takes what the 'files' dataset takes (a file, comma-separated files, a folder
or a glob).
"""
from __future__ import annotations

import functools

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import longvila_r1

OPTIONS = dict(mode="rl", video_dir="", nframes=32, frame_pixels=224 * 224)


@register_dataset("longvila_r1", options=OPTIONS)
def build_longvila_r1(cfg: DataConfig) -> DatasetSpec:
  """LongVideo-Reason records from `config.data.path` (see data_pipelines/tasks/longvila_r1.py).

  Options: mode ('rl' | 'sft'), video_dir (where relative video paths resolve; '' = the data file's folder, else
  config.data.media_root), nframes (frames per video), frame_pixels (pixels per frame).
  """
  if not cfg.path:
    raise ValueError("dataset 'longvila_r1' needs config.data.path (the JSON / JSONL records)")
  if cfg.options["mode"] not in longvila_r1.MODES:
    raise ValueError(f"config.data.mode={cfg.options['mode']!r} must be one of {longvila_r1.MODES}")
  frames = longvila_r1.sampling(cfg.options["nframes"], cfg.options["frame_pixels"])
  return DatasetSpec(source=sources.file_source(cfg.path), to_example=functools.partial(
      longvila_r1.to_example, mode=cfg.options["mode"], video_dir=cfg.options["video_dir"] or cfg.layout.media_root,
      frames=frames))
