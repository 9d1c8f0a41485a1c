"""Tests for the GoT-R1 reward (r1jax.rewards.got_r1)."""
import threading

import pytest

from r1jax.rewards import base, got_r1

# The reasoning-chain format of the public GoT-R1 examples.
CHAIN = ("A <|obj_start|>vibrant still life painting<|obj_end|> <|box_start|>(0,60),(997,983)<|box_end|> showcases a "
         "<|obj_start|>bouquet of red tulips<|obj_end|> <|box_start|>(0,60),(698,780)<|box_end|> in a "
         "<|obj_start|>yellow vase<|obj_end|> <|box_start|>(65,488),(582,982)<|box_end|>, alongside a "
         "<|obj_start|>teal vase<|obj_end|> <|box_start|>(625,361),(992,887)<|box_end|>.")
LAYOUT = [{"name": "Yellow vase", "box": [0, 0, 500, 1000]}, {"name": "teal vase", "box": [500, 0, 1000, 1000]}]


def plan(*objects):
  return " and ".join(f"<|obj_start|>{name}<|obj_end|> <|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
                      for name, (x1, y1, x2, y2) in objects)


def score(text, truth=None, **context):
  result = got_r1.got_r1(text, {"layout": LAYOUT} if truth is None else truth, **context)
  return result.total, result.components


def test_registered_under_module_name():
  assert base.get("got_r1") is got_r1.got_r1


def test_parse_layout_reads_the_public_format():
  objects = got_r1.parse_layout(CHAIN)
  assert [o.name for o in objects] == ["vibrant still life painting", "bouquet of red tulips", "yellow vase",
                                       "teal vase"]
  assert objects[2].box == (65.0, 488.0, 582.0, 982.0)


@pytest.mark.parametrize("text, box", [
    ("<|obj_start|>cat<|obj_end|><|box_start|>( 1 , 2 ),( 3.5 , 4 )<|box_end|>", (1.0, 2.0, 3.5, 4.0)),
    ("<|obj_start|>cat<|obj_end|> and then <|box_start|>(1,2),(3,4)<|box_end|>", None),  # box not next
    ("<|obj_start|>cat<|obj_end|> <|box_start|>(1,2),(3,1001)<|box_end|>", None),          # off the grid
    ("<|obj_start|>cat<|obj_end|> <|box_start|>(1,2),(3)<|box_end|>", None),
    ("<|obj_start|>cat<|obj_end|> <|box_start|>(1,2),(3,4)", None),                         # unclosed
])
def test_parse_layout_boxes(text, box):
  objects = got_r1.parse_layout(text)
  assert [(o.name, o.box) for o in objects] == [("cat", box)]


def test_parse_layout_ignores_unclosed_object():
  assert got_r1.parse_layout("<|obj_start|>cat") == []


def test_layout_mode_perfect_plan():
  total, comps = score(plan(("yellow vase", (0, 0, 500, 1000)), ("Teal vase.", (500, 0, 1000, 1000))))
  assert (comps["r_sem"], comps["r_spa"], comps["r_pi"], comps["r_ri"]) == (1.0, 1.0, 1.0, 1.0)
  assert total == 2.0


def test_layout_mode_matching_ignores_order():
  total, _ = score(plan(("teal vase", (500, 0, 1000, 1000)), ("yellow vase", (0, 0, 500, 1000))))
  assert total == 2.0


def test_layout_mode_missing_extra_and_misplaced_objects():
  # Missing the teal vase: recall 1/2; matched IoU 1 over max(2, 1) objects.
  assert score(plan(("yellow vase", (0, 0, 500, 1000))))[0] == pytest.approx(0.5 + 0.5)
  # An extra object: recall 1; IoU 2 over max(2, 3).
  total, _ = score(plan(("yellow vase", (0, 0, 500, 1000)), ("teal vase", (500, 0, 1000, 1000)),
                        ("cat", (0, 0, 10, 10))))
  assert total == pytest.approx(1 + 2 / 3)
  # The yellow vase box half as wide: IoU 1/2.
  total, comps = score(plan(("yellow vase", (0, 0, 250, 1000)), ("teal vase", (500, 0, 1000, 1000))))
  assert comps["r_spa"] == pytest.approx((0.5 + 1) / 2) and total == pytest.approx(1.75)
  # Right boxes, wrong names: recall 0.
  assert score(plan(("dog", (0, 0, 500, 1000)), ("cat", (500, 0, 1000, 1000))))[0] == pytest.approx(1.0)
  # A name without a box counts for recall and the denominator.
  total, comps = score("<|obj_start|>yellow vase<|obj_end|> " + plan(("teal vase", (500, 0, 1000, 1000))))
  assert (comps["r_sem"], comps["r_spa"], comps["valid_boxes"]) == (1.0, 0.5, 1.0)


def test_layout_given_as_reasoning_chain():
  assert score(CHAIN, {"layout": CHAIN})[0] == 2.0
  assert score("no objects at all", {"layout": CHAIN})[0] == 0.0


def test_judges_and_image_terms():
  grounded = {"yellow vase": [0, 0, 500, 500], "teal vase": [500, 0, 1000, 1000]}
  seen = {}

  def image_judge(prompt, image):
    seen["image_judge"] = (prompt, image)
    return 0.5

  total, comps = score(plan(("yellow vase", (0, 0, 500, 1000)), ("teal vase", (500, 0, 1000, 1000))),
                       {"layout": LAYOUT, "prompt": "two vases"}, image="IMAGE", image_judge=image_judge,
                       grounder=lambda image, name: grounded[name],
                       semantic_judge=lambda prompt, text: 0.8, layout_judge=lambda prompt, objects: 0.4)
  assert seen["image_judge"] == ("two vases", "IMAGE")
  assert (comps["r_sem"], comps["r_spa"], comps["r_pi"], comps["r_ri"]) == pytest.approx((0.8, 0.4, 0.5, 0.75))
  assert total == pytest.approx(0.5 * (0.8 + 0.4) * 0.75)


@pytest.mark.parametrize("behaviour", ["raise", "hang", "nan"])
def test_failing_judges_are_reported(behaviour):
  release = threading.Event()

  def judge(*args):
    if behaviour == "raise":
      raise ConnectionError("judge offline")
    if behaviour == "hang":
      release.wait(30)
    return float("nan")

  try:
    total, comps = score(plan(("yellow vase", (0, 0, 500, 1000))), image="IMAGE", image_judge=judge,
                         grounder=judge, judge_timeout_s=0.2)
  finally:
    release.set()
  assert comps["image_judge_failed"] == 1.0 and comps["grounder_failed"] == 1.0
  assert comps["r_pi"] == 0.0 and comps["r_ri"] == 0.0 and total == 0.0


@pytest.mark.parametrize("truth, field", [
    ({"layout": [{"name": "cat"}]}, "layout"), ({"layout": [{"name": "cat", "box": [0, 0, 2000, 10]}]}, "layout"),
    ({"layout": [{"name": "cat", "box": "left"}]}, "layout"), ({"layout": [{"name": 3, "box": [0, 0, 1, 1]}]}, "layout"),
    ({"layout": []}, "layout"), ({"layout": "a cat on a mat"}, "layout"), ({"layout": 7}, "layout"),
    ({"layout": [{"name": "cat", "box": [0, 0, 1, 1]}], "prompt": ["a", "cat"]}, "prompt"),
])
def test_bad_ground_truth_is_named(truth, field):
  with pytest.raises(ValueError, match=f"got_r1: ground_truth.*'{field}'"):
    got_r1.got_r1("x", truth)
