"""Hand-computed cases for the InfiGUI-R1 reward."""
import json
import time

import pytest

from r1jax.processing import smart_resize
from r1jax.rewards import infigui

# A 1080x2400 (w x h) screenshot with InfiGUI's limits is only rounded to multiples of 28:
# height round(2400 / 28) * 28 = 2408, width round(1080 / 28) * 28 = 1092 (2.6M < 6400*28*28 pixels).
WIDTH, HEIGHT = 1080, 2400
SX, SY = 1092 / 1080, 2408 / 2400
CLICK = {"action": "click", "candidate_bbox": [[100, 200, 300, 400]], "coordinate": [200, 300],
         "width": WIDTH, "height": HEIGHT}


def _resized(x, y):
  return [x * SX, y * SY]


def _call(arguments, think="Plan. <step>open the settings</step>"):
  payload = json.dumps({"name": "mobile_use", "arguments": arguments})
  return f"<think>{think}</think>\n<tool_call>\n{payload}\n</tool_call>"


def test_resized_size_by_hand():
  assert smart_resize(HEIGHT, WIDTH, 28, infigui.DEFAULT_MIN_PIXELS, infigui.DEFAULT_MAX_PIXELS) == (2408, 1092)


def test_perfect_action_scores_one():
  result = infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(200, 300)}), CLICK)
  assert result.total == pytest.approx(1.0)
  assert result.components["type"] == result.components["param"] == result.components["format"] == 1


def test_click_in_enlarged_box_or_near_point():
  # The 1.2x enlarged box spans x in [80, 320]: x = 310 is outside the box but inside the enlargement.
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(310, 300)}), CLICK).total == 1
  # x = 330 is outside the enlarged box and 130 px from the point (> 0.04 * 2400 = 96).
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(330, 300)}), CLICK).total == (
      pytest.approx(0.1 + 0.9 * 0.2))
  near = dict(CLICK, candidate_bbox=[], coordinate=[500, 500])
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(580, 500)}), near).total == 1
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(600, 500)}), near).components[
      "param"] == 0


def test_coordinates_are_rescaled():
  # The enlarged box ends at x = 320 (original pixels). Resized x = 323 is original 323 / SX = 319.45: a hit,
  # which a reward reading resized pixels as original ones would miss (323 > 320, 123 px from the point).
  long_press = dict(CLICK, action="long_press")
  assert infigui.infigui_reward(_call({"action": "long_press", "coordinate": [323.0, 300.0]}), long_press).components[
      "param"] == 1
  assert infigui.infigui_reward(_call({"action": "long_press", "coordinate": [323.0 * SX, 300.0]}),
                                long_press).components["param"] == 0


def test_type_mismatch_scores_format_only():
  result = infigui.infigui_reward(_call({"action": "long_press", "coordinate": _resized(200, 300)}), CLICK)
  assert result.components["type"] == 0 and result.total == pytest.approx(0.1)


def test_format_gates_accuracy():
  bare = "<tool_call>" + json.dumps({"name": "mobile_use", "arguments": {"action": "wait"}}) + "</tool_call>"
  result = infigui.infigui_reward(bare, {"action": "wait"})
  assert result.total == 0 and result.components["accuracy"] == 0
  assert infigui.infigui_reward(_call({"action": "wait"}) + " extra", {"action": "wait"}).total == 0
  wrapped = _call({"action": "wait"}).replace("<tool_call>", "<answer><tool_call>").replace("</tool_call>",
                                                                                          "</tool_call></answer>")
  assert infigui.infigui_reward(wrapped, {"action": "wait"}).total == 1
  assert infigui.infigui_reward(_call({"coordinate": [1, 2]}), {"action": "wait"}).total == 0  # no action


def test_subgoal_judge():
  seen = []

  def judge(subgoal, truth):
    seen.append(subgoal)
    return 7

  miss = _call({"action": "click", "coordinate": _resized(900, 2000)})
  result = infigui.infigui_reward(miss, CLICK, subgoal_judge=judge)
  assert seen == ["open the settings"]
  assert result.components["subgoal"] == pytest.approx(0.7)
  assert result.total == pytest.approx(0.1 + 0.9 * (0.2 + 0.2 * 0.7))
  # The judge is not consulted when the parameters match.
  infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(200, 300)}), CLICK, subgoal_judge=judge)
  assert len(seen) == 1


@pytest.mark.parametrize("judge", [
    lambda subgoal, truth: time.sleep(1.0) or 9,
    lambda subgoal, truth: 1 / 0,
    lambda subgoal, truth: 11,
    lambda subgoal, truth: "nine",
])
def test_judge_failures_score_zero_and_are_reported(judge):
  miss = _call({"action": "click", "coordinate": _resized(900, 2000)})
  result = infigui.infigui_reward(miss, CLICK, subgoal_judge=judge, judge_timeout_s=0.1)
  assert result.components["judge_failed"] == 1 and result.components["subgoal"] == 0
  assert result.total == pytest.approx(0.1 + 0.9 * 0.2)
  assert "judge_error" in result.info


def test_text_button_swipe_wait_rules():
  type_gt = {"action": "type", "text": "Hello"}
  assert infigui.infigui_reward(_call({"action": "type", "text": "hello world"}), type_gt).total == 1
  assert infigui.infigui_reward(_call({"action": "type", "text": "hel"}), type_gt).total == 1
  assert infigui.infigui_reward(_call({"action": "type", "text": ""}), type_gt).components["param"] == 0
  open_gt = {"action": "open", "text": "maps"}
  assert infigui.infigui_reward(_call({"action": "open", "text": "Maps"}), open_gt).total == 1
  button = {"action": "system_button", "button": "Back"}
  assert infigui.infigui_reward(_call({"action": "system_button", "button": "back"}), button).total == 1
  assert infigui.infigui_reward(_call({"action": "system_button", "button": "home"}), button).components["param"] == 0
  swipe = {"action": "swipe", "direction": "up", "width": WIDTH, "height": HEIGHT}
  up = {"action": "swipe", "coordinate": [500, 1500], "coordinate2": [520, 500]}
  assert infigui.infigui_reward(_call(up), swipe).total == 1
  right = {"action": "swipe", "coordinate": [100, 1500], "coordinate2": [900, 1400]}
  assert infigui.infigui_reward(_call(right), swipe).components["param"] == 0
  assert infigui.infigui_reward(_call({"action": "swipe", "direction": "UP"}), swipe).total == 1
  assert infigui.infigui_reward(_call({"action": "wait"}), {"action": "wait"}).total == 1


def test_point_box_and_answer_tasks():
  point_gt = {"bbox": [100, 100, 200, 200], "width": WIDTH, "height": HEIGHT}
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(150, 150)}), point_gt).total == 1
  assert infigui.infigui_reward(f"<think>t</think><answer>{_resized(150, 150)}</answer>", point_gt).total == 1
  assert infigui.infigui_reward(f"<think>t</think><answer>{_resized(250, 150)}</answer>", point_gt).total == (
      pytest.approx(0.1))
  box_gt = dict(point_gt, task_type="box")
  perfect = _resized(100, 100) + _resized(200, 200)
  assert infigui.infigui_reward(f"<think>t</think><answer>{perfect}</answer>", box_gt).total == pytest.approx(1)
  half = _resized(100, 100) + _resized(150, 200)  # IoU 0.5 -> 0.5 / 0.7
  assert infigui.infigui_reward(f"<think>t</think><answer>{half}</answer>", box_gt).total == (
      pytest.approx(0.1 + 0.9 * 0.5 / 0.7))
  qa = {"answer": "42"}
  assert infigui.infigui_reward("<think>t</think><answer>42.0</answer>", qa).total == pytest.approx(1)
  assert infigui.infigui_reward("<think>t</think><answer>41</answer>", qa).total == pytest.approx(0.1)


@pytest.mark.parametrize("truth, error, field", [
    ({"action": ""}, ValueError, "action"),
    ({"action": ["click"]}, ValueError, "action"),
    ({"action": "click", "width": WIDTH, "height": HEIGHT}, KeyError, "candidate_bbox"),
    ({**CLICK, "candidate_bbox": [[1, 2, 3]]}, ValueError, "candidate_bbox"),
    ({**CLICK, "coordinate": "middle"}, ValueError, "coordinate"),
    ({k: v for k, v in CLICK.items() if k not in ("width", "height")}, KeyError, "width"),
    ({**CLICK, "width": -5}, ValueError, "width"),
    ({"action": "type"}, KeyError, "text"),
    ({"action": "open", "text": ""}, ValueError, "text"),
    ({"action": "swipe", "direction": "sideways"}, ValueError, "direction"),
    ({"action": "system_button", "button": None}, ValueError, "button"),
    ({"task_type": "click"}, ValueError, "task_type"),
    ({"task_type": "box", "width": WIDTH, "height": HEIGHT}, KeyError, "bbox"),
    ({"bbox": [[0, 0, 1, 1], [2, 2, 3, 3]], "width": WIDTH, "height": HEIGHT}, ValueError, "bbox"),
    ({"bbox": [0, 0, 1, 1]}, KeyError, "width"),
    ({}, KeyError, "answer"),
    ({"answer": None}, ValueError, "answer"),
    ({"answer": []}, ValueError, "answer"),
])
def test_malformed_ground_truth_names_the_field(truth, error, field):
  # Each used to score as a wrong answer (or a miss) on every completion.
  with pytest.raises(error, match=f"infigui: ground_truth.*{field}"):
    infigui.infigui_reward(_call({"action": "click", "coordinate": [1, 1]}), truth)


def test_malformed_tool_call_scores_format_zero():
  for completion in ("<think>x</think><tool_call>{\"name\": \"mobile_use\", \"arguments\": {\"action\": \"click\"",
                     "<think>x</think><tool_call>{'name': 'mobile_use', 'arguments': [1, 2]}</tool_call>",
                     "<think>x</think><tool_call>not json</tool_call>",
                     "<tool_call>" + json.dumps({"name": "mobile_use", "arguments": {"action": "click"}}) + "</tool_call>"):
    result = infigui.infigui_reward(completion, CLICK)
    assert result.total == 0 and result.components["format"] == 0
    assert result.components["param"] == 0 and result.components["type"] == 0  # reported, as 0


def test_click_off_screen_scores_no_params():
  # A box at the screen's left edge: its 1.2x enlargement reaches x = -20, and (-10, 300) is inside it.
  edge = dict(CLICK, candidate_bbox=[[0, 200, 200, 400]], coordinate=[100, 300])
  inside = infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(5, 300)}), edge)
  assert inside.components["param"] == 1
  off = infigui.infigui_reward(_call({"action": "click", "coordinate": _resized(-10, 300)}), edge)
  assert off.components["format"] == 1 and off.components["type"] == 1 and off.components["param"] == 0
  below = infigui.infigui_reward(_call({"action": "long_press", "coordinate": [500, 99999]}),
                                 dict(edge, action="long_press"))
  assert below.components["param"] == 0


def test_pipeline_resized_size_maps_coordinates():
  # The pipeline fed the model a 546 x 1204 image (half size): a click at (100, 150) there is (200, 300).
  context = {"resized_image_sizes": [(1204, 546)]}
  hit = infigui.infigui_reward(_call({"action": "click", "coordinate": [100, 150]}), CLICK, **context)
  assert hit.components["param"] == 1
  # Without the context the same pixels are read in the 1092 x 2408 frame: (100, 150) is off target.
  assert infigui.infigui_reward(_call({"action": "click", "coordinate": [100, 150]}), CLICK).components["param"] == 0


def test_without_a_subgoal_judge_start_up_says_the_term_is_zero(caplog):
  from r1jax.rewards import startup  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(timeout_s=10.0))
  with caplog.at_level("WARNING"):
    assert startup.judge_context("infigui", config) == {}
  assert "reward 'infigui': no 'subgoal_judge' judge" in caplog.text and "scores 0" in caplog.text
  judge = lambda subgoal, truth: 5
  assert startup.judge_context("infigui", config, provided={"subgoal_judge": judge}) == {"subgoal_judge": judge}


class _FakeJudgeModel:
  """Stands in for a FrozenModel: answers every request with a fixed text, records the prompts."""
  name = "subgoal_judge"

  def __init__(self, answer):
    self.answer, self.prompts = answer, []

  def generate(self, requests, max_new_tokens=None):
    del max_new_tokens
    self.prompts += [r.messages[-1]["content"][-1]["text"] for r in requests]
    return [type("Generation", (), {"text": self.answer})() for _ in requests]


def test_frozen_model_judge_rates_only_wrong_steps_once_per_rollout():
  from r1jax import frozen_judge  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = _FakeJudgeModel("The sub-goal is close. Score: 7")
  judge = infigui.frozen_subgoal_judge(model, ml_collections.ConfigDict(dict(timeout_s=10.0)))
  truth = dict(CLICK, goal="Turn on Wi-Fi", instruction="Tap the Wi-Fi switch", answer='{"action_type": "click"}')
  completions = [_call({"action": "click", "coordinate": _resized(200, 300)}),  # right: not judged
                 _call({"action": "click", "coordinate": _resized(900, 2000)}, think="<step>tap wifi</step>"),
                 "no format at all"]
  contexts = [{"subgoal_judge": judge} for _ in completions]
  metrics = frozen_judge.judge_rollout({"subgoal_judge": judge}, completions, [truth] * 3, contexts)
  assert metrics["judge/subgoal_judge/ok"] == 1 and metrics["judge/subgoal_judge/missing"] == 2
  assert len(model.prompts) == 1 and "The sub-goal the agent stated: tap wifi" in model.prompts[0]
  assert "Tap the Wi-Fi switch" in model.prompts[0]
  scores = [infigui.infigui_reward(c, truth, **ctx) for c, ctx in zip(completions, contexts)]
  assert scores[0].total == pytest.approx(1.0)
  assert scores[1].components["subgoal"] == pytest.approx(0.7)
  assert scores[1].total == pytest.approx(0.1 + 0.9 * (0.2 + 0.2 * 0.7))
  assert scores[2].total == 0
