"""Qwen2.5-VL input processing in NumPy/PIL: resizing, patchifying and prompt expansion."""
from __future__ import annotations

import math


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
