"""LOVE-R1 data: the released-format reader, CoT SFT examples, budgets, the synthetic task.

Fixtures (tests/data_pipelines/fixtures/love_r1/) are in the released layouts: records.json (RL
records) and cot.json (CoT SFT records), with two 12-second 56 x 56 videos made by
`love_r1_synthetic.encode_video` (LongVideoTask(frame_size=56, slot_s=4, min_slots=3,
max_slots=3)): a.mp4 shows the square from 4 s to 8 s with answer B (green), b.webm from 8 s to
12 s with answer D (yellow); corrupt.mp4 is not a video.
"""
import collections
import itertools
import json
import logging
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors, registry, video
from data_pipelines.tasks import love_r1, love_r1_dataset, love_r1_synthetic as synthetic
from data_pipelines.transforms import load_media
from r1jax import processing
from r1jax.rewards import love_r1 as reward

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "love_r1")
RECORDS, COT = os.path.join(FIXTURES, "records.json"), os.path.join(FIXTURES, "cot.json")
QUESTION = love_r1.question_text(synthetic.PROBLEM, synthetic.OPTIONS, "multiple choice")
# A small task for fast tests: 3-4 slots of 4 s, full-size (112 px) frames.
SMALL = synthetic.LongVideoTask(slot_s=4, min_slots=3, max_slots=4)
TINY_BUDGETS = dict(overview_max_frames=8, overview_max_pixels=28 * 28, zoom_max_frames=4,
                    zoom_max_pixels=112 * 112)
_VISION = processing.VisionProcessorConfig()


def _build(path=RECORDS, **options):
  config = data_pipelines.default_config(name="love_r1", path=path, **options)
  return registry.build(config)


def _example(index, path=RECORDS, **options):
  cfg, spec = _build(path, **options)
  return cfg, spec.to_example(spec.source[index])


def _red(frames):
  return (frames[..., 0] > 150) & (frames[..., 1] < 90) & (frames[..., 2] < 90)


def test_question_text_is_the_released_one():
  assert QUESTION == (
      "A small checkered pattern appears while the white square is on screen. What colour is the "
      "top-left square of the pattern?\nOptions:\nA. red\nB. green\nC. blue\nD. yellow\n\n"
      "Provide only the single option letter (e.g., A, B, C, D, etc.) as the answer.")
  assert love_r1.ZOOM_INSTRUCTION.startswith("\nBased on the video and the user question")
  assert love_r1.ZOOM_INSTRUCTION.endswith("within \\boxed{[start_time, end_time]}.")
  assert "red numbers on each frame" in love_r1.SYSTEM_MESSAGE
  assert love_r1.prefixes() == (reward.ZOOM_PREFIX, reward.ANSWER_PREFIX)


def test_reads_the_released_fixture():
  cfg, example = _example(0)
  path = os.path.join(FIXTURES, "videos", "a.mp4")
  assert example.messages == [
      {"role": "system", "content": love_r1.SYSTEM_MESSAGE},
      {"role": "user", "content": [
          {"type": "text", "text": "Full video [0, 12]:"}, {"type": "video"},
          {"type": "text", "text": QUESTION + love_r1.ZOOM_INSTRUCTION}]}]
  assert example.ground_truth == {"answer": "B", "solution": "<answer>B</answer>", "tgt": None,
                                  "duration": 12.0, "problem_type": "multiple choice"}
  assert example.context["video"] == path and os.path.isabs(path)
  assert example.context["duration"] == 12.0  # probed: the record has no duration
  assert example.context["zoomin_intervals"] == example.context["earlier_zooms"] == []
  assert example.context["forced_prefix"] == "" and example.context["step"] == 1
  assert example.where == f"{RECORDS}:record 1" and example.response is None
  # The reward reads this ground truth: a right answer at step 1 scores 2.
  result = reward.love_r1(reward.ANSWER_PREFIX + "\\boxed{B}", example.ground_truth)
  assert result.total == 2.0

  # Overview: min(2 * 12, 768) frames of <= 2 * 32 * 28 * 28 pixels (under 60 s; the 56 x 56
  # frames stay), each stamped with its second in red at the bottom right.
  _, (overview,) = load_media(example, cfg, cfg.image_bounds(_VISION))
  assert overview.frames.shape == (24, 56, 56, 3)
  np.testing.assert_allclose(overview.timestamps, np.round(np.linspace(0, 11, 24)))
  red = _red(overview.frames)  # (the pattern, top left, may hold red squares too)
  assert red[:, 42:, 28:].any(axis=(1, 2)).all()
  assert not red[:, :28, 28:].any() and not red[:, 28:, :28].any()
  assert not np.array_equal(red[0], red[-1])  # "0" and "11"


def test_earlier_zooms_and_grounding_records():
  cfg, example = _example(1)  # webm, zoomin_intervals [[4, 6], [0, 2]]: shown sorted at step 1
  content = example.messages[1]["content"]
  assert [item.get("text") for item in content[:-1]] == [
      "Full video [0, 12]:", None, "Subset zoom-in video clip [0, 2]:", None,
      "Subset zoom-in video clip [4, 6]:", None]
  assert example.context["earlier_zooms"] == [[0.0, 2.0], [4.0, 6.0]]
  assert [(ref.start, ref.end) for ref in example.videos] == [(None, None), (0, 2), (4, 6)]
  _, clips = load_media(example, cfg, cfg.image_bounds(_VISION))
  assert [len(c.frames) for c in clips] == [24, 4, 4]  # min(2 * 2 s, 16) zoom frames
  assert clips[1].timestamps.max() < 2 <= clips[2].timestamps.min()

  _, grounding = _example(2)  # tgt: no earlier zoom at step 1, the zoom prefix is forced
  assert grounding.ground_truth["tgt"] == [[4.0, 8.0]] and len(grounding.videos) == 1
  assert grounding.context["zoomin_intervals"] == [[0.0, 3.0]]
  assert grounding.context["earlier_zooms"] == []
  assert grounding.context["forced_prefix"] == reward.ZOOM_PREFIX
  assert grounding.messages[1]["content"][-1]["text"].endswith(
      love_r1.TYPE_TEMPLATE["tal"] + love_r1.ZOOM_INSTRUCTION)
  assert reward.love_r1("Near the start. \\boxed{[3, 6]}", grounding.ground_truth).total == 2.0


@pytest.mark.parametrize("index, reason, named", [
    (3, errors.MISSING_FIELD, "'solution'"),
    (4, errors.BAD_MEDIA, "missing.mp4"),
    (5, errors.BAD_MEDIA, "corrupt.mp4"),
    (6, errors.BAD_RECORD, "'solution': answer 'E'"),
])
def test_bad_records_raise_naming_record_and_field(index, reason, named):
  with pytest.raises(errors.BadExampleError) as info:
    _example(index)
  assert info.value.reason == reason
  assert info.value.where == f"{RECORDS}:record {index + 1}" and named in str(info.value)


def test_bad_records_are_skipped_counted_and_named_by_the_pipeline(tokenizer, caplog):
  config = data_pipelines.default_config(
      name="love_r1", path=RECORDS, batch_size=1, num_epochs=2, shuffle=False, read_threads=1,
      prefetch_batches=0, max_prompt_length=4096, **TINY_BUDGETS)
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    iterator = data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0,
                                                   shard_count=1)
    batches = list(iterator)
    iterator.close()
  assert len(batches) == 6  # 3 good records x 2 epochs; the last batch follows epoch 1's skips
  assert batches[-1]["data_stats"] == {
      "examples": 6, "skipped_missing_field": 1, "skipped_bad_record": 1,
      "skipped_bad_media": 2, "skipped_too_long": 0}
  assert "missing.mp4" in caplog.text and "corrupt.mp4" in caplog.text
  assert f"{RECORDS}:record 4" in caplog.text
  # The grounding record's prompt ends with the forced zoom prefix; the others with the generation prompt.
  forced = np.asarray(tokenizer.encode(reward.ZOOM_PREFIX, add_special_tokens=False))
  ends = [np.array_equal(np.asarray(b["input_ids"][0])[-len(forced):], forced) for b in batches[:3]]
  assert ends == [bool(b["reward_context"][0]["forced_prefix"]) for b in batches[:3]] and sum(ends) == 1
  first = batches[0]
  # Overview: min(2 * 12, 8) = 8 frames of 28 x 28 → 4 temporal x 2 x 2 patches.
  np.testing.assert_array_equal(first["video_grid_thw"], [[4, 2, 2]])
  assert first["reward_context"][0]["video"].endswith("a.mp4")
  assert first["reward_context"][0]["budgets"]["overview_max_frames"] == 8


def test_options_are_validated():
  with pytest.raises(ValueError, match="config.data.mode"):
    _build(mode="dpo")
  with pytest.raises(ValueError, match="zoom_max_frames"):
    _build(zoom_max_frames=-1)
  with pytest.raises(ValueError, match="config.data.path"):
    _build(path="")


def test_sft_examples_from_cot_records():
  cfg, spec = _build(COT, mode="sft")
  assert len(spec.source) == 6  # records of 2, 1, 0 (kept, to be skipped) and 2 turns
  step1, step2, guess = (spec.to_example(spec.source[i]) for i in range(3))
  a = os.path.join(FIXTURES, "videos", "a.mp4")
  # Step 1: the RL step-1 prompt of the same question → the zoom text.
  assert step1.messages == _example(0)[1].messages
  assert step1.response.startswith(reward.ZOOM_PREFIX) and step1.response.endswith("[4, 8]}")
  assert step1.where == f"{COT}:record 1 (step 1)" and len(step1.videos) == 1
  # Step 2: step 1, the zoom text as the assistant turn, then the clip → the answer text.
  assert step2.messages[:2] == step1.messages
  assert step2.messages[2:] == [
      {"role": "assistant", "content": step1.response},
      {"role": "user", "content": [{"type": "text", "text": "Subset zoom-in video clip [4, 8]:"},
                                   {"type": "video"}]}]
  assert step2.response == (reward.ANSWER_PREFIX
                            + "The top-left square of the pattern is green. \\boxed{B}")
  assert [(v.source, v.start, v.end) for v in step2.videos] == [(a, None, None), (a, 4, 8)]
  assert step2.context["step"] == 2 and step2.context["earlier_zooms"] == [[4.0, 8.0]]
  # The teacher's two steps earn the full reward as one rollout.
  truth = {"solution": "B", "duration": 12.0}
  assert reward.love_r1(step1.response, truth, step2_completion=step2.response).total == 2.0
  # One assistant turn: one example (a direct answer here); content lists are read as text.
  assert guess.response.endswith("\\boxed{A}") and len(guess.videos) == 1
  assert guess.context["video"].endswith("b.webm")
  with pytest.raises(errors.BadExampleError, match="no assistant turn") as info:
    spec.to_example(spec.source[3])
  assert info.value.reason == errors.MISSING_FIELD
  for entry in (4, 5):  # both steps of a record whose zoom text is not among its intervals
    with pytest.raises(errors.BadExampleError, match="'zoomin_intervals'.*\\[0, 4\\]") as info:
      spec.to_example(spec.source[entry])
    assert info.value.reason == errors.BAD_RECORD and "record 4" in info.value.where
  # In mode 'rl' a CoT record without a solution cannot be scored: skipped, named.
  with pytest.raises(errors.BadExampleError, match="'solution'"):
    _example(0, COT)


def test_sft_batches_learn_only_the_step_text(tokenizer):
  config = data_pipelines.default_config(
      name="love_r1", path=COT, mode="sft", batch_size=3, num_epochs=1, shuffle=False,
      read_threads=1, prefetch_batches=0, max_seq_length=8192, **TINY_BUDGETS)
  iterator = data_pipelines.make_sft_iterator(config, tokenizer, _VISION, shard_index=0,
                                              shard_count=1)
  batch = next(iterator)
  iterator.close()
  _, spec = _build(COT, mode="sft")
  for row in range(3):
    target = batch["input_ids"][row][batch["loss_mask"][row] == 1]
    expected = spec.to_example(spec.source[row]).response
    assert tokenizer.decode(target) == expected + "<|im_end|>"
  # Row 1 (step 2) holds the overview (8 frames of 28 x 28) and the clip (4 of 56 x 56).
  np.testing.assert_array_equal(batch["video_grid_thw"], [[4, 2, 2], [4, 2, 2], [2, 4, 4],
                                                          [4, 2, 2]])


@pytest.mark.parametrize("t1, t2, budgets, frames, side", [
    (4, 8, {}, 8, 56),  # the paper's: min(2 * 4, 16) frames, <= 256 * 28 * 28 pixels
    (0, 12, {}, 16, 56),
    (4, 8, dict(zoom_max_frames=3, zoom_max_pixels=28 * 28), 3, 28),
    (10, 13, dict(zoom_max_frames=4), 4, 56),  # a valid zoom may end at duration + 1
    (12, 13, {}, 2, 56),  # ... and start at the very end: the last frames, never empty
])
def test_zoom_clip_follows_the_budget_rule(t1, t2, budgets, frames, side):
  path = os.path.join(FIXTURES, "videos", "a.mp4")
  clip = love_r1.zoom_clip(path, t1, t2, budgets)
  assert clip.frames.shape == (frames, side, side, 3)
  assert frames == min(int(2 * (t2 - t1)), budgets.get("zoom_max_frames", 16))
  assert (clip.timestamps >= min(t1, 11)).all() and (clip.timestamps < min(t2, 12)).all()
  assert _red(clip.frames).any(axis=(1, 2)).all()  # stamped like the overview
  # The same rule as the reward's budget and video.py's sampling (one definition).
  rule = reward.zoom_budget(t1, t2, max_frames=budgets.get("zoom_max_frames"),
                            max_pixels=budgets.get("zoom_max_pixels"))
  assert rule.num_frames == frames == love_r1.FrameBudgets.from_options(budgets).zoom(
      t1, t2).num_frames


def test_video_clip_hook_reads_the_example_context():
  _, example = _example(0, **TINY_BUDGETS)
  frames, fps, max_pixels = love_r1.video_clip(example.context, 4, 8)
  assert frames.shape == (4, 56, 56, 3) and max_pixels == 112 * 112
  assert fps == pytest.approx(1.0)  # 4 frames over seconds 4..7
  np.testing.assert_array_equal(frames, love_r1.zoom_clip(example.context["video"], 4, 8,
                                                          TINY_BUDGETS).frames)


def test_synthetic_items_are_deterministic_and_held_out_items_never_trained():
  items = synthetic.split_items("train", 50, seed=3)
  assert items == synthetic.split_items("train", 50, seed=3)
  assert items != synthetic.split_items("train", 50, seed=4)
  assert synthetic.split_items("test", 20, seed=1) == synthetic.split_items("test", 20, seed=9)
  durations = [i.duration(synthetic.LongVideoTask()) for i in items]
  assert min(durations) >= 120 and max(durations) <= 300
  assert collections.Counter(i.answer for i in items).keys() == set("ABCD")
  # A task this small repeats items often: the first test_size test items must still never
  # appear in training.
  tiny = synthetic.LongVideoTask(slot_s=4, min_slots=2, max_slots=2)  # 2 slots x 24 = 48 items
  held_out = set(synthetic.split_items("test", 10, task=tiny))
  train = synthetic.split_items("train", 600, task=tiny, test_size=10)
  assert len(held_out) > 5 and not held_out & set(train)
  assert len(set(train)) == 48 - len(held_out)
  with pytest.raises(ValueError, match="holds out all"):
    synthetic.split_items("train", 1, task=tiny, test_size=400)


def test_detail_is_legible_only_at_zoom_resolution(tmp_path):
  """The 24 arrangements: overview frames (28 x 28) ~equal, zoom frames (112 x 112) distinct; the
  clock in the overview tells the slot."""
  budgets = love_r1.FrameBudgets(overview_max_frames=24, overview_max_pixels=28 * 28,
                                 zoom_max_frames=4, zoom_max_pixels=112 * 112)
  assert SMALL.overview_side == 28
  overviews, zooms = [], []
  for k, arrangement in enumerate(itertools.permutations(range(4))):
    item = synthetic.Item(3, 1, arrangement)  # the event: [4, 8]
    path = synthetic.encode_video(str(tmp_path / f"{k}.mp4"), item, SMALL)
    overview = video.sample_video(path, budgets.overview(12.0))
    during = (overview.timestamps >= 4) & (overview.timestamps < 8)
    overviews.append(overview.frames[during].astype(int))
    zoom = love_r1.zoom_clip(path, 4, 8, budgets)
    zooms.append(zoom.frames.astype(int))
    # Reading the zoom: the pattern's first whole top-left cell has the answer's colour.
    top, _, left, _ = SMALL.pattern_box
    r, c = (v + SMALL.pattern_border + 3 * SMALL.cell // 2 for v in (top, left))
    cell = zoom.frames[:, r:r + SMALL.cell, c:c + SMALL.cell].reshape(-1, 3).mean(0)
    answer = list(synthetic.COLORS.values())[arrangement[0]]
    np.testing.assert_allclose(cell, answer, atol=3)
  overviews, zooms = np.stack(overviews), np.stack(zooms)
  assert overviews.shape[1] >= 4  # the white square is seen in several overview frames
  top, bottom, left, right = (v // 4 for v in SMALL.marker_box)
  assert (overviews[:, :, top + 1:bottom - 1, left + 1:right - 1] > 200).all()
  # Across answers the whole overview frame changes by a few levels at most ...
  assert (overviews.max(0) - overviews.min(0)).max() <= 4
  # ... while at zoom size the pattern's pixels change by ~200 on average.
  top, bottom, left, right = (v + d * SMALL.pattern_border for v, d in zip(SMALL.pattern_box, (1, -1, 1, -1)))
  spread = zooms.max(0) - zooms.min(0)
  assert spread[:, top:bottom, left:right].mean() > 150
  # The clock: in the overview its lit length grows by a segment per slot.
  overview = video.sample_video(path, budgets.overview(12.0))
  top, bottom, _, _ = (v // 4 for v in SMALL.clock_box)
  lit = (overview.frames[:, (top + bottom) // 2].astype(int).sum(-1) > 3 * 100).sum(-1)
  for slot in range(3):
    in_slot = lit[(overview.timestamps >= 4 * slot) & (overview.timestamps < 4 * slot + 4)]
    assert np.abs(in_slot - SMALL.clock_fill(slot) / 4).max() <= 1, (slot, in_slot)


def test_teacher_steps_and_imperfect_fraction():
  item = synthetic.Item(num_slots=8, event_slot=5, arrangement=(2, 0, 1, 3))  # [100, 120], C
  task = synthetic.LongVideoTask()
  truth = {"solution": "<answer>C</answer>", "duration": 160.0}
  rng = np.random.default_rng(0)
  scores = {}
  for teacher in synthetic.TEACHERS:
    steps, zooms = synthetic.teacher_steps(item, task, teacher, rng)
    step2 = steps[1] if len(steps) == 2 else None
    result = reward.love_r1(steps[0], truth, step2_completion=step2)
    scores[teacher] = (result.components["format"], zooms)
  assert scores["perfect"] == (1.0, [[100, 120]])
  assert scores["loose"] == (1.0, [[80, 140]])  # valid: 60 s <= min(160 / 2, 60)
  assert scores["wrong"][0] == 1.0 and scores["wrong"][1][0] != [100, 120]
  assert scores["guess"] == (1.0, [])
  draws = collections.Counter(synthetic._teacher(rng, 0.3) for _ in range(3000))
  assert draws["perfect"] / 3000 == pytest.approx(0.7, abs=0.03)
  assert [draws[t] / 3000 for t in synthetic.TEACHERS[1:]] == pytest.approx([0.1] * 3, abs=0.03)


def test_write_split_round_trips_through_the_reader(tmp_path):
  out = synthetic.write_split(str(tmp_path), "test", 6, task=SMALL, imperfect_fraction=0.5)
  assert out["seconds"] > 0
  with open(out["rl"], encoding="utf-8") as f:
    rows = json.load(f)
  assert set(rows[0]) == {"path", "problem", "options", "problem_type", "data_type",
                          "solution", "zoomin_intervals", "clue_intervals", "id"}
  assert rows[0]["path"] == os.path.join("videos", "test_00000.mp4")  # relative to the file
  _, rl = _build(out["rl"], **TINY_BUDGETS)
  _, sft = _build(out["cot"], mode="sft", **TINY_BUDGETS)
  steps = collections.Counter(entry.raw.where for entry in (sft.source[i]
                                                            for i in range(len(sft.source))))
  for i, item in enumerate(out["items"]):
    example = rl.to_example(rl.source[i])
    assert example.ground_truth["answer"] == item.answer
    assert example.ground_truth["clue_intervals"] == [item.interval(SMALL)]
    assert example.ground_truth["duration"] == item.duration(SMALL)  # probed from the video
    assert example.id == f"love_r1_synthetic/test/{i}"
  cot = [sft.to_example(sft.source[i]) for i in range(len(sft.source))]
  assert sum(steps.values()) == len(cot) and set(steps.values()) <= {1, 2}
  for example in cot:  # every SFT step-1 prompt is the RL prompt of its item
    if example.context["step"] == 1:
      index = int(example.id.rsplit("/", 1)[1])
      assert example.messages == rl.to_example(rl.source[index]).messages
  # Same arguments: reused, nothing rewritten; other arguments: regenerated.
  mtime = os.path.getmtime(out["rl"])
  again = synthetic.write_split(str(tmp_path), "test", 6, task=SMALL, imperfect_fraction=0.5)
  assert again["seconds"] == 0.0 and os.path.getmtime(out["rl"]) == mtime
  assert synthetic.write_split(str(tmp_path), "test", 6, task=SMALL)["seconds"] > 0
  # The webm container reads back the same way.
  webm = synthetic.LongVideoTask(slot_s=4, min_slots=3, max_slots=3, container=".webm")
  out = synthetic.write_split(str(tmp_path / "webm"), "train", 2, task=webm, test_size=5)
  _, rl = _build(out["rl"])
  assert rl.to_example(rl.source[1]).context["video"].endswith("train_00001.webm")


def test_text_corpus_covers_prompts_and_steps():
  corpus = synthetic.text_corpus(num_items=16)
  assert love_r1.SYSTEM_MESSAGE in corpus and any(t.startswith(reward.ZOOM_PREFIX) for t in corpus)
  assert any(t.startswith("Subset zoom-in video clip [") for t in corpus)
  assert any(t.startswith(reward.ANSWER_PREFIX) for t in corpus)


def test_cot_steps_source_is_picklable():
  import pickle

  _, spec = _build(COT, mode="sft")
  source = pickle.loads(pickle.dumps(spec.source))
  assert isinstance(source, love_r1_dataset.CotSteps) and len(source) == len(spec.source)
  assert source[1].step == 2
