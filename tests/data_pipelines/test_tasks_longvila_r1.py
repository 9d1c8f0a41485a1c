"""LongVILA-R1 data: LongVideo-Reason records read, frames sampled uniformly, bad records skipped.

The fixture is written in the published layout: a JSONL file of records with `videos` (one path
relative to the video folder), `problem` (options in the text), `answer` (`<answer>X</answer>`)
and `id` (and `reasoning`, the CoT, on the first), next to a `longvila_videos/` folder of counter videos (frame i shows the number i,
tests/data_pipelines/media.py) written with PyAV; corrupt.mp4 is not a video. The synthetic task
(longvila_r1_synthetic.py) is written in the same layout and read back by the same reader.
"""
import json
import logging
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors, registry
from data_pipelines.tasks import longvila_r1_synthetic as synthetic
from data_pipelines.transforms import load_media
from r1jax import processing
from r1jax.rewards import longvila as reward
from tests.data_pipelines import media

_VISION = processing.VisionProcessorConfig()
PROBLEM = ("What does the player do after the second goal?\nA. leaves the field\nB. waves to the "
           "crowd\nC. ties a shoe\nD. sits down")
NUM_FRAMES, FPS = 60, 6  # a 10-second counter video


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  """records.jsonl in the published layout, and the folder its video paths are relative to."""
  root = tmp_path_factory.mktemp("longvideo_reason")
  videos = root / "longvila_videos"
  videos.mkdir()
  media.write_counter_video(str(videos / "game.mp4"), NUM_FRAMES, FPS, height=56, width=112)
  (videos / "corrupt.mp4").write_bytes(b"not a video at all" * 8)
  good = {"videos": ["longvila_videos/game.mp4"], "problem": PROBLEM,
          "answer": "<answer>B</answer>", "id": "lvr-0",
          "reasoning": "The second goal comes at the end; then the player waves."}
  rows = [good,
          dict(good, videos=["longvila_videos/missing.mp4"], id="lvr-1"),
          dict(good, videos=["longvila_videos/corrupt.mp4"], id="lvr-2"),
          {key: value for key, value in good.items() if key != "answer"},
          {key: value for key, value in dict(good, videos="longvila_videos/game.mp4", answer="<answer>D</answer>",
                                             id="lvr-4").items() if key != "reasoning"}]
  path = root / "records.jsonl"
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return str(path), str(root)


def _build(path, **options):
  return registry.build(data_pipelines.default_config(name="longvila_r1", path=path, **options))


def test_reads_the_published_fields(records):
  path, root = records
  cfg, spec = _build(path, video_dir=root, nframes=8, frame_pixels=56 * 112)
  example = spec.to_example(spec.source[0])
  assert example.messages == [{"role": "user", "content": [
      {"type": "video"},
      {"type": "text", "text": PROBLEM + "\nOutput the thinking process in <think> </think> and "
                                         "final answer in <answer> </answer> tags."}]}]
  video_path = os.path.join(root, "longvila_videos", "game.mp4")
  assert [ref.source for ref in example.videos] == [video_path] == [example.context["video"]]
  assert example.ground_truth == {"answer": "B", "solution": "<answer>B</answer>"}
  assert example.id == "lvr-0" and example.where == f"{path}:line 1"
  assert example.data_type == "video" and example.response is None
  # The reward reads this ground truth.
  assert reward.longvila_reward("<think>x</think><answer>B</answer>", example.ground_truth).total == 1.0
  assert reward.longvila_reward("<think>x</think><answer>A</answer>", example.ground_truth).total == 0.1
  # A bare path string reads the same; the id is the record's.
  fifth = spec.to_example(spec.source[4])
  assert fifth.context["video"] == video_path and fifth.ground_truth["answer"] == "D"


@pytest.mark.parametrize("nframes, frame_pixels", [(8, 28 * 56), (13, 56 * 112)])
def test_frames_are_uniform_over_the_whole_video_at_the_fixed_size(records, nframes, frame_pixels):
  path, root = records
  cfg, spec = _build(path, video_dir=root, nframes=nframes, frame_pixels=frame_pixels)
  _, (clip,) = load_media(spec.to_example(spec.source[0]), cfg, cfg.image_bounds(_VISION))
  expected = np.round(np.linspace(0, NUM_FRAMES - 1, nframes)).astype(int)
  assert [media.read_counter(frame) for frame in clip.frames] == expected.tolist()
  np.testing.assert_allclose(clip.timestamps, expected / FPS, atol=1e-6)
  height, width = clip.frames.shape[1:3]
  assert clip.frames.shape[0] == nframes and height * width == frame_pixels and width == 2 * height


@pytest.mark.parametrize("index, reason, named", [
    (1, errors.BAD_MEDIA, "missing.mp4"),
    (2, errors.BAD_MEDIA, "corrupt.mp4"),
    (3, errors.MISSING_FIELD, "field 'answer'"),
])
def test_bad_records_raise_naming_record_and_field(records, index, reason, named):
  path, root = records
  _, spec = _build(path, video_dir=root)
  with pytest.raises(errors.BadExampleError) as info:
    spec.to_example(spec.source[index])
  assert info.value.reason == reason
  assert info.value.where == f"{path}:line {index + 1}" and named in str(info.value)


def test_bad_records_are_skipped_counted_and_named_by_the_pipeline(records, tokenizer, caplog):
  path, root = records
  config = data_pipelines.default_config(
      name="longvila_r1", path=path, video_dir=root, nframes=4, frame_pixels=28 * 56,
      batch_size=1, num_epochs=1, shuffle=False, read_threads=1, prefetch_batches=0,
      max_prompt_length=4096)
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    iterator = data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0,
                                                   shard_count=1)
    batches = list(iterator)
    iterator.close()
  assert len(batches) == 2  # records 1 and 5
  assert batches[-1]["data_stats"] == {
      "examples": 2, "skipped_missing_field": 1, "skipped_bad_record": 0,
      "skipped_bad_media": 2, "skipped_too_long": 0}
  assert "missing.mp4" in caplog.text and "corrupt.mp4" in caplog.text
  assert f"{path}:line 4" in caplog.text and "'answer'" in caplog.text
  # 4 frames of 28 x 56 → 2 temporal x 2 x 4 patches.
  np.testing.assert_array_equal(batches[0]["video_grid_thw"], [[2, 2, 4]])
  assert [b["ground_truth"][0]["answer"] for b in batches] == ["B", "D"]


def test_sft_mode_learns_the_cot_then_the_answer(records):
  path, root = records
  _, spec = _build(path, video_dir=root, mode="sft")
  example = spec.to_example(spec.source[0])
  assert example.response == ("<think>The second goal comes at the end; then the player waves.</think>"
                              "<answer>B</answer>")
  assert example.messages == _build(path, video_dir=root)[1].to_example(spec.source[0]).messages
  assert reward.longvila_reward(example.response, example.ground_truth).total == 1.0
  with pytest.raises(errors.BadExampleError, match="field 'reasoning'") as info:
    spec.to_example(spec.source[4])
  assert info.value.reason == errors.MISSING_FIELD and info.value.where == f"{path}:line 5"


def test_options_are_validated(records):
  path, root = records
  with pytest.raises(ValueError, match="config.data.mode"):
    _build(path, mode="dpo")
  with pytest.raises(ValueError, match="config.data.nframes"):
    _build(path, nframes=0)
  with pytest.raises(ValueError, match="config.data.frame_pixels"):
    _build(path, frame_pixels=100)
  with pytest.raises(ValueError, match="config.data.path"):
    _build("")


def test_synthetic_flashes_are_read_back_and_need_both_ends(tmp_path):
  task = synthetic.FlashTask(num_slots=8, slot_s=2, fps=2, frame_size=56)
  path = synthetic.write_split(str(tmp_path), "train", 3, task=task, seed=1, test_size=5)
  assert os.path.getsize(path) and synthetic.write_split(str(tmp_path), "train", 3, task=task, seed=1,
                                                         test_size=5) == path
  held_out = set(synthetic.split_items("test", 5, task=task))
  items = synthetic.split_items("train", 3, task=task, seed=1, test_size=5)
  assert not held_out & set(items)
  cfg, spec = _build(path, nframes=2 * task.num_slots, frame_pixels=56 * 56)
  colours = {name: np.array(rgb) for name, rgb in synthetic.COLORS.items()}
  for index, item in enumerate(items):
    example = spec.to_example(spec.source[index])
    _, (clip,) = load_media(example, cfg, cfg.image_bounds(_VISION))
    assert clip.frames.shape == (2 * task.num_slots, 56, 56, 3)
    seen = [name for frame in clip.frames for name, rgb in colours.items()
            if np.abs(frame[28, 28].astype(int) - rgb).max() < 8]
    first, last = item.colors
    assert seen[0] == first and seen[-1] == last and set(seen) == {first, last}
    assert item.first_slot < task.num_slots // 4 <= 3 * task.num_slots // 4 <= item.last_slot
    letter = "ABCD"[item.options.index((first, last))]
    assert example.ground_truth["answer"] == letter and f"\n{letter}. {first}, then {last}" in example.messages[0][
        "content"][1]["text"]
    # One flash alone leaves two options: the answer needs both ends of the video.
    assert sum(pair[0] == first for pair in item.options) == 2 == sum(pair[1] == last for pair in item.options)
    assert len(set(item.options)) == 4


def test_synthetic_text_corpus_holds_prompts_and_targets():
  texts = synthetic.text_corpus(num_items=4)
  assert len(texts) == 8 and all(t.startswith(synthetic.PROBLEM) for t in texts[::2])
  assert all(t.startswith("<think>Near the start") and t.endswith("</answer>") for t in texts[1::2])
