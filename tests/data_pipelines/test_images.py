"""Image decoding: EXIF orientation, RGB conversion, smart_resize bounds, original size."""
import io

import numpy as np
import PIL.Image
import pytest

from data_pipelines import errors, images
from r1jax import processing
from tests.data_pipelines import media

_BOUNDS = images.ResizeBounds(factor=28, min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.mark.parametrize("height,width", [(37, 91), (301, 17), (5, 5), (640, 480)])
def test_odd_sizes_resize_to_smart_resize_and_keep_original(tmp_path, height, width):
  path = media.write_image(str(tmp_path / "odd.png"), height, width)
  loaded = images.load_image(path, _BOUNDS)
  assert loaded.original_size == (height, width)
  assert loaded.resized_size == processing.smart_resize(height, width, 28, 56 * 56, 112 * 112)
  assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape[2] == 3


def test_exif_orientation_is_applied(tmp_path):
  # Orientation 6: stored 20 x 40 (h x w), displayed rotated 90 degrees: 40 x 20.
  path = media.write_image(str(tmp_path / "rotated.jpg"), 20, 40, exif_orientation=6)
  assert images.decode_image(path).size == (20, 40)  # PIL size is (width, height)
  assert images.load_image(path, _BOUNDS).original_size == (40, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode):
  suffix = "jpg" if mode == "CMYK" else "png"
  path = media.write_image(str(tmp_path / f"image.{suffix}"), 30, 30, mode="RGB")
  PIL.Image.open(path).convert(mode).save(path)
  decoded = images.decode_image(path)
  assert decoded.mode == "RGB" and decoded.size == (30, 30)


def test_transparent_pixels_become_white():
  rgba = PIL.Image.new("RGBA", (4, 4), (10, 20, 30, 0))
  np.testing.assert_array_equal(np.asarray(images.to_rgb(rgba)), 255)


def test_embedded_bytes_decode_like_the_file(tmp_path):
  path = media.write_image(str(tmp_path / "a.png"), 33, 44)
  with open(path, "rb") as f:
    data = f.read()
  np.testing.assert_array_equal(images.load_image(data, _BOUNDS).pixels,
                                images.load_image(path, _BOUNDS).pixels)


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated"])
def test_bad_image_raises_bad_media_naming_file(tmp_path, kind):
  path = str(tmp_path / f"{kind}.png")
  if kind != "missing":
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    data = b"\x00garbage" * 10 if kind == "garbage" else buffer.getvalue()[:60]
    with open(path, "wb") as f:
      f.write(data)
  with pytest.raises(errors.BadExampleError) as info:
    images.load_image(path, _BOUNDS)
  assert info.value.reason == errors.BAD_MEDIA
  assert f"{kind}.png" in str(info.value)
