"""A synthetic SATORI-R1 task: the answer is in one region, and the box says which.

A scene is `num_objects` flat shapes (circle, square or triangle; distinct colours) in distinct
cells of a `grid_size` x `grid_size` grid on a dark background; one of them sits inside a white
ring. The question is always "What colour is the shape inside the ring?": the answer is the colour
of one region only, and every other shape is a distractor of another colour.

Background: dark grey whose red grows from left to right and blue from top to bottom (by 60 of
255 over the image), so a region's own pixels say where it is. A pretrained VLM knows where each
of its vision tokens lies; a tiny decoder over a random, frozen vision tower cannot read a token's
position out of its features (rotary positions steer attention, they do not enter the values),
and without the gradient it learns the answer but never the box.

Sizes: `image_size` pixels square (a multiple of 28, so Qwen2.5-VL's `smart_resize` keeps it as it
is), cells of image_size / grid_size pixels: at the default 84 px a cell is one merged vision token
(patch 14 x merge 2), so finding the ring is finding one token among nine. A shape's centre is
jittered by up to `jitter` pixels in its cell and the ring is centred on it, so the box varies
continuously; colours are exact palette values (no anti-aliasing) so tests can read the scene back.

Record: VQA-Verify's layout (satori_r1.py), `messages` = the user turn `<image>` + question and,
for SFT, the assistant turn written by a teacher in SATORI's output format:

    <caption>red circle, green triangle, blue square and a ring</caption><bbox>[[29,1,55,27]]</bbox><answer>green</answer>

The caption lists the shapes in palette order of their colours and never says which is in the ring;
`bboxs` is the ring's box [x1, y1, x2, y2] in pixels (the image is not resized, so input and
original pixels coincide); `possible_answers` is the colour.

Teacher: a share `teacher_error` of the SFT records are written by a teacher that grounds the
wrong region: its box is the ring's box moved onto the shape nearest to the ringed one (centre
distance, ties in reading order), and its answer is that shape's colour. The answer always
follows the box, so SFT teaches "answer the colour in the box" and leaves the choice of the box
uncertain between two regions; the VQA and IoU rewards are what tell them apart in RL.

Splits: 'test' items are fixed (they ignore the seed); 'train' item i is drawn from (seed, i) and
redrawn when its layout (cells, colours, shapes, ringed shape) equals one of the first
`test_size` test items, so held-out scenes are never trained on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from data_pipelines.tasks import satori_r1, tvr
from data_pipelines.tasks.synthetic import items_apart_from, written_with

SPLITS = ("train", "test")
SHAPES = ("circle", "square", "triangle")
COLORS = {name: tvr.COLORS[name] for name in ("red", "green", "blue", "yellow", "purple", "orange")}
BACKGROUND = (40, 40, 40)
GRADIENT = 60  # red grows left to right and blue top to bottom by this much over the image
RING = (255, 255, 255)
QUESTION = "What colour is the shape inside the ring?"
_SPLIT_TAGS = {"train": 0x5341_5400, "test": 0x5341_5401}
_TEST_SEED = 0
_TEACHER_STREAM = 1  # the teacher's own random stream: items do not move when it changes


@dataclasses.dataclass(frozen=True)
class SatoriTask:
  """What the generator draws from; the defaults are sized for a tiny model on CPU.

  Attributes:
    image_size: side of the image in pixels, a multiple of 28 and of grid_size.
    grid_size: cells per side.
    num_objects: shapes per scene (2 .. grid_size**2), one of them ringed.
    num_colors: the first `num_colors` colours of COLORS are used (>= num_objects).
    jitter: a shape's centre moves up to this many pixels from its cell's centre.
  """
  image_size: int = 84
  grid_size: int = 3
  num_objects: int = 3
  num_colors: int = 6
  jitter: int = 1

  def __post_init__(self):
    if self.image_size % 28 or self.image_size % self.grid_size or self.grid_size < 2:
      raise ValueError(f"SATORI task: image_size={self.image_size} must be a multiple of 28 and of "
                       f"grid_size={self.grid_size} (>= 2)")
    if not 2 <= self.num_objects <= self.grid_size ** 2:
      raise ValueError(f"SATORI task: num_objects={self.num_objects} must be in [2, {self.grid_size ** 2}]")
    if not self.num_objects <= self.num_colors <= len(COLORS):
      raise ValueError(f"SATORI task: num_colors={self.num_colors} must be in [num_objects={self.num_objects}, "
                       f"{len(COLORS)}]")
    if not 0 <= self.jitter <= self.cell // 2 - self.ring_radius:
      raise ValueError(f"SATORI task: jitter={self.jitter} must be in [0, {self.cell // 2 - self.ring_radius}] "
                       "so the ring stays in its cell")

  @property
  def cell(self) -> int:
    return self.image_size // self.grid_size

  @property
  def ring_radius(self) -> int:
    """Outer radius of the ring; its box is 2 * ring_radius pixels square."""
    return self.cell * 13 // 28

  @property
  def shape_radius(self) -> int:
    """Circumradius of every shape: large (a third of its cell's pixels or more, so its colour
    dominates the cell's vision token), still clear of the ring."""
    return self.cell * 9 // 28


@dataclasses.dataclass(frozen=True)
class Shape:
  cell: int  # row-major cell index
  color: str
  shape: str
  center: tuple[int, int]  # (x, y) pixels


@dataclasses.dataclass(frozen=True)
class Item:
  """One scene; `shapes` in reading order, `ringed` indexes the shape inside the ring."""
  shapes: tuple[Shape, ...]
  ringed: int

  @property
  def layout(self) -> tuple:
    """What makes two scenes the same question (jitter aside)."""
    return tuple((s.cell, s.color, s.shape) for s in self.shapes), self.ringed

  @property
  def answer(self) -> str:
    return self.shapes[self.ringed].color

  @property
  def neighbour(self) -> int:
    """The shape nearest to the ringed one (centre distance; ties: reading order)."""
    cx, cy = self.shapes[self.ringed].center
    others = [i for i in range(len(self.shapes)) if i != self.ringed]
    return min(others, key=lambda i: ((self.shapes[i].center[0] - cx) ** 2 + (self.shapes[i].center[1] - cy) ** 2, i))


def sample_item(rng: np.random.Generator, task: SatoriTask) -> Item:
  cells = np.sort(rng.choice(task.grid_size ** 2, task.num_objects, replace=False))
  colors = rng.choice(task.num_colors, task.num_objects, replace=False)
  shapes = []
  for cell, color in zip(cells, colors):
    row, col = divmod(int(cell), task.grid_size)
    dx, dy = rng.integers(-task.jitter, task.jitter + 1, size=2)
    center = (col * task.cell + task.cell // 2 + int(dx), row * task.cell + task.cell // 2 + int(dy))
    shapes.append(Shape(int(cell), list(COLORS)[int(color)], SHAPES[int(rng.integers(len(SHAPES)))], center))
  return Item(tuple(shapes), int(rng.integers(task.num_objects)))


def ring_box(item: Item, index: int, task: SatoriTask) -> list[int]:
  """[x1, y1, x2, y2] pixels of a ring centred on shape `index` (the true box for the ringed one)."""
  x, y = item.shapes[index].center
  r = task.ring_radius
  return [x - r, y - r, x + r, y + r]


def _shape_mask(shape: Shape, xs: np.ndarray, ys: np.ndarray, radius: int) -> np.ndarray:
  x, y = xs - shape.center[0], ys - shape.center[1]
  if shape.shape == "circle":
    return x * x + y * y <= radius * radius
  if shape.shape == "square":
    half = radius / np.sqrt(2)
    return (np.abs(x) <= half) & (np.abs(y) <= half)
  # An upward triangle inscribed in the circle of `radius`.
  return (y <= radius / 2) & (np.sqrt(3) * x - y <= radius) & (-np.sqrt(3) * x - y <= radius)


def render(item: Item, task: SatoriTask) -> np.ndarray:
  """uint8 [image_size, image_size, 3]: the gradient background, the ring (2 px wide), the shapes."""
  centers = np.arange(task.image_size) + 0.5
  xs, ys = np.meshgrid(centers, centers)
  image = np.empty((task.image_size, task.image_size, 3), np.uint8)
  image[:] = BACKGROUND
  image[..., 0] += np.round(GRADIENT * xs / task.image_size).astype(np.uint8)
  image[..., 2] += np.round(GRADIENT * ys / task.image_size).astype(np.uint8)
  cx, cy = item.shapes[item.ringed].center
  distance = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
  image[(distance <= task.ring_radius) & (distance > task.ring_radius - 2)] = RING
  for shape in item.shapes:
    image[_shape_mask(shape, xs, ys, task.shape_radius)] = COLORS[shape.color]
  return image


def caption(item: Item) -> str:
  """The reference caption: every shape in palette order of its colour, then the ring (never which
  one). Palette order (not reading order) makes the caption a set read out by colour, which a tiny
  decoder learns by attending to each colour in turn."""
  order = list(COLORS)
  names = [f"{s.color} {s.shape}" for s in sorted(item.shapes, key=lambda s: order.index(s.color))]
  return f"{', '.join(names)} and a ring"


def response(item: Item, task: SatoriTask, grounded: int) -> str:
  """SATORI's output for a teacher that grounds shape `grounded` (the ringed one when right)."""
  box = ",".join(str(v) for v in ring_box(item, grounded, task))
  return (f"<caption>{caption(item)}</caption><bbox>[[{box}]]</bbox>"
          f"<answer>{item.shapes[grounded].color}</answer>")


def record(item: Item, image_name: str, task: SatoriTask, *, grounded: int | None,
           example_id: str) -> dict[str, Any]:
  """A VQA-Verify record (satori_r1.py's layout); with the teacher's assistant turn unless
  `grounded` is None."""
  messages = [{"role": "user", "content": f"<image>{QUESTION}"}]
  if grounded is not None:
    messages.append({"role": "assistant", "content": response(item, task, grounded)})
  return {"id": example_id, "messages": messages, "images": [image_name], "image_caption": caption(item),
          "bboxs": [ring_box(item, item.ringed, task)], "width": task.image_size, "height": task.image_size,
          "possible_answers": [item.answer],
          "teacher": None if grounded is None else ("right" if grounded == item.ringed else "neighbour")}


def _rng(split: str, seed: int, index: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index, *extra])


def split_items(split: str, num_items: int, *, task: SatoriTask = SatoriTask(), seed: int = 0,
                test_size: int = 200) -> list[Item]:
  """Items 0 .. num_items - 1 of `split` (see the module docstring for how splits differ)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  if split == "test":
    return [sample_item(_rng("test", _TEST_SEED, i), task) for i in range(num_items)]
  held_out = {item.layout for item in split_items("test", test_size, task=task)}
  return items_apart_from(num_items, lambda index: _rng(split, seed, index), lambda rng: sample_item(rng, task),
                          held_out, key=lambda item: item.layout)


def write_split(path: str, split: str, num_items: int, *, task: SatoriTask = SatoriTask(), seed: int = 0,
                test_size: int = 200, teacher_error: float = 0.5, reuse: bool = True) -> dict[str, Any]:
  """Writes `num_items` images of `split` and their records as `path/<split>.jsonl`.

  Images go to `path/images/<split>_<i>.png`, named relative to `path` in the records (so they
  resolve next to the JSONL, as a released download does). 'train' records carry the teacher's
  assistant turn (`teacher_error` of them grounded on the neighbour); 'test' records carry none.
  `path/<split>.params.json` keeps the arguments: when they match and every file exists (`reuse`),
  nothing is rewritten.

  Returns:
    {'path': the JSONL, 'seconds': generation time (0.0 when reused), 'items': the Items}.
  """
  if not 0 <= teacher_error <= 1:
    raise ValueError(f"teacher_error={teacher_error} must be in [0, 1]")
  params = {"split": split, "num_items": num_items, "task": dataclasses.asdict(task),
            "seed": seed if split == "train" else _TEST_SEED, "test_size": test_size if split == "train" else None,
            "teacher_error": teacher_error if split == "train" else None}
  items = split_items(split, num_items, task=task, seed=seed, test_size=test_size)
  names = [os.path.join("images", f"{split}_{i:05d}.png") for i in range(num_items)]
  out = {"path": os.path.join(path, f"{split}.jsonl"), "seconds": 0.0, "items": items}
  params_path = os.path.join(path, f"{split}.params.json")
  if reuse and written_with(params_path, params) and all(
      os.path.isfile(os.path.join(path, f)) for f in [*names, out["path"]]):
    return out
  start = time.perf_counter()
  os.makedirs(os.path.join(path, "images"), exist_ok=True)
  with open(out["path"], "w", encoding="utf-8") as f:
    for index, (item, name) in enumerate(zip(items, names)):
      with open(os.path.join(path, name), "wb") as image_file:
        image_file.write(tvr.encode_png(render(item, task)))
      grounded = None
      if split == "train":
        wrong = _rng(split, params["seed"], index, _TEACHER_STREAM).random() < teacher_error
        grounded = item.neighbour if wrong else item.ringed
      f.write(json.dumps(record(item, name, task, grounded=grounded, example_id=f"satori_r1/{split}/{index}")) + "\n")
  with open(params_path, "w", encoding="utf-8") as f:
    json.dump(params, f)
  out["seconds"] = time.perf_counter() - start
  return out


def text_corpus(task: SatoriTask = SatoriTask(), num_items: int = 256, seed: int = 0) -> list[str]:
  """Prompt texts and teacher responses of `num_items` items (no rendering), for tokenizers."""
  rng = np.random.default_rng(seed)
  # The chat template's own words (its default system prompt, role names) cost few tokens too.
  texts = [satori_r1.SYSTEM_PROMPT, satori_r1.SHORT_SYSTEM_PROMPT, QUESTION, tvr._CHAT_TEMPLATE_WORDS]  # pylint: disable=protected-access
  for index in range(num_items):
    item = sample_item(rng, task)
    texts.append(response(item, task, item.neighbour if index % 2 else item.ringed))
  return texts
