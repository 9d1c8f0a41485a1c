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


# --- Point-cloud scenes (ScanNet / ScanQA exports as .ply or .npy) and their rendered camera views ---
#
# 3D-R1 sees a scene as images rendered from its point cloud: candidate cameras around the scene (a
# top, a front and a side camera, and `num_orbit` orbit cameras, all at 1.5 x the norm of the
# scene's size from its centre, looking at the centre), of which the view selector
# (r1jax/view_selection.py) keeps the best 4 for the question.

# An empty, non-finite or flat cloud is bad media (skipped and counted under that reason); the
# message says "degenerate point cloud".
DEGENERATE_CLOUD = "degenerate point cloud"
VIEW_DISTANCE = 1.5  # cameras stand 1.5 * ||scene size|| from the centre (issue 22)


@dataclasses.dataclass(frozen=True)
class PointCloud:
  """A coloured point cloud. xyz: float32 [N, 3] (world units, z up); rgb: uint8 [N, 3]."""
  xyz: np.ndarray
  rgb: np.ndarray

  @property
  def center(self) -> np.ndarray:
    """float64 [3]: the centre of the axis-aligned bounds."""
    return (self.xyz.min(0).astype(np.float64) + self.xyz.max(0)) / 2

  @property
  def size(self) -> np.ndarray:
    """float64 [3]: the extent of the axis-aligned bounds."""
    return self.xyz.max(0).astype(np.float64) - self.xyz.min(0)


def check_point_cloud(cloud: PointCloud, where: str) -> PointCloud:
  """`cloud` if it can be rendered; else BadExampleError(BAD_MEDIA, "degenerate point cloud: ...")
  naming `where` and why.

  Degenerate: no points, shapes other than [N, 3], non-finite coordinates, or an extent of zero
  on two or more axes (a point or a line: no camera distance or view of it makes sense)."""
  if cloud.xyz.ndim != 2 or cloud.xyz.shape[1:] != (3,) or cloud.rgb.shape != cloud.xyz.shape:
    raise errors.BadExampleError(errors.BAD_MEDIA, where, f"{DEGENERATE_CLOUD}: xyz {cloud.xyz.shape} / rgb {cloud.rgb.shape} are not "
                                 "[N, 3] of the same N")
  if not len(cloud.xyz):
    raise errors.BadExampleError(errors.BAD_MEDIA, where, f"{DEGENERATE_CLOUD}: no points")
  if not np.isfinite(cloud.xyz).all():
    raise errors.BadExampleError(errors.BAD_MEDIA, where, f"{DEGENERATE_CLOUD}: "
                                 f"{int((~np.isfinite(cloud.xyz)).any(1).sum())} points have non-finite coordinates")
  if (cloud.size <= 1e-6).sum() >= 2:
    raise errors.BadExampleError(errors.BAD_MEDIA, where, f"{DEGENERATE_CLOUD}: the points span {cloud.size.tolist()}: a point or a line")
  return cloud


def _rgb_uint8(rgb: np.ndarray, where: str) -> np.ndarray:
  rgb = np.asarray(rgb)
  if rgb.dtype.kind == "f":
    if len(rgb) and np.nanmax(rgb) <= 1.0:  # colours stored in [0, 1]
      rgb = rgb * 255.0
    rgb = np.clip(np.nan_to_num(rgb), 0, 255).round()
  elif len(rgb) and (rgb.min() < 0 or rgb.max() > 255):
    raise errors.BadExampleError(errors.BAD_MEDIA, where, "rgb values outside 0..255")
  return rgb.astype(np.uint8)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _read_ply(path: str) -> PointCloud:
  """The `vertex` element's x, y, z, red, green, blue of an ASCII or binary PLY (ScanNet's
  *_vh_clean_2.ply layout); faces and other properties are ignored."""
  with open(path, "rb") as f:
    if f.readline().strip() != b"ply":
      raise errors.BadExampleError(errors.BAD_MEDIA, path, "not a PLY file (no 'ply' magic line)")
    fmt, elements = None, []  # elements: [name, count, [(property, dtype)]]
    while True:
      line = f.readline()
      if not line:
        raise errors.BadExampleError(errors.BAD_MEDIA, path, "PLY header has no end_header")
      words = line.decode("ascii", "replace").split()
      if not words or words[0] in ("comment", "obj_info"):
        continue
      if words[0] == "end_header":
        break
      if words[0] == "format":
        fmt = words[1]
      elif words[0] == "element":
        elements.append([words[1], int(words[2]), []])
      elif words[0] == "property" and elements:
        if words[1] == "list":
          elements[-1][2].append((words[-1], None))
        else:
          elements[-1][2].append((words[-1], _PLY_TYPES.get(words[1])))
    names = [e[0] for e in elements]
    if "vertex" not in names:
      raise errors.BadExampleError(errors.MISSING_FIELD, path, "PLY has no 'vertex' element")
    if names.index("vertex") != 0:
      raise errors.BadExampleError(errors.BAD_MEDIA, path, "PLY 'vertex' must be the first element")
    _, count, props = elements[0]
    fields = dict(props)
    missing = [k for k in ("x", "y", "z", "red", "green", "blue") if k not in fields]
    if missing:
      raise errors.BadExampleError(errors.MISSING_FIELD, path, f"PLY vertex lacks properties {missing}")
    if any(t is None for _, t in props):
      raise errors.BadExampleError(errors.BAD_MEDIA, path, "PLY vertex has a list or unknown property type")
    if fmt == "ascii":
      rows = [f.readline().split() for _ in range(count)]
      try:
        table = np.asarray(rows, np.float64).reshape(count, len(props))
      except ValueError as e:
        raise errors.BadExampleError(errors.BAD_MEDIA, path, f"PLY vertex rows are malformed: {e}") from e
      column = {name: table[:, i] for i, (name, _) in enumerate(props)}
    elif fmt in ("binary_little_endian", "binary_big_endian"):
      order = "<" if fmt == "binary_little_endian" else ">"
      dtype = np.dtype([(name, order + t) for name, t in props])
      data = f.read(dtype.itemsize * count)
      if len(data) < dtype.itemsize * count:
        raise errors.BadExampleError(errors.BAD_MEDIA, path, f"PLY ends after {len(data) // dtype.itemsize} of "
                                     f"{count} vertices")
      table = np.frombuffer(data, dtype)
      column = {name: table[name] for name, _ in props}
    else:
      raise errors.BadExampleError(errors.BAD_MEDIA, path, f"PLY format {fmt!r} is not ascii / binary")
  xyz = np.stack([column[k] for k in "xyz"], 1).astype(np.float32)
  rgb = np.stack([column[k] for k in ("red", "green", "blue")], 1)
  return PointCloud(xyz, _rgb_uint8(rgb.astype(np.float64) if rgb.dtype.kind == "f" else rgb, path))


def load_point_cloud(path: str) -> PointCloud:
  """A scene's point cloud from `.npy` ([N, 6+] float: x, y, z, r, g, b, ...; colours in 0..255 or
  0..1, as ScanQA / 3D-R1's preprocessed `*_vert.npy` or `*_aligned_vert.npy`) or `.ply` (ASCII
  or binary, vertex x y z red green blue).

  Raises:
    BadExampleError: BAD_MEDIA (unreadable file), MISSING_FIELD (no colour columns), or
    BAD_MEDIA 'degenerate point cloud' (see `check_point_cloud`), each naming the file.
  """
  if not os.path.isfile(path):
    raise errors.BadExampleError(errors.BAD_MEDIA, path, "point cloud file does not exist")
  if path.endswith(".ply"):
    cloud = _read_ply(path)
  elif path.endswith(".npy"):
    try:
      table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise errors.BadExampleError(errors.BAD_MEDIA, path, f"cannot read .npy: {e}") from e
    if table.ndim != 2 or table.shape[1] < 6:
      raise errors.BadExampleError(errors.MISSING_FIELD, path, f"expected [N, 6+] (x, y, z, r, g, b), got "
                                   f"{table.shape}")
    cloud = PointCloud(table[:, :3].astype(np.float32), _rgb_uint8(table[:, 3:6], path))
  else:
    raise errors.BadExampleError(errors.BAD_MEDIA, path, "point clouds are .ply or .npy files")
  return check_point_cloud(cloud, path)


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera looking at `target` from `position`; `up` orients the image."""
  name: str
  position: tuple[float, float, float]
  target: tuple[float, float, float]
  up: tuple[float, float, float] = (0.0, 0.0, 1.0)


def candidate_cameras(cloud: PointCloud, num_orbit: int = 5, orbit_elevation_deg: float = 35.0) -> list[Camera]:
  """Top, front (looking +y), side (looking -x) and `num_orbit` orbit cameras (evenly spread
  azimuths at `orbit_elevation_deg`), all at VIEW_DISTANCE * ||size|| from the centre."""
  center = cloud.center
  radius = VIEW_DISTANCE * float(np.linalg.norm(cloud.size))
  c = tuple(float(v) for v in center)
  cams = [Camera("top", (c[0], c[1], c[2] + radius), c, up=(0.0, 1.0, 0.0)),
          Camera("front", (c[0], c[1] - radius, c[2]), c),
          Camera("side", (c[0] + radius, c[1], c[2]), c)]
  elevation = np.deg2rad(orbit_elevation_deg)
  for k in range(num_orbit):
    azimuth = 2 * np.pi * (k + 0.5) / num_orbit
    offset = radius * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                np.sin(elevation)])
    cams.append(Camera(f"orbit{k}", tuple(float(v) for v in center + offset), c))
  return cams


def project(xyz: np.ndarray, camera: Camera, image_size: int, fov_deg: float = 35.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(pixel column, pixel row, depth) per point, each [N]; a point behind the camera gets depth <= 0."""
  position, target = np.asarray(camera.position), np.asarray(camera.target)
  forward = (target - position) / np.linalg.norm(target - position)
  right = np.cross(forward, camera.up)
  right /= np.linalg.norm(right)
  up = np.cross(right, forward)
  rel = xyz.astype(np.float64) - position
  x, y, depth = rel @ right, rel @ up, rel @ forward
  focal = (image_size / 2) / np.tan(np.deg2rad(fov_deg) / 2)
  with np.errstate(divide="ignore", invalid="ignore"):
    col = np.floor(image_size / 2 + focal * x / depth)
    row = np.floor(image_size / 2 - focal * y / depth)
  return col, row, depth


def render_view(cloud: PointCloud, camera: Camera, image_size: int = 56, fov_deg: float = 35.0,
                background: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, float]:
  """(uint8 [image_size, image_size, 3] image, coverage) of `cloud` seen by `camera`.

  Each point paints one pixel; the nearest point of a pixel wins (a z-buffer). Coverage is the
  fraction of the cloud's points that are seen: inside the image and within 2% of the scene's
  diagonal of their pixel's nearest depth (so a surface's own points count, hidden ones do not).
  Deterministic: ties in depth go to the lower point index.
  """
  col, row, depth = project(cloud.xyz, camera, image_size, fov_deg)
  inside = (depth > 0) & (col >= 0) & (col < image_size) & (row >= 0) & (row < image_size)
  image = np.empty((image_size, image_size, 3), np.uint8)
  image[:] = background
  if not inside.any():
    return image, 0.0
  index = np.flatnonzero(inside)
  pixel = (row[index] * image_size + col[index]).astype(np.int64)
  order = np.lexsort((index, depth[index]))  # nearest first, then by point index
  first_pixel, first = np.unique(pixel[order], return_index=True)
  nearest = index[order[first]]
  image.reshape(-1, 3)[first_pixel] = cloud.rgb[nearest]
  zbuffer = np.full(image_size * image_size, np.inf)
  zbuffer[first_pixel] = depth[nearest]
  tolerance = 0.02 * float(np.linalg.norm(cloud.size))
  seen = depth[index] <= zbuffer[pixel] + tolerance
  return image, float(seen.sum()) / len(cloud.xyz)


def visible_boxes(cloud_cameras: Sequence[Camera], boxes: Sequence[Sequence[float]], image_size: int,
                  fov_deg: float = 35.0) -> np.ndarray:
  """bool [num_cameras, num_boxes]: the box's centre projects inside the camera's image, in front."""
  centers = np.asarray([[(b[k] + b[k + 3]) / 2 for k in range(3)] for b in boxes], np.float64).reshape(-1, 3)
  out = np.zeros((len(cloud_cameras), len(centers)), bool)
  for v, camera in enumerate(cloud_cameras):
    col, row, depth = project(centers, camera, image_size, fov_deg)
    out[v] = (depth > 0) & (col >= 0) & (col < image_size) & (row >= 0) & (row < image_size)
  return out
