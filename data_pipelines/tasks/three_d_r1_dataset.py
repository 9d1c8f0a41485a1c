"""The 'three_d_r1' dataset: ScanQA / ScanRefer / Scene-30K records over point-cloud scenes
(three_d_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="three_d_r1", path="/data/scanqa/ScanQA_v1.0_train.json")
    config.data.scene_dir = "/data/scannet/points"     # <scene_id>.npy / _vert.npy / .ply
    config.data.view_selection = "learned"             # or "fixed" (top, front, side, orbit0)

`config.data.synthetic = 'train' | 'test'` writes the synthetic rooms (three_d_r1_synthetic.py) in
the same layouts under `synthetic_dir` and reads them back the same way. The view selector's
S_text uses the packaged all-MiniLM-L6-v2 in JAX (`config.data.text_embedder`, a folder; '' = the
package), on the CPU, loaded on the first record.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import three_d_r1, three_d_r1_synthetic

OPTIONS = dict(scene_dir="", prompt_style="released", view_selection="learned", num_views=4, num_orbit=5,
               view_image_size=56, view_weights=(0.3, 0.35, 0.35), text_embedder="",
               synthetic="", synthetic_items=0, synthetic_dir="", synthetic_test_size=100, teacher_error=0.5,
               num_boxes=3, num_colors=6)


@functools.cache
def _embedder(model_dir: str):
  from r1jax.rewards import judges  # pylint: disable=g-import-not-at-top  (JAX model: loaded on first use)
  return judges.resolve_text_embedder(model_dir, device="cpu")


@register_dataset("three_d_r1", options=OPTIONS)
def build_three_d_r1(cfg: DataConfig) -> DatasetSpec:
  """Records from `config.data.path` (+ scene_dir) or the synthetic rooms (module docstring)."""
  options: dict[str, Any] = dict(cfg.options)
  path, scene_dir = cfg.path, options["scene_dir"]
  if options["synthetic"]:
    split, items = options["synthetic"], options["synthetic_items"]
    if split not in three_d_r1_synthetic.SPLITS or items < 1 or not options["synthetic_dir"]:
      raise ValueError(f"config.data.synthetic={split!r} needs one of {three_d_r1_synthetic.SPLITS}, synthetic_items"
                       f" >= 1 (got {items}) and synthetic_dir (got {options['synthetic_dir']!r})")
    out = three_d_r1_synthetic.write_split(options["synthetic_dir"], split, items, seed=cfg.seed,
                                           test_size=options["synthetic_test_size"],
                                           teacher_error=options["teacher_error"], num_boxes=options["num_boxes"],
                                           num_colors=options["num_colors"])
    path, scene_dir = out["path"], out["scene_dir"]
  elif not path or not scene_dir:
    raise ValueError("dataset 'three_d_r1' needs config.data.path (ScanQA / ScanRefer / Scene-30K JSON or JSONL "
                     "records) and config.data.scene_dir (point clouds), or config.data.synthetic='train' | 'test'")
  if not os.path.isdir(scene_dir):
    raise FileNotFoundError(f"config.data.scene_dir={scene_dir!r} is not a folder")
  weights = tuple(float(w) for w in options["view_weights"])
  if len(weights) != 3:
    raise ValueError(f"config.data.view_weights={options['view_weights']!r} must be (text, coverage, image)")
  embedder = _embedder(options["text_embedder"]) if options["view_selection"] == "learned" else None
  selector = three_d_r1.ViewSelector(mode=options["view_selection"], num_views=options["num_views"], weights=weights,
                                     embed=None if embedder is None else embedder.embed,
                                     image_size=options["view_image_size"])
  return DatasetSpec(source=sources.file_source(path), to_example=functools.partial(
      three_d_r1.to_example, scene_dir=scene_dir, selector=selector, prompt_style=options["prompt_style"],
      num_orbit=options["num_orbit"]))
