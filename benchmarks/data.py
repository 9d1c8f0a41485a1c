"""Data pipeline throughput: seek-based video sampling vs decode-everything, image workers.

    python benchmarks/data.py --workdir=/tmp/r1jax_data_bench

1. A synthetic 10-minute 30 fps H.264 video sampled to 64 frames, decoded and preprocessed
   (resize + Qwen2.5-VL patchify): the pipeline's seeking sampler vs a naive baseline that
   decodes and converts every frame, then picks 64. Run for each keyframe interval in --gops
   (x264's default 250 frames, and 2 s as streaming encoders use): seeking cannot beat one
   GOP of decoding per sampled frame, so the GOP bounds the speed-up.
2. Batches/s of the image prompt pipeline (JPEG decode, EXIF, resize, patchify, tokenize,
   batch) with 0 vs 2 grain worker processes.
Media are generated once into --workdir and reused. Prints a Markdown table.
"""
from __future__ import annotations

import json
import os
import time

import av
import numpy as np
import PIL.Image
from absl import app, flags

from data_pipelines import video
from r1jax import processing, tokenization

_BICUBIC = PIL.Image.Resampling.BICUBIC

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/r1jax_data_bench", "where media are generated")
_VIDEO_MINUTES = flags.DEFINE_float("video_minutes", 10.0, "synthetic video length")
_VIDEO_SIZE = flags.DEFINE_string("video_size", "360x640", "synthetic video HxW")
_GOPS = flags.DEFINE_list("gops", ["250", "60"], "keyframe intervals (frames) of the videos")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 64, "frames sampled from the video")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions (best is reported)")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "images in the image dataset")
_BATCHES = flags.DEFINE_integer("batches", 24, "timed batches of the image pipeline")


def _write_video(path: str, seconds: float, fps: int, height: int, width: int, gop: int) -> None:
  """A moving gradient with noise, so that frames really differ (realistic decode cost)."""
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 32, (8, height, width, 3), np.uint8)
  y, x = np.mgrid[0:height, 0:width]
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.gop_size = gop
    stream.options = {"preset": "ultrafast", "x264-params": f"keyint={gop}:scenecut=0"}
    for i in range(int(seconds * fps)):
      base = ((x + 3 * i) % 256).astype(np.uint8)[..., None] // 2 + ((y + i) % 128)[..., None]
      frame = np.clip(base + noise[i % 8], 0, 255).astype(np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _naive_sample(path: str, sampling: video.VideoSampling) -> np.ndarray:
  """Decodes and converts every frame to RGB, keeping the sampled ones (a simple loader).

  Frames are converted as they come and dropped unless sampled: holding all 18k frames of a
  10-minute video, as `list(container.decode())` loaders do, would take ~12 GB here.
  """
  meta = video.probe_video(path)
  wanted = set(np.round(video.target_timestamps(meta, sampling) * meta.fps).astype(int).tolist())
  picked = []
  with av.open(path) as container:
    container.streams.video[0].thread_type = "AUTO"
    for index, frame in enumerate(container.decode(video=0)):
      rgb = frame.to_ndarray(format="rgb24")
      if index in wanted:
        picked.append(rgb)
  height, width = sampling.frame_bounds(len(picked)).resized_size(*picked[0].shape[:2])
  return np.stack([np.asarray(PIL.Image.fromarray(f).resize((width, height), _BICUBIC))
                   for f in picked])


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def bench_video(workdir: str, gop: int) -> list[tuple[str, str]]:
  height, width = (int(v) for v in _VIDEO_SIZE.value.split("x"))
  fps = 30
  path = os.path.join(workdir,
                      f"synthetic_{_VIDEO_MINUTES.value:g}min_{height}x{width}_gop{gop}.mp4")
  if not os.path.exists(path):
    print(f"writing {path} ...", flush=True)
    _write_video(path + ".tmp.mp4", _VIDEO_MINUTES.value * 60, fps, height, width, gop)
    os.rename(path + ".tmp.mp4", path)
  sampling = video.VideoSampling(num_frames=_NUM_FRAMES.value, fps=None)
  cfg = processing.VisionProcessorConfig()

  def pipeline():
    clip = video.sample_video(path, sampling)
    processing.process_video(clip.frames, cfg, min_pixels=sampling.min_pixels,
                             max_pixels=sampling.max_pixels)

  def naive():
    processing.process_video(_naive_sample(path, sampling), cfg, min_pixels=sampling.min_pixels,
                             max_pixels=sampling.max_pixels)

  n = _NUM_FRAMES.value
  fast = _best_time(pipeline, _REPEATS.value)
  slow = _best_time(naive, 1)
  meta = video.probe_video(path)
  label = (f"{_VIDEO_MINUTES.value:g}-min {fps} fps {width}x{height} video, GOP {gop} -> "
           f"{n} frames")
  return [(f"{label}: pipeline (seek + decode {n} + preprocess)",
           f"{n / fast:.1f} frames/s ({fast:.2f} s/video)"),
          (f"{label}: naive (decode all {meta.num_frames} + pick + preprocess)",
           f"{n / slow:.2f} frames/s ({slow:.2f} s/video)"),
          (f"speed-up (GOP {gop})", f"{slow / fast:.1f}x")]


def bench_images(workdir: str) -> list[tuple[str, str]]:
  import data_pipelines  # Deferred so the video benchmark does not pay for it.

  root = os.path.join(workdir, "images")
  data_file = os.path.join(root, "train.jsonl")
  if not os.path.exists(data_file):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(data_file, "w", encoding="utf-8") as f:
      for i in range(_NUM_IMAGES.value):
        height, width = int(rng.integers(360, 720)), int(rng.integers(480, 960))
        pixels = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
        image = PIL.Image.fromarray(pixels).resize((width, height))
        image.save(os.path.join(root, f"{i}.jpg"), quality=90)
        f.write(json.dumps({"problem": f"<image>How many objects are in image {i}?",
                            "answer": str(i % 7), "images": [f"{i}.jpg"]}) + "\n")
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      os.path.join(workdir, "tokenizer"), ["How many objects are in image?"] * 8, 300))
  vision_cfg = processing.VisionProcessorConfig(max_pixels=448 * 448)
  rows = []
  for workers in (0, 2):
    config = data_pipelines.default_config(path=data_file, batch_size=8, num_workers=workers,
                                           read_threads=1, prefetch_batches=2,
                                           max_prompt_length=2048)
    iterator = data_pipelines.make_prompt_iterator(config, tokenizer, vision_cfg,
                                                   shard_index=0, shard_count=1)
    for _ in range(3):  # worker start-up and warm-up are not timed
      next(iterator)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(iterator)
    elapsed = time.perf_counter() - start
    iterator.close()
    rows.append((f"image prompts, batch 8, up to 448x448, {workers} workers, 1 reader thread",
                 f"{_BATCHES.value / elapsed:.2f} batches/s"))
  return rows


def main(argv):
  del argv
  os.makedirs(_WORKDIR.value, exist_ok=True)
  rows = [row for gop in _GOPS.value for row in bench_video(_WORKDIR.value, int(gop))]
  rows += bench_images(_WORKDIR.value)
  print(f"\n{os.cpu_count()} CPU cores\n\n| benchmark | result |\n|---|---|")
  for name, result in rows:
    print(f"| {name} | {result} |")


if __name__ == "__main__":
  app.run(main)
