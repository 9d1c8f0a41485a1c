"""The 'omni_r1' dataset: ReVOS / MeViS split folders (omni_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="omni_r1", path="/data/ReVOS")
    config.data.mode = "rl"            # 'rl': the policy's prompts; 'sft': + the records' `answer`;
                                       # 'detail': the detail model's SFT records (detail.json)
    config.data.with_detail = True     # mode 'sft': the detail records too (one model learns both
                                       # systems; the frozen reference is then the detail system)
    config.data.max_frames = 24        # frames the policy sees (linspace over the video)
    config.data.time_labels = False    # True: one-second clips, each followed by its start second as text
    config.data.policy_max_pixels = 128 * 28 * 28   # per policy frame (the paper's)
    config.data.detail_max_pixels = 28 * 28 * 1280  # the detail model's keyframe (Qwen2.5-VL's default)

`config.data.synthetic='train' | 'test'` writes the synthetic shapes task (omni_r1_synthetic.py)
under `synthetic_dir` on first use and reads it back with the same reader. In mode 'detail' the
images are resized by `config.data.image.max_pixels` / `min_pixels`, which must equal the detail
bounds (checked); so in mode 'sft' with `with_detail`.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import omni_r1, omni_r1_synthetic

OPTIONS = dict(mode="rl", expressions="", with_detail=False, max_frames=24, max_objects=1, prompt_style="released",
               time_labels=False,
               policy_max_pixels=128 * 28 * 28, policy_min_pixels=0, detail_max_pixels=28 * 28 * 1280,
               detail_min_pixels=56 * 56,
               # The synthetic task (omni_r1_synthetic.py), written on first use into synthetic_dir.
               synthetic="", synthetic_items=0, synthetic_dir="", synthetic_test_size=100, imperfect_fraction=0.4)


@register_dataset("omni_r1", options=OPTIONS)
def build_omni_r1(cfg: DataConfig) -> DatasetSpec:
  """Omni-R1 records from the split folder `config.data.path` (see data_pipelines/tasks/omni_r1.py)."""
  options: dict[str, Any] = dict(cfg.options)
  if options["mode"] not in omni_r1.MODES:
    raise ValueError(f"config.data.mode={options['mode']!r} must be one of {omni_r1.MODES}")
  if options["prompt_style"] not in omni_r1.PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={options['prompt_style']!r} must be one of {omni_r1.PROMPT_STYLES}")
  path = cfg.path
  if options["synthetic"]:
    path = _write_synthetic(cfg, options)
  elif not path:
    raise ValueError("dataset 'omni_r1' needs config.data.path (a ReVOS / MeViS split folder) or "
                     "config.data.synthetic='train' | 'test' (the synthetic task)")
  detail_bounds = dict(min_pixels=options["detail_min_pixels"], max_pixels=options["detail_max_pixels"])
  detail = functools.partial(omni_r1.detail_example, **{f"detail_{k}": v for k, v in detail_bounds.items()})
  with_detail = options["mode"] == "detail" or (options["mode"] == "sft" and options["with_detail"])
  if with_detail:
    given = dict(min_pixels=cfg.image_min_pixels, max_pixels=cfg.image_max_pixels)
    if given != detail_bounds:
      raise ValueError(f"config.data.mode={options['mode']!r} with detail records resizes their images by "
                       f"config.data.image {given}, which must equal the detail bounds config.data.detail_min_pixels "
                       f"/ detail_max_pixels {detail_bounds}")
  detail_file = os.path.join(path, "detail.json") if os.path.isdir(path) else path
  if options["mode"] == "detail":
    return DatasetSpec(source=sources.file_source(detail_file), to_example=detail)
  expressions = omni_r1.ExpressionSource(path, options["expressions"])
  to_example = functools.partial(
      omni_r1.to_example, mode=options["mode"], max_frames=options["max_frames"],
      max_objects=options["max_objects"], policy_max_pixels=options["policy_max_pixels"],
      policy_min_pixels=options["policy_min_pixels"], prompt_style=options["prompt_style"],
      time_labels=bool(options["time_labels"]),
      **{f"detail_{k}": v for k, v in detail_bounds.items()})
  if not with_detail:
    return DatasetSpec(source=expressions, to_example=to_example)
  return DatasetSpec(source=sources.ConcatSource([expressions, sources.file_source(detail_file)]),
                     to_example=functools.partial(omni_r1.either_example, expression=to_example, detail=detail))


def _write_synthetic(cfg: DataConfig, options: dict[str, Any]) -> str:
  split, items = options["synthetic"], options["synthetic_items"]
  if split not in omni_r1_synthetic.SPLITS or items < 1 or not options["synthetic_dir"]:
    raise ValueError(f"config.data.synthetic={split!r} needs one of {omni_r1_synthetic.SPLITS}, synthetic_items >= 1 "
                     f"(got {items}) and synthetic_dir (got {options['synthetic_dir']!r})")
  out = omni_r1_synthetic.write_split(options["synthetic_dir"], split, items, seed=cfg.seed,
                                      test_size=options["synthetic_test_size"],
                                      imperfect_fraction=options["imperfect_fraction"])
  return out["dir"]
