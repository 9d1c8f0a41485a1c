"""Tests for the Omni-R1 reward (r1jax.rewards.omni_r1)."""
import json
import math
import re
import threading

import pytest
from hypothesis import given, settings, strategies as st

from r1jax.processing import smart_resize
from r1jax.rewards import base, omni_r1
from r1jax.rewards.parsing import to_resized_pixels

BOX = [10.0, 10.0, 50.0, 50.0]
ABSENT = [-1, -1, -1, -1]
# One object over F = 8 frames (4 s at 2 fps), present in frames 0-3 only.
TRUTH = {"bboxs": [[BOX] * 4 + [ABSENT] * 4]}


def keyframe(start, end, description="the brown dog"):
  return {"start_time": start, "end_time": end, "description": description}


def completion(*objects, think=True):
  body = "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objects)
  return (f"<think>Find the dog.</think>" if think else "") + f"<answer>{body}</answer>"


def exact_detail(boxes_per_frame):
  """A detail system answering, for frame f, the JSON boxes `boxes_per_frame[f]`."""
  def detail(frame, description):
    return json.dumps([{"bbox_2d": box, "label": description} for box in boxes_per_frame[frame]])
  return detail


def score(text, truth=TRUTH, **context):
  result = omni_r1.omni_r1(text, truth, **context)
  return result.total, result.components


def test_registered_under_module_name():
  assert base.get("omni_r1") is omni_r1.omni_r1


@pytest.mark.parametrize("text, seconds", [
    ("00:01.00", 1.0), ("00:05.5", 5.5), ("1:02.25", 62.25), ("1.5", None), ("aa:bb", None), (3.0, None),
    # Where the public re.match(r"(\d+):(\d+)\.(\d+)") matches: at the start, fraction required,
    # any digit count, anything after ignored.
    ("00:03", None), (" 00:01.50", None), ("00:01.50 ", 1.5), ("00:01.50s", 1.5), ("0000000001:00.00", 60.0),
    ("9" * 5000 + ":00.00", math.inf),
])
def test_parse_time(text, seconds):
  assert omni_r1.parse_time(text) == seconds


def test_objects_are_json_as_the_public_code_reads_them():
  python_dict = "{'start_time': '00:01.00', 'end_time': '00:01.50', 'description': 'the dog'}"
  result = omni_r1.omni_r1(f"<think>t</think><answer>{python_dict}</answer>", TRUTH)
  assert result.components["num_objects"] == 1 and result.components["parsed"] == 0
  assert result.components["cum"] == pytest.approx(0.2)  # found, but neither complete nor valid


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{}ab\n:", max_size=40))
def test_json_spans_match_public_regex(text):
  assert omni_r1.json_spans(text) == re.findall(r"({[\s\S]*?})", text)


def test_single_keyframe_without_detail_system():
  # cum = (0.2 + 0.2 + 0.2 + 1) / 1; one unique frame: frame_r = 0.4; format 1.
  total, comps = score(completion(keyframe("00:01.00", "00:01.00")))
  assert comps["cum"] == pytest.approx(1.6) and comps["frame_r"] == pytest.approx(0.4)
  assert comps["overlap"] == 0.0 and comps["avg_iou"] == 0.0 and comps["format"] == 1.0
  assert total == pytest.approx(3.0)


def test_perfect_answer_reaches_documented_max():
  frames = [keyframe(f"00:0{s}.{c}0", f"00:0{s}.{c}0") for s, c in [(0, 0), (0, 5), (1, 0), (1, 5)]]
  total, comps = score(completion(*frames), detail_system=exact_detail({f: [BOX] for f in range(8)}))
  assert comps == pytest.approx({"format": 1.0, "cum": 1.6, "frame_r": 1.6, "overlap": 0.0, "avg_iou": 1.0,
                                 "mismatch": 0.0, "parsed": 1.0, "num_objects": 4.0, "valid_objects": 4.0,
                                 "grounded_frames": 4.0, "detail_failed": 0.0, "detail_unparsed": 0.0,
                                 "keyframe_hit": 1.0})
  assert total == pytest.approx(5.2)
  total, _ = score(completion(*frames), detail_system=exact_detail({f: [BOX] for f in range(8)}),
                   alpha_k=0.5, alpha_a=2.0)
  assert total == pytest.approx(1 + 1.6 + 0.5 * 1.6 + 2.0)


def test_interval_length_penalty():
  # Frames 0..2: overlap = 0.2 * (1 - 3); U = 3: frame_r = 1.2.
  _, comps = score(completion(keyframe("00:00.00", "00:01.00")))
  assert comps["overlap"] == pytest.approx(-0.4) and comps["frame_r"] == pytest.approx(1.2)
  assert comps["cum"] == pytest.approx(1.6)


def test_duplicate_frame_penalty():
  _, comps = score(completion(keyframe("00:01.00", "00:01.00"), keyframe("00:01.20", "00:01.40")))
  assert comps["overlap"] == pytest.approx(-0.5) and comps["frame_r"] == pytest.approx(0.4)


def test_too_many_keyframes():
  # Six distinct frames 0..5: frame_r = 0.4 * (7 - 6); frames 4 and 5 lack the target.
  frames = [keyframe(f"00:0{f // 2}.{5 * (f % 2)}0", f"00:0{f // 2}.{5 * (f % 2)}0") for f in range(6)]
  _, comps = score(completion(*frames))
  assert comps["frame_r"] == pytest.approx(0.4)
  assert comps["cum"] == pytest.approx((6 * 0.6 + 4) / 6)


@pytest.mark.parametrize("objects, cum", [
    ([{"start_time": "00:01.00", "end_time": "00:01.00"}], 0.2),                 # no description
    ([keyframe("00:01.00", "1 second")], 0.2),                                   # bad time
    ([keyframe("00:05.00", "00:05.00")], 0.4),                                   # past F / 2 = 4 s
    ([keyframe("00:02.00", "00:01.00")], 0.4),                                   # start > end
    (["{oops}", keyframe("00:01.00", "00:01.00")], (0.2 + 0.2 + 0.2 + 0.2 + 1) / 2),  # broken JSON
    ([keyframe("00:03.00", "00:03.00")], 0.6),                                   # target absent there
])
def test_cumulative_reward_parts(objects, cum):
  total, comps = score(completion(*objects, think=False))
  assert comps["cum"] == pytest.approx(cum) and comps["format"] == 0.0
  if comps["valid_objects"] == 0:
    assert total == pytest.approx(cum)  # R = cum alone without a valid interval


def test_extra_boxes_cost_mismatch():
  total, comps = score(completion(keyframe("00:01.00", "00:01.00")),
                       detail_system=exact_detail({2: [BOX, [0, 0, 5, 5], [60, 60, 70, 70]]}))
  assert comps["avg_iou"] == 1.0 and comps["mismatch"] == pytest.approx(-0.5 * 2 / 1 / 1)
  assert total == pytest.approx(1 + 1.6 + 0.4 + 1.0 - 1.0)


def test_hungarian_matching_per_frame():
  other = [100.0, 100.0, 200.0, 300.0]
  truth = {"bboxs": [[BOX] * 8, [other] * 8]}
  text = completion(keyframe("00:01.00", "00:01.00"))
  _, comps = score(text, truth, detail_system=exact_detail({2: [other, BOX]}))  # listed in the other order
  assert comps["avg_iou"] == pytest.approx(1.0)
  half = [10.0, 10.0, 50.0, 30.0]
  _, comps = score(text, truth, detail_system=exact_detail({2: [half]}))  # one box for two objects
  assert comps["avg_iou"] == pytest.approx((0.5 + 0.0) / 2)


def test_detail_boxes_are_rescaled_from_the_detail_input():
  frame_hw, min_pixels, max_pixels = (1080, 1920), 56 * 56, 200_000
  assert smart_resize(*frame_hw, 28, min_pixels, max_pixels) != frame_hw
  truth_box = [300.0, 200.0, 900.0, 700.0]
  resized = to_resized_pixels(truth_box, frame_hw, min_pixels, max_pixels).tolist()
  text = completion(keyframe("00:01.00", "00:01.00"))
  truth = {"bboxs": [[truth_box] * 8]}
  context = dict(detail_system=exact_detail({2: [resized]}), detail_min_pixels=min_pixels,
                 detail_max_pixels=max_pixels)
  assert score(text, truth, frame_hw=frame_hw, **context)[1]["avg_iou"] == pytest.approx(1.0)
  assert score(text, truth, **context)[1]["avg_iou"] < 0.5


@pytest.mark.parametrize("behaviour", ["raise", "hang", "not text"])
def test_failing_detail_system_is_reported(behaviour):
  release = threading.Event()

  def detail(frame, description):
    if behaviour == "raise":
      raise RuntimeError("grounding server down")
    if behaviour == "hang":
      release.wait(30)
    return 42

  try:
    total, comps = score(completion(keyframe("00:01.00", "00:01.00")), detail_system=detail, detail_timeout_s=0.2)
  finally:
    release.set()
  assert comps["detail_failed"] == 1.0 and comps["avg_iou"] == 0.0
  assert total == pytest.approx(3.0)


def test_batched_detail_answers_equal_per_frame_calls():
  # Frames 3-4 of an interval: frame 3 holds the dog, frame 4 does not (keyframe hit 0.5).
  text = completion(keyframe("00:01.50", "00:02.00"))
  assert omni_r1.grounding_requests(text, 8) == [(3, "the brown dog"), (4, "the brown dog")]
  detail = exact_detail({3: [BOX], 4: [[0, 0, 5, 5]]})
  answers = {frame: detail(frame, description) for frame, description in omni_r1.grounding_requests(text, 8)}
  batched = score(text, detail_answers=answers, detail_status="ok")
  assert batched == score(text, detail_system=detail)
  assert batched[1]["keyframe_hit"] == 0.5 and batched[1]["avg_iou"] == 1.0


@pytest.mark.parametrize("status", ["error", "timeout", "invalid"])
def test_failed_batched_detail_call_is_a_judge_status(status):
  text = completion(keyframe("00:01.00", "00:01.00"))
  total, comps = score(text, detail_answers={}, detail_status=status, detail_error="no answer within 5 s")
  assert comps["detail_failed"] == 1.0 and comps["avg_iou"] == 0.0 and comps["grounded_frames"] == 1.0
  assert total == pytest.approx(3.0)


def test_unparsable_detail_answer_is_counted():
  text = completion(keyframe("00:01.00", "00:01.50"))
  _, comps = score(text, detail_answers={2: "a dog, top left", 3: json.dumps({"bbox_2d": BOX})})
  assert comps["detail_unparsed"] == 0.5 and comps["detail_failed"] == 0.0
  assert comps["avg_iou"] == pytest.approx(0.5)
  _, comps = score(text, detail_answers={2: json.dumps({"bbox_2d": BOX})})  # frame 3 missing: a failure
  assert comps["detail_failed"] == 1.0


def test_no_answer_scores_zero():
  assert score("")[0] == 0.0
  assert score("<think>no</think><answer>the dog</answer>")[0] == 1.0  # format only


@pytest.mark.parametrize("truth, error, field", [
    ({}, KeyError, "bboxs"), ({"bboxs": [[1, 2, 3, 4]]}, ValueError, "bboxs"), ({"bboxs": []}, ValueError, "bboxs"),
    ({"bboxs": 5}, ValueError, "bboxs"), ({"bboxs": [[[0, 0, "x", 1]]]}, ValueError, "bboxs"),
    ({"boxes": [[[0, 0, 1]]]}, ValueError, "boxes"), ({"bboxs": [[[0, 0, math.inf, 1]]]}, ValueError, "bboxs"),
])
def test_bad_ground_truth_is_named(truth, error, field):
  with pytest.raises(error, match=f"omni_r1: ground_truth.*'{field}'"):
    omni_r1.omni_r1("x", truth)
