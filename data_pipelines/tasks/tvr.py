"""Synthetic transformation-driven visual reasoning (TVR) in STAR-R1's answer format.

A scene is a few flat objects (color, shape, size) on a `grid_size` x `grid_size` floor seen from
above. A pair shows the scene before and after 1-3 objects each changed one attribute; the
answer lists the changes as `index.attribute.value` triplets (shared/specs/rewards.md, STAR-R1),
e.g. `2.color.red`.

Indexing: objects are numbered 1, 2, ... in reading order (row by row, left to right) of their
cells in the INITIAL image, which is always rendered from the canonical camera. The index is a
property of the object, so it stays the same whatever the final image's camera. Reading order
of a coarse grid is something a tiny ViT learns quickly (each cell is about one merged vision
token); drawn digits would need far more pixels per object.

Views: the final image of an in-view pair uses the canonical camera too. A cross-view pair
renders it from another camera: one of the eight quarter-turn rotations / mirrorings of the
floor (`VIEWS`, clockwise as seen in the image), shifted by a few pixels and optionally turned
by a small extra angle. Two coloured stripes outside the floor make every view recognisable:
black along the front edge (the bottom in the canonical view) and white along the left edge.
The answer never depends on the camera.

Images are `image_size` pixels square, a multiple of 28 (Qwen2.5-VL's patch 14 x merge 2), so
`smart_resize` keeps them as they are whenever the processor's min_pixels <= image_size**2 <=
max_pixels: the default 84 x 84 gives a 6 x 6 patch grid, 9 vision tokens per image. Colours
are exact palette values (no anti-aliasing) so that tests can read the scene back from pixels.

Optional attribute 'position' moves an object to a cell that is empty in both images; its value
names the cell in canonical coordinates: row letter (a = back row) and column number
(1 = left), e.g. `b3`.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image

# Palette order fixes which colours `num_colors` selects. None equals a scene colour below.
COLORS = {
    "red": (220, 40, 40),
    "green": (30, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "cyan": (40, 210, 220),
    "purple": (150, 60, 200),
    "orange": (250, 130, 20),
    "pink": (250, 140, 200),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
ATTRIBUTES = ("color", "shape", "size", "position")
# Circumradius of each size, in cells: every shape of one size fits the same circle.
SIZE_RADII = {"small": 0.25, "large": 0.42}
BACKGROUND = (90, 90, 90)
FLOOR = (170, 170, 170)
FRONT_EDGE = (0, 0, 0)
LEFT_EDGE = (255, 255, 255)
# Border around the floor (stripes plus room for shifts) and stripe width, in image sizes.
_MARGIN_FRACTION = 1 / 14
_STRIPE_FRACTION = 1 / 28
# (clockwise quarter turns, mirrored) by name ('turnK': K quarter turns); the mirror (left-right)
# is applied first. One-digit names keep the SFT targets short.
VIEWS = {
    "same": (0, False), "turn1": (1, False), "turn2": (2, False), "turn3": (3, False),
    "mirror": (0, True), "mirror turn1": (1, True), "mirror turn2": (2, True),
    "mirror turn3": (3, True),
}
CROSS_VIEWS = tuple(name for name in VIEWS if name != "same")
VISION_FACTOR = 28  # Qwen2.5-VL: patch 14 x spatial merge 2
PROMPT_STYLES = ("full", "short")

Triplet = tuple[int, str, str]  # (index, attribute, value)


@dataclasses.dataclass(frozen=True)
class TvrTask:
  """What the generator draws from; the defaults are sized for a tiny model on CPU.

  Attributes:
    image_size: side of both images in pixels, a multiple of 28.
    grid_size: cells per floor side.
    min_objects, max_objects: objects per scene (uniform), at most grid_size**2.
    attributes: which attributes may change, a subset of ATTRIBUTES.
    num_colors: the first `num_colors` colours of COLORS are used.
    change_counts: relative weights of 1, 2, 3, ... changes (one per object) per pair; counts
      above a scene's number of objects are left out.
    views: camera names (VIEWS) a cross-view final image is drawn from.
    max_shift: a cross-view camera shifts by up to this many pixels in x and y.
    max_jitter_deg: and turns by up to this many degrees on top of its quarter turns.
    prompt_style: 'full' states the rules, attributes and values (for pretrained models);
      'short' is just the two images and the question, a fraction of the tokens, for a model
      trained from scratch (PROMPT_STYLES).
  """
  image_size: int = 84
  grid_size: int = 3
  min_objects: int = 2
  max_objects: int = 3
  attributes: tuple[str, ...] = ("color", "shape", "size")
  num_colors: int = 4
  change_counts: tuple[float, ...] = (0.8, 0.2)
  views: tuple[str, ...] = CROSS_VIEWS
  max_shift: int = 3
  max_jitter_deg: float = 0.0
  prompt_style: str = "full"

  def __post_init__(self):
    object.__setattr__(self, "attributes", tuple(self.attributes))
    object.__setattr__(self, "change_counts", tuple(float(w) for w in self.change_counts))
    object.__setattr__(self, "views", tuple(self.views))
    if self.image_size < VISION_FACTOR or self.image_size % VISION_FACTOR:
      raise ValueError(f"TVR option image_size={self.image_size} must be a positive multiple of "
                       f"{VISION_FACTOR} (so the processor does not resize it)")
    if self.grid_size < 2:
      raise ValueError(f"TVR option grid_size={self.grid_size} must be >= 2")
    if not 1 <= self.min_objects <= self.max_objects <= self.grid_size ** 2:
      raise ValueError(f"TVR options need 1 <= min_objects ({self.min_objects}) <= max_objects "
                       f"({self.max_objects}) <= grid_size**2 ({self.grid_size ** 2})")
    unknown = sorted(set(self.attributes) - set(ATTRIBUTES))
    if not self.attributes or unknown:
      raise ValueError(f"TVR option attributes={self.attributes} must be a non-empty subset of "
                       f"{ATTRIBUTES}")
    if not 2 <= self.num_colors <= len(COLORS):
      raise ValueError(f"TVR option num_colors={self.num_colors} must be in [2, {len(COLORS)}]")
    weights = np.asarray(self.change_counts)
    if not len(weights) or (weights < 0).any() or weights.sum() <= 0:
      raise ValueError(f"TVR option change_counts={self.change_counts} must be non-negative "
                       "weights of 1, 2, ... changes with a positive sum")
    if weights[:self.min_objects].sum() <= 0:
      raise ValueError(f"TVR option change_counts={self.change_counts} gives a scene of "
                       f"min_objects={self.min_objects} objects no possible change count")
    if self.attributes == ("position",) and self.min_objects == self.grid_size ** 2:
      raise ValueError(f"TVR option attributes=('position',) needs a free cell, but "
                       f"min_objects={self.min_objects} fills the grid")
    bad_views = sorted(set(self.views) - set(VIEWS))
    if not self.views or bad_views:
      raise ValueError(f"TVR option views={self.views} must be a non-empty subset of "
                       f"{tuple(VIEWS)}")
    if self.views == ("same",) and not self.max_shift and not self.max_jitter_deg:
      raise ValueError("TVR options views=('same',), max_shift=0 and max_jitter_deg=0 leave a "
                       "cross-view pair no other viewpoint")
    free = self.margin - self.stripe_width
    if not 0 <= self.max_shift <= free:
      raise ValueError(f"TVR option max_shift={self.max_shift} must be in [0, {free:g}] pixels "
                       f"for image_size={self.image_size} (the floor's stripes must stay visible)")
    if self.prompt_style not in PROMPT_STYLES:
      raise ValueError(f"TVR option prompt_style={self.prompt_style!r} must be one of "
                       f"{PROMPT_STYLES}")
    # The farthest point of any object from the image centre, at the worst jitter and shift.
    corner = (self.grid_size - 1) / 2 * self.cell * math.sqrt(2)
    reach = (corner * math.cos(math.radians(45 - min(self.max_jitter_deg, 45)))
             + max(SIZE_RADII.values()) * self.cell + self.max_shift)
    if not 0 <= self.max_jitter_deg <= 45 or reach > self.image_size / 2:
      raise ValueError(f"TVR option max_jitter_deg={self.max_jitter_deg} must be in [0, 45] and "
                       f"keep every object inside the image (with max_shift={self.max_shift})")

  @property
  def margin(self) -> float:
    """Pixels between the image border and the floor."""
    return self.image_size * _MARGIN_FRACTION

  @property
  def stripe_width(self) -> float:
    return self.image_size * _STRIPE_FRACTION

  @property
  def cell(self) -> float:
    """Side of one floor cell in pixels."""
    return (self.image_size - 2 * self.margin) / self.grid_size

  def values(self, attribute: str) -> tuple[str, ...]:
    """The values `attribute` takes in this task."""
    if attribute == "color":
      return tuple(COLORS)[:self.num_colors]
    if attribute == "shape":
      return SHAPES
    if attribute == "size":
      return SIZES
    if attribute == "position":
      return tuple(slot_name(s, self.grid_size) for s in range(self.grid_size ** 2))
    raise KeyError(f"unknown TVR attribute {attribute!r}; expected one of {ATTRIBUTES}")


def slot_name(slot: int, grid_size: int) -> str:
  """Cell `slot` (row-major, canonical view) as row letter + column number: 5 -> 'b3'."""
  row, col = divmod(slot, grid_size)
  return f"{chr(ord('a') + row)}{col + 1}"


@dataclasses.dataclass(frozen=True)
class TvrObject:
  """One object; `slot` is its cell, row * grid_size + col in the canonical view."""
  slot: int
  color: str
  shape: str
  size: str

  def value(self, attribute: str, grid_size: int) -> str:
    if attribute == "position":
      return slot_name(self.slot, grid_size)
    return getattr(self, attribute)

  def changed(self, attribute: str, value: str, grid_size: int) -> TvrObject:
    if attribute == "position":
      names = [slot_name(s, grid_size) for s in range(grid_size ** 2)]
      return dataclasses.replace(self, slot=names.index(value))
    return dataclasses.replace(self, **{attribute: value})


@dataclasses.dataclass(frozen=True)
class Camera:
  """How a view maps the floor into the image.

  Image point = image centre + shift + cell * A @ (world point - floor centre), with world
  points in cells ((column, row) axes of the canonical view) and A = rotation by
  90 * turns + jitter_deg degrees clockwise (image y points down) after an optional mirror.

  Attributes:
    turns: clockwise quarter turns, 0-3.
    mirror: flips left and right (before turning).
    jitter_deg: extra clockwise turn in degrees.
    shift: (dx, dy) in pixels.
  """
  turns: int = 0
  mirror: bool = False
  jitter_deg: float = 0.0
  shift: tuple[int, int] = (0, 0)

  @property
  def view(self) -> str:
    """The VIEWS name of the quarter turns and mirror (shift and jitter left out)."""
    return next(name for name, v in VIEWS.items() if v == (self.turns % 4, self.mirror))

  def linear(self) -> np.ndarray:
    """float64 [2, 2]: A, world (cell) axes to image axes, before scaling by the cell size.

    Quarter turns and the mirror are exact integer matrices, so those views of a scene are
    exact pixel rotations / flips of each other.
    """
    quarter_turn = np.array([[0.0, -1.0], [1.0, 0.0]])  # clockwise, as image y points down
    linear = np.linalg.matrix_power(quarter_turn, self.turns % 4)
    if self.jitter_deg:
      angle = math.radians(self.jitter_deg)
      linear = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]]) @ linear
    return linear @ np.diag([-1.0 if self.mirror else 1.0, 1.0])

  def project(self, points: np.ndarray, task: TvrTask) -> np.ndarray:
    """float64 [n, 2] world points (cells) -> float64 [n, 2] image (x, y) pixels."""
    centered = (np.asarray(points, np.float64) - task.grid_size / 2) * task.cell
    return task.image_size / 2 + np.asarray(self.shift, np.float64) + centered @ self.linear().T

  def unproject(self, points: np.ndarray, task: TvrTask) -> np.ndarray:
    """float64 [n, 2] image (x, y) pixels -> float64 [n, 2] world points (cells)."""
    centered = np.asarray(points, np.float64) - task.image_size / 2 - np.asarray(self.shift)
    return task.grid_size / 2 + centered @ np.linalg.inv(self.linear()).T / task.cell


CANONICAL = Camera()


@dataclasses.dataclass(frozen=True)
class Transformation:
  """One initial/final pair before rendering.

  Attributes:
    initial: the objects in index order (reading order of their cells).
    changes: (index, attribute, new value) sorted by index, at most one per object.
    camera: the final image's camera (the initial image's is CANONICAL).
    cross_view: whether the pair is of the cross-view variant.
  """
  initial: tuple[TvrObject, ...]
  changes: tuple[Triplet, ...]
  camera: Camera
  cross_view: bool

  def final(self, grid_size: int) -> tuple[TvrObject, ...]:
    """The objects after the changes, in the initial index order."""
    final = list(self.initial)
    for index, attribute, value in self.changes:
      final[index - 1] = final[index - 1].changed(attribute, value, grid_size)
    return tuple(final)

  @property
  def answer(self) -> list[str]:
    return [f"{index}.{attribute}.{value}" for index, attribute, value in self.changes]

  @property
  def key(self) -> tuple[Any, ...]:
    """What makes two pairs the same task item (pixel shift and jitter left out)."""
    return self.initial, self.changes, self.camera.view, self.cross_view


def _sample_camera(rng: np.random.Generator, task: TvrTask) -> Camera:
  while True:
    turns, mirror = VIEWS[task.views[rng.integers(len(task.views))]]
    shift = tuple(int(s) for s in rng.integers(-task.max_shift, task.max_shift + 1, size=2))
    jitter = float(rng.uniform(-task.max_jitter_deg, task.max_jitter_deg))
    camera = Camera(turns, mirror, jitter, shift)
    if camera != CANONICAL:  # a cross-view pair must differ in viewpoint
      return camera


def _movers_distinguishable(initial: Sequence[TvrObject], changes: Sequence[Triplet]) -> bool:
  """Moved objects are matched across images by appearance, so no two may look alike."""
  movers = [initial[index - 1] for index, attribute, _ in changes if attribute == "position"]
  looks = [(o.color, o.shape, o.size) for o in movers]
  return len(set(looks)) == len(looks)


def sample_transformation(rng: np.random.Generator, task: TvrTask, *,
                          cross_view: bool) -> Transformation:
  """Draws a scene, its changes and (cross-view) the final camera; see the module docstring."""
  grid_cells = task.grid_size ** 2
  colors = task.values("color")
  while True:  # rejection keeps every pair answerable; it rarely repeats
    num_objects = int(rng.integers(task.min_objects, task.max_objects + 1))
    slots = np.sort(rng.choice(grid_cells, num_objects, replace=False))
    initial = tuple(TvrObject(int(slot), colors[rng.integers(len(colors))],
                              SHAPES[rng.integers(len(SHAPES))], SIZES[rng.integers(len(SIZES))])
                    for slot in slots)
    weights = np.asarray(task.change_counts[:num_objects])
    num_changes = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    changed = np.sort(rng.choice(num_objects, num_changes, replace=False))
    free_slots = [s for s in range(grid_cells) if s not in set(slots.tolist())]
    changes = []
    for i in changed:
      attribute = task.attributes[rng.integers(len(task.attributes))]
      if attribute == "position":
        if not free_slots:
          break
        value = slot_name(free_slots.pop(rng.integers(len(free_slots))), task.grid_size)
      else:
        old = initial[i].value(attribute, task.grid_size)
        options = [v for v in task.values(attribute) if v != old]
        value = options[rng.integers(len(options))]
      changes.append((int(i) + 1, attribute, value))
    if len(changes) == num_changes and _movers_distinguishable(initial, changes):
      break
  camera = _sample_camera(rng, task) if cross_view else CANONICAL
  return Transformation(initial, tuple(changes), camera, cross_view)


# Unit directions from a triangle's centre to its corners, apex towards the back (-row).
_TRIANGLE_CORNERS = [(math.cos(math.radians(a)), math.sin(math.radians(a)))
                     for a in (-90.0, 30.0, 150.0)]


def _inside(obj: TvrObject, u: np.ndarray, v: np.ndarray, grid_size: int) -> np.ndarray:
  """bool [n]: which world points (u, v) in cells `obj` covers."""
  row, col = divmod(obj.slot, grid_size)
  radius = SIZE_RADII[obj.size]
  x, y = (u - (col + 0.5)) / radius, (v - (row + 0.5)) / radius  # circumradius 1
  if obj.shape == "circle":
    return x * x + y * y <= 1
  if obj.shape == "square":
    return np.maximum(np.abs(x), np.abs(y)) <= 1 / math.sqrt(2)
  inside = np.ones(x.shape, bool)
  for cx, cy in _TRIANGLE_CORNERS:  # on the inner side of the edge facing away from each corner
    inside &= -(x * cx + y * cy) <= 0.5  # (the inradius)
  return inside


def render(objects: Sequence[TvrObject], camera: Camera, task: TvrTask) -> np.ndarray:
  """uint8 [image_size, image_size, 3]: the floor, its edge stripes and the objects.

  Each pixel takes the colour of what its centre sees (no anti-aliasing: exact palette colours).
  """
  size, g = task.image_size, task.grid_size
  centers = np.arange(size) + 0.5
  xs, ys = np.meshgrid(centers, centers)
  world = camera.unproject(np.stack([xs.ravel(), ys.ravel()], 1), task)
  u, v = world[:, 0], world[:, 1]
  w = task.stripe_width / task.cell
  image = np.empty((size * size, 3), np.uint8)
  image[:] = BACKGROUND
  layers = [
      ((u >= 0) & (u < g) & (v >= 0) & (v < g), FLOOR),
      ((u >= 0) & (u < g) & (v >= g) & (v < g + w), FRONT_EDGE),
      ((u >= -w) & (u < 0) & (v >= 0) & (v < g), LEFT_EDGE),
  ] + [(_inside(obj, u, v, g), COLORS[obj.color]) for obj in objects]
  for mask, color in layers:
    image[mask] = color
  return image.reshape(size, size, 3)


def encode_png(pixels: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [height, width, 3] image."""
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def prompt_text(task: TvrTask, *, cross_view: bool) -> str:
  """The question, with one `<image>` tag per image (records.py's EasyR1 layout)."""
  if task.prompt_style == "short":
    return "Initial: <image>\nFinal: <image>\nWhat changed?"
  described = "; ".join(f"{a} ({', '.join(task.values(a))})" if a != "position"
                        else "position (cell a1-"
                        f"{slot_name(task.grid_size ** 2 - 1, task.grid_size)}, row a at the back)"
                        for a in task.attributes)
  view = (" The final state is seen from another viewpoint: the black edge is the front, the "
          "white edge the left." if cross_view else "")
  return (f"Initial state: <image>\nFinal state: <image>\n"
          f"Objects are numbered in reading order of the initial state.{view} Which objects "
          f"changed, and how? Attributes: {described}. Think in <think></think>, then answer "
          "index.attribute.value triplets in <answer></answer>.")


def sft_target(transformation: Transformation) -> str:
  """The SFT completion: short reasoning (view, then changed objects) and the answer."""
  steps = [f"object {index} changed {attribute}" for index, attribute, _ in
           transformation.changes]
  if transformation.cross_view:
    steps.insert(0, f"view {transformation.camera.view}")
  return f"<think>{'; '.join(steps)}</think><answer>{', '.join(transformation.answer)}</answer>"


def _object_records(objects: Sequence[TvrObject]) -> list[dict[str, Any]]:
  return [dict(index=i + 1, **dataclasses.asdict(o)) for i, o in enumerate(objects)]


def example_record(transformation: Transformation, task: TvrTask,
                   example_id: str | None = None) -> dict[str, Any]:
  """Renders a transformation into an EasyR1-layout record.

  Returns:
    dict with 'problem' (text with two `<image>` tags), 'images' (PNG bytes: initial, final),
    'answer' (triplet strings), 'response' (the SFT target, read by records.py), 'cross_view',
    'view' (the final camera's VIEWS name), 'camera' (its fields), 'objects' (initial objects
    with 'index', 'slot', 'color', 'shape', 'size'), 'data_type' and 'id' when given.
  """
  final = transformation.final(task.grid_size)
  record = {
      "problem": prompt_text(task, cross_view=transformation.cross_view),
      "images": [encode_png(render(transformation.initial, CANONICAL, task)),
                 encode_png(render(final, transformation.camera, task))],
      "answer": transformation.answer,
      "response": sft_target(transformation),
      "cross_view": transformation.cross_view,
      "view": transformation.camera.view,
      "camera": dataclasses.asdict(transformation.camera),
      "objects": _object_records(transformation.initial),
      "data_type": "multi_image",
  }
  if example_id is not None:
    record["id"] = example_id
  return record


def generate_example(seed_or_rng: int | Sequence[int] | np.random.Generator, *,
                     cross_view: bool, task: TvrTask = TvrTask(),
                     example_id: str | None = None) -> dict[str, Any]:
  """One rendered pair as a record (see `example_record`); the same seed gives the same record.

  Args:
    seed_or_rng: an int or int sequence (seeds a fresh generator), or a numpy Generator
      (advanced in place).
    cross_view: render the final image from another camera.
    task: what to draw from.
    example_id: stored as the record's 'id'.
  """
  rng = np.random.default_rng(seed_or_rng)
  return example_record(sample_transformation(rng, task, cross_view=cross_view), task,
                        example_id)


# The words Qwen2.5-VL's chat template puts around every prompt (its default system prompt and
# the role names), so that a tokenizer built for the task spends few tokens on them.
_CHAT_TEMPLATE_WORDS = "system\nYou are a helpful assistant.\nuser\nassistant\n"


def text_corpus(task: TvrTask = TvrTask(), num_examples: int = 512, seed: int = 0) -> list[str]:
  """Prompts and SFT targets of `num_examples` pairs (no rendering), e.g. to build a tokenizer."""
  rng = np.random.default_rng(seed)
  texts = [prompt_text(task, cross_view=False), prompt_text(task, cross_view=True),
           _CHAT_TEMPLATE_WORDS]
  for i in range(num_examples):
    texts.append(sft_target(sample_transformation(rng, task, cross_view=bool(i % 2))))
  return texts
