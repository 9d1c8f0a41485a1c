"""Image decoding: PIL, EXIF orientation, RGB, `smart_resize` bounds, original size kept.

The resized size is what the model sees (and what Qwen2.5-VL's predicted coordinates refer
to); the original size is what ground-truth boxes use. Both travel to the rewards, which map
coordinates between them (shared/specs/rewards.md). The resize uses the processor's own
`smart_resize` with the processor's bounds, so the processor's resize is then the identity.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import PIL.Image
import PIL.ImageOps

from data_pipelines import errors
from data_pipelines.records import MediaRef
from r1jax.processing import smart_resize


@dataclasses.dataclass(frozen=True)
class ResizeBounds:
  """`smart_resize` parameters: sides become multiples of `factor`, area in [min, max]."""
  factor: int = 28
  min_pixels: int = 56 * 56
  max_pixels: int = 28 * 28 * 1280

  def resized_size(self, height: int, width: int) -> tuple[int, int]:
    return smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels,
                        max_pixels=self.max_pixels)


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """A decoded image.

  Attributes:
    pixels: uint8 [resized_height, resized_width, 3], RGB.
    original_size: (height, width) after EXIF orientation, before resizing.
  """
  pixels: np.ndarray
  original_size: tuple[int, int]

  @property
  def resized_size(self) -> tuple[int, int]:
    return self.pixels.shape[0], self.pixels.shape[1]


def media_name(ref: MediaRef) -> str:
  """A printable name of a media reference for errors and warnings."""
  return ref if isinstance(ref, str) else f"<{len(ref)} embedded bytes>"


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
  """Converts any PIL mode to RGB; transparent pixels become white (as qwen-vl-utils does)."""
  if image.mode == "RGB":
    return image
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  if image.mode in ("RGBA", "LA", "PA"):
    image = image.convert("RGBA")
    background = PIL.Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background
  return image.convert("RGB")


def decode_image(ref: MediaRef) -> PIL.Image.Image:
  """Decodes an image file or bytes fully, applies EXIF orientation and converts to RGB.

  Raises:
    BadExampleError: BAD_MEDIA naming the file when it is missing or cannot be decoded.
  """
  try:
    with PIL.Image.open(ref if isinstance(ref, str) else io.BytesIO(ref)) as image:
      image.load()  # decode now, so a truncated file fails here and not later
      image = PIL.ImageOps.exif_transpose(image)
      return to_rgb(image)
  except errors.MEDIA_ERRORS as e:
    raise errors.media_error(media_name(ref), e) from e


def load_image(ref: MediaRef, bounds: ResizeBounds) -> LoadedImage:
  """Decodes an image and resizes it (PIL bicubic) to its `smart_resize` size under `bounds`."""
  image = decode_image(ref)
  original_size = (image.height, image.width)
  try:
    height, width = bounds.resized_size(*original_size)
  except ValueError as e:  # e.g. an aspect ratio above 200
    raise errors.BadExampleError(errors.BAD_MEDIA, media_name(ref), str(e)) from e
  if (height, width) != original_size:
    image = image.resize((width, height), PIL.Image.Resampling.BICUBIC)
  return LoadedImage(np.asarray(image, np.uint8), original_size)
