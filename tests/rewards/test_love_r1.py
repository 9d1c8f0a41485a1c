"""Tests for the LOVE-R1 reward and its frame budgets (r1jax.rewards.love_r1)."""
import math

import pytest

from r1jax.rewards import base, love_r1

ZOOM, ANSWER = love_r1.ZOOM_PREFIX, love_r1.ANSWER_PREFIX
QA = {"solution": "<answer>B</answer>", "tgt": None, "duration": 300.0}
GROUNDING = {"solution": "", "tgt": [[100, 110], [200, 230]], "duration": 300.0}


def zoom(t1, t2, reasoning="The key moment is later."):
  return f"{ZOOM}{reasoning} \\boxed{{[{t1}, {t2}]}}"


def answer(x, reasoning="The man picks the red cup."):
  return f"{ANSWER}{reasoning} \\boxed{{{x}}}"


def score(completion, ground_truth=QA, **context):
  result = love_r1.love_r1(completion, ground_truth, **context)
  return result.total, result.components


def test_registered_under_module_name():
  assert base.get("love_r1") is love_r1.love_r1


@pytest.mark.parametrize("duration, frames, doubled", [
    (30.0, 60, True), (59.9, 119, True), (60.0, 120, False), (383.9, 767, False), (1000.0, 768, False),
])
def test_overview_budget(duration, frames, doubled):
  budget = love_r1.overview_budget(duration)
  assert budget.num_frames == frames == min(math.floor(2 * duration), 768)
  assert budget.max_pixels == 32 * 28 * 28 * (2 if doubled else 1)


@pytest.mark.parametrize("t1, t2, frames", [(10, 15, 10), (10, 18, 16), (0, 60, 16), (3, 4, 2)])
def test_zoom_budget(t1, t2, frames):
  budget = love_r1.zoom_budget(t1, t2)
  assert (budget.num_frames, budget.max_pixels) == (frames, 256 * 28 * 28)


def test_budget_caps_replace_the_papers():
  # Smaller models cap the frames and pixels; the 2-frames-per-second rate stays.
  assert love_r1.overview_budget(300.0, max_frames=64, max_pixels=28 * 28) == love_r1.FrameBudget(64, 784)
  assert love_r1.overview_budget(10.0, max_frames=64).num_frames == 20
  assert love_r1.overview_budget(30.0, max_pixels=784).max_pixels == 784  # no doubling either
  assert love_r1.zoom_budget(0, 20, max_frames=4, max_pixels=112 * 112) == love_r1.FrameBudget(4, 12544)
  assert love_r1.zoom_budget(0, 1, max_frames=4).num_frames == 2


def test_budgets_reject_bad_times():
  with pytest.raises(ValueError, match="duration"):
    love_r1.overview_budget(0.2)
  with pytest.raises(ValueError, match="t2 - t1"):
    love_r1.zoom_budget(10, 10)
  assert love_r1.zoom_clip_caption(12.7, 40) == "Subset zoom-in video clip [12, 40]:"


def test_step1_answer_earns_its_own_correctness():
  assert score(answer("B")) == (2.0, {"format": 1.0, "accuracy": 1.0, "parsed": 1.0, "zoom": 0.0,
                                      "zoom_valid": 0.0, "mask": 0.0})
  assert score(answer("(b)"))[0] == 2.0
  total, comps = score(answer("C"))
  assert (total, comps["format"], comps["accuracy"]) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("completion", [
    "",
    "\\boxed{B}",                                   # no prefix
    "I get the answer. \\boxed{B}",                 # prefix without the blank line
    f"{ANSWER}the answer is B",                     # no \boxed
    f"{ANSWER}\\boxed{{B",                          # unclosed
    f"Sure. {ANSWER}\\boxed{{B}}",                  # prefix not at the start
])
def test_parse_failures_score_zero(completion):
  total, comps = score(completion)
  assert total == 0.0 and comps["format"] == 0.0 and comps["accuracy"] == 0.0


def test_step1_zoom_earns_step2_accuracy():
  assert score(zoom(10, 40), step2_completion=answer("B")) == (
      2.0, {"format": 1.0, "accuracy": 1.0, "parsed": 1.0, "zoom": 1.0, "zoom_valid": 1.0, "mask": 0.0})
  assert score(zoom(10, 40), step2_completion=answer("D"))[0] == 1.0
  assert score(zoom(10, 40), step2_completion="no idea")[0] == 1.0
  assert score(zoom(10, 40))[0] == 1.0  # step 2 not given


def test_second_zoom_masks_both_steps():
  total, comps = score(zoom(10, 40), step2_completion=zoom(50, 60))
  assert (total, comps["mask"], comps["accuracy"]) == (0.0, 1.0, 0.0)
  # Step 2's own score: masked whatever its zoom says.
  total, comps = score(f"{ZOOM}garbage", step=2, earlier_zooms=[[10, 40]])
  assert (total, comps["mask"]) == (0.0, 1.0)
  total, comps = score(answer("B"), step=2, earlier_zooms=[[10, 40]])
  assert (total, comps["mask"]) == (2.0, 0.0)


@pytest.mark.parametrize("t1, t2, duration, valid", [
    (10, 40, 300, True),
    (-1, 10, 300, False),     # t1 < 0
    (0, 1, 300, True),
    (290, 301, 300, True),    # t2 = duration + 1 allowed
    (290, 302, 300, False),   # t2 > duration + 1
    (20, 10, 300, False),     # reversed
    (10, 10, 300, False),     # empty
    (0, 60, 300, True),       # 60 s is the cap
    (0, 61, 300, False),
    (0, 50, 100, True),       # cap min(duration / 2, 60) = 50
    (0, 51, 100, False),
])
def test_zoom_constraints(t1, t2, duration, valid):
  total, comps = score(zoom(t1, t2), {**QA, "duration": duration}, step2_completion=answer("B"))
  assert comps["zoom_valid"] == comps["format"] == float(valid)
  assert total == (2.0 if valid else 0.0)


@pytest.mark.parametrize("content", ["[1.5, 20]", "[10, 20, 30]", "[10]", "10, 20", "[1e3, 2e3]",
                                     "[" + "9" * 5000 + ", 1]"])
def test_malformed_zoom(content):
  total, comps = score(f"{ZOOM}\\boxed{{{content}}}", step2_completion=answer("B"))
  assert total == 0.0 and comps["parsed"] == 1.0 and comps["zoom_valid"] == 0.0


@pytest.mark.parametrize("new, valid", [([10, 17], True), ([10, 18], False), ([30, 40], True)])
def test_zoom_iou_with_earlier_zooms(new, valid):
  # IoU([10, 17], [10, 20]) = 0.7 exactly (allowed); [10, 18] gives 0.8.
  total, comps = score(zoom(*new), earlier_zooms=[[10, 20], [100, 130]], step2_completion=answer("B"))
  assert comps["zoom_valid"] == float(valid)


def test_grounding_zoom_earns_overlap_with_any_target():
  total, comps = score(zoom(105, 120), GROUNDING)
  assert (total, comps["accuracy"]) == (2.0, 1.0)
  total, comps = score(zoom(220, 250), GROUNDING)  # overlaps the second target
  assert total == 2.0
  total, comps = score(zoom(110, 140), GROUNDING)  # touches [100, 110]: IoU 0
  assert (total, comps["format"], comps["accuracy"]) == (1.0, 1.0, 0.0)


def test_grounding_prefilled_prefix_and_answers():
  assert score("Look near the end. \\boxed{[205, 215]}", GROUNDING)[0] == 2.0
  assert score(answer("B"), GROUNDING)[0] == 0.0     # grounding samples must zoom
  total, comps = score(zoom(205, 215), GROUNDING, step=2, earlier_zooms=[[100, 110]])
  assert (total, comps["mask"]) == (2.0, 0.0)     # a step-2 grounding zoom is not masked
  assert score(zoom(100, 110), GROUNDING, step=2, earlier_zooms=[[100, 110]])[0] == 0.0


def test_bad_ground_truth_and_context_are_named():
  with pytest.raises(KeyError, match="duration"):
    love_r1.love_r1(answer("B"), {"solution": "B"})
  with pytest.raises(KeyError, match="solution"):
    love_r1.love_r1(answer("B"), {"duration": 30.0})
  with pytest.raises(ValueError, match="step"):
    love_r1.love_r1(answer("B"), QA, step=3)
  with pytest.raises(ValueError, match="earlier_zooms"):
    love_r1.love_r1(answer("B"), QA, earlier_zooms=[[1, 2, 3]])


@pytest.mark.parametrize("truth, error, field", [
    ({"solution": "B", "duration": "long"}, ValueError, "duration"),
    ({"solution": "B", "duration": math.nan}, ValueError, "duration"),
    ({"solution": "B", "duration": -3}, ValueError, "duration"),
    ({"solution": "B", "duration": 30.0, "tgt": 5}, ValueError, "tgt"),
    ({"solution": "B", "duration": 30.0, "tgt": [[1, 2, 3]]}, ValueError, "tgt"),
    ({"solution": "B", "duration": 30.0, "tgt": [5, 12]}, ValueError, "tgt"),
    ({"solution": "B", "duration": 30.0, "tgt": [["a", "b"]]}, ValueError, "tgt"),
    ({"solution": None, "duration": 30.0}, ValueError, "solution"),
    ({"solution": "<answer></answer>", "duration": 30.0}, ValueError, "solution"),
])
def test_malformed_ground_truth_names_the_field(truth, error, field):
  with pytest.raises(error, match=f"love_r1: ground_truth.*'{field}'"):
    love_r1.love_r1(answer("B"), truth)


def test_zoom_box_holds_exactly_the_interval_as_in_the_public_trainer():
  assert score(f"{ZOOM}Later. \\boxed{{[10,  40 ]}}", step2_completion=answer("B"))[0] == 2.0
  for content in (" [10, 40]", "[10, 40] ", " [10, 40] "):
    total, comps = score(f"{ZOOM}Later. \\boxed{{{content}}}", step2_completion=answer("B"))
    assert (total, comps["format"], comps["zoom_valid"]) == (0.0, 0.0, 0.0)
