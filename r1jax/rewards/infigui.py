"""InfiGUI-R1 reward: GUI agent actions, point/box grounding and answers.

Source: "InfiGUI-R1: Advancing Multimodal GUI Agents from Reactive Actors to Deliberative
Reasoners" (2025) for the reward; the AndroidControl evaluation rules it reuses come from its
public `eval/android_control` code (adapted from QwenLM/Qwen2.5-VL issue #904).

Ground truth keys (AndroidControl check parameters):
  action: the action type ("click", "long_press", "type", "open", "swipe", "system_button",
    "wait", "terminate", ...). Its presence makes the sample an action step.
  candidate_bbox: list of `[x1, y1, x2, y2]` target-element boxes (original pixels; may be empty).
  coordinate: `[x, y]` target point (original pixels).
  text: typed text or app name (type / open).
  direction: "up" / "down" / "left" / "right" (swipe).
  button: "Back" / "Home" / "Menu" / "Enter" (system_button).
  status: terminate status (terminate).
  bbox: `[x1, y1, x2, y2]` target box in original pixels (point and box grounding).
  answer: the answer (other tasks), a string/number or a list of accepted answers.
  width, height: original screenshot size (may come through context instead).
  task_type: "action", "point", "box" or "answer". Optional: without it the sample is an action
    step if it has `action`, point grounding if it has `bbox`, an answer task otherwise.
  A field the task needs that is missing or malformed raises, naming it: `action`; for
  click / long_press `candidate_bbox` or `coordinate`, and the image size; `text` (type / open),
  `direction` (swipe), `button` (system_button); `bbox` and the image size (point, box); `answer`.
Context keys (all optional):
  task_type: as above, when the ground truth lacks it.
  width, height: original screenshot size.
  resized_height, resized_width: the model-input size, when the processor passes it.
  resized_image_sizes: the data pipeline's [(height, width)] of the images it fed the model; the
    first one is the model-input size when resized_height / resized_width are absent.
  min_pixels, max_pixels: otherwise the resized size is `smart_resize` with these limits.
    Defaults 56*56 and 6400*28*28, the values of InfiGUI-R1's AndroidControl evaluation.
  subgoal_judge: callable `(subgoal: str, ground_truth) -> rating` in [1, 10] (an injected judge),
    or the `JudgeCall` a batched frozen-model judge already made for this sample. Without it the
    sub-goal term is 0. In a run it is an optional judge of the reward (`register(optional_judges=)`):
    `config.frozen.subgoal_judge.init_from=<HF folder>` makes it a `FrozenModelJudge`
    (`frozen_subgoal_judge`: SUBGOAL_PROMPT, rating 1-10, asked once per rollout for the samples
    whose format holds and whose parameters are wrong); with none, start-up says its term is 0.
  judge_timeout_s: time limit for one judge call (default 10 s).

Completion: `<think>…</think>` followed by exactly one payload block (a tool call may also sit
inside `<answer>…</answer>`), then nothing but whitespace:
  action: `<tool_call>{"name": "mobile_use", "arguments": {"action": …, "coordinate": [x, y], …}}</tool_call>`
  point:  the same tool call with `coordinate`, or `<answer>[x, y]</answer>`
  box:    `<answer>[x1, y1, x2, y2]</answer>` (or a tool call with `bbox`/`bbox_2d`)
  answer: `<answer>…</answer>`
Predicted coordinates are in resized-input pixels and are mapped to original pixels with
`smart_resize` before any comparison.

Formula (total in [0, 1]):
  format = 1 if the structure above holds and the payload parses for the task, else 0.
  total  = 0.1 * format + 0.9 * accuracy * format.
  accuracy:
    action: R_type = 1 if the action types match (case-insensitive). R_param = 1 if the type and
      every parameter match:
        click / long_press: the point lies in a candidate box enlarged 1.2x about its centre, or
          within 0.04 * max(W, H) of `coordinate` (original pixels);
        type / open: case-insensitive substring match of `text` in either direction;
        swipe: the dominant direction of coordinate -> coordinate2 (or the predicted `direction`
          when no coordinate2 is given) equals `direction`;
        system_button: same `button` name, case-insensitive; terminate: same `status`;
        wait and other types: the type match alone.
      accuracy = 0.2 * R_type + 0.8 * R_param if R_param = 1,
                 else 0.2 * R_type + 0.2 * R_subgoal, with R_subgoal = judge rating / 10.
    point: 1 if the point lies in `bbox`.
    box: 1 if IoU >= 0.7, else IoU / 0.7.
    answer: `grading.grade_answer` (exact or math-equivalent).

Choices:
  * Distances are measured in original pixels against 0.04 * max(W, H) of the original image;
    the evaluation code measures in resized pixels against the resized size. The two agree up to
    smart_resize's rounding of the aspect ratio.
  * A click or long press outside the screenshot (x outside [0, W] or y outside [0, H] of the
    model-input image) never matches, even where the 1.2x enlarged box of an element at the
    screen's edge reaches past it: no device accepts such a tap.
  * An empty predicted or ground-truth text never matches (an empty string is a substring of
    everything, which would reward typing nothing).
  * Clicking an app icon when the step is `open` counts as a type mismatch (the evaluation code
    accepts it when candidate boxes exist; the reward follows the stated rules).
  * The judge sees the `<step>…</step>` sub-goal inside `<think>` if present, else the whole
    think text. A judge that raises, times out or returns a rating outside [1, 10] scores 0 and
    sets `judge_failed`. The judge is only called when R_param = 0 and the format holds.

Components: format, accuracy, parse (1 if the payload parsed), and for action steps type,
param, subgoal, judge_failed.
"""
from __future__ import annotations

from collections.abc import Mapping
import math
import re
from typing import Any

from r1jax.rewards import geometry, grading, judges, parsing, schema, startup
from r1jax.rewards.base import RewardResult, register

FORMAT_WEIGHT, ACCURACY_WEIGHT = 0.1, 0.9
TYPE_WEIGHT, PARAM_WEIGHT, SUBGOAL_WEIGHT = 0.2, 0.8, 0.2
BOX_ENLARGE_FACTOR = 1.2
POINT_DISTANCE_FRACTION = 0.04
BOX_IOU_FULL_CREDIT = 0.7
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 6400 * 28 * 28
DEFAULT_JUDGE_TIMEOUT_S = 10.0
SUBGOAL_JUDGE = "subgoal_judge"  # the context key (and config.frozen name) of the sub-goal judge
# The frozen-model judge's prompt (r1jax's wording; the paper names the judge, not its prompt).
SUBGOAL_PROMPT = ("A phone agent is working towards a goal. Goal: {goal}\nThis step's instruction: {instruction}\n"
                  "The correct action: {action}\nThe sub-goal the agent stated: {subgoal}\n"
                  "Rate from 1 to 10 how well the stated sub-goal matches what this step must achieve. Score:")
TASK_TYPES = ("action", "point", "box", "answer")
SWIPE_DIRECTIONS = ("up", "down", "left", "right")

_TAGS = r"</?(?:think|answer|tool_call)>"
_CONTENT = rf"(?:(?!{_TAGS}).)*"
_STRUCTURE = re.compile(
    rf"<think>({_CONTENT})</think>\s*(?:<tool_call>({_CONTENT})</tool_call>"
    rf"|<answer>\s*<tool_call>({_CONTENT})</tool_call>\s*</answer>|<answer>({_CONTENT})</answer>)\s*", re.DOTALL)


def _task_type(ground_truth: Mapping[str, Any], context: Mapping[str, Any]) -> str:
  if "task_type" in ground_truth and ground_truth["task_type"] not in TASK_TYPES:
    raise schema.malformed("infigui", "task_type", f"one of {TASK_TYPES}", ground_truth["task_type"])
  task = ground_truth.get("task_type", context.get("task_type"))
  if isinstance(task, str) and task in TASK_TYPES:
    return task
  if "action" in ground_truth:
    return "action"
  return "point" if "bbox" in ground_truth else "answer"


def _check_action(truth: Mapping[str, Any], context: Mapping[str, Any]) -> None:
  """Raises naming the first field an action step needs that is missing or malformed."""
  kind = _text(schema.field("infigui", truth, "action", "the action type"))
  if not kind:
    raise schema.malformed("infigui", "action", "an action type such as 'click'", truth["action"])
  if kind in ("click", "long_press"):
    if "candidate_bbox" not in truth and "coordinate" not in truth:
      raise KeyError(f"infigui: ground_truth needs 'candidate_bbox' or 'coordinate' for a {kind!r} step")
    if "candidate_bbox" in truth and parsing.parse_boxes(truth["candidate_bbox"]) is None:
      raise schema.malformed("infigui", "candidate_bbox", "a list of [x1, y1, x2, y2] boxes", truth["candidate_bbox"])
    if "coordinate" in truth and _point(truth["coordinate"]) is None:
      raise schema.malformed("infigui", "coordinate", "a point [x, y]", truth["coordinate"])
    schema.image_size("infigui", truth, context, required=True)
  elif kind in ("type", "open") and not _text(schema.field("infigui", truth, "text", f"the {kind} text")):
    raise schema.malformed("infigui", "text", "a non-empty string", truth["text"])
  elif kind == "swipe" and _text(schema.field("infigui", truth, "direction", "the swipe direction")) \
      not in SWIPE_DIRECTIONS:
    raise schema.malformed("infigui", "direction", f"one of {SWIPE_DIRECTIONS}", truth["direction"])
  elif kind == "system_button" and not _text(schema.field("infigui", truth, "button", "the button name")):
    raise schema.malformed("infigui", "button", "a button name such as 'Back'", truth["button"])


def _accepted_answers(truth: Mapping[str, Any]) -> list[str | int | float]:
  answer = schema.field("infigui", truth, "answer", "the answer, or a list of accepted answers")
  return schema.answer_values("infigui", answer)


def _check_truth(task: str, truth: Mapping[str, Any], context: Mapping[str, Any]) -> None:
  """Raises naming the first field `task` needs that is missing or malformed."""
  if task == "action":
    _check_action(truth, context)
  elif task in ("point", "box"):
    box = parsing.parse_boxes(schema.field("infigui", truth, "bbox", "the target box"))
    if box is None or len(box) != 1:
      raise schema.malformed("infigui", "bbox", "one box [x1, y1, x2, y2]", truth["bbox"])
    schema.image_size("infigui", truth, context, required=True)
  else:
    _accepted_answers(truth)


def _tool_arguments(tool_call: str | None) -> dict | None:
  call = parsing.parse_literal(tool_call) if tool_call is not None else None
  arguments = call.get("arguments") if isinstance(call, dict) else None
  return arguments if isinstance(arguments, dict) else None


def _payload(task: str, tool_call: str | None, answer: str | None) -> Any:
  """The task's parsed payload, or None if the completion does not provide one."""
  arguments = _tool_arguments(tool_call)
  if task == "action":
    return arguments if arguments is not None and isinstance(arguments.get("action"), str) else None
  if task == "point":
    value = arguments.get("coordinate") if arguments is not None else answer
    points = parsing.parse_points(value) if value is not None else None
    return points[0] if points is not None and len(points) == 1 else None
  if task == "box":
    value = answer
    if arguments is not None:
      value = arguments.get("bbox_2d", arguments.get("bbox"))
    boxes = parsing.parse_boxes(value) if value is not None else None
    return boxes[0] if boxes is not None and len(boxes) == 1 else None
  return answer.strip() if answer is not None and answer.strip() else None


def _with_pipeline_size(context: Mapping[str, Any]) -> Mapping[str, Any]:
  """The context with `resized_height` / `resized_width` taken from the data pipeline's
  `resized_image_sizes[0]` (the size the model saw) when it has no explicit ones."""
  sizes = context.get("resized_image_sizes")
  if "resized_height" in context or not isinstance(sizes, (list, tuple)) or not sizes:
    return context
  size = sizes[0]
  if not isinstance(size, (list, tuple)) or len(size) != 2:
    return context
  return {**context, "resized_height": size[0], "resized_width": size[1]}


class _Frame:
  """Maps predicted coordinates from resized-input pixels to original pixels for one sample."""

  def __init__(self, ground_truth: Mapping[str, Any], context: Mapping[str, Any]):
    self.image = parsing.image_frame(ground_truth, _with_pipeline_size(context), DEFAULT_MIN_PIXELS,
                                     DEFAULT_MAX_PIXELS)
    self.hw = None if self.image is None else self.image.original_hw

  def to_original(self, coords: Any) -> list[float] | None:
    return None if self.image is None or coords is None else self.image.to_original(coords).tolist()

  def off_screen(self, point: Any) -> bool:
    """Whether a predicted point (resized-input pixels) lies outside the screenshot."""
    point = _point(point)
    if point is None or self.image is None:
      return False
    height, width = self.image.resized_hw
    return not (0 <= point[0] <= width and 0 <= point[1] <= height)


def _point(value: Any) -> tuple[float, float] | None:
  points = parsing.parse_points(value)
  return points[0] if points is not None and len(points) == 1 else None


def _text(value: Any) -> str:
  """Stripped, case-folded text of a string or number field; "" for anything else."""
  value = parsing.plain(value)
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    value = str(value)
  return value.strip().casefold() if isinstance(value, str) else ""


def _click_matches(pred_args: Mapping[str, Any], truth: Mapping[str, Any], frame: _Frame) -> bool:
  click = frame.to_original(_point(pred_args.get("coordinate")))
  if click is None or frame.off_screen(pred_args.get("coordinate")):
    return False
  for box in parsing.parse_boxes(truth.get("candidate_bbox")) or []:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = (box[2] - box[0]) * BOX_ENLARGE_FACTOR / 2, (box[3] - box[1]) * BOX_ENLARGE_FACTOR / 2
    if geometry.point_in_box(click, [cx - half_w, cy - half_h, cx + half_w, cy + half_h]):
      return True
  target = _point(truth.get("coordinate"))
  if target is None or frame.hw is None:
    return False
  return math.dist(click, target) <= POINT_DISTANCE_FRACTION * max(frame.hw)


def swipe_direction(start: tuple[float, float], end: tuple[float, float]) -> str:
  """Dominant direction of a finger moving from `start` to `end` (ties go vertical)."""
  dx, dy = end[0] - start[0], end[1] - start[1]
  if abs(dx) > abs(dy):
    return "right" if dx > 0 else "left"
  return "down" if dy > 0 else "up"


def _params_match(kind: str, pred_args: Mapping[str, Any], truth: Mapping[str, Any], frame: _Frame) -> bool:
  if kind in ("click", "long_press"):
    return _click_matches(pred_args, truth, frame)
  if kind in ("type", "open"):
    pred, gt = _text(pred_args.get("text")), _text(truth.get("text"))
    return bool(pred and gt) and (pred in gt or gt in pred)
  if kind == "swipe":
    start, end = _point(pred_args.get("coordinate")), _point(pred_args.get("coordinate2"))
    if start is not None and end is not None:
      direction = swipe_direction(start, end)
    else:
      direction = _text(pred_args.get("direction"))
    return bool(direction) and direction == _text(truth.get("direction"))
  if kind == "system_button":
    return bool(_text(truth.get("button"))) and _text(pred_args.get("button")) == _text(truth.get("button"))
  if kind == "terminate" and "status" in truth:
    return _text(pred_args.get("status")) == _text(truth.get("status"))
  return True


def _rating(value: Any) -> float:
  """A judge's 1-10 rating as R_subgoal in [0.1, 1]; raises (making the call "invalid") otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10:
    raise ValueError(f"sub-goal judge returned {value!r}, expected a rating in [1, 10]")
  return float(value) / 10


def _subgoal(think: str, truth: Mapping[str, Any], context: Mapping[str, Any]) -> judges.JudgeCall:
  """Asks the injected judge to rate the sub-goal stated in `think`."""
  step = parsing.extract_tag(think, "step")
  timeout_s = context.get("judge_timeout_s", DEFAULT_JUDGE_TIMEOUT_S)
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
    timeout_s = DEFAULT_JUDGE_TIMEOUT_S
  return judges.call_judge(context.get(SUBGOAL_JUDGE), (step if step is not None else think).strip(), truth,
                           timeout_s=timeout_s, validate=_rating)


def _action_accuracy(pred_args, truth, think, frame, context) -> tuple[float, dict[str, float], dict[str, Any]]:
  kind = _text(truth.get("action"))
  r_type = float(bool(kind) and _text(pred_args.get("action")) == kind)
  r_param = float(bool(r_type) and _params_match(kind, pred_args, truth, frame))
  subgoal, judge_failed, info = 0.0, False, {}
  if r_param:
    accuracy = TYPE_WEIGHT * r_type + PARAM_WEIGHT * r_param
  else:
    call = _subgoal(think, truth, context)
    subgoal, judge_failed = (call.value if call.ok else 0.0), call.failed
    if call.failed:
      info = {"judge_error": f"{call.status}: {call.error}"}
    accuracy = TYPE_WEIGHT * r_type + SUBGOAL_WEIGHT * subgoal
  components = {"type": r_type, "param": r_param, "subgoal": subgoal, "judge_failed": float(judge_failed)}
  return accuracy, components, info


def _accuracy(task, payload, truth, think, context) -> tuple[float, dict[str, float], dict[str, Any]]:
  frame = _Frame(truth, context)
  accuracy, components, info = _task_accuracy(task, payload, truth, think, frame, context)
  needs_size = task in ("point", "box") or _text(truth.get("action")) in ("click", "long_press")
  if needs_size and frame.hw is None:  # predicted coordinates cannot be mapped, so they never match
    info = {**info, "size_error": "the context's pixel limits cannot rescale predicted coordinates"}
  return accuracy, components, info


def _task_accuracy(task, payload, truth, think, frame, context) -> tuple[float, dict[str, float], dict[str, Any]]:
  if task == "action":
    return _action_accuracy(payload, truth, think, frame, context)
  if task == "point":
    point, box = frame.to_original(payload), parsing.parse_boxes(truth.get("bbox"))
    hit = point is not None and box is not None and len(box) == 1 and geometry.point_in_box(point, box[0])
    return float(hit), {}, {}
  if task == "box":
    pred, box = frame.to_original(payload), parsing.parse_boxes(truth.get("bbox"))
    if pred is None or box is None or len(box) != 1:
      return 0.0, {}, {}
    iou = geometry.box_iou(pred, box[0])
    return (1.0 if iou >= BOX_IOU_FULL_CREDIT else iou / BOX_IOU_FULL_CREDIT), {}, {}
  return grading.grade_answer(payload, _accepted_answers(truth)), {}, {}


@register("infigui", optional_judges=(SUBGOAL_JUDGE,))
def infigui_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  truth = schema.mapping("infigui", ground_truth)
  task = _task_type(truth, context)
  _check_truth(task, truth, context)
  completion = completion if isinstance(completion, str) else ""
  structure = _STRUCTURE.fullmatch(completion)
  payload = None
  if structure:
    think, tool_call, wrapped_tool_call, answer = structure.groups()
    payload = _payload(task, tool_call if tool_call is not None else wrapped_tool_call, answer)
  fmt = float(payload is not None)
  accuracy, info = 0.0, {"task_type": task}
  # An action step always reports its components (0 when the format fails), so a batch's means exist.
  components = dict.fromkeys(("type", "param", "subgoal", "judge_failed"), 0.0) if task == "action" else {}
  if fmt:
    accuracy, components, extra = _accuracy(task, payload, truth, think, context)
    info.update(extra)
  components = {"format": fmt, "accuracy": accuracy, "parse": fmt, **components}
  return RewardResult(total=FORMAT_WEIGHT * fmt + ACCURACY_WEIGHT * accuracy * fmt, components=components, info=info)


def subgoal_item(completion: str, ground_truth: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, str] | None:
  """What the frozen-model judge is asked about one sample (SUBGOAL_PROMPT's fields), or None when the
  reward would not ask: not an action step, the format fails, or the parameters are right."""
  result = infigui_reward(completion, ground_truth, **{k: v for k, v in context.items() if k != SUBGOAL_JUDGE})
  if result.info.get("task_type") != "action" or not result.components["format"] or result.components["param"]:
    return None
  think = _STRUCTURE.fullmatch(completion).group(1)
  step = parsing.extract_tag(think, "step")
  return {"subgoal": (step if step is not None else think).strip(), "goal": str(ground_truth.get("goal", "")),
          "instruction": str(ground_truth.get("instruction", "")), "action": str(ground_truth.get("answer", ""))}


def frozen_subgoal_judge(model, reward_config) -> Any:
  """The sub-goal judge on a frozen model (`config.frozen.subgoal_judge`): one batched greedy call per
  rollout for the samples `subgoal_item` selects, the 1-10 rating parsed after "Score"."""
  from r1jax import frozen_judge  # pylint: disable=g-import-not-at-top  (loads the model stack)
  return frozen_judge.FrozenModelJudge(model, frozen_judge.PromptTemplate(text=SUBGOAL_PROMPT), low=1, high=10,
                                       timeout_s=float(reward_config.get("timeout_s", DEFAULT_JUDGE_TIMEOUT_S)) * 6,
                                       max_new_tokens=16, sample_item=subgoal_item)


startup.register_frozen_judge(SUBGOAL_JUDGE, frozen_subgoal_judge)
