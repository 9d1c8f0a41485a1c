"""Built-in datasets: 'files' (JSON / JSONL / Parquet records) and 'scene3d' (multi-view QA)."""
from __future__ import annotations

import dataclasses
import functools
import json
import os

from data_pipelines import records, scenes, sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset


@register_dataset("files")
def build_files(cfg: DataConfig) -> DatasetSpec:
  """Records from `config.data.path` in the EasyR1/verl or ms-swift layout (records.py)."""
  if not cfg.path:
    raise ValueError("dataset 'files' needs config.data.path (file, folder, glob or list)")
  return DatasetSpec(source=sources.file_source(cfg.path),
                     to_example=functools.partial(records.to_example, options=cfg.layout))


@dataclasses.dataclass(frozen=True)
class SceneQA:
  """One question of one scene folder."""
  scene_dir: str
  qa_index: int


def _scene_dirs(root: str) -> list[str]:
  if os.path.isfile(os.path.join(root, "scene.json")):
    return [root]
  if not os.path.isdir(root):
    raise FileNotFoundError(f"config.data.path {root!r} is not a folder")
  found = sorted(os.path.join(root, d) for d in os.listdir(root)
                 if os.path.isfile(os.path.join(root, d, "scene.json")))
  if not found:
    raise FileNotFoundError(f"no scene folders (with scene.json) under {root!r}")
  return found


def _num_questions(scene_dir: str) -> int:
  """The scene's QA count; 1 for an unreadable scene.json so that the failure is counted then."""
  try:
    with open(os.path.join(scene_dir, "scene.json"), encoding="utf-8") as f:
      return len(json.load(f).get("qa", ()))
  except (OSError, ValueError, AttributeError):
    return 1


def scene_qa_to_example(record: SceneQA, *, num_views: int, view_strategy: str,
                        num_candidate_views: int, view_scorer: str, direction_weight: float,
                        layout: records.LayoutOptions) -> records.Example:
  """Loads the scene, picks its views for the question and builds the multi-image prompt."""
  scene = scenes.load_scene(record.scene_dir)
  question = ""
  if 0 <= record.qa_index < len(scene.qa):
    question = str(scene.qa[record.qa_index].get("question", ""))
  views = scenes.select_views(
      scene, num_views, view_strategy, question=question, num_candidates=num_candidate_views,
      scorer=scenes.get_view_scorer(view_scorer) if view_strategy == "scored" else None,
      direction_weight=direction_weight)
  return scenes.scene_example(scene, record.qa_index, views, system_prompt=layout.system_prompt,
                              prompt_template=layout.prompt_template)


@register_dataset("scene3d", options=dict(num_views=4, view_strategy="uniform",
                                          num_candidate_views=8, view_scorer="3d_r1",
                                          direction_weight=1.0))
def build_scene3d(cfg: DataConfig) -> DatasetSpec:
  """One example per QA entry of each scene folder under `config.data.path` (scenes.py).

  Options: num_views (k), view_strategy ('uniform' | 'farthest' | 'scored'),
  num_candidate_views (n for 'scored'), view_scorer (a registered scorer name),
  direction_weight (farthest-camera distance weight of the viewing direction).
  """
  qa = [SceneQA(d, i) for d in _scene_dirs(cfg.path) for i in range(_num_questions(d))]
  return DatasetSpec(source=qa, to_example=functools.partial(
      scene_qa_to_example, layout=cfg.layout, **cfg.options))
