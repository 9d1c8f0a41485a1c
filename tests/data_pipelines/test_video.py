"""Video probing, sampling rules, seek-based decoding, overlays and two-resolution samples."""

import av
import numpy as np
import pytest

from data_pipelines import errors, video
from r1jax import processing
from tests.data_pipelines import media

_SMALL = dict(min_pixels=28 * 28, max_pixels=56 * 84)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  return {
      "10fps": media.write_counter_video(str(root / "a.mp4"), 80, fps=10, gop=10),
      "30fps": media.write_counter_video(str(root / "b.mp4"), 150, fps=30, height=64, width=96,
                                         gop=15),
      "mpeg4_mkv": media.write_counter_video(str(root / "c.mkv"), 72, fps=24, codec="mpeg4",
                                             gop=12),
  }


def _counters(clip):
  return [media.read_counter(frame) for frame in clip.frames]


@pytest.mark.parametrize("name,fps,frames,size", [
    ("10fps", 10, 80, (48, 64)), ("30fps", 30, 150, (64, 96)), ("mpeg4_mkv", 24, 72, (48, 64))])
def test_probe_reads_metadata(videos, name, fps, frames, size):
  meta = video.probe_video(videos[name])
  assert meta.fps == pytest.approx(fps)
  assert meta.num_frames == frames
  assert meta.duration == pytest.approx(frames / fps, abs=1 / fps)
  assert (meta.height, meta.width) == size


@pytest.mark.parametrize("name,count", [("10fps", 8), ("30fps", 7), ("mpeg4_mkv", 5)])
def test_uniform_sampling_returns_linspace_frames(videos, name, count):
  meta = video.probe_video(videos[name])
  clip = video.sample_video(videos[name], video.VideoSampling(num_frames=count, fps=None,
                                                              **_SMALL))
  expected = np.round(np.linspace(0, meta.num_frames - 1, count)).astype(int)
  np.testing.assert_array_equal(clip.frame_indices, expected)
  assert _counters(clip) == expected.tolist()
  # The actual presentation times, to the container's time base (Matroska: 1 ms).
  np.testing.assert_allclose(clip.timestamps, expected / meta.fps, atol=1e-3)


def test_fps_sampling_returns_frames_at_rate(videos):
  clip = video.sample_video(videos["30fps"], video.VideoSampling(fps=2.0, **_SMALL))
  expected = np.arange(10) * 15  # 0, 0.5, ..., 4.5 s of a 5 s, 30 fps video
  assert _counters(clip) == expected.tolist()
  np.testing.assert_allclose(clip.timestamps, np.arange(10) * 0.5, atol=1e-6)
  assert clip.sample_fps == pytest.approx(2.0)
  assert clip.second_per_grid_t(2) == pytest.approx(1.0)


def test_interval_sampling_stays_inside_interval(videos):
  uniform = video.sample_video(videos["10fps"], video.VideoSampling(num_frames=5, fps=None,
                                                                    **_SMALL),
                               start=2.0, end=4.0)
  assert _counters(uniform) == [20, 25, 30, 34, 39]  # linspace over frames 20..39
  at_rate = video.sample_video(videos["10fps"], video.VideoSampling(fps=5.0, **_SMALL),
                               start=2.3, end=3.3)
  assert _counters(at_rate) == [23, 25, 27, 29, 31]
  np.testing.assert_allclose(at_rate.timestamps, [2.3, 2.5, 2.7, 2.9, 3.1], atol=1e-6)


def test_explicit_timestamps_any_order_with_repeats(videos):
  clip = video.sample_video(videos["10fps"], video.VideoSampling(**_SMALL),
                            timestamps=[7.5, 0.42, 3.0, 3.0, 60.0])
  assert _counters(clip) == [75, 4, 30, 30, 79]  # past the end: the last frame
  np.testing.assert_allclose(clip.timestamps, [7.5, 0.4, 3.0, 3.0, 7.9], atol=1e-6)


def test_max_frames_caps_uniformly(videos):
  clip = video.sample_video(videos["10fps"], video.VideoSampling(fps=10.0, max_frames=16,
                                                                 **_SMALL))
  assert _counters(clip) == np.round(np.linspace(0, 79, 16)).astype(int).tolist()


def test_frames_resized_within_bounds(videos):
  sampling = video.VideoSampling(num_frames=2, fps=None, min_pixels=28 * 28,
                                 max_pixels=56 * 56)
  clip = video.sample_video(videos["30fps"], sampling)
  height, width = clip.frames.shape[1:3]
  assert height % 28 == 0 and width % 28 == 0 and height * width <= 56 * 56
  assert (height, width) == processing.smart_resize(64, 96, 28, 28 * 28, 56 * 56)


@pytest.mark.parametrize("name", ["10fps", "30fps", "mpeg4_mkv"])
def test_seeking_matches_full_decoding(videos, name):
  meta = video.probe_video(videos[name])
  rng = np.random.default_rng(0)
  targets = np.concatenate([rng.uniform(0, meta.duration, 6), [meta.duration - 0.01, 0.0],
                            np.linspace(meta.duration * 0.6, meta.duration * 0.7, 4)])
  sought, sought_times = video.decode_frames_at(videos[name], targets, seek=True, seek_gap_s=0.2)
  full, full_times = video.decode_frames_at(videos[name], targets, seek=False)
  np.testing.assert_array_equal(sought, full)
  np.testing.assert_array_equal(sought_times, full_times)
  expected = np.clip(np.round(targets * meta.fps), 0, meta.num_frames - 1).astype(int)
  assert [media.read_counter(f) for f in sought] == expected.tolist()


def test_overlay_draws_integer_second_in_red_at_bottom_right():
  frames = np.zeros((3, 56, 84, 3), np.uint8)
  stamped = video.overlay_timestamps(frames, np.array([0.5, 3.2, 13.9]))
  red = (stamped[..., 0] > 150) & (stamped[..., 1] < 80) & (stamped[..., 2] < 80)
  assert red[0].sum() > 5 and not (stamped[..., 1:] > 0).any()  # red text only, nothing else
  ys, xs = np.nonzero(red[2])
  assert ys.min() > 56 * 2 // 3 and xs.min() > 84 // 2  # LOVE-R1: the bottom right
  assert xs.max() < 84 and red[2].sum() > red[1].sum()  # "13" is wider than "3"
  assert not np.array_equal(stamped[0], stamped[1])  # "0" vs "3"
  np.testing.assert_array_equal(stamped[:, :28, :], 0)  # the top half untouched
  np.testing.assert_array_equal(frames, 0)  # input not modified
  # The font is min(H, W) / 8 (at least 6 px), so the stamp scales with the frame.
  big = video.overlay_timestamps(np.zeros((1, 224, 336, 3), np.uint8), np.array([13.0]))
  assert (big[..., 0] > 150).sum() > 8 * red[2].sum()


@pytest.mark.parametrize("content", [None, b"not a video at all"])
def test_missing_or_corrupt_video_names_file(tmp_path, content):
  path = str(tmp_path / "broken.mp4")
  if content is not None:
    with open(path, "wb") as f:
      f.write(content)
  with pytest.raises(errors.BadExampleError) as info:
    video.sample_video(path, video.VideoSampling())
  assert info.value.reason == errors.BAD_MEDIA
  assert "broken.mp4" in str(info.value)


def test_two_resolution_sample_layout_and_grids(tmp_path, tokenizer):
  path = media.write_counter_video(str(tmp_path / "long.mp4"), 80, fps=10, height=240,
                                   width=320, gop=20)
  sample = video.sample_two_resolution(path, (2, 6))
  overview, zoom = sample.overview, sample.zoom
  # LOVE-R1: min(2 * 8 s, 768) overview frames at <= 2*32*28*28 pixels (video < 60 s), stamped;
  # min(2 * 4 s, 16) zoom frames of [2, 6) at <= 256*28*28 pixels, stamped too (the red second
  # sits at the bottom right, off the counter blocks' centres).
  assert overview.frames.shape == (16, *processing.smart_resize(240, 320, 28, 4 * 784,
                                                                2 * 32 * 784), 3)
  assert zoom.frames.shape == (8, *processing.smart_resize(240, 320, 28, 4 * 784, 256 * 784), 3)
  assert overview.frames.shape[1] < zoom.frames.shape[1]
  assert _counters(zoom) == np.round(np.linspace(20, 59, 8)).astype(int).tolist()
  np.testing.assert_allclose(overview.timestamps, np.round(np.linspace(0, 79, 16)) / 10)

  messages = video.two_resolution_messages("What happens?", sample.interval)
  encoded = processing.encode_prompt(
      tokenizer, messages, videos=[overview.frames, zoom.frames],
      video_fps=[overview.sample_fps, zoom.sample_fps])
  expected_grids = [[len(c.frames) // 2, c.frames.shape[1] // 14, c.frames.shape[2] // 14]
                    for c in (overview, zoom)]
  np.testing.assert_array_equal(encoded.video_grid_thw, expected_grids)
  video_pad = tokenizer.convert_tokens_to_ids(processing.VIDEO_PAD)
  assert (encoded.input_ids == video_pad).sum() == sum(np.prod(g) // 4 for g in expected_grids)
  np.testing.assert_allclose(encoded.second_per_grid_ts,
                             [2 / overview.sample_fps, 2 / zoom.sample_fps], rtol=1e-6)
  text = tokenizer.decode(encoded.input_ids)
  first_end = text.index("<|vision_end|>")
  label = text.index("Subset zoom-in video clip [2, 6]:")
  assert first_end < text.index("What happens?") < label < text.rindex("<|vision_start|>")


def test_love_r1_samplings_are_the_reward_budgets():
  from r1jax.rewards import love_r1

  for duration, caps in [(30.0, {}), (383.9, {}), (300.0, dict(max_frames=64, max_pixels=784))]:
    budget, sampling = love_r1.overview_budget(duration, **caps), video.love_r1_overview_sampling(
        duration, **caps)
    assert (sampling.num_frames, sampling.max_pixels) == (budget.num_frames, budget.max_pixels)
    assert sampling.overlay_timestamps and sampling.min_pixels <= sampling.max_pixels
  for t1, t2, caps in [(10, 15, {}), (0, 60, {}), (0, 20, dict(max_frames=4, max_pixels=12544))]:
    budget, sampling = love_r1.zoom_budget(t1, t2, **caps), video.love_r1_zoom_sampling(
        t1, t2, **caps)
    assert (sampling.num_frames, sampling.max_pixels) == (budget.num_frames, budget.max_pixels)
    assert sampling.overlay_timestamps  # the released trainer stamps zoom clips too
  assert video.zoom_clip_label(12.7, 40) == love_r1.zoom_clip_caption(12.7, 40) == (
      "Subset zoom-in video clip [12, 40]:")


class _CountingContainer:
  """Wraps an av container, counting the frames its decoder produces."""

  def __init__(self, container):
    self._container = container
    self.decoded = 0

  def seek(self, *args, **kwargs):
    return self._container.seek(*args, **kwargs)

  def decode(self, stream):
    for frame in self._container.decode(stream):
      self.decoded += 1
      yield frame


@pytest.mark.parametrize("targets,expected_decoded", [
    ([6.0, 6.3, 6.6, 6.9], 10),  # an interval: from its keyframe (frame 60) to frame 69 only
    ([0.0, 0.3, 5.0, 5.2, 7.9], 4 + 3 + 10),  # sparse: frames 0-3, 50-52, 70-79
    ([0.0, 0.4, 0.8], 9),  # no keyframe in the gaps: decodes straight through frames 0-8
])
def test_seeking_decodes_only_from_the_keyframe_before_each_target(videos, targets,
                                                                   expected_decoded):
  path = videos["10fps"]  # keyframe every 10 frames (1 s)
  # pylint: disable=protected-access
  with av.open(path) as container:
    counting = _CountingContainer(container)
    probe = video._KeyframeProbe(path, 0)
    chosen = video._decode_nearest(counting, container.streams.video[0], np.asarray(targets),
                                   probe, seek_gap_s=0.2)
    probe.close()
    counters = [media.read_counter(f.to_ndarray(format="rgb24")) for f in chosen]
  assert counters == np.round(np.asarray(targets) * 10).astype(int).tolist()
  assert counting.decoded == expected_decoded
