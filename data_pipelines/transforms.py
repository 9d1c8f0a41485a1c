"""The per-record transform: raw record → Example → decoded media → tokens and vision inputs.

It runs inside grain's reader threads / worker processes. A record that cannot be used comes
out as an `errors.Skipped` marker (or raises under `strict`), never as an exception that would
stop the pipeline; see errors.py for why markers keep the pipeline deterministic.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from data_pipelines import errors
from data_pipelines.config import DataConfig
from data_pipelines.images import LoadedImage, ResizeBounds, load_image
from data_pipelines.records import Example
from data_pipelines.video import VideoClip, sample_video
from r1jax import processing

# The assistant turn's end in Qwen's chat template; SFT targets end with it so the model learns
# to stop.
END_OF_TURN = "<|im_end|>"


@dataclasses.dataclass(frozen=True)
class EncodedExample:
  """One tokenized example with its vision inputs and reward data.

  Attributes:
    input_ids: int32 [length] (RL: the prompt; SFT: prompt + response).
    loss_mask: int32 [length], 1 on response tokens (SFT), None for RL prompts.
    pixel_values: float32 [num_image_patches, patch_dim].
    image_grid_thw: int32 [num_images, 3].
    pixel_values_videos: float32 [num_video_patches, patch_dim].
    video_grid_thw: int32 [num_videos, 3].
    second_per_grid_ts: float32 [num_videos].
    example_id: the record's id.
    messages: the chat the prompt was rendered from (media as placeholders).
    ground_truth: the reward's reference data (always has 'answer').
    reward_context: sizes and times the rewards need (see `reward_context`).
  """
  input_ids: np.ndarray
  loss_mask: np.ndarray | None
  pixel_values: np.ndarray
  image_grid_thw: np.ndarray
  pixel_values_videos: np.ndarray
  video_grid_thw: np.ndarray
  second_per_grid_ts: np.ndarray
  example_id: str
  messages: list[dict[str, Any]]
  ground_truth: dict[str, Any]
  reward_context: dict[str, Any]


def load_media(example: Example, cfg: DataConfig, image_bounds: ResizeBounds
               ) -> tuple[list[LoadedImage], list[VideoClip]]:
  """Decodes and resizes the example's images and samples its videos."""
  images = [load_image(ref, image_bounds) for ref in example.images]
  videos = [sample_video(ref.source,
                         dataclasses.replace(ref.sampling or cfg.video, factor=image_bounds.factor),
                         start=ref.start, end=ref.end, timestamps=ref.timestamps,
                         seek_gap_s=cfg.seek_gap_s)
            for ref in example.videos]
  return images, videos


def reward_context(example: Example, images: list[LoadedImage],
                   videos: list[VideoClip]) -> dict[str, Any]:
  """What rewards need besides the text; keys are documented in data_pipelines/__init__.py."""
  return {
      "id": example.id,
      "where": example.where,
      "data_type": example.data_type,
      "original_image_sizes": [image.original_size for image in images],
      "resized_image_sizes": [image.resized_size for image in images],
      "video_durations": [clip.metadata.duration for clip in videos],
      "video_timestamps": [clip.timestamps.tolist() for clip in videos],
      "video_original_sizes": [(clip.metadata.height, clip.metadata.width) for clip in videos],
      "video_resized_sizes": [clip.frames.shape[1:3] for clip in videos],
      **example.context,
  }


def identity_processor_config(vision_cfg: processing.VisionProcessorConfig,
                              bounds: ResizeBounds, images: list[LoadedImage],
                              videos: list[VideoClip]) -> processing.VisionProcessorConfig:
  """A processor config whose resize keeps every already-resized image and frame as it is.

  Media were resized here with their own bounds (images and each video may differ). Sizes that
  are multiples of the factor inside [min_pixels, max_pixels] are fixed points of
  `smart_resize`, so widening the processor's bounds to cover all of them makes its resize the
  identity: the grids then match the sizes the rewards are told.
  """
  areas = [i.resized_size[0] * i.resized_size[1] for i in images]
  areas += [c.frames.shape[1] * c.frames.shape[2] for c in videos]
  return dataclasses.replace(vision_cfg, min_pixels=min(areas + [bounds.min_pixels]),
                             max_pixels=max(areas + [bounds.max_pixels]))


def response_text(example: Example) -> str:
  """The SFT target: the record's assistant reply, else its answer."""
  target = example.response if example.response is not None else example.ground_truth["answer"]
  if not isinstance(target, str) or not target:
    raise errors.BadExampleError(errors.MISSING_FIELD, example.where,
                                 "SFT needs a response (final assistant turn or answer text)")
  return target


@dataclasses.dataclass(frozen=True)
class EncodeRecord:
  """grain map transform: raw record -> EncodedExample, or Skipped (raises under strict).

  Attributes:
    to_example: the dataset's raw record -> Example function.
    cfg: the data config.
    tokenizer: a transformers tokenizer with Qwen2.5-VL's chat template and special tokens.
    vision_cfg: the model's processor settings.
    sft: encode prompt + response with a loss mask (True) or the prompt alone (False).
  """
  to_example: Callable[[Any], Example]
  cfg: DataConfig
  tokenizer: Any
  vision_cfg: processing.VisionProcessorConfig
  sft: bool = False

  def __call__(self, raw: Any) -> EncodedExample | errors.Skipped:
    try:
      return self._encode(raw)
    except errors.BadExampleError as e:
      if self.cfg.strict and e.reason != errors.TOO_LONG:
        raise
      return errors.Skipped.from_error(e)

  def _encode(self, raw: Any) -> EncodedExample:
    example = self.to_example(raw)
    bounds = self.cfg.image_bounds(self.vision_cfg)
    images, videos = load_media(example, self.cfg, bounds)
    max_length = self.cfg.max_seq_length if self.sft else self.cfg.max_prompt_length
    try:
      prompt = processing.encode_prompt(
          self.tokenizer, example.messages, images=[i.pixels for i in images],
          videos=[c.frames for c in videos], video_fps=[c.sample_fps for c in videos],
          cfg=identity_processor_config(self.vision_cfg, bounds, images, videos),
          max_prompt_tokens=max_length)
    except processing.PromptTooLongError as e:
      raise errors.BadExampleError(errors.TOO_LONG, example.where, str(e)) from e
    except ValueError as e:  # placeholder/media count mismatch: the record is inconsistent
      raise errors.BadExampleError(errors.BAD_RECORD, example.where, str(e)) from e
    input_ids, loss_mask = prompt.input_ids, None
    forced = example.context.get("forced_prefix", "")
    if forced and not self.sft:  # the first action starts with it: the sampler continues after it
      input_ids = np.concatenate([input_ids, np.asarray(self.tokenizer.encode(forced, add_special_tokens=False),
                                                         np.int32)])
      if len(input_ids) > max_length:
        raise errors.BadExampleError(errors.TOO_LONG, example.where, f"prompt + forced prefix {forced!r} "
                                     f"({len(input_ids)} tokens) > max_prompt_length={max_length}")
    if self.sft:
      response = np.asarray(self.tokenizer.encode(response_text(example) + END_OF_TURN,
                                                  add_special_tokens=False), np.int32)
      input_ids = np.concatenate([prompt.input_ids, response])
      loss_mask = np.concatenate([np.zeros_like(prompt.input_ids), np.ones_like(response)])
      if len(input_ids) > max_length:
        raise errors.BadExampleError(
            errors.TOO_LONG, example.where,
            f"prompt ({len(prompt.input_ids)} tokens, {prompt.num_vision_tokens} vision) + "
            f"response ({len(response)}) > max_seq_length={max_length}")
    return EncodedExample(
        input_ids=input_ids, loss_mask=loss_mask, pixel_values=prompt.pixel_values,
        image_grid_thw=prompt.image_grid_thw, pixel_values_videos=prompt.pixel_values_videos,
        video_grid_thw=prompt.video_grid_thw, second_per_grid_ts=prompt.second_per_grid_ts,
        example_id=example.id, messages=example.messages,
        ground_truth=example.ground_truth,
        reward_context=reward_context(example, images, videos))
