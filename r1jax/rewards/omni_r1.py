"""Omni-R1: keyframe selection by a global system, grounding by a detail system (reward `omni_r1`).

Source: "Omni-R1: Reinforcement Learning for Omnimodal Reasoning via Two-System Collaboration"
(aim-uofa/Omni-R1, `src/omni_r1/reward.py` and `time_reward_multi_time` /
`grounding2sam_process_reward` in `src/omni_r1/load_datasets/revos.py`).

The global system (the policy) watches F low-resolution frames sampled at 2 fps (frame i shows
second i/2) and answers, inside `<answer>`, with J keyframe objects
`{"start_time": "mm:ss.ff", "end_time": "mm:ss.ff", "description": "…"}`. The frozen detail
system grounds each selected high-resolution keyframe from its description and returns boxes.

Rewards (J = number of `{…}` objects in the answer):
  cum = (0.2·J + 0.2·[objects with all three fields] + 0.2·[objects with start ≤ end ≤ F/2]
         + Σ over those valid intervals of the fraction of (object, frame) pairs in the
         interval where the target is present) / J                                ∈ [0, 1.6]
  A valid interval covers frames min(⌊2·start⌋, F−1) … min(⌊2·end⌋, F−1). Let U be the unique
  frames over all valid intervals and n_i the frame count of interval i:
  frame_r = 0.4·|U| if |U| ≤ 4 else 0.4·(7 − |U|)                                 ≤ 1.6
  overlap = Σ_i min(0, 0.2·(1 − n_i)) − 0.5·(Σ_i n_i − |U|)                        ≤ 0
  Grounding: the first 4 frames of U (ascending) go to the detail system, each with the
  description of the first valid interval holding it. Per frame, its first `num_obj` boxes are
  matched to the ground-truth boxes by the Hungarian algorithm on IoU; avg_iou is the mean
  matched IoU over (object, frame) pairs where the object is present                ∈ [0, 1]
  mismatch = −0.5·extra_boxes / num_obj / grounded_frames, extra_boxes = Σ_frames max(0, n_boxes − num_obj)
  R = cum + α_k·(frame_r + overlap) + α_a·avg_iou + mismatch   (α_k = α_a = 1 by default);
  R = cum alone when no interval is valid (as in the public code).
  format = 1 if the completion is `<think>…</think><answer>…</answer>` (fullmatch), else 0.
  total = R + format (the public trainer sums its accuracy and format rewards with weight 1).
Range: total ≤ 2.6 + 1.6·α_k + α_a (5.2 at the defaults). The penalties have no fixed floor: with
F frames and J objects, total ≥ α_k·(0.4·min(0, 7 − F) − 0.7·F·J) + mismatch, and mismatch ≥
−0.5·(boxes the detail system returned per frame) / num_obj. Totals are always finite.

Ground truth:
  bboxs: per-frame target boxes `[num_obj, F, 4]` in original frame pixels, `[-1, -1, -1, -1]`
    (or None) where the object is absent: the field Omni-R1's ReVOS/MeViS loaders produce
    (`boxes` is read when `bboxs` is missing). F is the number of frames the policy saw.
Context:
  detail_answers: {frame index: the detail system's text} for the frames `grounding_requests`
    names, computed in one batch before scoring (r1jax/envs/omni_r1.py runs the frozen detail
    model once per rollout); with `detail_status` ("ok", or the judge status "error" / "timeout" /
    "invalid" of that batched call, r1jax.rewards.judges) and `detail_error`. A frame without an
    answer grounds nothing. Takes precedence over `detail_system`.
  detail_system: `DetailSystem`, called as `detail_system(frame_index, description) -> str`, per
    frame; its text holds JSON objects with "bbox_2d" (Qwen2.5-VL style). With neither key: no
    grounding terms.
  detail_timeout_s: time limit per detail_system call (default 30 s).
  frame_hw: (height, width) of the original frames. When given, detail boxes are read as pixels
    of the detail model's `smart_resize`d input (`detail_min_pixels`/`detail_max_pixels`, default
    Qwen2.5-VL's 56·56 / 28·28·1280) and mapped back to original pixels; when absent they are
    taken as original pixels.
  alpha_k, alpha_a: the weights above.
Components: format, cum, frame_r, overlap, avg_iou, mismatch, parsed (1 if any object has all
fields), num_objects (J), valid_objects, grounded_frames, detail_failed (1 if a detail call
raised, timed out or answered no text), detail_unparsed (fraction of the grounded frames whose
answer arrived but held no readable box), keyframe_hit (fraction of the grounded frames in which
a target object is present; 0 without any: the keyframe hit rate).

Ambiguities and r1jax's choices:
  * Times: a time field is read where the public code's `re.match(r"(\\d+):(\\d+)\\.(\\d+)")`
    matches: at the very start of the string (no leading spaces), any number of digits, the
    fraction required, anything after the match ignored. The public code then reads ff as
    hundredths even when it has one digit ("00:05.5" → 5.05 s); r1jax reads `ss.ff` as a
    decimal number (5.5 s), the time the model wrote.
  * Objects are the `{…}` spans from a `{` to the next `}` (the public regex `{[\\s\\S]*?}`),
    found by a linear scan so that long completions stay cheap. Each is read as JSON only, as
    the public `json.loads` does: a Python-literal dict (`{'start_time': …}`) does not count.
    Its `description` must be a string (it is the detail system's prompt); the public code
    takes any non-null value.
  * IoU uses continuous coordinates (no +1 pixel); the public code also zeroes ground-truth
    boxes touching the left edge (x1 = 0), a bug r1jax does not copy.
  * The public total also adds avg_ratio (target coverage of the grounded frames) and a SAM
    mask IoU (α_g); the spec's total leaves them out and so does r1jax.
  * A detail call that fails (raises, times out, answers non-text) grounds no box in its frame,
    as an unreadable answer does in the public code, and `detail_failed` reports it.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from r1jax.processing import VisionProcessorConfig
from r1jax.rewards import schema
from r1jax.rewards.base import RewardResult, register
from r1jax.rewards.geometry import box_iou, hungarian_match
from r1jax.rewards.judges import DEFAULT_TIMEOUT_S, JUDGE_ERROR, JUDGE_OK, JudgeCall, call_judge
from r1jax.rewards.parsing import extract_tag, is_think_answer, parse_boxes, parse_literal, to_original_pixels

FPS = 2
MATCH_REWARD = 0.2        # per object found
ELEMENT_REWARD = 0.2      # per object with start_time, end_time and description
TIME_CONSISTENCY_REWARD = 0.2  # per object with start <= end <= F / 2
GAP_REWARD = 0.4          # per unique keyframe, up to TARGET_KEYFRAMES
TARGET_KEYFRAMES = 4
INTERVAL_LENGTH_PENALTY = 0.2  # per frame beyond the first in an interval
OVERLAP_PENALTY = 0.5     # per duplicated frame
EXTRA_BOX_PENALTY = 0.5

# The detail system's instruction for one keyframe (the released default grounding prompt,
# `make_prompt` in revos.py), after the image.
DETAIL_TEMPLATE = "Given the expression: '{Question}', ground all the referred objects with json bboxs"

# mm:ss.ff at the start of the field, as the public code matches it.
_TIME = re.compile(r"(\d+):(\d+\.\d+)")


class DetailSystem(Protocol):
  """The frozen grounding model: boxes for `description` in keyframe `frame_index`, as text."""

  def __call__(self, frame_index: int, description: str) -> str:
    ...


@dataclasses.dataclass(frozen=True)
class Keyframe:
  """A valid keyframe interval: seconds and the frames it covers (inclusive)."""

  start: float
  end: float
  description: str
  first_frame: int
  last_frame: int


def detail_messages(description: str) -> list[dict[str, Any]]:
  """The detail system's chat for one keyframe: the image, then DETAIL_TEMPLATE with `description`."""
  text = DETAIL_TEMPLATE.format(Question=description.lower().strip())
  return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def json_spans(text: str) -> list[str]:
  """Spans from each `{` to the next `}`, left to right without overlap (like `re.findall(r"{[\\s\\S]*?}")`)."""
  spans, pos = [], 0
  while True:
    start = text.find("{", pos)
    if start < 0:
      return spans
    end = text.find("}", start + 1)
    if end < 0:  # no later `{` can close either
      return spans
    spans.append(text[start:end + 1])
    pos = end + 1


def parse_time(text: Any) -> float | None:
  """Seconds of a string starting with `mm:ss.ff`, else None.

  float(), not int(), reads the minutes: int() of a string of thousands of digits is slow or
  raises, while float() returns inf, which no valid interval holds.
  """
  if not isinstance(text, str):
    return None
  match = _TIME.match(text)
  return float(match.group(1)) * 60 + float(match.group(2)) if match else None


def _truth_boxes(ground_truth: Any) -> np.ndarray:
  """`bboxs` as float64 `[num_obj, F, 4]`, NaN rows where the object is absent."""
  key = "boxes" if "bboxs" not in schema.mapping("omni_r1", ground_truth) and "boxes" in ground_truth else "bboxs"
  value = schema.field("omni_r1", ground_truth, key, "per-frame boxes [num_obj, frames, 4]")
  expected = "[num_obj, frames, 4] finite numbers, [-1, -1, -1, -1] or None where an object is absent"
  try:
    rows = [[[math.nan] * 4 if box is None else box for box in obj] for obj in value]
    boxes = np.asarray(rows, dtype=np.float64)
  except (ValueError, TypeError) as e:
    raise schema.malformed("omni_r1", key, expected, value) from e
  if boxes.ndim != 3 or 0 in boxes.shape or boxes.shape[2] != 4 or np.isinf(boxes).any():
    raise schema.malformed("omni_r1", key, expected, value)
  boxes[(boxes == -1).all(axis=-1)] = math.nan
  return boxes


def _keyframes(answer: str, num_frames: int) -> tuple[int, int, list[Keyframe]]:
  """(J, objects with all fields, valid keyframes) of the answer text."""
  spans = json_spans(answer)
  complete, valid = 0, []
  for span in spans:
    obj = parse_literal(span, python=False)
    if not isinstance(obj, dict):
      continue
    start, end = parse_time(obj.get("start_time")), parse_time(obj.get("end_time"))
    description = obj.get("description")
    if start is None or end is None or not isinstance(description, str):
      continue
    complete += 1
    if start > end or end > num_frames / FPS:
      continue
    valid.append(Keyframe(start, end, description, min(int(start * FPS), num_frames - 1),
                          min(int(end * FPS), num_frames - 1)))
  return len(spans), complete, valid


def grounding_requests(completion: str, num_frames: int) -> list[tuple[int, str]]:
  """(frame index, description) pairs the detail system grounds for a completion over `num_frames`
  frames: the first TARGET_KEYFRAMES unique frames of its valid intervals, ascending, each with the
  description of the first valid interval holding it ([] without a valid interval)."""
  text = completion if isinstance(completion, str) else ""
  _, _, keyframes = _keyframes(extract_tag(text, "answer") or "", num_frames)
  return _requests(keyframes)


def _requests(keyframes: Sequence[Keyframe]) -> list[tuple[int, str]]:
  unique = sorted({f for k in keyframes for f in range(k.first_frame, k.last_frame + 1)})
  return [(frame, next(k.description for k in keyframes if k.first_frame <= frame <= k.last_frame))
          for frame in unique[:TARGET_KEYFRAMES]]


def _detail_answer(frame: int, description: str, context: Mapping[str, Any], timeout_s: float):
  """The detail system's answer for one keyframe: from the batched `detail_answers`, else a
  `detail_system` call; a `JudgeCall`."""
  answers = context.get("detail_answers")
  if answers is None:
    return call_judge(context["detail_system"], frame, description, timeout_s=timeout_s, validate=_as_text)
  status = context.get("detail_status", JUDGE_OK)
  if status != JUDGE_OK:
    return JudgeCall(status, error=str(context.get("detail_error", "")) or f"detail call {status}")
  text = answers.get(frame, answers.get(str(frame)))
  if not isinstance(text, str):
    return JudgeCall(JUDGE_ERROR, error=f"no detail answer for frame {frame}")
  return JudgeCall(JUDGE_OK, text)


def _detail_boxes(text: str, num_obj: int, context: Mapping[str, Any]) -> tuple[list[list[float] | None], int]:
  """The first `num_obj` boxes of a detail answer (None where unreadable) and the extra count."""
  spans = json_spans(text)
  boxes: list[list[float] | None] = []
  for span in spans[:num_obj]:
    parsed = parse_boxes(span)
    box = parsed[0] if parsed and len(parsed) == 1 else None
    if box is not None and context.get("frame_hw") is not None:
      defaults = VisionProcessorConfig()
      box = to_original_pixels(box, tuple(context["frame_hw"]),
                               context.get("detail_min_pixels", defaults.min_pixels),
                               context.get("detail_max_pixels", defaults.max_pixels)).tolist()
    boxes.append(box)
  boxes += [None] * (num_obj - len(boxes))
  return boxes, max(0, len(spans) - num_obj)


def _as_text(value: Any) -> str:
  if not isinstance(value, str):
    raise TypeError(f"detail system answered {type(value).__name__}, expected text")
  return value


def _matched_ious(truth: np.ndarray, predicted: Sequence[list[float] | None]) -> list[float]:
  """Hungarian-matched IoU of each present ground-truth box `truth` `[num_obj, 4]` in one frame."""
  ious = np.zeros((len(truth), len(predicted)))
  for i, gt in enumerate(truth):
    for j, box in enumerate(predicted):
      if box is not None and not np.isnan(gt).any():
        ious[i, j] = box_iou(gt, box)
  matched = dict(hungarian_match(ious, maximize=True))
  return [float(ious[i, matched[i]]) if i in matched else 0.0
          for i in range(len(truth)) if not np.isnan(truth[i]).any()]


@register("omni_r1")
def omni_r1(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  """Scores one Omni-R1 global-system answer (see the module docstring)."""
  truth = _truth_boxes(ground_truth)
  num_obj, num_frames = truth.shape[:2]
  present = ~np.isnan(truth).any(axis=-1)  # [num_obj, F]
  alpha_k, alpha_a = float(context.get("alpha_k", 1.0)), float(context.get("alpha_a", 1.0))
  text = completion if isinstance(completion, str) else ""
  comps = {"format": float(is_think_answer(text)), "cum": 0.0, "frame_r": 0.0, "overlap": 0.0, "avg_iou": 0.0,
           "mismatch": 0.0, "parsed": 0.0, "num_objects": 0.0, "valid_objects": 0.0, "grounded_frames": 0.0,
           "detail_failed": 0.0, "detail_unparsed": 0.0, "keyframe_hit": 0.0}
  info: dict[str, Any] = {}

  num_objects, complete, keyframes = _keyframes(extract_tag(text, "answer") or "", num_frames)
  comps.update(num_objects=float(num_objects), valid_objects=float(len(keyframes)), parsed=float(complete > 0))
  if num_objects == 0:
    return RewardResult(comps["format"], comps, info)
  coverage = sum(float(present[:, k.first_frame:k.last_frame + 1].mean()) for k in keyframes)
  comps["cum"] = (MATCH_REWARD * num_objects + ELEMENT_REWARD * complete + TIME_CONSISTENCY_REWARD * len(keyframes)
                  + coverage) / num_objects
  if not keyframes:
    return RewardResult(comps["cum"] + comps["format"], comps, info)

  lengths = [k.last_frame - k.first_frame + 1 for k in keyframes]
  unique = sorted({f for k in keyframes for f in range(k.first_frame, k.last_frame + 1)})
  comps["overlap"] = (sum(min(0.0, INTERVAL_LENGTH_PENALTY * (1 - n)) for n in lengths)
                      - OVERLAP_PENALTY * (sum(lengths) - len(unique)))
  gap = TARGET_KEYFRAMES - len(unique)
  comps["frame_r"] = GAP_REWARD * (len(unique) if gap >= 0 else TARGET_KEYFRAMES + gap - 1)

  requests = _requests(keyframes)
  grounded = [frame for frame, _ in requests]
  info["keyframes"] = grounded
  comps["keyframe_hit"] = float(present[:, grounded].any(axis=0).mean())
  if context.get("detail_answers") is not None or context.get("detail_system") is not None:
    timeout_s = float(context.get("detail_timeout_s", DEFAULT_TIMEOUT_S))
    ious, extra, errors, unparsed = [], 0, [], 0
    for frame, description in requests:
      call = _detail_answer(frame, description, context, timeout_s)
      if call.ok:
        boxes, frame_extra = _detail_boxes(call.value, num_obj, context)
        unparsed += all(box is None for box in boxes)
      else:  # a failed call grounds nothing in its frame
        boxes, frame_extra = [None] * num_obj, 0
        errors.append(call.error)
      ious += _matched_ious(truth[:, frame], boxes)
      extra += frame_extra
    comps["detail_failed"] = float(bool(errors))
    comps["detail_unparsed"] = unparsed / len(grounded)
    comps["grounded_frames"] = float(len(grounded))
    if errors:
      info["detail_errors"] = errors
    comps["avg_iou"] = float(np.mean(ious)) if ious else 0.0
    comps["mismatch"] = -EXTRA_BOX_PENALTY * extra / num_obj / len(grounded) if extra else 0.0
  reward = (comps["cum"] + alpha_k * (comps["frame_r"] + comps["overlap"]) + alpha_a * comps["avg_iou"]
            + comps["mismatch"])
  return RewardResult(reward + comps["format"], comps, info)
