"""Test media generated on the fly: counter videos, odd images, a multi-view scene."""
from __future__ import annotations

import json
import os

import av
import numpy as np
import PIL.Image

# A frame's number is drawn as a 4 x 3 grid of black/white blocks (bit b = block b, row-major),
# which survives lossy coding and resizing far better than drawn digits.
COUNTER_COLS, COUNTER_ROWS = 4, 3
COUNTER_BITS = COUNTER_COLS * COUNTER_ROWS


def counter_frame(index: int, height: int, width: int) -> np.ndarray:
  """uint8 [height, width, 3] showing `index` as blocks."""
  frame = np.zeros((height, width, 3), np.uint8)
  for bit in range(COUNTER_BITS):
    if (index >> bit) & 1:
      row, col = divmod(bit, COUNTER_COLS)
      frame[row * height // COUNTER_ROWS:(row + 1) * height // COUNTER_ROWS,
            col * width // COUNTER_COLS:(col + 1) * width // COUNTER_COLS] = 255
  return frame


def read_counter(frame: np.ndarray) -> int:
  """Reads the number drawn by `counter_frame` (any resize of it) from block centres."""
  height, width = frame.shape[:2]
  value = 0
  for bit in range(COUNTER_BITS):
    row, col = divmod(bit, COUNTER_COLS)
    y0, y1 = row * height / COUNTER_ROWS, (row + 1) * height / COUNTER_ROWS
    x0, x1 = col * width / COUNTER_COLS, (col + 1) * width / COUNTER_COLS
    centre = frame[int(y0 + (y1 - y0) / 3):int(y1 - (y1 - y0) / 3),
                   int(x0 + (x1 - x0) / 3):int(x1 - (x1 - x0) / 3)]
    if centre.mean() > 128:
      value |= 1 << bit
  return value


def write_counter_video(path: str, num_frames: int, fps: int, height: int = 48, width: int = 64,
                        codec: str = "libx264", gop: int = 10) -> str:
  """Writes a constant-rate video whose frame i shows counter i; keyframe every `gop` frames."""
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.gop_size = gop
    if codec == "libx264":
      stream.options = {"crf": "8", "preset": "ultrafast",
                        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    else:
      stream.bit_rate = 4_000_000
    for i in range(num_frames):
      frame = av.VideoFrame.from_ndarray(counter_frame(i, height, width), format="rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


def write_image(path: str, height: int, width: int, mode: str = "RGB", seed: int = 0,
                exif_orientation: int | None = None) -> str:
  """Writes a random image of the given size and PIL mode (optionally with EXIF orientation)."""
  rng = np.random.default_rng(seed)
  image = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).convert(mode)
  kwargs = {}
  if exif_orientation is not None:
    exif = PIL.Image.Exif()
    exif[0x0112] = exif_orientation
    kwargs["exif"] = exif.tobytes()
  image.save(path, **kwargs)
  return path


def ring_camera_to_world(angle: float, radius: float = 3.0, height: float = 1.0) -> np.ndarray:
  """4x4 camera-to-world of a camera on a circle looking at the origin (OpenCV axes)."""
  center = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
  forward = -center / np.linalg.norm(center)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  pose = np.eye(4)
  pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, center
  return pose


def write_scene(path: str, angles, boxes, qa, height: int = 24, width: int = 32) -> str:
  """Writes a scene folder (data_pipelines/scenes.py layout) with one view per camera angle."""
  os.makedirs(os.path.join(path, "color"))
  os.makedirs(os.path.join(path, "pose"))
  for i, angle in enumerate(angles):
    write_image(os.path.join(path, "color", f"{i:06d}.jpg"), height, width, seed=i)
    np.savetxt(os.path.join(path, "pose", f"{i:06d}.txt"), ring_camera_to_world(angle))
  focal = width / 2
  np.savetxt(os.path.join(path, "intrinsic.txt"),
             np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]))
  with open(os.path.join(path, "scene.json"), "w", encoding="utf-8") as f:
    json.dump({"boxes": boxes, "qa": qa}, f)
  return path
