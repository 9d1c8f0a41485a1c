"""Host-side prompt batching: left padding to a length bucket, positions, packed vision inputs.

Prompts are left-padded so that every row's last prompt token sits in the same cache slot and
decoding writes all rows at the same slot. Lengths are padded up to a few static buckets so the
jitted prefill and decode compile once per bucket, not once per prompt length.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from r1jax.models import vision, vlm
from r1jax.models.config import ModelConfig

DEFAULT_MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One prompt: token ids (vision placeholders expanded) and the vision inputs they refer to.

  `r1jax.processing.EncodedPrompt` has the same fields and is accepted wherever a `Prompt` is.

  Attributes:
    input_ids: int [length].
    pixel_values: float32 [num_image_patches, patch_dim] or None.
    image_grid_thw: int [num_images, 3] or None.
    pixel_values_videos: float32 [num_video_patches, patch_dim] or None.
    video_grid_thw: int [num_videos, 3] or None.
    second_per_grid_ts: float [num_videos] seconds per temporal patch, or None (1 s).
  """

  input_ids: Any
  pixel_values: Any = None
  image_grid_thw: Any = None
  pixel_values_videos: Any = None
  video_grid_thw: Any = None
  second_per_grid_ts: Any = None


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  """B prompts, left-padded to a bucket length P, with everything the prefill needs (NumPy).

  Attributes:
    input_ids: int32 [B, P], left-padded with `pad_id`.
    attention_mask: bool [B, P], True on real tokens.
    positions: int32 [B, P] (text: cumsum(mask) - 1, 0 on padding, as transformers' generate)
      or [3, B, P] M-RoPE ids (`vlm.get_rope_index`).
    decode_deltas: int32 [B]: the token in cache slot s >= P gets position s + decode_deltas
      (on every M-RoPE axis): one past the last prompt token, as transformers' generate.
    lengths: int32 [B] real prompt tokens.
    pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, second_per_grid_ts: the
      vision inputs of all prompts packed in prompt order (None when absent).
    image_counts / video_counts: int [B] images / videos of each prompt (to repeat them per sample).
  """

  input_ids: np.ndarray
  attention_mask: np.ndarray
  positions: np.ndarray
  decode_deltas: np.ndarray
  lengths: np.ndarray
  pixel_values: np.ndarray | None = None
  image_grid_thw: np.ndarray | None = None
  pixel_values_videos: np.ndarray | None = None
  video_grid_thw: np.ndarray | None = None
  second_per_grid_ts: np.ndarray | None = None
  image_counts: np.ndarray | None = None
  video_counts: np.ndarray | None = None

  @property
  def batch_size(self) -> int:
    return self.input_ids.shape[0]

  @property
  def length(self) -> int:
    return self.input_ids.shape[1]


def bucket_length(length: int, buckets: Sequence[int] | None = None, what: str = "prompt") -> int:
  """The smallest bucket >= length; default buckets are powers of two from 16.

  Raises:
    ValueError naming the length, the largest configured bucket and `what` is being padded
    when none fits.
  """
  if buckets is None:
    bucket = DEFAULT_MIN_BUCKET
    while bucket < length:
      bucket *= 2
    return bucket
  fitting = [b for b in sorted(buckets) if b >= length]
  if not fitting:
    raise ValueError(f"{what} of {length} tokens exceeds the largest {what} bucket {max(buckets)} "
                     f"(buckets={tuple(sorted(buckets))})")
  return fitting[0]


def _optional(array, dtype) -> np.ndarray | None:
  """None for a missing or empty modality, else the array."""
  if array is None:
    return None
  array = np.asarray(array, dtype)
  return array if array.shape[0] else None


def _concat(parts: list, dtype) -> np.ndarray | None:
  parts = [p for p in parts if p is not None]
  return np.concatenate(parts).astype(dtype) if parts else None


def as_prompt(prompt) -> Prompt:
  """Accepts a `Prompt`, an `EncodedPrompt`-like object, a mapping with the same keys, or token ids."""
  if isinstance(prompt, Mapping):
    unknown = sorted(set(prompt) - {f.name for f in dataclasses.fields(Prompt)})
    if unknown:
      raise ValueError(f"prompt has unknown key(s) {unknown}; known: {[f.name for f in dataclasses.fields(Prompt)]}")
    fields = dict(prompt)
  elif hasattr(prompt, "input_ids"):
    fields = {f.name: getattr(prompt, f.name, None) for f in dataclasses.fields(Prompt)}
  else:
    fields = {"input_ids": prompt}
  ids = np.asarray(fields.pop("input_ids"))
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"prompt input_ids must be a 1-D integer sequence, got {ids.dtype} {list(ids.shape)}")
  return Prompt(
      input_ids=ids.astype(np.int32),
      pixel_values=_optional(fields.get("pixel_values"), np.float32),
      image_grid_thw=_optional(fields.get("image_grid_thw"), np.int64),
      pixel_values_videos=_optional(fields.get("pixel_values_videos"), np.float32),
      video_grid_thw=_optional(fields.get("video_grid_thw"), np.int64),
      second_per_grid_ts=_optional(fields.get("second_per_grid_ts"), np.float32))


def text_positions(attention_mask: np.ndarray) -> np.ndarray:
  """int32 [B, P]: cumsum(mask) - 1 with 0 on padding (transformers' generate position ids)."""
  mask = np.asarray(attention_mask).astype(bool)
  return np.where(mask, np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)


def batch_prompts(prompts: Sequence, config: ModelConfig, *, pad_id: int,
                  buckets: Sequence[int] | None = None) -> PromptBatch:
  """Left-pads `prompts` into one `PromptBatch` of bucketed length.

  Raises:
    ValueError naming the prompt for an empty prompt, a token id outside the vocabulary, vision
    inputs given to a text model, or (via `vlm`) placeholder / feature count mismatches.
  """
  prompts = [as_prompt(p) for p in prompts]
  if not prompts:
    raise ValueError("no prompts given")
  vocab = config.text.vocab_size
  for index, prompt in enumerate(prompts):
    ids = prompt.input_ids
    if not ids.size:
      raise ValueError(f"prompt {index} is empty")
    if ids.min() < 0 or ids.max() >= vocab:
      raise ValueError(f"prompt {index} has token id {int(ids.max() if ids.max() >= vocab else ids.min())} "
                       f"outside the vocabulary [0, {vocab})")
    has_vision = prompt.pixel_values is not None or prompt.pixel_values_videos is not None
    if has_vision and not config.is_multimodal:
      raise ValueError(f"prompt {index} has vision inputs but the model ({config.architecture}) is text-only")
  lengths = np.array([p.input_ids.size for p in prompts], np.int32)
  bucket = bucket_length(int(lengths.max()), buckets)
  input_ids = np.full((len(prompts), bucket), pad_id, np.int32)
  mask = np.zeros((len(prompts), bucket), bool)
  for row, prompt in enumerate(prompts):
    input_ids[row, bucket - lengths[row]:] = prompt.input_ids
    mask[row, bucket - lengths[row]:] = True

  if not config.is_multimodal:
    positions = text_positions(mask)
    return PromptBatch(input_ids, mask, positions, vlm.decode_rope_deltas(positions[None], mask)[:, 0], lengths)

  _check_vision_inputs(config, prompts, input_ids)

  def packed(name, dtype):
    return _concat([getattr(p, name) for p in prompts], dtype)

  def counts(name):
    return np.array([0 if getattr(p, name) is None else len(getattr(p, name)) for p in prompts], np.int32)

  image_grid, video_grid = packed("image_grid_thw", np.int64), packed("video_grid_thw", np.int64)
  seconds = None
  if video_grid is not None:  # Default 1 s per temporal patch, per video, as transformers.
    seconds = np.concatenate([np.ones(len(p.video_grid_thw), np.float32) if p.second_per_grid_ts is None
                              else p.second_per_grid_ts for p in prompts if p.video_grid_thw is not None])
  positions, _ = vlm.get_rope_index(config, input_ids, image_grid, video_grid, seconds, mask)
  return PromptBatch(
      input_ids, mask, positions, vlm.decode_rope_deltas(positions, mask)[:, 0], lengths,
      pixel_values=packed("pixel_values", np.float32), image_grid_thw=image_grid,
      pixel_values_videos=packed("pixel_values_videos", np.float32), video_grid_thw=video_grid,
      second_per_grid_ts=seconds, image_counts=counts("image_grid_thw"), video_counts=counts("video_grid_thw"))


def _check_vision_inputs(config: ModelConfig, prompts: Sequence[Prompt], input_ids: np.ndarray) -> None:
  """Per prompt: pixels match their grids, and every placeholder token gets one feature row."""
  for index, prompt in enumerate(prompts):
    counts = {}
    for kind, pixels, grid in (("image", prompt.pixel_values, prompt.image_grid_thw),
                               ("video", prompt.pixel_values_videos, prompt.video_grid_thw)):
      if (pixels is None) != (grid is None):
        raise ValueError(f"prompt {index} gives {kind} pixel values without {kind}_grid_thw or vice versa")
      counts[kind] = 0 if grid is None else vision.num_merged_tokens(config.vision, grid)
      if grid is not None and int(np.prod(grid, axis=1).sum()) != len(pixels):
        raise ValueError(f"prompt {index}: {kind} pixel values have {len(pixels)} patches but {kind}_grid_thw "
                         f"describes {int(np.prod(grid, axis=1).sum())}")
    num_videos = 0 if prompt.video_grid_thw is None else len(prompt.video_grid_thw)
    if prompt.second_per_grid_ts is not None and len(prompt.second_per_grid_ts) != num_videos:
      raise ValueError(f"prompt {index}: second_per_grid_ts has {len(prompt.second_per_grid_ts)} values for "
                       f"{num_videos} videos")
    try:
      vlm.check_feature_counts(config, input_ids[index], counts["image"], counts["video"])
    except ValueError as error:
      raise ValueError(f"prompt {index}: {error}") from None
