"""A synthetic 3D-R1 task: rooms of coloured boxes as point clouds, "which box is under the ball?".

A room is an 18 x 12 floor (z = 0) whose colour says where it is (red grows with x, blue with y, as
the SATORI default's background), with `num_boxes` of the six boxes (4 x 4 x 2, one per colour of
COLORS); a white ball lies on one of them. Each colour has its own place, a slot of a 3 x 2 grid
(SLOT_OF: the red box always stands at the south-west slot, ...), so a box's 3D box follows from its
colour: a tiny model reads a vision token's content (colours) easily but not its position, and
here the answer is found by content alone (the ball and the box under it share the same part of
every view). The question is a relation, "Which box is under the white ball?"; the answer names
the box and gives its 3D box.

Files, in the layouts `three_d_r1.py` reads (ScanQA-style records, Scene-30K `cot`, `.npy` scenes):

    <dir>/scenes/synth_<split>_<i>.npy     [N, 6] x, y, z, r, g, b (0..255)
    <dir>/<split>.json                     [{"scene_id", "question_id", "question", "answers",
                                             "object_ids", "object_names", "boxes"[, "cot"]}, ...]

'train' records carry the teacher's `cot`: `<think>The white ball rests on the red box, box: [1,1,0,5,5,2].</think>
<answer>the red box</answer>`: the box stands in the reasoning, where the perception term finds it, and
not in the answer, whose text the semantic term embeds (a box inside the answer lowers its cosine to
the reference "red box": GRPO then learned to drop the box, see the config's docstring); a share `teacher_error` of them name
the box in the slot next to the right one (its name and its box), so SFT leaves the policy between
two boxes and the reward's perception (IoU) and semantic terms tell them apart in RL.

Splits by layout (which boxes stand, which one has the ball: C(6, 3) x 3 = 60 layouts with the
defaults): every fifth layout in enumeration order is held out; 'test' items are drawn from those
(fixed: they ignore the seed), 'train' items from the others (item i from (seed, i)), so no
held-out room is ever trained on.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any

import numpy as np

from data_pipelines.tasks import three_d_r1, tvr
from data_pipelines.tasks.synthetic import items_apart_from, written_with

SPLITS = ("train", "test")
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40),
          "purple": (150, 60, 200), "orange": (240, 140, 30)}
HELD_OUT_EVERY = 5  # every fifth layout is a held-out room
BALL = (255, 255, 255)
QUESTION = "Which box is under the white ball?"
# Whole-number box corners: digits are single tokens, so a box is ~16 tokens ("box: [1,1,0,3,3,2]").
# Boxes fill most of their slot (4 of 6 units), so in a 56-pixel view a box covers a good share of a vision
# token's pixels (a random frozen vision tower sees what dominates a patch).
ROOM_X, ROOM_Y = 18.0, 12.0
SLOTS = ((3.0, 3.0), (9.0, 3.0), (15.0, 3.0), (3.0, 9.0), (9.0, 9.0), (15.0, 9.0))  # SLOTS[i]: COLORS' i-th colour
BOX_HALF, BOX_HEIGHT, BALL_RADIUS = 2.0, 2.0, 1.2
_SPLIT_TAGS = {"train": 0x3D52_3100, "test": 0x3D52_3101}
_TEST_SEED = 0
_TEACHER_STREAM = 1


@dataclasses.dataclass(frozen=True)
class Item:
  """One room: `boxes` = ((slot, colour), ...) in slot order (the slot is the colour's); `ball` indexes the
  box under the ball."""
  boxes: tuple[tuple[int, str], ...]
  ball: int

  @property
  def layout(self) -> tuple:
    return self.boxes, self.ball

  def box(self, index: int) -> list[float]:
    x, y = SLOTS[self.boxes[index][0]]
    return [x - BOX_HALF, y - BOX_HALF, 0.0, x + BOX_HALF, y + BOX_HALF, BOX_HEIGHT]

  def name(self, index: int) -> str:
    return f"{self.boxes[index][1]} box"

  @property
  def neighbour(self) -> int:
    """The box in the nearest other slot (slot-centre distance; ties: slot order)."""
    bx, by = SLOTS[self.boxes[self.ball][0]]
    others = [i for i in range(len(self.boxes)) if i != self.ball]
    return min(others, key=lambda i: (np.hypot(SLOTS[self.boxes[i][0]][0] - bx, SLOTS[self.boxes[i][0]][1] - by), i))


@functools.cache
def layouts(num_boxes: int = 3, num_colors: int = 6) -> tuple[Item, ...]:
  """Every room, in enumeration order (colour subsets in lexicographic order, then the ball)."""
  return tuple(Item(tuple((c, list(COLORS)[c]) for c in chosen), ball)
               for chosen in itertools.combinations(range(num_colors), num_boxes) for ball in range(num_boxes))


def sample_item(rng: np.random.Generator, split: str, num_boxes: int = 3, num_colors: int = 6) -> Item:
  """A room of `split`'s layouts (module docstring), drawn uniformly."""
  rooms = [item for index, item in enumerate(layouts(num_boxes, num_colors))
           if (index % HELD_OUT_EVERY == 0) == (split == "test")]
  return rooms[int(rng.integers(len(rooms)))]


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
  return np.linspace(lo, hi, int(round((hi - lo) / step)) + 1)


def point_cloud(item: Item, step: float = 0.3) -> np.ndarray:
  """float32 [N, 6]: floor, the boxes' five visible faces and the ball's surface, x y z r g b."""
  parts = []
  fx, fy = np.meshgrid(_grid(0.0, ROOM_X, step), _grid(0.0, ROOM_Y, step))
  floor = np.stack([fx.ravel(), fy.ravel(), np.zeros(fx.size)], 1)
  floor_rgb = np.stack([60 + 80 * floor[:, 0] / ROOM_X, np.full(len(floor), 60.0), 60 + 80 * floor[:, 1] / ROOM_Y], 1)
  parts.append(np.concatenate([floor, floor_rgb], 1))
  for index, (_, color) in enumerate(item.boxes):
    x1, y1, z1, x2, y2, z2 = item.box(index)
    u, v = np.meshgrid(_grid(x1, x2, step), _grid(y1, y2, step))
    faces = [np.stack([u.ravel(), v.ravel(), np.full(u.size, z2)], 1)]
    for fixed_y in (y1, y2):
      a, b = np.meshgrid(_grid(x1, x2, step), _grid(z1, z2, step))
      faces.append(np.stack([a.ravel(), np.full(a.size, fixed_y), b.ravel()], 1))
    for fixed_x in (x1, x2):
      a, b = np.meshgrid(_grid(y1, y2, step), _grid(z1, z2, step))
      faces.append(np.stack([np.full(a.size, fixed_x), a.ravel(), b.ravel()], 1))
    points = np.concatenate(faces)
    parts.append(np.concatenate([points, np.tile(COLORS[color], (len(points), 1))], 1))
  bx, by = SLOTS[item.boxes[item.ball][0]]
  n = 400  # a Fibonacci sphere
  k = np.arange(n) + 0.5
  polar, azimuth = np.arccos(1 - 2 * k / n), np.pi * (1 + 5 ** 0.5) * k
  sphere = BALL_RADIUS * np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], 1)
  sphere += [bx, by, BOX_HEIGHT + BALL_RADIUS]
  parts.append(np.concatenate([sphere, np.tile(BALL, (n, 1))], 1))
  return np.concatenate(parts).astype(np.float32)


def box_text(box: list[float]) -> str:
  return "box: [" + ",".join(f"{v:g}" for v in box) + "]"


def response(item: Item, named: int) -> str:
  """The Scene-30K-style CoT of a teacher that names box `named` (the one under the ball when right)."""
  return (f"<think>The white ball rests on the {item.name(named)}, {box_text(item.box(named))}.</think>"
          f"<answer>the {item.name(named)}</answer>")


def record(item: Item, scene_id: str, *, named: int | None, question_id: str) -> dict[str, Any]:
  out = {"scene_id": scene_id, "question_id": question_id, "question": QUESTION, "answers": [item.name(item.ball)],
         "object_ids": [item.ball], "object_names": [item.name(item.ball)], "boxes": [item.box(item.ball)]}
  if named is not None:
    out["cot"] = response(item, named)
    out["teacher"] = "right" if named == item.ball else "neighbour"
  return out


def scene_objects(item: Item) -> list[tuple[str, list[float]]]:
  """[(label, box)] of every object in the room (the view descriptions' labels)."""
  x, y = SLOTS[item.boxes[item.ball][0]]
  ball = [x - BALL_RADIUS, y - BALL_RADIUS, BOX_HEIGHT, x + BALL_RADIUS, y + BALL_RADIUS, BOX_HEIGHT + 2 * BALL_RADIUS]
  return [(item.name(i), item.box(i)) for i in range(len(item.boxes))] + [("white ball", ball)]


def _rng(split: str, seed: int, index: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index, *extra])


def split_items(split: str, num_items: int, *, seed: int = 0, test_size: int = 100, num_boxes: int = 3,
                num_colors: int = 6) -> list[Item]:
  """Items 0 .. num_items - 1 of `split`; `test_size` is kept for the writer's parameters (the held-out
  rooms are the held-out layouts whatever their number)."""
  del test_size
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  draw = lambda rng: sample_item(rng, split, num_boxes, num_colors)
  if split == "test":
    return [draw(_rng("test", _TEST_SEED, i)) for i in range(num_items)]
  held_out = {item.layout for item in layouts(num_boxes, num_colors)[::HELD_OUT_EVERY]}
  return items_apart_from(num_items, lambda index: _rng(split, seed, index), draw, held_out,
                          key=lambda item: item.layout)


def write_split(path: str, split: str, num_items: int, *, seed: int = 0, test_size: int = 100,
                teacher_error: float = 0.5, num_boxes: int = 3, num_colors: int = 6, reuse: bool = True
                ) -> dict[str, Any]:
  """Writes `path/<split>.json` and its scenes under `path/scenes/` (module docstring); reuses them
  when `path/<split>.params.json` matches. Returns {'path', 'scene_dir', 'seconds', 'items'}."""
  if not 0 <= teacher_error <= 1:
    raise ValueError(f"teacher_error={teacher_error} must be in [0, 1]")
  if not 2 <= num_boxes < num_colors <= len(COLORS):
    raise ValueError(f"3D-R1 synthetic: need 2 <= num_boxes ({num_boxes}) < num_colors ({num_colors}) <= "
                     f"{len(COLORS)}")
  params = {"split": split, "num_items": num_items, "seed": seed if split == "train" else _TEST_SEED,
            "test_size": test_size if split == "train" else None,
            "teacher_error": teacher_error if split == "train" else None, "num_boxes": num_boxes,
            "num_colors": num_colors}
  items = split_items(split, num_items, seed=seed, test_size=test_size, num_boxes=num_boxes, num_colors=num_colors)
  scene_dir = os.path.join(path, "scenes")
  ids = [f"synth_{split}_{i:05d}" for i in range(num_items)]
  out = {"path": os.path.join(path, f"{split}.json"), "scene_dir": scene_dir, "seconds": 0.0, "items": items}
  params_path = os.path.join(path, f"{split}.params.json")
  if reuse and written_with(params_path, params) and os.path.isfile(out["path"]) and all(
      os.path.isfile(os.path.join(scene_dir, f"{i}.npy")) for i in ids):
    return out
  start = time.perf_counter()
  os.makedirs(scene_dir, exist_ok=True)
  records = []
  for index, (item, scene_id) in enumerate(zip(items, ids)):
    np.save(os.path.join(scene_dir, f"{scene_id}.npy"), point_cloud(item))
    named = None
    if split == "train":
      wrong = _rng(split, params["seed"], index, _TEACHER_STREAM).random() < teacher_error
      named = item.neighbour if wrong else item.ball
    records.append(record(item, scene_id, named=named, question_id=f"three_d_r1/{split}/{index}"))
  with open(out["path"], "w", encoding="utf-8") as f:
    json.dump(records, f)
  with open(params_path, "w", encoding="utf-8") as f:
    json.dump(params, f)
  out["seconds"] = time.perf_counter() - start
  return out


def text_corpus(num_items: int = 256, seed: int = 0) -> list[str]:
  """Prompt texts and teacher answers (no rendering), for the task's tokenizer."""
  rng = np.random.default_rng(seed)
  texts = [three_d_r1.SYSTEM_PROMPT, three_d_r1.SHORT_SYSTEM_PROMPT, QUESTION, tvr._CHAT_TEMPLATE_WORDS]  # pylint: disable=protected-access
  for index in range(num_items):
    item = sample_item(rng, "train")
    texts.append(response(item, item.neighbour if index % 2 else item.ball))
  return texts
