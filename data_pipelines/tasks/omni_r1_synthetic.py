"""A synthetic referring-video task for Omni-R1, written in the ReVOS layout (omni_r1.py).

A video is `num_frames` frames (default 16, shown at 2 fps: 8 s) of `frame_size` pixels square on a
dark background, with `num_objects` shapes (default 3) of distinct colours (red, green, blue,
yellow), each a square or a circle. The target moves (left, right, up or down, one grid step per
frame) and is visible only during its window of `window_s` seconds (aligned to whole seconds,
i.e. to Qwen2.5-VL's temporal patches of two frames); the other shapes stand still and stay on
screen. Shapes never overlap. Objects are `object_size` pixels on a grid of `object_size / 2`
pixels, so boxes take few values.

The referring expression names the target by attribute ("red circle") or by motion ("shape
moving left"): the policy must find WHEN the target is on screen (the keyframes) and rewrite WHAT
it is as an attribute description ("red circle") that the detail system, which sees one still
frame among the still distractors, can ground.

Teacher completions (the expression's `answer`, for SFT): one keyframe interval covering the
target's window, with the attribute description:
    <think>red circle</think><answer>{"start_time": "00:02.00", "end_time": "00:03.50",
    "description": "red circle"}</answer>
`imperfect_fraction` of them, split evenly, are written by an imperfect teacher: 'early' (the
first window of the video, whatever the target: a lazy default), 'distractor' (a distractor's
description and another window) or 'motion' (the right window, but the expression copied as the
description, which a single frame cannot ground), so RL has room to improve.

Detail records (`detail.json`, the detail system's SFT data): `detail_per_video` (frame, visible
object) pairs of each video, drawn at random: the frame, the object's attribute description and
its box.

Splits: 'test' items are fixed (they ignore the seed); 'train' item i is drawn from (seed, i) and
redrawn when it equals a test item among the first `test_size`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import numpy as np
import PIL.Image

from data_pipelines.tasks import omni_r1
from data_pipelines.tasks.synthetic import items_apart_from, written_with

COLORS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 240), "yellow": (240, 220, 40)}
SHAPES = ("square", "circle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
STILL = "still"  # the distractors' motion
BACKGROUND = (30, 30, 30)
SPLITS = ("train", "test")
TEACHERS = ("perfect", "early", "distractor", "motion")
_SPLIT_TAGS = {"train": 0x4F4D_4E00, "test": 0x4F4D_4E01}
_TEST_SEED = 0


@dataclasses.dataclass(frozen=True)
class ShapesTask:
  """What the generator draws.

  Attributes:
    frame_size: side of the square frames in pixels, a multiple of 28.
    num_frames: frames per video (2 fps), even.
    num_objects: shapes per video (<= 4: one per colour and motion).
    object_size: side of a shape in pixels; positions lie on a grid of object_size / 2.
    window_s: seconds each shape is visible (a whole number).
  """
  frame_size: int = 112
  num_frames: int = 16
  num_objects: int = 3
  object_size: int = 28
  window_s: int = 2

  def __post_init__(self):
    if self.frame_size % 28 or self.num_frames % 2 or not 1 <= self.num_objects <= 4:
      raise ValueError(f"{self}: frame_size must be a multiple of 28, num_frames even, num_objects in [1, 4]")
    if self.window_frames > self.num_frames or self.steps < self.window_frames:
      raise ValueError(f"{self}: a window of {self.window_frames} frames must fit the video and the frame")

  @property
  def window_frames(self) -> int:
    return int(self.window_s * omni_r1.FPS)

  @property
  def grid(self) -> int:
    return self.object_size // 2

  @property
  def steps(self) -> int:
    """Grid positions along a side."""
    return (self.frame_size - self.object_size) // self.grid + 1


@dataclasses.dataclass(frozen=True)
class Shape:
  color: str
  shape: str
  motion: str
  first_frame: int  # visible in frames first_frame .. first_frame + visible - 1
  start: tuple[int, int]  # grid (x, y) at first_frame
  visible: int = 0  # frames on screen; 0: the task's window

  @property
  def description(self) -> str:
    return f"{self.color} {self.shape}"

  def position(self, frame: int, task: ShapesTask) -> tuple[int, int] | None:
    """Top-left pixel at `frame`, None while not visible."""
    if not self.first_frame <= frame < self.first_frame + (self.visible or task.window_frames):
      return None
    dx, dy = MOTIONS.get(self.motion, (0, 0))
    k = frame - self.first_frame
    return (self.start[0] + dx * k) * task.grid, (self.start[1] + dy * k) * task.grid


@dataclasses.dataclass(frozen=True)
class Item:
  shapes: tuple[Shape, ...]
  target: int
  by_motion: bool

  @property
  def expression(self) -> str:
    shape = self.shapes[self.target]
    return f"shape moving {shape.motion}" if self.by_motion else shape.description


def _start(rng: np.random.Generator, motion: str, task: ShapesTask) -> tuple[int, int]:
  """A grid start from which `window_frames - 1` steps of `motion` stay inside the frame."""
  dx, dy = MOTIONS[motion]
  span = task.window_frames - 1

  def axis(d: int) -> int:
    low, high = (span, task.steps - 1) if d < 0 else (0, task.steps - 1 - span) if d > 0 else (0, task.steps - 1)
    return int(rng.integers(low, high + 1))

  return axis(dx), axis(dy)


def _overlap(shapes: Sequence[Shape], task: ShapesTask) -> bool:
  """Whether two shapes ever overlap (one would hide part of the other)."""
  for frame in range(task.num_frames):
    boxes = [p for p in (s.position(frame, task) for s in shapes) if p is not None]
    for i, (x1, y1) in enumerate(boxes):
      if any(abs(x1 - x2) < task.object_size and abs(y1 - y2) < task.object_size for x2, y2 in boxes[i + 1:]):
        return True
  return False


def sample_item(rng: np.random.Generator, task: ShapesTask) -> Item:
  """A moving target in its window and still distractors on screen throughout, of distinct colours,
  never overlapping (redrawn until they do not), and how the expression names the target."""
  seconds = task.num_frames // 2 - task.window_s + 1  # window starts, in whole seconds
  while True:
    colors = [str(c) for c in rng.permutation(list(COLORS))[:task.num_objects]]
    shape_of = lambda: SHAPES[int(rng.integers(len(SHAPES)))]
    motion = str(rng.choice(list(MOTIONS)))
    target_index = int(rng.integers(task.num_objects))
    shapes = tuple(
        Shape(c, shape_of(), motion, int(rng.integers(seconds)) * 2, _start(rng, motion, task))
        if i == target_index else
        Shape(c, shape_of(), STILL, 0, (int(rng.integers(task.steps)), int(rng.integers(task.steps))), task.num_frames)
        for i, c in enumerate(colors))
    if not _overlap(shapes, task):
      return Item(shapes, target_index, bool(rng.integers(2)))


def render(item: Item, frame: int, task: ShapesTask) -> tuple[np.ndarray, list[np.ndarray]]:
  """uint8 [S, S, 3] of `frame` and each shape's bool [S, S] mask (empty while not visible; a later
  shape would be drawn over an earlier one, and a covered pixel leave its mask, but sampled items
  never overlap)."""
  s, size = task.frame_size, task.object_size
  image = np.empty((s, s, 3), np.uint8)
  image[:] = BACKGROUND
  masks = []
  yy, xx = np.mgrid[:size, :size]
  disk = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 <= (size / 2) ** 2
  for shape in item.shapes:
    mask = np.zeros((s, s), bool)
    position = shape.position(frame, task)
    if position is not None:
      x, y = position
      mask[y:y + size, x:x + size] = disk if shape.shape == "circle" else True
      for other in masks:
        other &= ~mask
      image[mask] = COLORS[shape.color]
    masks.append(mask)
  return image, masks


def _rng(split: str, seed: int, index: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index, *extra])


def split_items(split: str, num_items: int, *, task: ShapesTask = ShapesTask(), seed: int = 0,
                test_size: int = 100) -> list[Item]:
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  if split == "test":
    return [sample_item(_rng("test", _TEST_SEED, i), task) for i in range(num_items)]
  held_out = {sample_item(_rng("test", _TEST_SEED, i), task) for i in range(test_size)}
  return items_apart_from(num_items, lambda index: _rng(split, seed, index), lambda rng: sample_item(rng, task),
                          held_out)


def teacher_answer(item: Item, teacher: str, task: ShapesTask, rng: np.random.Generator) -> str:
  """The SFT completion a teacher writes (see the module docstring)."""
  target = item.shapes[item.target]
  first, description = target.first_frame, target.description
  if teacher == "early":
    first = 0
  elif teacher == "distractor":
    others = [s for i, s in enumerate(item.shapes) if i != item.target]
    description = others[int(rng.integers(len(others)))].description if others else description
    starts = [f for f in range(0, task.num_frames - task.window_frames + 1, 2) if f != target.first_frame]
    first = int(rng.choice(starts))
  elif teacher == "motion":
    description = item.expression
  elif teacher != "perfect":
    raise ValueError(f"teacher={teacher!r} must be one of {TEACHERS}")
  start, end = first / omni_r1.FPS, (first + task.window_frames - 1) / omni_r1.FPS
  return omni_r1.answer_text([(start, end, description)], reasoning=description)


def _teacher(rng: np.random.Generator, imperfect_fraction: float) -> str:
  if rng.random() >= imperfect_fraction:
    return "perfect"
  return TEACHERS[1 + int(rng.integers(len(TEACHERS) - 1))]


def write_split(path: str, split: str, num_items: int, *, task: ShapesTask = ShapesTask(), seed: int = 0,
                test_size: int = 100, imperfect_fraction: float = 0.4, detail_per_video: int = 1,
                reuse: bool = True) -> dict[str, Any]:
  """Writes `num_items` videos of `split` in the ReVOS layout under `path/<split>/`.

  Files: JPEGImages/<video>/<00000>.jpg (quality 95), meta_expressions_train_.json (one expression
  per video, with the r1jax extensions `answer` (the teacher's completion), `teacher` and
  `description`), mask_dict.json (uncompressed COCO RLE per frame, null where absent), detail.json
  (the detail model's SFT records) and params.json (the arguments: with `reuse`, a folder written
  with the same arguments is kept).

  Returns:
    {'dir': the split folder, 'detail': detail.json, 'seconds': generation time (0.0 when reused),
     'items': the Items}.
  """
  if not 0 <= imperfect_fraction <= 1:
    raise ValueError(f"imperfect_fraction={imperfect_fraction} must be in [0, 1]")
  folder = os.path.join(path, split)
  params = {"split": split, "num_items": num_items, "task": dataclasses.asdict(task),
            "seed": seed if split == "train" else _TEST_SEED, "test_size": test_size if split == "train" else None,
            "imperfect_fraction": imperfect_fraction, "detail_per_video": detail_per_video}
  items = split_items(split, num_items, task=task, seed=seed, test_size=test_size)
  out = {"dir": folder, "detail": os.path.join(folder, "detail.json"), "seconds": 0.0, "items": items}
  params_path = os.path.join(folder, "params.json")
  if reuse and written_with(params_path, params):
    return out
  started = time.perf_counter()
  frames = [f"{i:05d}" for i in range(task.num_frames)]
  videos, masks, detail = {}, {}, []
  for index, item in enumerate(items):
    video = f"{split}_{index:05d}"
    os.makedirs(os.path.join(folder, "JPEGImages", video), exist_ok=True)
    per_object, visible = [[] for _ in item.shapes], []
    for frame, name in enumerate(frames):
      image, object_masks = render(item, frame, task)
      file = os.path.join("JPEGImages", video, name + ".jpg")
      PIL.Image.fromarray(image).save(os.path.join(folder, file), quality=95)
      for k, mask in enumerate(object_masks):
        per_object[k].append(omni_r1.rle_encode(mask) if mask.any() else None)
        if mask.any():
          visible.append({"image": file, "description": item.shapes[k].description, "bbox": omni_r1.mask_box(mask)})
    for k, rles in enumerate(per_object):
      masks[f"{video}_{k}"] = rles
    picks = _rng(split, params["seed"], index, 2).permutation(len(visible))[:detail_per_video]
    detail += [visible[i] for i in sorted(picks)]
    rng = _rng(split, params["seed"], index, 1)  # the teacher's own stream
    teacher = _teacher(rng, imperfect_fraction)
    videos[video] = {"frames": frames, "expressions": {"0": {
        "exp": item.expression, "obj_id": [item.target], "anno_id": [f"{video}_{item.target}"],
        "answer": teacher_answer(item, teacher, task, rng), "teacher": teacher,
        "description": item.shapes[item.target].description}}}
  for name, payload in (("meta_expressions_train_.json", {"videos": videos}), ("mask_dict.json", masks),
                        ("detail.json", detail), ("params.json", params)):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      json.dump(payload, f)
  out["seconds"] = time.perf_counter() - started
  return out


def text_corpus(task: ShapesTask = ShapesTask(), num_items: int = 256, seed: int = 0) -> list[str]:
  """Prompt, completion and detail texts of `num_items` items (no rendering), for tokenizers."""
  texts = []
  rng = np.random.default_rng(seed)
  for index in range(num_items):
    item = sample_item(rng, task)
    texts.append(omni_r1.global_prompt(item.expression, task.num_frames, "short"))
    texts.append(teacher_answer(item, TEACHERS[index % len(TEACHERS)], task, rng))
    for shape in item.shapes:
      texts.append(omni_r1.detail_messages(shape.description)[0]["content"][1]["text"])
      x, y = shape.start[0] * task.grid, shape.start[1] * task.grid
      texts.append(omni_r1.box_text([x, y, x + task.object_size - 1, y + task.object_size - 1]))
  texts += [omni_r1.clip_label(second) for second in range(task.num_frames // int(omni_r1.FPS) + 1)]
  for x in range(0, task.frame_size, task.grid // 2):  # every coordinate a box may take
    texts.append(omni_r1.box_text([x, x, x + task.object_size - 1, x + task.object_size - 1]))
  return texts
