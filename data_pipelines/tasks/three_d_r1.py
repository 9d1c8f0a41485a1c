"""3D-R1's data: ScanQA / ScanRefer-style question records over point-cloud scenes, with Scene-30K
chain-of-thought answers for the SFT cold start, -> multi-view prompts + the reward's ground truth.

Layouts (one JSON list, or JSONL, of records; `scenes` is a folder of point clouds):

    ScanQA (ScanQA_v1.0_<split>.json) RL record:
      {"scene_id": "scene0000_00", "question_id": "train-scene0000-0",
       "question": "What is in the right corner of room by curtains?",
       "answers": ["brown cabinet with tv sitting in it"],   # several acceptable answers
       "object_ids": [8], "object_names": ["cabinet"]}
    ScanRefer (ScanRefer_filtered_<split>.json) record, read as "which object is described?":
      {"scene_id": "scene0000_00", "object_id": "8", "object_name": "cabinet", "ann_id": "0",
       "description": "this is a brown cabinet. it is in the right corner."}
    either may carry its boxes inline, "boxes": [[x1, y1, z1, x2, y2, z2], ...] (world units, one per
    answer object); otherwise they are looked up by object id in the scene's ScanRefer/ScanQA
    preprocessed boxes <scene_id>_aligned_bbox.npy (or _bbox.npy): [K, 8] rows of
    cx, cy, cz, dx, dy, dz, semantic label, object id.
    Scene-30K CoT record (SFT): the same keys plus
       "cot": "<think>...</think><answer>...</answer>"  (the assistant turn to learn)

    scenes/<scene_id>_aligned_vert.npy | <scene_id>_vert.npy | <scene_id>.npy | <scene_id>_vh_clean_2.ply |
      <scene_id>.ply  ([N, 6+] x, y, z, r, g, b as ScanRefer/ScanQA's preprocessed arrays; or a ScanNet PLY)

A record becomes one prompt: `num_views` views of the scene (`data_pipelines.scenes`: candidate
cameras around the point cloud, rendered with a z-buffer) chosen by the view selector
(`r1jax.view_selection`: 'learned' = utility with the configured weights, S_text from the embedding
model over a description of each view, S_cov the view's coverage; 'fixed' = the first `num_views`
candidates, top / front / side / orbit), then the question. Ground truth: answer (the answers),
boxes (for the perception reward). `ground_truth['view_names']` says which views were shown.

Checks (a failing record is skipped, counted and named): MISSING_FIELD (no scene_id, question,
answers, or boxes (inline or by object id), or an empty one); BAD_RECORD (answers not strings; a
box not 6 finite numbers or with x2 < x1, y2 < y1 or z2 < z1; an object id the scene's boxes lack;
cot without both tags); BAD_MEDIA (no point cloud file for the
scene, an unreadable one, or a degenerate cloud: empty, non-finite, a point or a line).

S_img (the policy's vision tower) is not computed in the data pipeline (it has no policy); its
weight multiplies 0 here. See r1jax/view_selection.py for the full utility.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image

from data_pipelines import errors, scenes
from data_pipelines.records import Example
from data_pipelines.sources import RawRecord

SYSTEM_PROMPT = ("You see views of a 3D scene. Think inside <think> </think>, then answer inside <answer> </answer>; "
                 "give the object's 3D box as box: [x1, y1, z1, x2, y2, z2].")
SHORT_SYSTEM_PROMPT = "Think, then answer with the box."
PROMPT_STYLES = ("released", "short")
VIEW_MODES = ("learned", "fixed")
SCENE_FILES = ("{}_aligned_vert.npy", "{}_vert.npy", "{}.npy", "{}_vh_clean_2.ply", "{}.ply")
BOX_FILES = ("{}_aligned_bbox.npy", "{}_bbox.npy")


def check_boxes(boxes: Any, where: str) -> list[list[float]]:
  """Ground-truth boxes as floats; BAD_RECORD naming a box that is not 6 finite numbers or whose max
  corner is below its min corner (no prediction could match it)."""
  if not isinstance(boxes, (list, tuple)) or not boxes:
    raise errors.field_error(errors.MISSING_FIELD, where, "boxes",
                             f"expected a non-empty list of boxes, got {str(boxes)[:80]}")
  out = []
  for box in boxes:
    if not (isinstance(box, (list, tuple)) and len(box) == 6 and all(errors.is_finite_number(v) for v in box)):
      raise errors.field_error(errors.BAD_RECORD, where, "boxes", f"box {str(box)[:80]} is not 6 finite numbers")
    if any(box[k] > box[k + 3] for k in range(3)):
      raise errors.field_error(errors.BAD_RECORD, where, "boxes", f"box {list(box)} has x2 < x1, y2 < y1 or z2 < z1")
    out.append([float(v) for v in box])
  return out


def _scene_boxes(scene_dir: str, scene_id: str, object_ids: Sequence[Any], where: str) -> list[list[float]]:
  """The boxes of `object_ids` from the scene's preprocessed [K, 8] box array (module docstring)."""
  path = next((os.path.join(scene_dir, p.format(scene_id)) for p in BOX_FILES
               if os.path.isfile(os.path.join(scene_dir, p.format(scene_id)))), None)
  if path is None:
    raise errors.field_error(
        errors.MISSING_FIELD, where, "boxes",
        f"no inline boxes and no {' / '.join(p.format(scene_id) for p in BOX_FILES)} "
        f"in {scene_dir!r} to look object ids up in")
  try:
    table = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.field_error(errors.BAD_MEDIA, where, "boxes", f"cannot read {path}: {e}") from e
  if table.ndim != 2 or table.shape[1] < 8:
    raise errors.field_error(errors.BAD_MEDIA, where, "boxes", f"{path}: expected [K, 8] boxes, got {table.shape}")
  by_id = {int(row[7]): row for row in table}
  boxes = []
  for object_id in object_ids:
    try:
      row = by_id[int(object_id)]
    except (KeyError, ValueError, TypeError):
      raise errors.field_error(errors.BAD_RECORD, where, "object_ids",
                               f"object {object_id!r} is not among the {len(by_id)} boxes "
                               f"of {path}") from None
    center, size = row[:3].astype(np.float64), row[3:6].astype(np.float64)
    boxes.append((center - size / 2).tolist() + (center + size / 2).tolist())
  return boxes


def _fields(fields: dict[str, Any], where: str) -> tuple[str, list[str], list[Any], list[str]]:
  """(question, answers, object ids, object names) of a ScanQA or ScanRefer record."""
  if "description" in fields and "question" not in fields:  # ScanRefer: name the described object
    name = fields.get("object_name")
    if not isinstance(name, str) or not name:
      raise errors.field_error(errors.MISSING_FIELD, where, "object_name", f"missing or empty (keys: {sorted(fields)})")
    if not isinstance(fields["description"], str) or not fields["description"].strip():
      raise errors.field_error(errors.MISSING_FIELD, where, "description", "missing or empty")
    label = name.replace("_", " ")
    ids = [fields["object_id"]] if fields.get("object_id") is not None else []
    return fields["description"].strip(), [label], ids, [label]
  for key in ("question", "answers"):
    value = fields.get(key)
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
      raise errors.field_error(errors.MISSING_FIELD, where, key, f"missing or empty (keys: {sorted(fields)})")
  if not isinstance(fields["question"], str):
    raise errors.field_error(errors.BAD_RECORD, where, "question",
                             f"expected text, got {type(fields['question']).__name__}")
  answers = [fields["answers"]] if isinstance(fields["answers"], str) else list(fields["answers"])
  if not all(isinstance(a, str) and a.strip() for a in answers):
    raise errors.field_error(errors.BAD_RECORD, where, "answers",
                             f"expected non-empty strings, got {str(answers)[:80]}")
  return fields["question"], answers, list(fields.get("object_ids") or []), list(fields.get("object_names") or [])


def scene_file(scene_dir: str, scene_id: str, where: str) -> str:
  for pattern in SCENE_FILES:
    path = os.path.join(scene_dir, pattern.format(scene_id))
    if os.path.isfile(path):
      return path
  raise errors.field_error(
      errors.BAD_MEDIA, where, "scene_id", f"no point cloud for {scene_id!r} in {scene_dir!r} "
      f"(looked for {', '.join(p.format(scene_id) for p in SCENE_FILES)})")


@dataclasses.dataclass(frozen=True)
class RenderedScene:
  """A scene's candidate views: names [V], PNG bytes [V], coverage float [V], the cameras."""
  names: tuple[str, ...]
  pngs: tuple[bytes, ...]
  coverage: np.ndarray
  cameras: tuple[scenes.Camera, ...]


def _png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


@functools.lru_cache(maxsize=64)  # the questions of one scene are neighbours in ScanQA files
def render_scene(path: str, image_size: int, num_orbit: int) -> RenderedScene:
  cloud = scenes.load_point_cloud(path)
  cameras = scenes.candidate_cameras(cloud, num_orbit=num_orbit)
  rendered = [scenes.render_view(cloud, camera, image_size=image_size) for camera in cameras]
  return RenderedScene(tuple(c.name for c in cameras), tuple(_png(image) for image, _ in rendered),
                       np.array([coverage for _, coverage in rendered]), tuple(cameras))


def view_description(labels: Sequence[str]) -> str:
  """The text S_text compares with the question: what a view shows."""
  return "a view of " + (", ".join(f"the {label}" for label in labels) if labels else "nothing")


@dataclasses.dataclass
class ViewSelector:
  """Chooses the views of a record (see the module docstring); `embed(texts) -> [n, D]` is the
  embedding model (called for texts not seen before; its vectors are cached by text)."""
  mode: str = "learned"
  num_views: int = 4
  weights: tuple[float, float, float] = (0.3, 0.35, 0.35)
  embed: Callable[[Sequence[str]], np.ndarray] | None = None
  image_size: int = 56

  def __post_init__(self):
    if self.mode not in VIEW_MODES:
      raise ValueError(f"config.data.view_selection={self.mode!r} must be one of {VIEW_MODES}")
    self._cache: dict[str, np.ndarray] = {}

  def _embedded(self, texts: Sequence[str]) -> np.ndarray:
    new = [t for t in dict.fromkeys(texts) if t not in self._cache]
    if new:
      for text, vector in zip(new, np.asarray(self.embed(new), np.float64)):
        self._cache[text] = vector
    return np.stack([self._cache[t] for t in texts])

  def scores(self, rendered: RenderedScene, question: str, object_labels: Sequence[tuple[str, Sequence[float]]]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S_text, S_cov, S_img), each float [V]."""
    num = len(rendered.names)
    s_cov = rendered.coverage.astype(np.float64)
    s_text = np.zeros(num)
    if self.embed is not None and object_labels:
      seen = scenes.visible_boxes(rendered.cameras, [box for _, box in object_labels], self.image_size)
      descriptions = [view_description([label for (label, _), v in zip(object_labels, row) if v]) for row in seen]
      vectors = self._embedded([question, *descriptions])
      unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
      s_text = unit[1:] @ unit[0]
    return s_text, s_cov, np.zeros(num)

  def select(self, rendered: RenderedScene, question: str,
             object_labels: Sequence[tuple[str, Sequence[float]]]) -> list[int]:
    if self.mode == "fixed":
      return list(range(self.num_views))
    from r1jax import view_selection  # pylint: disable=g-import-not-at-top  (JAX: only when selecting)
    weights = dict(zip(("text", "coverage", "image"), (np.float32(w) for w in self.weights)))
    return [int(i) for i in view_selection.select(weights, *self.scores(rendered, question, object_labels),
                                                  k=self.num_views)]


def to_example(raw: RawRecord, *, scene_dir: str, selector: ViewSelector, prompt_style: str = "released",
               num_orbit: int = 5, scene_objects: Callable[[str], list] | None = None) -> Example:
  """One ScanQA / ScanRefer / Scene-30K record -> a multi-view Example (module docstring).

  scene_objects: scene id -> [(label, box)] of the scene's objects, for the view descriptions
    (ScanNet's instance boxes); None uses the record's own object_names and boxes.
  """
  if prompt_style not in PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={prompt_style!r} must be one of {PROMPT_STYLES}")
  where = raw.where
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, where, raw.error or "unreadable row")
  fields = raw.fields
  if not fields.get("scene_id"):
    raise errors.field_error(errors.MISSING_FIELD, where, "scene_id", f"missing or empty (keys: {sorted(fields)})")
  scene_id = str(fields["scene_id"])
  question, answers, object_ids, names = _fields(fields, where)
  if fields.get("boxes") is not None:
    boxes = check_boxes(fields["boxes"], where)
  elif object_ids:
    boxes = check_boxes(_scene_boxes(scene_dir, scene_id, object_ids, where), where)
  else:
    raise errors.field_error(errors.MISSING_FIELD, where, "boxes", "no inline boxes and no object ids to look them up")
  response = fields.get("cot")
  if response is not None and not (isinstance(response, str) and "</think>" in response and "</answer>" in response):
    raise errors.field_error(errors.BAD_RECORD, where, "cot", f"expected '<think>...</think><answer>...</answer>', got "
                             f"{str(response)[:80]}")
  try:
    rendered = render_scene(scene_file(scene_dir, scene_id, where), selector.image_size, num_orbit)
  except errors.BadExampleError as e:
    if e.where.startswith(where):
      raise
    raise errors.BadExampleError(e.reason, where, f"scene {scene_id!r}: {e}") from e  # name the record too
  objects = scene_objects(scene_id) if scene_objects is not None else list(zip(names, boxes))
  views = selector.select(rendered, question, objects)
  system = SYSTEM_PROMPT if prompt_style == "released" else SHORT_SYSTEM_PROMPT
  content = [{"type": "image"} for _ in views] + [{"type": "text", "text": question}]
  messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
  return Example(id=str(fields.get("question_id", where)), where=where, messages=messages,
                 images=[rendered.pngs[v] for v in views],
                 ground_truth={"answer": list(answers), "boxes": boxes,
                               "view_names": [rendered.names[v] for v in views]},
                 data_type="multi_image", response=response)
