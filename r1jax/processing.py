"""Qwen2.5-VL input processing in NumPy/PIL: resizing, patchifying and prompt expansion.

Matches transformers' Qwen2VLImageProcessorPil and Qwen2_5_VLProcessor (parity-tested) without
torch or torchvision.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import PIL.Image

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen2.5-VL's usual sampling rate for videos (qwen-vl-utils FPS).
DEFAULT_VIDEO_FPS = 2.0
_PREPROCESSOR_FILE = "preprocessor_config.json"
# preprocessor_config.json keys with the only values r1jax implements (resample 3 = bicubic).
_FIXED_PREPROCESSING = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
                        "do_normalize": True, "do_convert_rgb": True, "resample": 3}


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
  """Returns (resized_height, resized_width) as the Qwen2-VL processors compute it.

  Both sides become multiples of `factor`, the area lands in [min_pixels, max_pixels] and the
  aspect ratio is kept as closely as possible. Rewards use the same function to map predicted
  coordinates (resized-input pixels) back to original pixels.
  """
  if min(height, width) <= 0:
    raise ValueError(f"image size must be positive, got height={height}, width={width}")
  if max(height, width) / min(height, width) > 200:
    raise ValueError(
        f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        f" for height={height}, width={width}")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt((height * width) / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


@dataclasses.dataclass(frozen=True)
class VisionProcessorConfig:
  """Image/video preprocessing settings; mirrors HF's preprocessor_config.json for Qwen2.5-VL.

  Resizing is PIL bicubic, rescaling is 1/255 and RGB conversion composites transparency onto
  white, as in transformers' Qwen2VLImageProcessorPil; those are fixed, not options.
  """
  patch_size: int = 14
  temporal_patch_size: int = 2
  merge_size: int = 2
  min_pixels: int = 56 * 56
  max_pixels: int = 28 * 28 * 1280
  image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
  image_std: tuple[float, ...] = OPENAI_CLIP_STD

  @property
  def factor(self) -> int:
    """Both resized sides are multiples of this: one merged token covers factor x factor pixels."""
    return self.patch_size * self.merge_size

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch: channels * temporal_patch_size * patch_size**2."""
    return 3 * self.temporal_patch_size * self.patch_size**2

  @classmethod
  def from_pretrained(cls, path: str) -> VisionProcessorConfig:
    """Reads `preprocessor_config.json` of a local HF folder (or that file itself).

    `min_pixels`/`max_pixels` win over `size` {shortest_edge, longest_edge}, as in HF.

    Raises:
      FileNotFoundError: naming the missing file.
      ValueError: naming a key whose value r1jax does not implement (e.g. do_normalize=false).
    """
    file = os.path.join(path, _PREPROCESSOR_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise FileNotFoundError(f"no {_PREPROCESSOR_FILE} at {file!r}")
    with open(file, encoding="utf-8") as f:
      raw = json.load(f)
    for key, supported in _FIXED_PREPROCESSING.items():
      if key in raw and raw[key] != supported:
        raise ValueError(f"{file}: {key}={raw[key]!r} is not supported (r1jax implements "
                         f"{key}={supported!r}, as Qwen2.5-VL checkpoints ship)")
    size = raw.get("size") or {}
    kwargs = {
        "min_pixels": raw.get("min_pixels", size.get("shortest_edge")),
        "max_pixels": raw.get("max_pixels", size.get("longest_edge")),
        "patch_size": raw.get("patch_size"),
        "temporal_patch_size": raw.get("temporal_patch_size"),
        "merge_size": raw.get("merge_size"),
        "image_mean": tuple(raw["image_mean"]) if "image_mean" in raw else None,
        "image_std": tuple(raw["image_std"]) if "image_std" in raw else None,
    }
    return cls(**{k: v for k, v in kwargs.items() if v is not None})

  @classmethod
  def find(cls, *folders: str) -> VisionProcessorConfig:
    """From the first of `folders` (empty ones skipped) holding `preprocessor_config.json`;
    Qwen2.5-VL's defaults when none does."""
    for folder in folders:
      if folder and os.path.isfile(os.path.join(folder, _PREPROCESSOR_FILE)):
        return cls.from_pretrained(folder)
    return cls()

  def save_pretrained(self, path: str) -> str:
    """Writes `preprocessor_config.json` into folder `path` in HF's format; returns the file."""
    os.makedirs(path, exist_ok=True)
    content = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        **_FIXED_PREPROCESSING,
        "image_mean": list(self.image_mean),
        "image_std": list(self.image_std),
        "min_pixels": self.min_pixels,
        "max_pixels": self.max_pixels,
        "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        "patch_size": self.patch_size,
        "temporal_patch_size": self.temporal_patch_size,
        "merge_size": self.merge_size,
    }
    file = os.path.join(path, _PREPROCESSOR_FILE)
    with open(file, "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2)
    return file


@dataclasses.dataclass(frozen=True)
class VisionInputs:
  """Patchified pixels of one or more images (or one video), as the vision tower reads them.

  Attributes:
    pixel_values: float32 [num_patches, 3 * temporal_patch_size * patch_size**2]; rows ordered
      item by item, then (t, h_block, w_block, h_in_block, w_in_block) so that each group of
      merge_size**2 consecutive rows is one merged token.
    grid_thw: int32 [num_items, 3], patches along (time, height, width) per item.
  """
  pixel_values: np.ndarray
  grid_thw: np.ndarray


def vision_grid_thw(height: int, width: int, num_frames: int = 1,
                    cfg: VisionProcessorConfig = VisionProcessorConfig(), *,
                    min_pixels: int | None = None, max_pixels: int | None = None) -> np.ndarray:
  """Returns int32 [3] (t, h, w) patch grid of an image (num_frames=1) or video, without pixels.

  Lets data pipelines count vision tokens (`num_vision_tokens`) before decoding anything.
  """
  resized_h, resized_w = smart_resize(
      height, width, cfg.factor,
      cfg.min_pixels if min_pixels is None else min_pixels,
      cfg.max_pixels if max_pixels is None else max_pixels)
  grid_t = -(-num_frames // cfg.temporal_patch_size)  # Frames padded up to the temporal patch.
  return np.array([grid_t, resized_h // cfg.patch_size, resized_w // cfg.patch_size], np.int32)


def num_vision_tokens(grid_thw, merge_size: int = 2) -> int:
  """Placeholder tokens of `grid_thw` int [num_items, 3] or [3]: sum(t*h*w // merge_size**2)."""
  grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
  return int((grid_thw.prod(axis=1) // merge_size**2).sum())


def _rgb_array(image, index: int) -> np.ndarray:
  """uint8 [H, W, 3] of a PIL image (transparency composited onto white, as HF) or an array."""
  if isinstance(image, PIL.Image.Image):
    if "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      image = PIL.Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"))
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
    raise ValueError(f"image {index} must be a PIL image or uint8 [height, width, 3], got "
                     f"{array.dtype} {list(array.shape)}")
  return array


def _resize_and_normalize(frames: np.ndarray, height: int, width: int,
                          cfg: VisionProcessorConfig) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T, height, width, 3]: PIL bicubic, /255, (x - mean) / std.

  Follows HF's PIL path op for op (float64 rescale, then float32 normalize) so results match
  transformers bit for bit.
  """
  resample = PIL.Image.Resampling.BICUBIC
  resized = np.stack([np.asarray(PIL.Image.fromarray(frame).resize((width, height), resample))
                      for frame in frames])
  rescaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
  mean = np.asarray(cfg.image_mean, np.float32)
  std = np.asarray(cfg.image_std, np.float32)
  return (rescaled - mean) / std


def _patchify(frames: np.ndarray, cfg: VisionProcessorConfig) -> np.ndarray:
  """float32 [T, H, W, C] (T a multiple of temporal_patch_size) -> [num_patches, patch_dim].

  Row order (t, h_block, w_block, h_in_block, w_in_block); within a row (C, t, ph, pw), as HF.
  """
  num_frames, height, width, channels = frames.shape
  p, m, tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
  grid_t, grid_h, grid_w = num_frames // tp, height // p, width // p
  patches = frames.reshape(grid_t, tp, grid_h // m, m, p, grid_w // m, m, p, channels)
  patches = patches.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
  return np.ascontiguousarray(patches).reshape(grid_t * grid_h * grid_w, channels * tp * p * p)


def process_images(images: Sequence, cfg: VisionProcessorConfig = VisionProcessorConfig()
                   ) -> VisionInputs:
  """Resizes, normalizes and patchifies images (PIL images or uint8 [H, W, 3]).

  Each image becomes one temporal patch (the frame repeated temporal_patch_size times), so
  grid_thw rows are (1, h, w). No images give pixel_values [0, patch_dim] and grid_thw [0, 3].
  """
  all_patches, grids = [], []
  for index, image in enumerate(images):
    rgb = _rgb_array(image, index)
    grid = vision_grid_thw(rgb.shape[0], rgb.shape[1], 1, cfg)
    frame = _resize_and_normalize(
        rgb[None], grid[1] * cfg.patch_size, grid[2] * cfg.patch_size, cfg)
    all_patches.append(_patchify(np.repeat(frame, cfg.temporal_patch_size, axis=0), cfg))
    grids.append(grid)
  return VisionInputs(
      pixel_values=(np.concatenate(all_patches) if all_patches
                    else np.zeros((0, cfg.patch_dim), np.float32)),
      grid_thw=np.array(grids, np.int32).reshape(-1, 3))


def process_video(frames, cfg: VisionProcessorConfig = VisionProcessorConfig(), *,
                  min_pixels: int | None = None, max_pixels: int | None = None) -> VisionInputs:
  """Resizes, normalizes and patchifies one video.

  Args:
    frames: uint8 [T, H, W, 3], already sampled at the fps given to `encode_prompt`.
    cfg: processor settings; `min_pixels`/`max_pixels` override its per-frame pixel bounds
      (HF's video processor defaults to 128*28*28 and 768*28*28).

  Returns:
    VisionInputs with grid_thw [1, 3]; T is padded to a multiple of temporal_patch_size by
    repeating the last frame, as HF does.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"video frames must be uint8 [num_frames>0, height, width, 3], got "
                     f"{frames.dtype} {list(frames.shape)}")
  grid = vision_grid_thw(frames.shape[1], frames.shape[2], len(frames), cfg,
                         min_pixels=min_pixels, max_pixels=max_pixels)
  normalized = _resize_and_normalize(
      frames, grid[1] * cfg.patch_size, grid[2] * cfg.patch_size, cfg)
  padding = grid[0] * cfg.temporal_patch_size - len(frames)
  normalized = np.concatenate([normalized, np.repeat(normalized[-1:], padding, axis=0)])
  return VisionInputs(pixel_values=_patchify(normalized, cfg), grid_thw=grid[None])


def expand_vision_placeholders(text: str, image_grid_thw=None, video_grid_thw=None,
                               merge_size: int = 2) -> str:
  """Repeats the i-th `<|image_pad|>` / `<|video_pad|>` of `text` once per token of item i.

  Raises:
    ValueError: when the placeholders in `text` and the grid rows differ in number.
  """
  for token, grid_thw, kind in ((IMAGE_PAD, image_grid_thw, "image"),
                                (VIDEO_PAD, video_grid_thw, "video")):
    grid_thw = np.zeros((0, 3), np.int64) if grid_thw is None else np.asarray(grid_thw)
    pieces = text.split(token)
    if len(pieces) - 1 != len(grid_thw):
      raise ValueError(f"text has {len(pieces) - 1} {token} placeholders but "
                       f"{len(grid_thw)} {kind}s were given")
    expanded = [pieces[0]]
    for grid, piece in zip(grid_thw, pieces[1:]):
      expanded += [token * num_vision_tokens(grid, merge_size), piece]
    text = "".join(expanded)
  return text


class PromptTooLongError(ValueError):
  """The prompt exceeds max_prompt_tokens. Vision tokens are never truncated: drop the example."""

  def __init__(self, num_text_tokens: int, num_vision_tokens: int, max_prompt_tokens: int):
    self.num_text_tokens = num_text_tokens
    self.num_vision_tokens = num_vision_tokens
    self.max_prompt_tokens = max_prompt_tokens
    super().__init__(
        f"prompt has {num_text_tokens + num_vision_tokens} tokens ({num_text_tokens} text + "
        f"{num_vision_tokens} vision) > max_prompt_tokens={max_prompt_tokens}; vision tokens "
        "are never truncated")


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
  """Token ids plus the vision inputs they refer to. Empty modalities have zero rows.

  Attributes:
    input_ids: int32 [length], placeholders expanded.
    pixel_values: float32 [num_image_patches, patch_dim].
    image_grid_thw: int32 [num_images, 3].
    pixel_values_videos: float32 [num_video_patches, patch_dim].
    video_grid_thw: int32 [num_videos, 3].
    second_per_grid_ts: float32 [num_videos], seconds per temporal patch (M-RoPE time axis).
    num_vision_tokens: image + video placeholder tokens in input_ids.
  """
  input_ids: np.ndarray
  pixel_values: np.ndarray
  image_grid_thw: np.ndarray
  pixel_values_videos: np.ndarray
  video_grid_thw: np.ndarray
  second_per_grid_ts: np.ndarray
  num_vision_tokens: int


def encode_text(tokenizer, text: str, *, images: Sequence = (), videos: Sequence = (),
                video_fps: float | Sequence[float] = DEFAULT_VIDEO_FPS,
                cfg: VisionProcessorConfig = VisionProcessorConfig(),
                max_prompt_tokens: int | None = None) -> EncodedPrompt:
  """Encodes an already templated prompt holding one `<|image_pad|>` per image (same for video).

  Args:
    tokenizer: a transformers tokenizer with the Qwen2.5-VL special tokens.
    text: prompt text, e.g. from `tokenizer.apply_chat_template(..., tokenize=False)`.
    images: PIL images or uint8 [H, W, 3], in placeholder order.
    videos: uint8 [T, H, W, 3] frame stacks, in placeholder order.
    video_fps: frames per second of the given frames (one value, or one per video).
    cfg: processor settings.
    max_prompt_tokens: limit on len(input_ids), checked after expansion.

  Raises:
    PromptTooLongError: the expanded prompt exceeds max_prompt_tokens.
    ValueError: placeholder/item counts differ, or the tokenizer splits a placeholder.
  """
  image_inputs = process_images(images, cfg)
  video_inputs = [process_video(frames, cfg) for frames in videos]
  video_grid_thw = np.concatenate(
      [np.zeros((0, 3), np.int32)] + [v.grid_thw for v in video_inputs])
  fps = np.asarray(video_fps, np.float64).reshape(-1)
  if np.ndim(video_fps) == 0:
    fps = np.repeat(fps, len(video_inputs))
  if len(fps) != len(video_inputs):
    raise ValueError(f"video_fps has {len(fps)} values for {len(video_inputs)} videos")

  expanded = expand_vision_placeholders(text, image_inputs.grid_thw, video_grid_thw,
                                        cfg.merge_size)
  input_ids = np.asarray(tokenizer.encode(expanded, add_special_tokens=False), np.int32)
  num_tokens = {}
  for token, grid_thw in ((IMAGE_PAD, image_inputs.grid_thw), (VIDEO_PAD, video_grid_thw)):
    expected = num_vision_tokens(grid_thw, cfg.merge_size)
    found = int((input_ids == tokenizer.convert_tokens_to_ids(token)).sum())
    if found != expected:  # A tokenizer without the special token would silently misalign.
      raise ValueError(f"tokenized prompt has {found} {token} tokens, the vision inputs need "
                       f"{expected}")
    num_tokens[token] = expected
  num_vision = num_tokens[IMAGE_PAD] + num_tokens[VIDEO_PAD]
  if max_prompt_tokens is not None and len(input_ids) > max_prompt_tokens:
    raise PromptTooLongError(len(input_ids) - num_vision, num_vision, max_prompt_tokens)
  return EncodedPrompt(
      input_ids=input_ids,
      pixel_values=image_inputs.pixel_values,
      image_grid_thw=image_inputs.grid_thw,
      pixel_values_videos=np.concatenate(
          [np.zeros((0, cfg.patch_dim), np.float32)] + [v.pixel_values for v in video_inputs]),
      video_grid_thw=video_grid_thw,
      second_per_grid_ts=(cfg.temporal_patch_size / fps).astype(np.float32),
      num_vision_tokens=num_vision)


def encode_prompt(tokenizer, messages: Sequence[dict], *, images: Sequence = (),
                  videos: Sequence = (), video_fps: float | Sequence[float] = DEFAULT_VIDEO_FPS,
                  cfg: VisionProcessorConfig = VisionProcessorConfig(),
                  max_prompt_tokens: int | None = None,
                  add_generation_prompt: bool = True) -> EncodedPrompt:
  """Applies the tokenizer's chat template to `messages`, then `encode_text`.

  `messages` use HF's format: {"role": ..., "content": str | [{"type": "image"},
  {"type": "video"}, {"type": "text", "text": ...}]}; the i-th image entry refers to
  `images[i]` (same for videos). See `encode_text` for the other arguments and errors.
  """
  text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                       add_generation_prompt=add_generation_prompt)
  return encode_text(tokenizer, text, images=images, videos=videos, video_fps=video_fps, cfg=cfg,
                     max_prompt_tokens=max_prompt_tokens)
