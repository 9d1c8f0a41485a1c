"""Multi-view 3D scenes: loading, view selection, and the multi-image prompt.

Scene folder layout (ScanNet's export layout plus one JSON):

    scene0000_00/
      color/000000.jpg ...    view images; any PIL-readable suffix, sorted by name
      pose/000000.txt ...     4x4 camera-to-world matrix per view, same stem as the image
                              (views with a non-finite pose, as ScanNet has, are dropped)
      intrinsic.txt           3x3 or 4x4 colour-camera intrinsics (ScanNet's
                              intrinsic/intrinsic_color.txt is read when this is absent)
      scene.json              {"boxes": [{"label": "chair", "box": [x1, y1, z1, x2, y2, z2]}],
                               "qa": [{"question": "...", "answer": "...", ...}, ...]}

Boxes are axis-aligned, in world coordinates. Every QA entry becomes one example; keys of a QA
entry other than 'question' go to the ground truth, and the scene's boxes are added as 'boxes'
(3D-R1's perception reward compares predicted boxes against them).

View selection, `select_views(scene, k, strategy, ...)`:
* 'uniform': k views evenly spaced in capture order.
* 'farthest': greedy farthest-point sampling over cameras (position distance plus
  `direction_weight` * (1 - cos) of the viewing directions), for coverage.
* 'scored': 3D-R1's dynamic selection: `num_candidates` views by farthest sampling, each scored
  by a `ViewScorer`, the top k kept (in capture order). Scorers are registered by name.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import PIL.Image

from data_pipelines import errors
from data_pipelines.records import Example

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class Scene:
  """A loaded scene (metadata only; images stay on disk).

  Attributes:
    path: the scene folder.
    image_paths: one per valid view, in capture (name) order.
    camera_to_world: float64 [num_views, 4, 4].
    intrinsics: float64 [3, 3].
    image_size: (height, width) of the views (read from the first image's header).
    boxes: [{'label': str, 'box': [x1, y1, z1, x2, y2, z2]}].
    qa: the scene's question entries.
  """
  path: str
  image_paths: tuple[str, ...]
  camera_to_world: np.ndarray
  intrinsics: np.ndarray
  image_size: tuple[int, int]
  boxes: tuple[dict[str, Any], ...]
  qa: tuple[dict[str, Any], ...]

  @property
  def num_views(self) -> int:
    return len(self.image_paths)

  @property
  def camera_centers(self) -> np.ndarray:
    """float64 [num_views, 3] camera positions in world coordinates."""
    return self.camera_to_world[:, :3, 3]

  @property
  def view_directions(self) -> np.ndarray:
    """float64 [num_views, 3] unit optical axes (camera +z) in world coordinates."""
    axes = self.camera_to_world[:, :3, 2]
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def _bad(where: str, message: str) -> errors.BadExampleError:
  return errors.BadExampleError(errors.BAD_MEDIA, where, message)


def _read_matrix(path: str) -> np.ndarray:
  try:
    return np.loadtxt(path, dtype=np.float64, ndmin=2)
  except (OSError, ValueError) as e:
    raise _bad(path, f"cannot read matrix: {e}") from e


@functools.lru_cache(maxsize=16)  # QA entries of one scene are usually neighbours
def load_scene(path: str) -> Scene:
  """Reads a scene folder (see the module docstring).

  Raises:
    BadExampleError: BAD_MEDIA naming the missing/invalid file.
  """
  color_dir, pose_dir = os.path.join(path, "color"), os.path.join(path, "pose")
  if not os.path.isdir(color_dir):
    raise _bad(path, "scene has no color/ folder")
  intrinsic_file = os.path.join(path, "intrinsic.txt")
  if not os.path.isfile(intrinsic_file):
    intrinsic_file = os.path.join(path, "intrinsic", "intrinsic_color.txt")
  intrinsics = _read_matrix(intrinsic_file)
  if intrinsics.shape not in ((3, 3), (4, 4)):
    raise _bad(intrinsic_file, f"intrinsics must be 3x3 or 4x4, got {intrinsics.shape}")
  image_paths, poses = [], []
  for name in sorted(os.listdir(color_dir)):
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in _IMAGE_SUFFIXES:
      continue
    pose = _read_matrix(os.path.join(pose_dir, stem + ".txt"))
    if pose.shape != (4, 4):
      raise _bad(os.path.join(pose_dir, stem + ".txt"), f"pose must be 4x4, got {pose.shape}")
    if np.all(np.isfinite(pose)):
      image_paths.append(os.path.join(color_dir, name))
      poses.append(pose)
  if not image_paths:
    raise _bad(path, "scene has no view with an image and a finite pose")
  scene_file = os.path.join(path, "scene.json")
  try:
    with open(scene_file, encoding="utf-8") as f:
      annotations = json.load(f)
    with PIL.Image.open(image_paths[0]) as first:
      width, height = first.size
  except errors.MEDIA_ERRORS + (ValueError,) as e:
    raise errors.media_error(scene_file if isinstance(e, ValueError) else path, e) from e
  return Scene(path=path, image_paths=tuple(image_paths), camera_to_world=np.stack(poses),
               intrinsics=intrinsics[:3, :3], image_size=(height, width),
               boxes=tuple(annotations.get("boxes", ())), qa=tuple(annotations.get("qa", ())))


def box_centers(boxes: Sequence[dict[str, Any]]) -> np.ndarray:
  """float64 [num_boxes, 3] centres of [x1, y1, z1, x2, y2, z2] boxes."""
  corners = np.asarray([b["box"] for b in boxes], np.float64).reshape(-1, 6)
  return (corners[:, :3] + corners[:, 3:]) / 2


def visible(scene: Scene, view_indices: Sequence[int], points: np.ndarray) -> np.ndarray:
  """bool [len(view_indices), num_points]: the point projects inside the view, in front of it."""
  world_to_camera = np.linalg.inv(scene.camera_to_world[list(view_indices)])
  homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
  camera = np.einsum("vij,pj->vpi", world_to_camera, homogeneous)[..., :3]
  depth = camera[..., 2]
  pixels = np.einsum("ij,vpj->vpi", scene.intrinsics, camera)
  with np.errstate(divide="ignore", invalid="ignore"):
    u, v = pixels[..., 0] / depth, pixels[..., 1] / depth
  height, width = scene.image_size
  return (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def select_uniform(num_views: int, k: int) -> np.ndarray:
  """k view indices evenly spread in capture order (all views when k >= num_views)."""
  if k >= num_views:
    return np.arange(num_views)
  return np.unique(np.round(np.linspace(0, num_views - 1, k)).astype(np.int64))


def select_farthest(scene: Scene, k: int, candidates: Sequence[int] | None = None,
                    direction_weight: float = 1.0) -> np.ndarray:
  """Greedy farthest-camera sampling; returns sorted indices.

  Starts from the candidate farthest from the candidates' mean position, then repeatedly adds
  the camera whose distance to the chosen set is largest. Distance = |c_i - c_j| +
  direction_weight * (1 - cos(angle between optical axes)).
  """
  candidates = np.arange(scene.num_views) if candidates is None else np.asarray(candidates)
  if k >= len(candidates):
    return np.sort(candidates)
  centers = scene.camera_centers[candidates]
  directions = scene.view_directions[candidates]
  distance = (np.linalg.norm(centers[:, None] - centers[None], axis=-1)
              + direction_weight * (1 - directions @ directions.T))
  chosen = [int(np.argmax(np.linalg.norm(centers - centers.mean(0), axis=1)))]
  to_chosen = distance[chosen[0]].copy()
  while len(chosen) < k:
    nxt = int(np.argmax(to_chosen))
    chosen.append(nxt)
    to_chosen = np.minimum(to_chosen, distance[nxt])
  return np.sort(candidates[chosen])


class ViewScorer(Protocol):
  """Scores candidate views of a scene for a question: higher is better.

  Returns float [len(view_indices)].
  """

  def __call__(self, scene: Scene, view_indices: np.ndarray, question: str) -> np.ndarray:
    ...


_VIEW_SCORERS: dict[str, Callable[..., ViewScorer]] = {}


def register_view_scorer(name: str):
  """Decorator registering a factory `(**kwargs) -> ViewScorer` under `name`."""

  def wrap(factory):
    if name in _VIEW_SCORERS and _VIEW_SCORERS[name] is not factory:
      raise ValueError(f"view scorer {name!r} is registered twice")
    _VIEW_SCORERS[name] = factory
    return factory

  return wrap


def get_view_scorer(name: str, **kwargs) -> ViewScorer:
  if name not in _VIEW_SCORERS:
    raise KeyError(f"unknown view scorer {name!r}; registered: {sorted(_VIEW_SCORERS)}")
  return _VIEW_SCORERS[name](**kwargs)


def coverage_scores(scene: Scene, view_indices: np.ndarray) -> np.ndarray:
  """Fraction of the scene's box centres each view sees (0 for a scene without boxes)."""
  if not scene.boxes:
    return np.zeros(len(view_indices))
  return visible(scene, view_indices, box_centers(scene.boxes)).mean(axis=1)


def text_relevance_scores(scene: Scene, view_indices: np.ndarray, question: str) -> np.ndarray:
  """Fraction of the boxes whose label the question mentions that each view sees.

  Falls back to `coverage_scores` when the question names no labelled object.
  """
  mentioned = [b for b in scene.boxes if str(b.get("label", "")).lower() in question.lower()]
  if not mentioned:
    return coverage_scores(scene, view_indices)
  return visible(scene, view_indices, box_centers(mentioned)).mean(axis=1)


@register_view_scorer("coverage")
def coverage_scorer() -> ViewScorer:
  """Scores a view by the fraction of the scene's objects it sees."""
  return lambda scene, view_indices, question: coverage_scores(scene, view_indices)


@register_view_scorer("3d_r1")
@dataclasses.dataclass(frozen=True)
class ThreeDR1ViewScorer:
  """3D-R1's view score: w_text * relevance + w_coverage * coverage + w_image * similarity.

  Relevance and coverage are geometric here (visibility of the objects the question names, and
  of all objects). `image_text_similarity(image_paths, question) -> float [n]` is an injected
  model (3D-R1 uses CLIP); without one its term is 0, which keeps the ranking of the other two.
  """
  text_weight: float = 0.3
  coverage_weight: float = 0.35
  image_weight: float = 0.35
  image_text_similarity: Callable[[Sequence[str], str], np.ndarray] | None = None

  def __call__(self, scene: Scene, view_indices: np.ndarray, question: str) -> np.ndarray:
    score = (self.text_weight * text_relevance_scores(scene, view_indices, question)
             + self.coverage_weight * coverage_scores(scene, view_indices))
    if self.image_text_similarity is not None:
      paths = [scene.image_paths[i] for i in view_indices]
      score = score + self.image_weight * np.asarray(
          self.image_text_similarity(paths, question), np.float64)
    return score


def select_views(scene: Scene, k: int, strategy: str = "uniform", *, question: str = "",
                 num_candidates: int = 8, scorer: ViewScorer | None = None,
                 direction_weight: float = 1.0) -> np.ndarray:
  """Chooses k views; returns sorted view indices (see the module docstring)."""
  if k < 1:
    raise ValueError(f"number of views must be >= 1, got {k}")
  if strategy == "uniform":
    return select_uniform(scene.num_views, k)
  if strategy == "farthest":
    return select_farthest(scene, k, direction_weight=direction_weight)
  if strategy == "scored":
    if scorer is None:
      raise ValueError("view strategy 'scored' needs a scorer")
    candidates = select_farthest(scene, max(k, num_candidates),
                                 direction_weight=direction_weight)
    scores = np.asarray(scorer(scene, candidates, question), np.float64)
    if scores.shape != (len(candidates),):
      raise ValueError(f"view scorer returned shape {scores.shape} for {len(candidates)} views")
    top = np.argsort(-scores, kind="stable")[:k]
    return np.sort(candidates[top])
  raise ValueError(f"unknown view strategy {strategy!r}; expected 'uniform', 'farthest' or "
                   "'scored'")


def scene_example(scene: Scene, qa_index: int, view_indices: Sequence[int], *,
                  system_prompt: str = "", prompt_template: str = "{content}") -> Example:
  """The multi-image prompt for one QA entry: the chosen views, then the question."""
  where = f"{scene.path}:qa {qa_index}"
  if not 0 <= qa_index < len(scene.qa):
    raise errors.BadExampleError(errors.MISSING_FIELD, where,
                                 f"scene has {len(scene.qa)} QA entries")
  qa = scene.qa[qa_index]
  question = qa.get("question")
  if not question:
    raise errors.BadExampleError(errors.MISSING_FIELD, where,
                                 f"QA entry has no 'question' (keys: {sorted(qa)})")
  view_indices = [int(i) for i in view_indices]
  content = [{"type": "image"} for _ in view_indices]
  content.append({"type": "text", "text": prompt_template.replace("{content}", question)})
  messages = [{"role": "user", "content": content}]
  if system_prompt:
    messages.insert(0, {"role": "system", "content": system_prompt})
  ground_truth = {k: v for k, v in qa.items() if k != "question"}
  ground_truth.setdefault("answer", None)
  ground_truth["boxes"] = [dict(b) for b in scene.boxes]
  return Example(
      id=str(qa.get("id", where)), where=where, messages=messages,
      images=[scene.image_paths[i] for i in view_indices],
      ground_truth=ground_truth, data_type="multi_view",
      context={"view_indices": view_indices,
               "camera_to_world": scene.camera_to_world[view_indices],
               "intrinsics": scene.intrinsics})
