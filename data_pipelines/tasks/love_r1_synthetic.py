"""A synthetic long-video task for LOVE-R1: WHEN shows in the overview, WHAT only when zoomed.

A video lasts `num_slots` slots of `slot_s` seconds (default 6-15 slots of 20 s: 2-5 minutes) at
`fps` (default 1) frames per second, `frame_size` pixels square, on a plain dark background.
Layout, in quarters of the frame side (one merged vision token each at the default 112 px):
* a clock band across the top quarter, lit one segment (frame_size / max_slots px) further at each
  slot: the stand-in, legible at any resolution, for the red timestamp the reader stamps on every
  frame (a few pixels tall in an overview, too small for a tiny model to read);
* during one slot, the event: a large white square in the right half (visible in any overview)
  and, filling the left half below the clock, a checkered pattern tiling a 2 x 2 motif of four
  colours (red, green, blue, yellow, in a random arrangement);
* the bottom-right quarter stays clear for the stamp.
The question asks for the colour of the pattern's top-left square: options 'A. red' ...
'D. yellow', answer `<answer>X</answer>`. The true interval is the event's slot,
[k * slot_s, (k + 1) * slot_s] in integer seconds, written as `clue_intervals`. So WHEN is read in
the overview (the clock under the white square) and WHAT only in a zoom clip.

Why the overview cannot tell the answer: the motif repeats with a period of 2 * `cell` pixels, so
a frame shown at side <= frame_size / (2 * cell) (28 px for the defaults) averages every period
to the mean of the four colours, whatever the arrangement. The pattern starts and ends with half
cells and fades into its mean colour at its edges, which keeps the windowed tiling balanced at its edges
too: across the 24 arrangements the 28 x 28 overview differs by at most a few levels (of 255),
while the full-size frame differs by ~200. Zoom clips must keep the frame size
(zoom_max_pixels >= frame_size**2) to read 2-pixel cells. `tests/data_pipelines/test_tasks_love_r1.py`
checks both.

Videos are H.264 yuv444p, lossless (CRF 0), keyframe every slot (cheap seeks for zoom clips), in
.mp4 (or VP9 lossless in .webm). Each slot has one distinct frame, converted to YUV once, so a 2-5
minute video encodes in tens of milliseconds.

Splits: 'test' records are fixed (they ignore the seed); 'train' record i is drawn from (seed, i)
and redrawn when it equals one of the first `test_size` test items (same slots, event slot and
arrangement), so held-out items are never trained on.

CoT SFT records (`cot_record`) follow love_r1.py's CoT layout. A teacher writes two steps,
zoom (`I need to zoom in on the video.\\n\\n` ... `\\boxed{[t1, t2]}`) then answer (`I get the
answer.\\n\\n` ... `\\boxed{X}`); `imperfect_fraction` of the records, split evenly, are
'loose' (the zoom spans one more slot on each side, answer right), 'wrong' (a wrong slot, then a
random answer) or 'guess' (answers at once, a random colour, no zoom), so RL has room to improve.
"""
from __future__ import annotations

import dataclasses
import fractions
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from data_pipelines.tasks import love_r1
from data_pipelines.tasks.synthetic import items_apart_from, written_with

COLORS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 240),
          "yellow": (240, 220, 40)}
LETTERS = "ABCD"
BACKGROUND = (40, 40, 40)
MARKER = (255, 255, 255)
CLOCK = (160, 160, 160)
SPLITS = ("train", "test")
TEACHERS = ("perfect", "loose", "wrong", "guess")
PROBLEM = ("A small checkered pattern appears while the white square is on screen. What colour "
           "is the top-left square of the pattern?\n")
OPTIONS = [f"{letter}. {name}" for letter, name in zip(LETTERS, COLORS)]
VISION_FACTOR = 28
# First entropy word of each split's seed sequence: disjoint streams per split.
_SPLIT_TAGS = {"train": 0x4C4F_5600, "test": 0x4C4F_5601}
_TEST_SEED = 0
_CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


@dataclasses.dataclass(frozen=True)
class LongVideoTask:
  """What the generator draws from.

  Attributes:
    frame_size: side of the square frames in pixels, a multiple of 28.
    fps: frames per second of the encoded video.
    slot_s: the event lasts one slot of this many seconds; zoom targets are whole slots.
    min_slots, max_slots: the video lasts a uniform number of slots in this range.
    cell: side of one pattern square in pixels (the motif's period is 2 * cell).
    container: '.mp4' (H.264) or '.webm' (VP9).
  """
  frame_size: int = 112
  fps: float = 1.0
  slot_s: int = 20
  min_slots: int = 6
  max_slots: int = 15
  cell: int = 2
  container: str = ".mp4"

  def __post_init__(self):
    if self.frame_size < VISION_FACTOR or self.frame_size % VISION_FACTOR:
      raise ValueError(f"frame_size={self.frame_size} must be a positive multiple of 28")
    if not 2 <= self.min_slots <= self.max_slots:
      raise ValueError(f"need 2 <= min_slots ({self.min_slots}) <= max_slots ({self.max_slots})")
    if not 1 <= self.slot_s <= 60 or self.fps <= 0:  # a one-slot zoom must be valid (<= 60 s)
      raise ValueError(f"slot_s={self.slot_s} must be in [1, 60] and fps={self.fps} > 0")
    if self.cell < 1 or 2 * self.cell > self.quarter // 2:
      raise ValueError(f"cell={self.cell} must be >= 1 and its motif fit twice in a quarter of the frame "
                       f"({self.quarter} px)")
    if self.container not in _CODECS:
      raise ValueError(f"container={self.container!r} must be one of {tuple(_CODECS)}")

  @property
  def quarter(self) -> int:
    """A quarter of the frame side: one merged vision token (28 px) at the default 112 px."""
    return self.frame_size // 4

  @property
  def clock_box(self) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the clock's band, across the top quarter."""
    q = self.quarter
    return q // 4, 3 * q // 4, 0, self.frame_size

  def clock_fill(self, slot: int) -> int:
    """Columns of the clock's band lit during `slot`: one segment more per slot."""
    return (slot + 1) * self.frame_size // self.max_slots

  @property
  def pattern_box(self) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pattern: the left half below the clock, in whole motifs."""
    q, period = self.quarter, 2 * self.cell
    return q, q + 3 * q // period * period, 0, 2 * q // period * period

  @property
  def pattern_border(self) -> int:
    """How far the pattern's contrast ramps up from its edges: two motifs."""
    return 4 * self.cell

  @property
  def marker_box(self) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the white square, in the right half, clear of the stamp."""
    q = self.quarter
    return q + q // 4, 3 * q - q // 4, 2 * q + q // 4, 4 * q - q // 4

  @property
  def overview_side(self) -> int:
    """The largest overview side at which the pattern averages out (frame_size / (2 * cell))."""
    return self.frame_size // (2 * self.cell)


@dataclasses.dataclass(frozen=True)
class Item:
  """One question before rendering.

  Attributes:
    num_slots: the video lasts num_slots * slot_s seconds.
    event_slot: the slot (0-based) during which the square and the pattern are shown.
    arrangement: colour indices (into COLORS) of the motif's cells, row-major [[0, 1], [2, 3]];
      arrangement[0], the top-left cell, is the answer.
  """
  num_slots: int
  event_slot: int
  arrangement: tuple[int, int, int, int]

  @property
  def answer(self) -> str:
    return LETTERS[self.arrangement[0]]

  def duration(self, task: LongVideoTask) -> int:
    return self.num_slots * task.slot_s

  def interval(self, task: LongVideoTask) -> list[int]:
    return [self.event_slot * task.slot_s, (self.event_slot + 1) * task.slot_s]


def sample_item(rng: np.random.Generator, task: LongVideoTask) -> Item:
  num_slots = int(rng.integers(task.min_slots, task.max_slots + 1))
  return Item(num_slots, int(rng.integers(num_slots)),
              tuple(int(c) for c in rng.permutation(len(COLORS))))


def pattern(arrangement, task: LongVideoTask) -> np.ndarray:
  """float64 [height, width, 3] of `task.pattern_box`: the motif tiled, fading into its mean colour.

  The tiling starts with half a cell, drawn at twice the resolution and box-averaged (a half cell
  of an odd `cell` is a pixel of half weight). Its contrast ramps up linearly over
  `task.pattern_border` pixels from each edge: a resampling filter that straddles a hard edge of a
  periodic pattern sees an unbalanced part of a motif, a ramp leaves it nearly nothing to see.
  """
  top, bottom, left, right = task.pattern_box
  cell, border = task.cell, task.pattern_border
  phase = lambda size: ((np.arange(2 * size) + cell) // (2 * cell)) % 2  # half-pixel units, shifted by cell/2 px
  rows, cols = phase(bottom - top), phase(right - left)
  colors = np.asarray(list(COLORS.values()), np.float64)
  motif = np.asarray(arrangement).reshape(2, 2)
  tiled = colors[motif[rows[:, None], cols[None, :]]].reshape(bottom - top, 2, right - left, 2, 3).mean((1, 3))
  ramp = lambda size: np.clip((np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5) / border, 0, 1)
  contrast = ramp(bottom - top)[:, None, None] * ramp(right - left)[None, :, None]
  mean = colors.mean(0)
  return mean + contrast * (tiled - mean)


def render(item: Item, task: LongVideoTask, *, slot: int, event: bool) -> np.ndarray:
  """uint8 [frame_size, frame_size, 3]: the background and the clock at `slot`, plus the square and
  the pattern if `event`."""
  s = task.frame_size
  frame = np.empty((s, s, 3), np.float64)
  frame[:] = BACKGROUND
  top, bottom, left, _ = task.clock_box
  frame[top:bottom, left:left + task.clock_fill(slot)] = CLOCK
  if event:
    top, bottom, left, right = task.marker_box
    frame[top:bottom, left:right] = MARKER
    top, bottom, left, right = task.pattern_box
    frame[top:bottom, left:right] = pattern(item.arrangement, task)
  return np.round(frame).astype(np.uint8)


def encode_video(path: str, item: Item, task: LongVideoTask) -> str:
  """Writes the item's video (lossless, yuv444p; see the module docstring) and returns `path`."""
  codec = _CODECS[task.container]
  rate = fractions.Fraction(task.fps).limit_denominator(1000)
  num_frames = int(round(item.duration(task) * task.fps))
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width = stream.height = task.frame_size
    stream.pix_fmt = "yuv444p"  # 4:2:0 chroma would blur the 2-pixel colour cells
    stream.thread_count = 1  # tiny frames: threads cost more than they save
    gop = max(1, int(round(task.slot_s * task.fps)))
    if codec == "libx264":
      stream.options = {"crf": "0", "preset": "ultrafast",
                        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    else:
      stream.options = {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}
      stream.gop_size = gop
    # One distinct frame per slot, converted to YUV once and re-sent with new timestamps.
    frames = [av.VideoFrame.from_ndarray(render(item, task, slot=k, event=k == item.event_slot), format="rgb24")
              .reformat(format="yuv444p") for k in range(item.num_slots)]
    for i in range(num_frames):
      frame = frames[min(int(i / task.fps) // task.slot_s, item.num_slots - 1)]
      frame.pts = i
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


def _rng(split: str, seed: int, index: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index, *extra])


def held_out_items(task: LongVideoTask, test_size: int) -> list[Item]:
  """The first `test_size` items of the fixed 'test' split."""
  return [sample_item(_rng("test", _TEST_SEED, i), task) for i in range(test_size)]


def split_items(split: str, num_items: int, *, task: LongVideoTask = LongVideoTask(),
                seed: int = 0, test_size: int = 200) -> list[Item]:
  """Items 0 .. num_items - 1 of `split` (see the module docstring for how splits differ)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  if split == "test":
    return held_out_items(task, num_items)
  held_out = set(held_out_items(task, test_size))
  space = len(COLORS) * 3 * 2 * sum(range(task.min_slots, task.max_slots + 1))  # 4! arrangements
  if len(held_out) >= space:
    raise ValueError(f"test_size={test_size} holds out all {space} items of this task")
  return items_apart_from(num_items, lambda index: _rng(split, seed, index), lambda rng: sample_item(rng, task),
                          held_out)


def record(item: Item, video_path: str, task: LongVideoTask,
           example_id: str | None = None) -> dict[str, Any]:
  """The item as a released-layout RL record (love_r1.py) plus `clue_intervals` (the truth)."""
  fields = {"path": video_path, "problem": PROBLEM, "options": list(OPTIONS),
            "problem_type": "multiple choice", "data_type": "video",
            "solution": f"<answer>{item.answer}</answer>", "zoomin_intervals": [],
            "clue_intervals": [item.interval(task)]}
  if example_id is not None:
    fields["id"] = example_id
  return fields


def teacher_steps(item: Item, task: LongVideoTask, teacher: str, rng: np.random.Generator,
                  brief: bool = False) -> tuple[list[str], list[list[int]]]:
  """(step texts, zoomin_intervals) of one CoT: two steps, or one for a 'guess'. `brief`: the
  prefix and the boxed answer only (a tiny model's short completions)."""
  zoom_prefix, answer_prefix = love_r1.prefixes()
  names = list(COLORS)
  true = item.interval(task)
  if teacher == "guess":
    color = names[rng.integers(len(names))]
    reasoning = "" if brief else f"The pattern is too small to read; it looks {color}. "
    return [f"{answer_prefix}{reasoning}\\boxed{{{LETTERS[names.index(color)]}}}"], []
  seen, color = true, names[item.arrangement[0]]  # the slot the teacher saw, its answer
  if teacher == "perfect":
    zoom = true
  elif teacher == "loose":  # one more slot each side, within the longest valid zoom
    widen = int(min(task.slot_s, (min(item.duration(task) / 2, 60) - task.slot_s) // 2))
    zoom = [max(0, true[0] - widen), min(item.duration(task), true[1] + widen)]
  elif teacher == "wrong":  # misplaces the square, so the clip shows no pattern: it guesses
    slot = int(rng.choice([k for k in range(item.num_slots) if k != item.event_slot]))
    seen = zoom = [slot * task.slot_s, (slot + 1) * task.slot_s]
    color = names[rng.integers(len(names))]
  else:
    raise ValueError(f"teacher={teacher!r} must be one of {TEACHERS}")
  reasoning1 = "" if brief else (f"The white square is on screen from {seen[0]} s to {seen[1]} s; its "
                                 "pattern is too small to read here. ")
  reasoning2 = "" if brief else f"The top-left square of the pattern is {color}. "
  step1 = f"{zoom_prefix}{reasoning1}\\boxed{{[{zoom[0]}, {zoom[1]}]}}"
  step2 = f"{answer_prefix}{reasoning2}\\boxed{{{LETTERS[names.index(color)]}}}"
  return [step1, step2], [zoom]


def cot_record(item: Item, video_path: str, task: LongVideoTask, *, teacher: str,
               rng: np.random.Generator, example_id: str | None = None, brief: bool = False) -> dict[str, Any]:
  """The item as a CoT SFT record (love_r1.py's CoT layout) written by `teacher` (TEACHERS).

  It also carries the RL record's `problem` / `options` / `problem_type`, so that SFT prompts are
  built exactly as the RL prompts are, in either prompt style.
  """
  steps, zooms = teacher_steps(item, task, teacher, rng, brief)
  question = love_r1.question_text(PROBLEM, OPTIONS, "multiple choice")
  fields = {"video": video_path, "problem": PROBLEM, "options": list(OPTIONS), "problem_type": "multiple choice",
            "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]
            + [{"role": "assistant", "content": step} for step in steps],
            "cot_data": True, "zoomin_intervals": zooms, "teacher": teacher,
            "solution": f"<answer>{item.answer}</answer>",
            "clue_intervals": [item.interval(task)]}
  if example_id is not None:
    fields["id"] = example_id
  return fields


def _teacher(rng: np.random.Generator, imperfect_fraction: float) -> str:
  if rng.random() >= imperfect_fraction:
    return "perfect"
  return TEACHERS[1 + int(rng.integers(len(TEACHERS) - 1))]


def write_split(path: str, split: str, num_items: int, *, task: LongVideoTask = LongVideoTask(),
                seed: int = 0, test_size: int = 200, imperfect_fraction: float = 0.3,
                brief: bool = False, threads: int = 2, reuse: bool = True) -> dict[str, Any]:
  """Writes `num_items` videos of `split` and their records in the released layouts.

  Files: `path/videos/<split>_<i>.mp4`, `path/<split>.json` (RL records, read by the 'love_r1'
  dataset in mode 'rl'), `path/<split>_cot.json` (CoT records, mode 'sft'), and
  `path/<split>.params.json`, the arguments: when they match and every file exists (`reuse`),
  nothing is regenerated. Record paths are relative to `path`.

  Args:
    path: output folder.
    split: 'train' or 'test'.
    num_items: records (and videos) to write.
    task: what to draw.
    seed: the training seed ('test' ignores it).
    test_size: held-out items kept out of 'train'.
    imperfect_fraction: share of CoT records written by an imperfect teacher.
    brief: CoT steps without reasoning text (`teacher_steps`).
    threads: videos encoded in parallel (PyAV releases the GIL while encoding).
    reuse: keep existing files written with the same arguments.

  Returns:
    {'rl': JSON path, 'cot': JSON path, 'seconds': generation time (0.0 when reused),
     'items': the Items}.
  """
  if not 0 <= imperfect_fraction <= 1:
    raise ValueError(f"imperfect_fraction={imperfect_fraction} must be in [0, 1]")
  params = {"split": split, "num_items": num_items, "task": dataclasses.asdict(task),
            "seed": seed if split == "train" else _TEST_SEED,
            "test_size": test_size if split == "train" else None,
            "imperfect_fraction": imperfect_fraction, "brief": brief}
  items = split_items(split, num_items, task=task, seed=seed, test_size=test_size)
  names = [os.path.join("videos", f"{split}_{i:05d}{task.container}") for i in range(num_items)]
  out = {"rl": os.path.join(path, f"{split}.json"), "cot": os.path.join(path, f"{split}_cot.json"),
         "seconds": 0.0, "items": items}
  params_path = os.path.join(path, f"{split}.params.json")
  if reuse and written_with(params_path, params) and all(
      os.path.isfile(os.path.join(path, f)) for f in [*names, out["rl"], out["cot"]]):
    return out
  start = time.perf_counter()
  os.makedirs(os.path.join(path, "videos"), exist_ok=True)
  jobs = [(os.path.join(path, name), item, task) for name, item in zip(names, items)]
  with ThreadPoolExecutor(max(1, threads)) as pool:
    list(pool.map(lambda job: encode_video(*job), jobs))
  ids = [f"love_r1_synthetic/{split}/{i}" for i in range(num_items)]
  rl = [record(item, name, task, i) for item, name, i in zip(items, names, ids)]
  cot = []
  for index, (item, name, i) in enumerate(zip(items, names, ids)):
    rng = _rng(split, params["seed"], index, 1)  # the teacher's own stream: items stay put
    cot.append(cot_record(item, name, task, teacher=_teacher(rng, imperfect_fraction), rng=rng,
                          example_id=i, brief=brief))
  for file, rows in ((out["rl"], rl), (out["cot"], cot)):
    with open(file, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  with open(params_path, "w", encoding="utf-8") as f:
    json.dump(params, f)
  out["seconds"] = time.perf_counter() - start
  return out


def text_corpus(task: LongVideoTask = LongVideoTask(), num_items: int = 256,
                seed: int = 0) -> list[str]:
  """The prompt texts and teacher step texts of `num_items` items (no rendering), for tokenizers."""
  texts = [love_r1.SYSTEM_MESSAGE, love_r1.question_text(PROBLEM, OPTIONS, "multiple choice")
           + love_r1.ZOOM_INSTRUCTION, love_r1.full_video_caption(task.max_slots * task.slot_s)]
  rng = np.random.default_rng(seed)
  for index in range(num_items):
    item = sample_item(rng, task)
    teacher = TEACHERS[index % len(TEACHERS)]
    steps, zooms = teacher_steps(item, task, teacher, rng)
    texts += steps + [love_r1.full_video_caption(item.duration(task))]
    texts += [love_r1.zoom_caption(*zoom) for zoom in zooms]
  return texts
