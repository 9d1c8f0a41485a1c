"""The `config.data` section: defaults, validation (unknown keys are errors), typed view.

A recipe config starts from `default_config()` and sets what it needs:

    config.data = data_pipelines.default_config()
    config.data.name = "files"                 # a registered dataset
    config.data.path = "/data/geo3k/train.parquet"
    config.data.batch_size = 32                # prompts per step, all hosts together
    config.data.video.fps = 1.0

Keys a dataset declares in `register_dataset(name, options=...)` are allowed on top of the
common ones (e.g. `config.data.num_views` for 'scene3d'); anything else raises, naming the key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from data_pipelines.images import ResizeBounds
from data_pipelines.records import LayoutOptions
from data_pipelines.video import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, VideoSampling

_COMMON = dict(
    name="files",  # registered dataset (data_pipelines.registry)
    path="",  # data file(s): a path, comma-separated paths, a folder or a glob
    batch_size=8,  # prompts per step over all hosts; each host yields batch_size / hosts
    seed=0,  # shuffle seed; the same seed gives the same batches
    shuffle=True,
    num_epochs=-1,  # passes over the data; -1 repeats forever (RL's usual setting)
    num_workers=0,  # grain worker processes decoding media (0: in the trainer process)
    worker_buffer_size=2,  # examples each worker prepares ahead
    read_threads=2,  # threads per process running the per-record transform
    read_buffer_size=8,  # examples prepared ahead by those threads
    prefetch_batches=2,  # batches prepared ahead in a background thread (0: off)
    strict=False,  # raise on bad data (naming the file/record) instead of skipping it
    max_prompt_length=1024,  # RL: longer prompts (text + vision tokens) are dropped, counted
    max_seq_length=2048,  # SFT: longer prompt + response sequences are dropped, counted
    length_buckets=(),  # padded lengths; () = powers of two from 64 up to the max length
    # Record layout (data_pipelines.records).
    layout="auto",
    prompt_key="problem",
    answer_key="answer",
    image_key="images",
    video_key="videos",
    system_prompt="",
    prompt_template="{content}",  # '{content}' is replaced by the record's prompt text
    media_root="",  # relative media paths resolve here ('' = next to the data file)
)
_IMAGE = dict(min_pixels=-1, max_pixels=-1)  # -1: the processor's (preprocessor_config.json)
_VIDEO = dict(
    fps=2.0,  # frames per second sampled; 0 to use num_frames instead
    num_frames=0,  # N uniform frames (when fps is 0)
    max_frames=768,
    min_pixels=VIDEO_MIN_PIXELS,
    max_pixels=VIDEO_MAX_PIXELS,
    total_pixels=0,  # per-video pixel budget over all frames (0: none)
    overlay_timestamps=False,  # draw each frame's second on it (LOVE-R1)
    seek_gap_s=0.5,  # gaps between sampled frames above this may be skipped by seeking
)


def default_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `config.data` section with every common key at its default."""
  config = ml_collections.ConfigDict(dict(_COMMON, image=dict(_IMAGE), video=dict(_VIDEO)))
  config.update(overrides)
  return config


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """A validated, immutable (hence picklable to worker processes) `config.data`.

  `options` holds the dataset-specific keys with their registered defaults filled in.
  """
  name: str
  path: str
  batch_size: int
  seed: int
  shuffle: bool
  num_epochs: int | None
  num_workers: int
  worker_buffer_size: int
  read_threads: int
  read_buffer_size: int
  prefetch_batches: int
  strict: bool
  max_prompt_length: int
  max_seq_length: int
  length_buckets: tuple[int, ...]
  layout: LayoutOptions
  image_min_pixels: int | None
  image_max_pixels: int | None
  video: VideoSampling
  seek_gap_s: float
  options: Mapping[str, Any]

  def image_bounds(self, vision_cfg) -> ResizeBounds:
    """The image resize bounds: config overrides, else the processor's."""
    return ResizeBounds(
        factor=vision_cfg.patch_size * vision_cfg.merge_size,
        min_pixels=self.image_min_pixels or vision_cfg.min_pixels,
        max_pixels=self.image_max_pixels or vision_cfg.max_pixels)


def _as_dict(section) -> dict[str, Any]:
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  return dict(section)


def _check_keys(given: Mapping[str, Any], allowed: Mapping[str, Any], prefix: str) -> None:
  unknown = sorted(set(given) - set(allowed))
  if unknown:
    raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; "
                     f"allowed: {sorted(allowed)}")


def from_config(section, dataset_options: Mapping[str, Any] | None = None) -> DataConfig:
  """Validates a `config.data` section (ConfigDict or dict) and returns its typed view.

  Args:
    section: the data section; missing keys take their defaults.
    dataset_options: the dataset's registered option defaults (None: look them up by name).

  Raises:
    ValueError: naming an unknown key (e.g. 'config.data.vidoe') or a bad value.
  """
  given = _as_dict(section)
  if dataset_options is None:
    from data_pipelines import registry  # Deferred: registry imports this module.

    dataset_options = registry.dataset_options(given.get("name", _COMMON["name"]))
  allowed = dict(_COMMON, image=None, video=None, **dataset_options)
  _check_keys(given, allowed, "config.data.")
  image = dict(_IMAGE, **given.get("image", {}))
  video = dict(_VIDEO, **given.get("video", {}))
  _check_keys(given.get("image", {}), _IMAGE, "config.data.image.")
  _check_keys(given.get("video", {}), _VIDEO, "config.data.video.")
  values = dict(_COMMON, **{k: v for k, v in given.items() if k in _COMMON})
  if values["batch_size"] < 1:
    raise ValueError(f"config.data.batch_size must be >= 1, got {values['batch_size']}")
  if values["num_epochs"] == 0 or values["num_epochs"] < -1:
    raise ValueError(f"config.data.num_epochs must be >= 1 or -1 (forever), got "
                     f"{values['num_epochs']}")
  try:
    sampling = VideoSampling(
        num_frames=video["num_frames"] or None, fps=video["fps"] or None,
        max_frames=video["max_frames"], min_pixels=video["min_pixels"],
        max_pixels=video["max_pixels"], total_pixels=video["total_pixels"] or None,
        overlay_timestamps=video["overlay_timestamps"])
  except ValueError as e:
    raise ValueError(f"config.data.video: {e}") from e
  return DataConfig(
      name=values["name"],
      path=values["path"],
      batch_size=values["batch_size"],
      seed=values["seed"],
      shuffle=values["shuffle"],
      num_epochs=None if values["num_epochs"] == -1 else values["num_epochs"],
      num_workers=values["num_workers"],
      worker_buffer_size=values["worker_buffer_size"],
      read_threads=values["read_threads"],
      read_buffer_size=values["read_buffer_size"],
      prefetch_batches=values["prefetch_batches"],
      strict=values["strict"],
      max_prompt_length=values["max_prompt_length"],
      max_seq_length=values["max_seq_length"],
      length_buckets=tuple(values["length_buckets"]),
      layout=LayoutOptions(**{f.name: values[f.name]
                              for f in dataclasses.fields(LayoutOptions)}),
      image_min_pixels=image["min_pixels"] if image["min_pixels"] > 0 else None,
      image_max_pixels=image["max_pixels"] if image["max_pixels"] > 0 else None,
      video=sampling,
      seek_gap_s=video["seek_gap_s"],
      options={k: given.get(k, default) for k, default in dataset_options.items()},
  )
