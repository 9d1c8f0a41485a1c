"""The 'satori_r1' dataset: VQA-Verify records (satori_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="satori_r1", path="/data/vqa_verify/train.jsonl")
    config.data.image_dir = "/data/vqa_verify"   # relative image paths resolve here ('' : next to the file)
    config.data.image.min_pixels = 200704       # SATORI's smart_resize limits (satori_r1.MIN_PIXELS, MAX_PIXELS)
    config.data.image.max_pixels = 401408

`config.data.path` takes what the 'files' dataset takes (a file, comma-separated files, a folder or
a glob of JSON / JSONL / Parquet). `config.data.synthetic = 'train' | 'test'` writes the synthetic
task (satori_r1_synthetic.py) in the same layout under `synthetic_dir` and reads it back the same
way; the RL and SFT stages read the same 'train' records (SFT learns their assistant turns).
"""
from __future__ import annotations

import functools
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import satori_r1, satori_r1_synthetic

OPTIONS = dict(image_dir="", prompt_style="released",
               # The synthetic task, written on first use into synthetic_dir.
               synthetic="", synthetic_items=0, synthetic_dir="", synthetic_test_size=200, teacher_error=0.5,
               image_size=84, grid_size=3, num_objects=3, num_colors=6, jitter=1)


@register_dataset("satori_r1", options=OPTIONS)
def build_satori_r1(cfg: DataConfig) -> DatasetSpec:
  """VQA-Verify records from `config.data.path` or the synthetic task (see the module docstring).

  Options: image_dir (where relative image paths resolve; '' = the data file's folder, else
  config.data.media_root), prompt_style ('released': SATORI's prompt.txt; 'short'), synthetic,
  synthetic_items, synthetic_dir, synthetic_test_size, teacher_error and the SatoriTask fields
  (image_size, grid_size, num_objects, num_colors, jitter).
  """
  options: dict[str, Any] = dict(cfg.options)
  path = cfg.path
  if options["synthetic"]:
    path = _write_synthetic(cfg, options)
  elif not path:
    raise ValueError("dataset 'satori_r1' needs config.data.path (VQA-Verify JSON / JSONL / Parquet records) or "
                     "config.data.synthetic='train' | 'test' (the synthetic task)")
  if options["prompt_style"] not in satori_r1.PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={options['prompt_style']!r} must be one of {satori_r1.PROMPT_STYLES}")
  return DatasetSpec(source=sources.file_source(path), to_example=functools.partial(
      satori_r1.to_example, image_dir=options["image_dir"] or cfg.layout.media_root,
      prompt_style=options["prompt_style"]))


def _write_synthetic(cfg: DataConfig, options: dict[str, Any]) -> str:
  """Writes (or reuses) the synthetic split and returns its JSONL."""
  split, items = options["synthetic"], options["synthetic_items"]
  if split not in satori_r1_synthetic.SPLITS or items < 1 or not options["synthetic_dir"]:
    raise ValueError(f"config.data.synthetic={split!r} needs one of {satori_r1_synthetic.SPLITS}, "
                     f"synthetic_items >= 1 (got {items}) and synthetic_dir (got {options['synthetic_dir']!r})")
  task = satori_r1_synthetic.SatoriTask(**{key: options[key] for key in (
      "image_size", "grid_size", "num_objects", "num_colors", "jitter")})
  out = satori_r1_synthetic.write_split(options["synthetic_dir"], split, items, task=task, seed=cfg.seed,
                                        test_size=options["synthetic_test_size"],
                                        teacher_error=options["teacher_error"])
  return out["path"]
