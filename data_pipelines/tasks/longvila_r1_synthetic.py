"""A synthetic long-video task for LongVILA-R1 whose answer needs two frames far apart.

Its learning target is NOT measured: no run has shown that a tiny model learns it, nor how much
GRPO adds over SFT (issue 23 deliverable 8 asks for >= 10 points; the embedded default that would
measure it is not built). What is tested is the layout and that the reader's uniform frames show
both flashes.

A video lasts `num_slots` slots of `slot_s` seconds at `fps`, `frame_size` pixels square, on a dark
background. The whole frame flashes one colour during one slot in the first quarter of the video
and another colour during one slot in the last quarter. The question asks for the two colours in
order; the four options are the truth (c1, c2), its swap (c2, c1), (c1, x) and (y, c2): one flash
alone leaves two options, so the answer needs both frames, from the two ends of the video.
Any `nframes` >= 2 * num_slots uniform frames sees every slot.

Records (`path/<split>.jsonl`) are in LongVideo-Reason's layout (longvila_r1.py): `videos`
(['videos/<split>_<i>.mp4'], relative to `path`), `problem` (options in the text), `answer`
(`<answer>X</answer>`), `reasoning` (the CoT for mode 'sft') and `id`. Videos are H.264 yuv444p,
lossless, one distinct frame per slot.

Splits: 'test' items are fixed; 'train' item i is drawn from (seed, i) and redrawn while it equals
one of the first `test_size` test items.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import av
import numpy as np

from data_pipelines.tasks import longvila_r1
from data_pipelines.tasks.synthetic import items_apart_from, written_with

COLORS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 240), "yellow": (240, 220, 40)}
LETTERS = "ABCD"
BACKGROUND = (40, 40, 40)
PROBLEM = "One colour flashes near the start of the video and another near the end. Which colours, in order?"
SPLITS = ("train", "test")
_SPLIT_TAGS = {"train": 0x4C56_5200, "test": 0x4C56_5201}
_TEST_SEED = 0


@dataclasses.dataclass(frozen=True)
class FlashTask:
  """Video geometry: `num_slots` slots of `slot_s` s at `fps`, frames `frame_size` px square."""
  num_slots: int = 16
  slot_s: int = 4
  fps: int = 1
  frame_size: int = 56

  def __post_init__(self):
    if self.num_slots < 4 or self.slot_s < 1 or self.fps < 1 or self.frame_size < 16:
      raise ValueError(f"FlashTask needs num_slots >= 4, slot_s >= 1, fps >= 1, frame_size >= 16; got {self}")


@dataclasses.dataclass(frozen=True)
class Item:
  """One video and question: flash slots and colours, and the option order (4 colour pairs)."""
  first_slot: int
  last_slot: int
  options: tuple[tuple[str, str], ...]
  answer: int  # index into options of (first colour, last colour)

  @property
  def colors(self) -> tuple[str, str]:
    return self.options[self.answer]


def sample_item(rng: np.random.Generator, task: FlashTask) -> Item:
  quarter = task.num_slots // 4
  first_slot = int(rng.integers(0, quarter))
  last_slot = int(rng.integers(task.num_slots - quarter, task.num_slots))
  names = list(COLORS)
  c1, c2 = (names[i] for i in rng.choice(len(names), 2, replace=False))
  x = names[int(rng.choice([i for i, n in enumerate(names) if n not in (c1, c2)]))]
  y = names[int(rng.choice([i for i, n in enumerate(names) if n not in (c1, c2, x)]))]
  pairs = [(c1, c2), (c2, c1), (c1, x), (y, c2)]
  order = rng.permutation(4)
  return Item(first_slot, last_slot, tuple(pairs[i] for i in order), int(np.argmax(order == 0)))


def problem_text(item: Item) -> str:
  """The problem with its options, as LongVideo-Reason writes them (one 'X. ...' line each)."""
  return PROBLEM + "".join(f"\n{letter}. {a}, then {b}" for letter, (a, b) in zip(LETTERS, item.options))


def slot_color(item: Item, slot: int) -> tuple[int, int, int]:
  if slot == item.first_slot:
    return COLORS[item.colors[0]]
  if slot == item.last_slot:
    return COLORS[item.colors[1]]
  return BACKGROUND


def encode_video(path: str, item: Item, task: FlashTask) -> str:
  """Writes the item's video (lossless H.264, yuv444p) and returns `path`."""
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=task.fps)
    stream.width = stream.height = task.frame_size
    stream.pix_fmt = "yuv444p"
    stream.options = {"crf": "0", "preset": "ultrafast"}
    frames = [av.VideoFrame.from_ndarray(np.full((task.frame_size, task.frame_size, 3), slot_color(item, k),
                                                 np.uint8), format="rgb24").reformat(format="yuv444p")
              for k in range(task.num_slots)]
    for i in range(task.num_slots * task.slot_s * task.fps):
      frame = frames[i // (task.slot_s * task.fps)]
      frame.pts = i
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


def record(item: Item, video: str, item_id: str) -> dict[str, Any]:
  """The LongVideo-Reason record of an item (`video` relative to the records file's folder)."""
  c1, c2 = item.colors
  letter = LETTERS[item.answer]
  return {"videos": [video], "problem": problem_text(item), "answer": f"<answer>{letter}</answer>",
          "reasoning": f"Near the start the flash is {c1}; near the end it is {c2}. So {c1}, then {c2}: {letter}.",
          "id": item_id}


def split_items(split: str, num_items: int, *, task: FlashTask = FlashTask(), seed: int = 0,
                test_size: int = 100) -> list[Item]:
  if split not in SPLITS:
    raise ValueError(f"split {split!r} must be one of {SPLITS}")
  rng_for = lambda tag, s: lambda i: np.random.default_rng([_SPLIT_TAGS[tag], s, i])
  if split == "test":
    return [sample_item(rng_for("test", _TEST_SEED)(i), task) for i in range(num_items)]
  held_out = set(split_items("test", test_size, task=task))
  return items_apart_from(num_items, rng_for("train", seed), lambda rng: sample_item(rng, task), held_out)


def write_split(path: str, split: str, num_items: int, *, task: FlashTask = FlashTask(), seed: int = 0,
                test_size: int = 100) -> str:
  """Writes `num_items` videos under `path/videos/` and `path/<split>.jsonl`; returns the records file.

  Nothing is rewritten when `path/<split>.params.json` holds the same arguments and every file exists.
  """
  params = {"split": split, "num_items": num_items, "task": dataclasses.asdict(task),
            "seed": seed if split == "train" else _TEST_SEED, "test_size": test_size if split == "train" else None}
  names = [os.path.join("videos", f"{split}_{i:05d}.mp4") for i in range(num_items)]
  records_path = os.path.join(path, f"{split}.jsonl")
  params_path = os.path.join(path, f"{split}.params.json")
  if written_with(params_path, params) and all(os.path.isfile(os.path.join(path, f))
                                               for f in [*names, records_path]):
    return records_path
  os.makedirs(os.path.join(path, "videos"), exist_ok=True)
  items = split_items(split, num_items, task=task, seed=seed, test_size=test_size)
  with open(records_path, "w", encoding="utf-8") as f:
    for i, (name, item) in enumerate(zip(names, items)):
      encode_video(os.path.join(path, name), item, task)
      f.write(json.dumps(record(item, name, f"longvila_r1_synthetic/{split}/{i}")) + "\n")
  with open(params_path, "w", encoding="utf-8") as f:
    json.dump(params, f)
  return records_path


def text_corpus(num_items: int = 64, seed: int = 0) -> list[str]:
  """The task's texts (prompts, CoT targets) to build a tiny model's tokenizer from."""
  texts = []
  for item in split_items("train", num_items, seed=seed, test_size=0):
    rec = record(item, "", "")
    texts += [longvila_r1.prompt_text(rec["problem"]),
              longvila_r1.sft_response(rec["reasoning"], LETTERS[item.answer])]
  return texts
