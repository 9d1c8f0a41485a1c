"""The 'infigui_r1' dataset: AndroidControl episode steps or ScreenSpot rows (infigui_r1.py) as a grain source.

    config.data = data_pipelines.default_config(name="infigui_r1", path="/data/android_control")
    config.data.episode_split = "train"     # AndroidControl's splits.json next to the TFRecords ('' : all)
    config.data.step_actions = ""           # keep only steps of these action types, e.g. "click" ('' : all)
    # ScreenSpot grounding:
    config.data.update(source="screenspot", path="/data/screenspot")   # the folder of screenspot_*.json

`config.data.path` for AndroidControl: a folder or glob of the released GZIP TFRecord files
(`android_control*`), or JSON / JSONL episode rows with the same fields (what the synthetic world
writes). `config.data.synthetic = 'train' | 'test'` writes the synthetic GUI world
(infigui_r1_synthetic.py) under `synthetic_dir` and reads it back the same way.
"""
from __future__ import annotations

import functools
import glob
import gzip
import json
import os
import struct
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import infigui_r1, infigui_r1_synthetic

SOURCES = ("android_control", "screenspot")
OPTIONS = dict(source="android_control", image_dir="", prompt_style="released", episode_split="", step_actions="",
               sft_targets="teacher",
               # The synthetic GUI world, written on first use into synthetic_dir.
               synthetic="", synthetic_items=0, synthetic_dir="", synthetic_test_size=100, teacher_error=0.5)


class TfRecordEpisodes:
  """AndroidControl's GZIP TFRecord files as random-access episode rows (indexed once at start:
  each record's offset in its decompressed stream; reads seek there, forward seeks are cheap)."""

  def __init__(self, paths: list[str]):
    self._index: list[tuple[str, int, int]] = []
    for path in paths:
      offset = 0
      for data in infigui_r1.read_tfrecord(path):
        self._index.append((path, offset + 12, len(data)))
        offset += 12 + len(data) + 4
    self._open: tuple[str, Any] | None = None

  def __getstate__(self):
    return {**self.__dict__, "_open": None}

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int) -> sources.RawRecord:
    path, offset, length = self._index[index]
    where = f"{path}:record {index + 1}"
    if self._open is None or self._open[0] != path:
      self._open = (path, gzip.open(path, "rb"))
    handle = self._open[1]
    handle.seek(offset)
    try:
      fields = infigui_r1.episode_fields(infigui_r1.parse_example(handle.read(length)))
    except (ValueError, UnicodeDecodeError, struct.error) as e:
      return sources.RawRecord(None, where, os.path.dirname(path), f"unreadable tf.train.Example: {e}")
    return sources.RawRecord(fields, where, os.path.dirname(path))


class EpisodeSteps:
  """One entry per step of each episode (read once at start), optionally only the episodes of a
  split and the steps of some action types. An episode without a readable action list keeps one
  entry, so that `step_example` skips it and the skip is counted and named."""

  def __init__(self, episodes, *, episode_ids: set | None = None, actions: tuple[str, ...] = ()):
    self._episodes = episodes
    self._entries: list[tuple[int, int]] = []
    for index in range(len(episodes)):
      fields = episodes[index].fields
      if episode_ids is not None and (fields or {}).get("episode_id") not in episode_ids:
        continue
      count = infigui_r1.step_count(fields)
      if count == 0:
        self._entries.append((index, 0))
        continue
      for step in range(count):
        if actions and _action_type(fields["actions"][step]) not in actions:
          continue
        self._entries.append((index, step))

  def __len__(self) -> int:
    return len(self._entries)

  def __getitem__(self, index: int) -> tuple[sources.RawRecord, int]:
    episode, step = self._entries[index]
    return self._episodes[episode], step


def _action_type(action: Any) -> str:
  try:
    action = json.loads(action) if isinstance(action, (str, bytes)) else action
  except ValueError:
    return ""
  return action.get("action_type", "") if isinstance(action, dict) else ""


def _episode_source(path: str):
  """TFRecord files (by name: android_control*, or no data suffix) or JSON / JSONL / Parquet rows."""
  paths = sorted(glob.glob(os.path.join(path, "android_control*"))) if os.path.isdir(path) else \
      sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
  tfrecords = [p for p in paths if not p.endswith(sources.SUPPORTED_SUFFIXES)]
  if tfrecords:
    return TfRecordEpisodes(tfrecords), os.path.dirname(tfrecords[0])
  return sources.file_source(path), path if os.path.isdir(path) else os.path.dirname(path)


def _split_ids(folder: str, split: str) -> set:
  path = os.path.join(folder, "splits.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.data.episode_split={split!r} needs AndroidControl's splits.json in {folder}")
  with open(path, encoding="utf-8") as f:
    splits = json.load(f)
  if split not in splits:
    raise ValueError(f"config.data.episode_split={split!r} is not in {path} (splits: {sorted(splits)})")
  return set(splits[split])


@register_dataset("infigui_r1", options=OPTIONS)
def build_infigui_r1(cfg: DataConfig) -> DatasetSpec:
  """AndroidControl steps or ScreenSpot rows (see the module docstring).

  Options: source ('android_control' | 'screenspot'), image_dir (where relative screenshots
  resolve; '' = next to the data), prompt_style ('released' | 'short'), episode_split,
  step_actions (comma-separated AndroidControl action types), sft_targets ('teacher': the records'
  teacher_responses; 'ground_truth': built from the action, the step instruction as sub-goal), synthetic, synthetic_items,
  synthetic_dir, synthetic_test_size, teacher_error.
  """
  options: dict[str, Any] = dict(cfg.options)
  if options["source"] not in SOURCES:
    raise ValueError(f"config.data.source={options['source']!r} must be one of {SOURCES}")
  if options["prompt_style"] not in infigui_r1.PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={options['prompt_style']!r} must be one of {infigui_r1.PROMPT_STYLES}")
  media_root = options["image_dir"] or cfg.layout.media_root
  path = cfg.path
  if options["synthetic"]:
    path = _write_synthetic(cfg, options)
  elif not path:
    raise ValueError("dataset 'infigui_r1' needs config.data.path (AndroidControl TFRecords / episode rows, or the "
                     "ScreenSpot folder) or config.data.synthetic='train' | 'test' (the synthetic GUI world)")
  if options["source"] == "screenspot":
    files = [os.path.join(path, f) for f in infigui_r1.SCREENSPOT_FILES if os.path.isfile(os.path.join(path, f))] \
        if os.path.isdir(path) else [path]
    if not files:
      raise FileNotFoundError(f"config.data.path={path!r} holds none of {infigui_r1.SCREENSPOT_FILES}")
    return DatasetSpec(source=sources.file_source(files), to_example=functools.partial(
        infigui_r1.screenspot_example, prompt_style=options["prompt_style"], media_root=media_root))
  episodes, folder = _episode_source(path)
  ids = _split_ids(folder, options["episode_split"]) if options["episode_split"] else None
  actions = tuple(a.strip() for a in options["step_actions"].split(",") if a.strip())
  unknown = [a for a in actions if a not in infigui_r1.ACTION_TYPES]
  if unknown:
    raise ValueError(f"config.data.step_actions: {unknown} are not AndroidControl action types {infigui_r1.ACTION_TYPES}")
  steps = EpisodeSteps(episodes, episode_ids=ids, actions=actions)
  if options["sft_targets"] not in infigui_r1.SFT_TARGETS:
    raise ValueError(f"config.data.sft_targets={options['sft_targets']!r} must be one of {infigui_r1.SFT_TARGETS}")
  return DatasetSpec(source=steps, to_example=functools.partial(
      _step_example, prompt_style=options["prompt_style"], media_root=media_root, sft_targets=options["sft_targets"]))


def _step_example(entry, *, prompt_style: str, media_root: str, sft_targets: str):
  raw, step = entry
  return infigui_r1.step_example(raw, step, prompt_style=prompt_style, media_root=media_root, sft_targets=sft_targets)


def _write_synthetic(cfg: DataConfig, options: dict[str, Any]) -> str:
  """Writes (or reuses) the synthetic split and returns its JSONL."""
  split, items = options["synthetic"], options["synthetic_items"]
  if split not in infigui_r1_synthetic.SPLITS or items < 1 or not options["synthetic_dir"]:
    raise ValueError(f"config.data.synthetic={split!r} needs one of {infigui_r1_synthetic.SPLITS}, "
                     f"synthetic_items >= 1 (got {items}) and synthetic_dir (got {options['synthetic_dir']!r})")
  out = infigui_r1_synthetic.write_split(options["synthetic_dir"], split, items, seed=cfg.seed,
                                         test_size=options["synthetic_test_size"],
                                         teacher_error=options["teacher_error"])
  return out["path"]
