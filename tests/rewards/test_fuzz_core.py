"""Property-based fuzzing: no completion makes a reward raise, and every total is finite and inside
the reward's documented range. An odd ground truth either scores the same way or raises KeyError or
ValueError naming the recipe and the field, never anything else."""
import json
import math

from hypothesis import HealthCheck, given, settings, strategies as st

from r1jax.rewards import embodied_r1, geometry, infigui, longvila, parsing, satori, star_r1

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TAGS = ["think", "answer", "caption", "bbox", "point", "tool_call", "step", "type"]
_FRAGMENTS = st.one_of(
    st.sampled_from([f"<{t}>" for t in _TAGS] + [f"</{t}>" for t in _TAGS]),
    st.sampled_from(["[", "]", "{", "}", ",", ":", '"', "\n", " ", "NaN", "Infinity", "-Infinity", "1e999", "-0",
                     "9" * 400, "1.color.red", "2.size.large", "\\frac{1}{", "\\boxed{", '"action": "click"',
                     '{"name": "mobile_use", "arguments": {"action": "click", "coordinate": [',
                     "\ufffd", "🙂", "é"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.text(max_size=20),
)
_COMPLETIONS = st.one_of(st.text(max_size=200), st.lists(_FRAGMENTS, max_size=40).map("".join))

_VALID = {
    "star_r1": "<think>t</think><answer>1.color.red, 2.size.large</answer>",
    "satori": "<caption>a cat</caption><bbox>[[0, 0, 100, 80], [10, 10, 50, 50]]</bbox><answer>cat</answer>",
    "infigui": '<think><step>s</step></think><tool_call>{"name": "mobile_use", "arguments": '
               '{"action": "click", "coordinate": [150, 250]}}</tool_call>',
    "embodied_r1": "<think>t</think><answer><point>[[10, 10], [20, 20], [30, 30], [40, 40], [50, 50], [60, 60], "
                   "[70, 70], [80, 80]]</point></answer>",
    "longvila": "<think>t</think><answer>\\frac{3}{4}</answer>",
}


def _completions(name):
  valid = _VALID[name]
  truncated = st.integers(0, len(valid)).map(lambda k: valid[:k])
  spliced = st.tuples(st.integers(0, len(valid)), _FRAGMENTS).map(lambda a: valid[:a[0]] + a[1] + valid[a[0]:])
  return st.one_of(_COMPLETIONS, truncated, spliced, st.just(valid), st.just(valid * 3), st.just("x" * 100_000))


_ODD = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=True), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=5), children, max_size=4)),
    max_leaves=12,
)


def _maybe_odd(valid):
  return st.one_of(st.just(valid), _ODD)


# Ground truths that fit each recipe's schema. InfiGUI's name their task_type, so the context's
# task_type cannot change which fields they need.
_ACTIONS = st.sampled_from(["click", "long_press", "type", "open", "swipe", "system_button", "wait", "terminate"])
_VALID_TRUTHS = {
    "star_r1": st.fixed_dictionaries({"answer": st.sampled_from(
        [["1.color.red", "2.size.large"], "1.color.red; 2.size.large", ["02.Color.RED"], []])}),
    "satori": st.fixed_dictionaries({
        "bboxs": st.sampled_from([[[0, 0, 100, 80]], [[0, 0, 10, 10], [5, 5, 50, 60]]]),
        "possible_answers": st.sampled_from([["cat"], "cat"]), "image_caption": st.just("a cat on a mat"),
        "width": st.integers(1, 5000), "height": st.integers(1, 5000)}),
    "infigui": st.one_of(
        st.fixed_dictionaries({"task_type": st.just("action"), "action": _ACTIONS,
                               "candidate_bbox": st.sampled_from([[[100, 200, 200, 300]], []]),
                               "coordinate": st.just([150, 250]), "text": st.just("hi"), "direction": st.just("up"),
                               "button": st.just("Back"), "width": st.integers(1, 5000),
                               "height": st.integers(1, 5000)}),
        st.fixed_dictionaries({"bbox": st.just([0, 0, 10, 10]), "task_type": st.sampled_from(["point", "box"]),
                               "width": st.integers(1, 5000), "height": st.integers(1, 5000)}),
        st.fixed_dictionaries({"task_type": st.just("answer"), "answer": st.sampled_from(["42", 42, ["42", "B"]])}),
    ),
    "embodied_r1": st.fixed_dictionaries({"answer": st.sampled_from([
        "<type>point_ref</type>[[10, 10]]", "<type>spatial_qa</type>B", "<type>general_qa</type>3/4",
        '<type>fsd_free_point</type>{"bbox": [0, 0, 50, 50], "free_points": [[1, 1]]}',
        '<type>fsd_visual_trace</type>{"trajectory": [[0, 0], [80, 80]]}',
        '<type>point_rec</type>{"segmentation": [[0, 0], [50, 0], [50, 50]]}'])}),
    "longvila": st.fixed_dictionaries({"answer": st.sampled_from(["C", "<answer>C</answer>", 12, ["C", "12"]])}),
}

# Ground truths that may hold anything where a field should be.
_SIZE = st.one_of(st.integers(1, 5000), _ODD)
_ODD_TRUTHS = {
    "star_r1": st.fixed_dictionaries({"answer": _maybe_odd(["1.color.red", "2.size.large"])}),
    "satori": st.fixed_dictionaries({
        "bboxs": _maybe_odd([[0, 0, 100, 80]]), "possible_answers": _maybe_odd(["cat"]),
        "image_caption": _maybe_odd("a cat on a mat"), "width": _SIZE, "height": _SIZE}),
    "infigui": st.one_of(
        st.fixed_dictionaries({"action": _maybe_odd("click"), "candidate_bbox": _maybe_odd([[100, 200, 200, 300]]),
                               "coordinate": _maybe_odd([150, 250]), "text": _maybe_odd("hi"),
                               "direction": _maybe_odd("up"), "button": _maybe_odd("Back"), "width": _SIZE,
                               "height": _SIZE}),
        st.fixed_dictionaries({"bbox": _maybe_odd([0, 0, 10, 10]), "task_type": st.sampled_from(["point", "box"]),
                               "width": _SIZE, "height": _SIZE}),
        st.fixed_dictionaries({"answer": _maybe_odd("42")}),
    ),
    "embodied_r1": st.fixed_dictionaries({"answer": st.one_of(
        st.sampled_from([
            "<type>point_ref</type>[[10, 10]]", "<type>spatial_qa</type>B",
            '<type>fsd_free_point</type>{"bbox": [0, 0, 50, 50], "free_points": [[1, 1]]}',
            '<type>fsd_visual_trace</type>{"trajectory": [[0, 0], [80, 80]]}',
            '<type>point_rec</type>{"segmentation": [[0, 0], [50, 0], [50, 50]]}',
            '<type>grounding_rec</type>{"segmentation": []}', "<type>fsd_visual_trace</type>{\"trajectory\": NaN}"]),
        st.tuples(st.sampled_from(["point_ref", "free_point", "visual_trace", "point_rec", "general_qa"]), _ODD).map(
            lambda a: f"<type>{a[0]}</type>{json.dumps(a[1], default=str)}"),
        _ODD)}),
    "longvila": st.fixed_dictionaries({"answer": _maybe_odd("C")}),
}
_CONTEXTS = st.fixed_dictionaries({}, optional={
    "width": _SIZE, "height": _SIZE, "resized_width": _SIZE, "resized_height": _SIZE,
    "min_pixels": st.one_of(st.integers(0, 10**7), _ODD),
    "max_pixels": st.one_of(st.integers(0, 10**7), _ODD), "normalize_vqa": st.booleans(),
    "task_type": st.sampled_from(["action", "point", "box", "answer", "other"]),
    "subgoal_judge": st.sampled_from([lambda s, t: 5, lambda s, t: math.nan, lambda s, t: 1 / 0]),
    "judge_timeout_s": st.one_of(st.floats(0.01, 1.0), _ODD),
})

_FUNCTIONS = {"star_r1": star_r1.star_r1_reward, "satori": satori.satori_reward,
              "infigui": infigui.infigui_reward, "embodied_r1": embodied_r1.embodied_r1_reward,
              "longvila": longvila.longvila_reward}


def _range(name, result):
  if name == "star_r1":
    c = result.components
    return -max(c["n_pred"], c["n_gt"]), 1 + 5 * c["n_gt"]
  return 0.0, 4.0 if name == "satori" else 1.0


def _check(name, completion, truth, context):
  _check_result(name, _FUNCTIONS[name](completion, truth, **context))


def _check_result(name, result):
  assert isinstance(result.total, float) and math.isfinite(result.total), result
  lo, hi = _range(name, result)
  assert lo - 1e-9 <= result.total <= hi + 1e-9, (result, lo, hi)
  assert all(isinstance(v, float) and math.isfinite(v) for v in result.components.values()), result
  assert "parse" in result.components


def _fuzz_test(name):
  @SETTINGS
  @given(completion=_completions(name), truth=_VALID_TRUTHS[name], context=_CONTEXTS)
  def test(completion, truth, context):
    _check(name, completion, truth, context)

  test.__name__ = f"test_{name}_never_raises_and_stays_in_range"
  return test


def _odd_truth_test(name):
  @SETTINGS
  @given(completion=_completions(name), truth=_ODD_TRUTHS[name], context=_CONTEXTS)
  def test(completion, truth, context):
    try:
      result = _FUNCTIONS[name](completion, truth, **context)
    except (KeyError, ValueError) as e:
      assert e.args[0].startswith(f"{name}: ground_truth"), e
    else:
      _check_result(name, result)

  test.__name__ = f"test_{name}_odd_ground_truth_scores_or_names_the_field"
  return test


test_star_r1_fuzz = _fuzz_test("star_r1")
test_satori_fuzz = _fuzz_test("satori")
test_infigui_fuzz = _fuzz_test("infigui")
test_embodied_r1_fuzz = _fuzz_test("embodied_r1")
test_longvila_fuzz = _fuzz_test("longvila")
test_star_r1_odd_truth = _odd_truth_test("star_r1")
test_satori_odd_truth = _odd_truth_test("satori")
test_infigui_odd_truth = _odd_truth_test("infigui")
test_embodied_r1_odd_truth = _odd_truth_test("embodied_r1")
test_longvila_odd_truth = _odd_truth_test("longvila")


@SETTINGS
@given(_COMPLETIONS)
def test_parsers_never_raise(text):
  assert isinstance(parsing.is_think_answer(text), bool)
  for parse, size in ((parsing.parse_boxes, 4), (parsing.parse_points, 2)):
    parsed = parse(text)
    assert parsed is None or all(len(item) == size and all(math.isfinite(v) for v in item) for item in parsed)
  parsing.parse_literal(text)
  parsing.extract_tag(text, "answer")


_COORD = st.floats(-1e6, 1e6)


@SETTINGS
@given(st.lists(st.tuples(_COORD, _COORD, _COORD, _COORD), max_size=5),
       st.lists(st.tuples(_COORD, _COORD, _COORD, _COORD), max_size=5))
def test_ious_are_in_unit_interval(boxes_a, boxes_b):
  assert 0.0 <= geometry.union_iou(boxes_a, boxes_b) <= 1.0
  for a, b in zip(boxes_a, boxes_b):
    assert 0.0 <= geometry.box_iou(a, b) <= 1.0
    assert geometry.box_iou(a, b) == geometry.box_iou(b, a)
