"""Video frames with PyAV: metadata probe, frame sampling rules, seek-based decoding, overlays.

Sampling works in seconds. A rule (`VideoSampling`: N uniform frames, a target fps, or explicit
timestamps, within an optional [start, end) interval) gives target times; decoding returns, for
each target, the decoded frame whose presentation time is nearest, together with that frame's
exact time. Those times are what the prompt should state (LOVE-R1's interval prompts, the
`second_per_grid_ts` of Qwen2.5-VL's M-RoPE), never the nominal targets.

Decoding seeks: when a keyframe lies between the last decoded frame and the next target (a
second demuxer finds it without decoding), the decoder jumps to it instead of decoding
everything in between. One interval of a long video then costs at most a GOP more than the
interval itself, and sparse samples cost at most a GOP each, never more than decoding through.
"""
from __future__ import annotations

import dataclasses
import fractions
import functools
import io
import math

import av
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from data_pipelines import errors
from data_pipelines.images import ResizeBounds, media_name
from data_pipelines.records import MediaRef

# Qwen2.5-VL's video frame bounds (qwen-vl-utils VIDEO_MIN_PIXELS / VIDEO_MAX_PIXELS).
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


@dataclasses.dataclass(frozen=True)
class VideoMetadata:
  """What the container says, read without decoding.

  Attributes:
    duration: seconds.
    fps: the stream's average frame rate.
    num_frames: the stream's frame count (estimated as duration * fps when the container
      does not store it, e.g. Matroska).
    height, width: coded frame size.
  """
  duration: float
  fps: float
  num_frames: int
  height: int
  width: int


@dataclasses.dataclass(frozen=True)
class VideoSampling:
  """How to pick frames and how large to make them.

  Exactly one of `num_frames` / `fps` is set (explicit timestamps come with the video reference
  and override both).

  Attributes:
    num_frames: N frames spread uniformly over the interval's frames (first and last included).
    fps: frames at start, start + 1/fps, ... inside the interval.
    max_frames: cap; more frames become `max_frames` uniform ones.
    min_pixels, max_pixels: per-frame `smart_resize` bounds.
    total_pixels: optional budget for all frames of one video (qwen-vl-utils' rule: the
      per-frame maximum becomes min(max_pixels, total_pixels / T * 2), at least 1.05 * min).
    factor: `smart_resize` factor (patch_size * merge_size).
    overlay_timestamps: draw each frame's integer second on it (LOVE-R1).
  """
  num_frames: int | None = None
  fps: float | None = 2.0
  max_frames: int = 768
  min_pixels: int = VIDEO_MIN_PIXELS
  max_pixels: int = VIDEO_MAX_PIXELS
  total_pixels: int | None = None
  factor: int = 28
  overlay_timestamps: bool = False

  def __post_init__(self):
    if (self.num_frames is None) == (self.fps is None):
      raise ValueError(f"VideoSampling needs exactly one of num_frames / fps, got "
                       f"num_frames={self.num_frames}, fps={self.fps}")
    if self.num_frames is not None and self.num_frames < 1:
      raise ValueError(f"VideoSampling.num_frames must be >= 1, got {self.num_frames}")
    if self.fps is not None and self.fps <= 0:
      raise ValueError(f"VideoSampling.fps must be > 0, got {self.fps}")
    if self.max_frames < 1:
      raise ValueError(f"VideoSampling.max_frames must be >= 1, got {self.max_frames}")

  def frame_bounds(self, num_frames: int) -> ResizeBounds:
    """The per-frame resize bounds for a video of `num_frames` sampled frames."""
    max_pixels = self.max_pixels
    if self.total_pixels is not None:
      max_pixels = max(min(max_pixels, self.total_pixels / num_frames * 2),
                       int(self.min_pixels * 1.05))
    return ResizeBounds(self.factor, self.min_pixels, int(max_pixels))


@dataclasses.dataclass(frozen=True)
class VideoClip:
  """Sampled frames of one video.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB, resized to the sampling's bounds.
    timestamps: float64 [T], seconds from the first frame of the video, of each returned frame.
    frame_indices: int64 [T], round(timestamp * fps): the frame number in a constant-rate video.
    metadata: the source video's metadata.
  """
  frames: np.ndarray
  timestamps: np.ndarray
  frame_indices: np.ndarray
  metadata: VideoMetadata

  @property
  def sample_fps(self) -> float:
    """Frames per second of the clip: 1 / mean spacing (the source fps for a single frame)."""
    if len(self.timestamps) < 2:
      return self.metadata.fps
    spacing = (self.timestamps[-1] - self.timestamps[0]) / (len(self.timestamps) - 1)
    return 1.0 / spacing if spacing > 0 else self.metadata.fps

  def second_per_grid_t(self, temporal_patch_size: int = 2) -> float:
    """Seconds spanned by one temporal patch, Qwen2.5-VL's `second_per_grid_ts` entry."""
    return temporal_patch_size / self.sample_fps


def _open(source: MediaRef):
  return av.open(source if isinstance(source, str) else io.BytesIO(source))


def _metadata(container) -> VideoMetadata:
  if not container.streams.video:
    raise av.error.InvalidDataError(0, "the file has no video stream")
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate
  if not rate:
    raise av.error.InvalidDataError(0, "the video stream has no frame rate")
  fps = float(rate)
  if stream.duration is not None and stream.time_base is not None:
    duration = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    duration = container.duration / av.time_base
  else:
    duration = stream.frames / fps
  num_frames = stream.frames or int(round(duration * fps))
  if num_frames < 1 or duration <= 0:
    raise av.error.InvalidDataError(0, f"the video has {num_frames} frames, {duration} s")
  return VideoMetadata(duration=duration, fps=fps, num_frames=num_frames,
                       height=stream.codec_context.height, width=stream.codec_context.width)


def probe_video(source: MediaRef) -> VideoMetadata:
  """Reads duration, fps, frame count and size from the container headers (no decoding).

  Raises:
    BadExampleError: BAD_MEDIA naming the file when it is missing or not a readable video.
  """
  try:
    with _open(source) as container:
      return _metadata(container)
  except errors.MEDIA_ERRORS as e:
    raise errors.media_error(media_name(source), e) from e


def _uniform(first: int, last: int, count: int) -> np.ndarray:
  return np.round(np.linspace(first, last, count)).astype(np.int64)


def target_timestamps(metadata: VideoMetadata, sampling: VideoSampling, *,
                      start: float | None = None, end: float | None = None) -> np.ndarray:
  """The times (seconds, float64 [T]) a sampling rule asks for within [start, end).

  Uniform sampling picks frame numbers with linspace over the interval's frames (as
  qwen-vl-utils does) so targets fall exactly on frames; fps sampling asks for start + k / fps.
  """
  start = 0.0 if start is None else max(0.0, float(start))
  end = metadata.duration if end is None else min(float(end), metadata.duration)
  if end <= start:
    raise ValueError(f"empty video interval [{start}, {end}) (duration {metadata.duration} s)")
  fps = metadata.fps
  first = min(math.ceil(start * fps - 1e-6), metadata.num_frames - 1)
  last = max(first, min(math.ceil(end * fps - 1e-6) - 1, metadata.num_frames - 1))
  if sampling.num_frames is not None:
    count = min(sampling.num_frames, sampling.max_frames)
    return _uniform(first, last, count) / fps
  count = max(1, math.ceil((end - start) * sampling.fps - 1e-6))
  if count > sampling.max_frames:
    return _uniform(first, last, sampling.max_frames) / fps
  return start + np.arange(count) / sampling.fps


def _frame_time(frame, stream_start: int, time_base: fractions.Fraction) -> float:
  return float((frame.pts - stream_start) * time_base)


class _KeyframeProbe:
  """Finds the keyframe a seek would land on, with a second demuxer (no decoding).

  Seeking the decoding container flushes its decoder, so whether a seek pays off must be
  known before seeking: it does exactly when the keyframe before the target lies after the
  last decoded frame (otherwise decoding on from where we are is the shorter way).
  """

  def __init__(self, source: MediaRef, stream_index: int):
    self._source = source
    self._stream_index = stream_index
    self._container = None

  def keyframe_pts(self, offset: int) -> int | None:
    """pts of the keyframe at or before `offset` (stream time base); None if unknown."""
    if self._container is None:
      self._container = _open(self._source)
    stream = self._container.streams.video[self._stream_index]
    self._container.seek(offset, stream=stream, backward=True, any_frame=False)
    for packet in self._container.demux(stream):
      if packet.pts is not None:
        return packet.pts
    return None

  def close(self) -> None:
    if self._container is not None:
      self._container.close()


def decode_frames_at(source: MediaRef, timestamps, *, size: tuple[int, int] | None = None,
                     seek: bool = True, seek_gap_s: float = 0.5, threads: bool = True,
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Decodes the frame nearest to each requested time.

  Args:
    source: path or bytes of the video.
    timestamps: requested times, seconds from the first frame, any order, repeats allowed.
    size: (height, width) to scale frames to (swscale bicubic), None for the coded size.
    seek: when the next target lies more than `seek_gap_s` past the last decoded frame and a
      keyframe lies in between, jump to that keyframe instead of decoding through the gap.
      False decodes sequentially from the start (the reference behaviour).
    seek_gap_s: smaller gaps are decoded through without probing for a keyframe.
    threads: let FFmpeg decode with several threads.

  Returns:
    frames uint8 [T, H, W, 3] and their actual times float64 [T], in the order requested.

  Raises:
    BadExampleError: BAD_MEDIA naming the file when it cannot be read or decoded.
  """
  requested = np.asarray(timestamps, np.float64)
  targets, inverse = np.unique(requested, return_inverse=True)
  try:
    with _open(source) as container:
      stream = container.streams.video[0]
      if threads:
        stream.thread_type = "AUTO"
      probe = _KeyframeProbe(source, 0) if seek else None
      try:
        chosen = _decode_nearest(container, stream, targets, probe, seek_gap_s)
      finally:
        if probe is not None:
          probe.close()
      height, width = size or (stream.codec_context.height, stream.codec_context.width)
      frames = np.stack([
          frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
          for frame in chosen])
      stream_start = stream.start_time or 0
      times = np.asarray([_frame_time(f, stream_start, stream.time_base) for f in chosen],
                         np.float64)
  except errors.MEDIA_ERRORS as e:
    raise errors.media_error(media_name(source), e) from e
  return frames[inverse], times[inverse]


def _decode_nearest(container, stream, targets: np.ndarray, probe: _KeyframeProbe | None,
                    seek_gap_s: float) -> list:
  """For sorted unique `targets` (s), the decoded frame nearest to each (av.VideoFrames).

  With a `probe`, starts at the keyframe before the first target and seeks whenever the
  keyframe before the next target lies past the last decoded frame.
  """
  stream_start, time_base = stream.start_time or 0, stream.time_base
  chosen = []
  frames = None
  previous, previous_time = None, -math.inf
  probed = None  # the target whose keyframe was probed last: probe once per target
  while len(chosen) < len(targets):
    target = targets[len(chosen)]
    offset = stream_start + int(math.floor(target / time_base))
    jump = frames is None and probe is not None
    if (frames is not None and probe is not None and probed != target
        and target - previous_time > seek_gap_s):
      probed = target
      keyframe = probe.keyframe_pts(offset)
      jump = keyframe is not None and keyframe > previous.pts
    if jump:
      container.seek(offset, stream=stream, backward=True, any_frame=False)
    if jump or frames is None:
      frames = container.decode(stream)
      previous, previous_time = None, -math.inf
    frame = next((f for f in frames if f.pts is not None), None)
    if frame is None:  # end of stream: the last frame is the nearest to every later target
      if previous is None:
        raise av.error.InvalidDataError(0, f"no decodable frame at or after {target:.3f} s")
      chosen.extend([previous] * (len(targets) - len(chosen)))
      break
    time = _frame_time(frame, stream_start, time_base)
    while len(chosen) < len(targets) and time >= targets[len(chosen)]:
      target = targets[len(chosen)]
      closer_before = previous is not None and target - previous_time < time - target
      chosen.append(previous if closer_before else frame)
    previous, previous_time = frame, time
  return chosen


# LOVE-R1's stamp: the frame's integer second in red at the bottom right, font size
# min(H, W) / 8 (its system prompt tells the model that "the red numbers" are timestamps).
# Floored at 6 px so that tiny test and synthetic frames still get a visible stamp.
_STAMP_COLOR = (255, 0, 0)
_MIN_STAMP_PX = 6


@functools.lru_cache(maxsize=1024)
def _stamp_alpha(text: str, height: int, width: int) -> tuple[int, int, np.ndarray]:
  """(top, left, uint8 [h, w] coverage) of `text` drawn at the bottom right of an H x W frame.

  Cached (only the text's box, a few KB): a video's frames share their size and a few hundred
  seconds at most, and drawing with PIL costs ~0.3 ms a frame, more than decoding a small one.
  """
  size = max(_MIN_STAMP_PX, min(height, width) // 8)
  font = PIL.ImageFont.load_default(size=size)
  margin = max(1, size // 4)
  mask = PIL.Image.new("L", (width, height), 0)
  draw = PIL.ImageDraw.Draw(mask)
  _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
  draw.text((width - margin - right, height - margin - bottom), text, fill=255, font=font)
  alpha = np.asarray(mask)
  rows, cols = np.nonzero(alpha)
  if not len(rows):
    return 0, 0, alpha[:0, :0]
  top, left = int(rows.min()), int(cols.min())
  return top, left, alpha[top:rows.max() + 1, left:cols.max() + 1].copy()


def overlay_timestamps(frames: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
  """Draws each frame's integer second in red at the bottom right, as LOVE-R1 does.

  Args:
    frames: uint8 [T, H, W, 3].
    timestamps: float [T] seconds.

  Returns:
    A new uint8 [T, H, W, 3] array.
  """
  height, width = frames.shape[1:3]
  red = np.asarray(_STAMP_COLOR, np.float32)
  out = frames.copy()
  for i, time in enumerate(timestamps):
    top, left, alpha = _stamp_alpha(str(int(math.floor(time + 1e-6))), height, width)
    a = alpha[..., None].astype(np.float32) / 255
    box = out[i, top:top + alpha.shape[0], left:left + alpha.shape[1]]
    box[:] = np.round(box * (1 - a) + red * a).astype(np.uint8)
  return out


@dataclasses.dataclass(frozen=True)
class FrameSequence:
  """A video stored as one image file per frame (ReVOS, MeViS, Ref-YouTube-VOS ship frame folders).

  Attributes:
    paths: the frame files, in order: every one is a frame of the clip (the dataset picks them).
    fps: the rate the frames are shown at (Omni-R1 treats its sampled frames as 2 fps).
  """
  paths: tuple[str, ...]
  fps: float = 2.0


def sample_frame_sequence(frames: FrameSequence, sampling: VideoSampling) -> VideoClip:
  """Decodes every frame of `frames` and resizes them (PIL bicubic) to one size under `sampling`'s
  bounds for that many frames (the first frame's size decides).

  Raises:
    BadExampleError: BAD_MEDIA naming the frame file that is missing or unreadable, or whose size
      differs from the first frame's.
  """
  from data_pipelines.images import decode_image  # pylint: disable=g-import-not-at-top

  if not frames.paths:
    raise errors.BadExampleError(errors.BAD_MEDIA, "<frame sequence>", "no frame files")
  images = [decode_image(path) for path in frames.paths]
  height, width = images[0].height, images[0].width
  for path, image in zip(frames.paths, images):
    if (image.height, image.width) != (height, width):
      raise errors.BadExampleError(errors.BAD_MEDIA, path, f"frame of {image.height}x{image.width} pixels in a "
                                   f"sequence of {height}x{width} frames ({frames.paths[0]})")
  size = sampling.frame_bounds(len(images)).resized_size(height, width)
  pixels = np.stack([np.asarray(image if (image.height, image.width) == size
                                else image.resize(size[::-1], PIL.Image.Resampling.BICUBIC), np.uint8)
                     for image in images])
  times = np.arange(len(images), dtype=np.float64) / frames.fps
  metadata = VideoMetadata(duration=len(images) / frames.fps, fps=frames.fps, num_frames=len(images), height=height,
                           width=width)
  return VideoClip(frames=pixels, timestamps=times, frame_indices=np.arange(len(images), dtype=np.int64),
                   metadata=metadata)


def sample_video(source: MediaRef | FrameSequence, sampling: VideoSampling, *, start: float | None = None,
                 end: float | None = None, timestamps=None, seek: bool = True,
                 seek_gap_s: float = 0.5) -> VideoClip:
  """Samples, decodes and resizes the frames of one video.

  Args:
    source: path or bytes, or a `FrameSequence` (all of its frames are used: `sampling` gives
      their size only, and start / end / timestamps must be unset).
    sampling: the frame rule and the per-frame size bounds.
    start, end: restrict sampling to [start, end) seconds.
    timestamps: explicit times in seconds (overrides the rule; capped to `max_frames`
      uniformly).
    seek, seek_gap_s: see `decode_frames_at`.

  Raises:
    BadExampleError: BAD_MEDIA naming the file (missing, corrupt, empty interval).
  """
  if isinstance(source, FrameSequence):
    if start is not None or end is not None or timestamps is not None:
      raise ValueError("a FrameSequence is used whole: pick its frames instead of passing start/end/timestamps")
    return sample_frame_sequence(source, sampling)
  metadata = probe_video(source)
  if timestamps is not None:
    targets = np.asarray(timestamps, np.float64)
    if len(targets) > sampling.max_frames:
      targets = targets[_uniform(0, len(targets) - 1, sampling.max_frames)]
  else:
    try:
      targets = target_timestamps(metadata, sampling, start=start, end=end)
    except ValueError as e:
      raise errors.BadExampleError(errors.BAD_MEDIA, media_name(source), str(e)) from e
  bounds = sampling.frame_bounds(len(targets))
  size = bounds.resized_size(metadata.height, metadata.width)
  frames, times = decode_frames_at(source, targets, size=size, seek=seek, seek_gap_s=seek_gap_s)
  if sampling.overlay_timestamps:
    frames = overlay_timestamps(frames, times)
  return VideoClip(frames=frames, timestamps=times,
                   frame_indices=np.round(times * metadata.fps).astype(np.int64),
                   metadata=metadata)


# LOVE-R1 two-resolution sampling: a dense low-resolution overview of the whole video, then a
# high-resolution clip of the interval the model asked to zoom into. The frame counts and pixel
# budgets are defined once, in the reward module (r1jax.rewards.love_r1.overview_budget /
# zoom_budget); it is imported inside the functions because importing r1jax.rewards loads every
# recipe's reward (about 2 s) and most users of this module never sample LOVE-R1 clips.
_LOVE_R1_MIN_PIXELS = 4 * 28 * 28


def _love_r1_sampling(budget) -> VideoSampling:
  """A `FrameBudget` as a stamped uniform sampling (LOVE-R1 stamps overviews and zoom clips)."""
  return VideoSampling(num_frames=max(1, budget.num_frames), fps=None,
                       max_frames=max(1, budget.num_frames),
                       min_pixels=min(_LOVE_R1_MIN_PIXELS, budget.max_pixels),
                       max_pixels=budget.max_pixels, overlay_timestamps=True)


def love_r1_overview_sampling(duration: float, *, max_frames: int | None = None,
                              max_pixels: int | None = None) -> VideoSampling:
  """min(floor(2 * duration), 768) uniform frames at 32*28*28 pixels (x2 under 60 s), stamped.

  `max_frames` / `max_pixels` replace the paper's caps (None keeps them; see `overview_budget`).
  """
  from r1jax.rewards import love_r1  # Deferred: see the comment above.

  return _love_r1_sampling(
      love_r1.overview_budget(duration, max_frames=max_frames, max_pixels=max_pixels))


def love_r1_zoom_sampling(start: float, end: float, *, max_frames: int | None = None,
                          max_pixels: int | None = None) -> VideoSampling:
  """min(floor(2 * (end - start)), 16) uniform frames of the interval at 256*28*28 pixels, stamped.

  The released trainer stamps zoom clips too. `max_frames` / `max_pixels` replace the caps.
  """
  from r1jax.rewards import love_r1  # Deferred: see the comment above.

  return _love_r1_sampling(
      love_r1.zoom_budget(start, end, max_frames=max_frames, max_pixels=max_pixels))


@dataclasses.dataclass(frozen=True)
class TwoResolutionSample:
  """An overview of the whole video and a zoomed clip of `interval` ([start, end) seconds)."""
  overview: VideoClip
  zoom: VideoClip
  interval: tuple[float, float]


def sample_two_resolution(source: MediaRef, interval: tuple[float, float], *,
                          overview: VideoSampling | None = None,
                          zoom: VideoSampling | None = None,
                          seek_gap_s: float = 0.5) -> TwoResolutionSample:
  """Samples the overview (whole video) and the zoom clip (the interval only, by seeking).

  Args:
    source: path or bytes.
    interval: (start, end) seconds of the zoom clip.
    overview, zoom: sampling rules; default to LOVE-R1's (`love_r1_*_sampling`).
  """
  start, end = interval
  if overview is None:
    overview = love_r1_overview_sampling(probe_video(source).duration)
  zoom = zoom or love_r1_zoom_sampling(start, end)
  return TwoResolutionSample(
      overview=sample_video(source, overview, seek_gap_s=seek_gap_s),
      zoom=sample_video(source, zoom, start=start, end=end, seek_gap_s=seek_gap_s),
      interval=(start, end))


def zoom_clip_label(start: float, end: float) -> str:
  """LOVE-R1's caption in front of a zoomed clip: integer seconds (`zoom_clip_caption`)."""
  from r1jax.rewards import love_r1  # Deferred: see the LOVE-R1 sampling comment above.

  return love_r1.zoom_clip_caption(start, end)


def two_resolution_messages(question: str, interval: tuple[float, float],
                            first_response: str | None = None) -> list[dict]:
  """The chat for a two-resolution prompt; videos[0] is the overview, videos[1] the zoom clip.

  Without `first_response` one user turn holds [overview, question, clip label, zoom clip].
  With it (LOVE-R1's second step) the model's zoom request is the assistant turn and the clip
  follows as a new user turn.
  """
  label = {"type": "text", "text": zoom_clip_label(*interval)}
  first = [{"type": "video"}, {"type": "text", "text": question}]
  if first_response is None:
    return [{"role": "user", "content": first + [label, {"type": "video"}]}]
  return [{"role": "user", "content": first},
          {"role": "assistant", "content": first_response},
          {"role": "user", "content": [label, {"type": "video"}]}]
