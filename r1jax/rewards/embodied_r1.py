"""Embodied-R1 reward: spatial QA and pointing (reference points, free space, visual traces,
region pointing).

Source: "Embodied-R1: Reinforced Embodied Reasoning for General Robotic Manipulation" (2025) and
its public `verl/utils/reward_score/embodiedr1.py`.

Ground truth keys:
  answer: `<type>TYPE</type>` followed by the task's ground truth:
    general_qa, spatial_qa         answer text (graded by `grading.grade_answer`)
    point_ref                      JSON list of reference points `[[x, y], ...]`
    fsd_free_point (free_point)    JSON `{"bbox": [x1, y1, x2, y2], "free_points": [[x, y] x 8]}`
    fsd_visual_trace (visual_trace) JSON `{"trajectory": [[x, y], ...]}`
    point_rec, grounding_rec       JSON `{"segmentation": [[x, y], ...]}` (a polygon)
  The short names in brackets are accepted too. A missing answer, an unknown type or a payload
  that does not fit its type raises, naming the field.
Context keys (all optional):
  width, height: original image size. When given (here or in the ground truth), predicted points
    are mapped from resized-input pixels to original pixels with `smart_resize`; without them
    points are compared as given, like the source.
  resized_height, resized_width: the model-input size, when the processor passes it.
  min_pixels, max_pixels: otherwise the resized size is `smart_resize` with these limits
    (defaults: `r1jax.processing.smart_resize`'s, 56*56 and 28*28*1280).

Completion: `<think>…</think><answer>…<point>[[x, y], ...]</point>…</answer>`.

Formula (total in [0, 1]); fmt = think/answer fullmatch, pfmt = a `<point>…</point>` is present;
the point terms read the first `<point>` block (a JSON list of [x, y] lists) and are 0 if it does
not parse or is empty:
  general_qa / spatial_qa: 0.1 fmt + 0.9 acc.
  point_ref:     0.1 fmt + 0.1 pfmt + 0.8 dist,
                 dist = mean over predicted points of Ramp(distance to nearest GT point, 10, 50).
  free_point:    0.1 fmt + 0.1 pfmt + 0.6 (fraction of predicted points inside bbox) + 0.2 dist
                 (dist as above against the free points).
  visual_trace:  0.1 fmt + 0.1 pfmt + 0.1 [n = 8] + 0.3 Ramp(discrete Fréchet, 10, 100)
                 + 0.4 Ramp(RMSE after linear resampling to equal length, 5, 50);
                 the last three terms are 0 unless exactly 8 points are predicted.
  point_rec / grounding_rec: 0.1 fmt + 0.1 pfmt + 0.8 (fraction of predicted points inside the
                 polygon).

Choices:
  * dist is the mean of per-point ramps, as the r1jax spec states. The public code ramps the mean
    distance instead (Ramp(mean_i min_j d_ij, 10, 50)); the two agree when all predicted points
    sit on the same side of the ramp's flat parts.
  * RMSE resampling: both trajectories are interpolated at max(n_pred, n_gt) evenly spaced
    fractional indices (`geometry.resample_polyline`), RMSE = sqrt(mean squared point distance),
    as the public code does.
  * Points on a polygon's border count as inside (the public code's ray casting leaves it
    to floating point).
  * "An empty point list scores 0" applies to the point terms; fmt and pfmt still count.
  * Predicted points are read as the public code reads them: JSON only, a list of [x, y] lists.
    A bare point `[x, y]`, Python tuples `[(x, y)]` and Qwen-style `{"point_2d": [x, y]}` dicts
    do not parse (a reward that took them would let the policy drift to formats the paper's
    evaluation rejects). Ground-truth payloads are read with the shared, lenient parsers.
  * QA accuracy reads the `<answer>` content, or the whole completion if there is none (as the
    public code does).

Components: format, point_format, accuracy (the task's accuracy terms combined, in [0, 1]),
parse (1 if the point list parsed; for QA, if an `<answer>` block was found), plus per task:
dist, in_box, n_ok, frechet, rmse, in_polygon (the ramped reward terms), and the paper's metrics:
  in_region (point_rec / grounding_rec: in_polygon; free_point: in_box): point-in-region accuracy;
  nearest_px (point_ref, free_point): mean distance of the predicted points to their nearest
    ground-truth point, in pixels;
  rmse_px, frechet_px (visual_trace): RMSE after resampling and discrete Fréchet distance to the
    ground-truth trace, in pixels, whatever the number of predicted points.
A completion without a parsed point list scores in_region 0 and, as its pixel metrics, the image
diagonal (the farthest a point could be), from the ground truth's or context's height / width, else
the context's `original_image_sizes` (as r1jax's pipeline passes them); with no size known the pixel
metrics are left out of that sample's components.
"""
from __future__ import annotations

from collections.abc import Mapping
import math
import re
from typing import Any

import numpy as np

from r1jax.rewards import geometry, grading, parsing, schema
from r1jax.rewards.base import RewardResult, register

TRACE_POINTS = 8
# smart_resize's own defaults: the public code does not resize coordinates, so r1jax's processor
# defaults apply when a size is given.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
_TYPE_ALIASES = {
    "general_qa": "qa", "spatial_qa": "qa", "point_ref": "point_ref",
    "fsd_free_point": "free_point", "free_point": "free_point",
    "fsd_visual_trace": "visual_trace", "visual_trace": "visual_trace",
    "point_rec": "region", "grounding_rec": "region",
}
_TYPE_TAG = re.compile(r"<type>(.*?)</type>", re.DOTALL)


# What each task's ground-truth payload (after the type tag) must be, for error messages.
_PAYLOADS = {
    "qa": "the answer text",
    "point_ref": "a JSON list of [x, y] reference points",
    "free_point": 'JSON {"bbox": [x1, y1, x2, y2], "free_points": [[x, y], ...]}',
    "visual_trace": 'JSON {"trajectory": [[x, y], ...]}',
    "region": 'JSON {"segmentation": [[x, y], ...]} with at least 3 points',
}


def parse_ground_truth(answer: Any) -> tuple[str | None, str]:
  """`<type>TYPE</type>REST` -> (TYPE, stripped REST); (None, "") without a type tag."""
  if not isinstance(answer, str):
    return None, ""
  match = _TYPE_TAG.search(answer)
  if not match:
    return None, ""
  return match.group(1).strip(), answer[match.end():].strip()


def _payload(kind: str, text: str) -> Any:
  """The task's ground truth parsed from `text`, or None if it does not fit the task."""
  if kind == "qa":
    return text or None
  gt = parsing.parse_literal(text)
  if kind == "point_ref":
    return parsing.parse_points(gt) or None
  if not isinstance(gt, dict):
    return None
  if kind == "free_point":
    box, free = parsing.parse_boxes(gt.get("bbox")), parsing.parse_points(gt.get("free_points"))
    return (box[0], free) if box and len(box) == 1 and free else None
  if kind == "visual_trace":
    return parsing.parse_points(gt.get("trajectory")) or None
  polygon = parsing.parse_points(gt.get("segmentation"))
  return polygon if polygon and len(polygon) >= 3 else None


def parse_answer(answer: Any) -> tuple[str, str, Any]:
  """A released `answer` -> (type name, task kind, parsed payload); raises naming `answer` if malformed.

  Kinds: 'qa' (payload: the text), 'point_ref' ([(x, y)]), 'free_point' ((box, [(x, y)])),
  'visual_trace' ([(x, y)]), 'region' (the polygon [(x, y)]).
  """
  type_name, text = parse_ground_truth(answer)
  kind = _TYPE_ALIASES.get(type_name or "")
  if kind is None:
    raise schema.malformed("embodied_r1", "answer", f"'<type>TYPE</type>…' with TYPE one of {sorted(_TYPE_ALIASES)}",
                           answer)
  payload = _payload(kind, text)
  if payload is None:
    raise schema.malformed("embodied_r1", "answer", f"'<type>{type_name}</type>' then {_PAYLOADS[kind]}", answer)
  return type_name, kind, payload


def _truth(ground_truth: Any, context: Mapping[str, Any]) -> tuple[str, str, Any]:
  """(type name, task kind, parsed payload); raises naming `answer` (or the image size) if malformed."""
  answer = schema.field("embodied_r1", ground_truth, "answer", "'<type>TYPE</type>' then the task's ground truth")
  truth = parse_answer(answer)
  schema.image_size("embodied_r1", ground_truth, context, required=False)
  return truth


def mean_nearest_ramp(pred: list[tuple[float, float]], targets: list[tuple[float, float]],
                      lo: float = 10.0, hi: float = 50.0) -> float:
  """Mean over predicted points of Ramp(distance to the nearest target, lo, hi)."""
  if not pred or not targets:
    return 0.0
  with np.errstate(over="ignore", invalid="ignore"):
    distances = np.linalg.norm(np.asarray(pred)[:, None, :] - np.asarray(targets)[None, :, :], axis=-1)
  return float(np.mean([geometry.ramp(d, lo, hi) for d in distances.min(axis=1)]))


def trajectory_rmse(pred: list[tuple[float, float]], truth: list[tuple[float, float]]) -> float:
  """RMSE between two polylines resampled to max(len) points (inf if either is empty)."""
  if not pred or not truth:
    return math.inf
  n = max(len(pred), len(truth))
  with np.errstate(over="ignore", invalid="ignore"):
    diff = geometry.resample_polyline(pred, n) - geometry.resample_polyline(truth, n)
    return float(np.sqrt(np.sum(diff ** 2) / n))


def _fraction(hits: list[bool]) -> float:
  return sum(hits) / len(hits) if hits else 0.0


def _pixel_metrics(kind: str, pred: list, payload: Any) -> dict[str, float]:
  """The paper's distance metrics (see the module docstring) for a non-empty `pred`."""
  if kind == "visual_trace":
    return {"rmse_px": trajectory_rmse(pred, payload), "frechet_px": geometry.discrete_frechet(pred, payload)}
  if kind not in ("point_ref", "free_point"):
    return {}
  targets = payload[1] if kind == "free_point" else payload
  with np.errstate(over="ignore", invalid="ignore"):
    distances = np.linalg.norm(np.asarray(pred)[:, None, :] - np.asarray(targets)[None, :, :], axis=-1)
    return {"nearest_px": float(distances.min(axis=1).mean())}


def _image_diagonal(truth: Mapping[str, Any], context: Mapping[str, Any]) -> float | None:
  """The original image's diagonal in pixels, or None when no size is known."""
  hw = parsing.find_image_hw(truth, context)
  sizes = context.get("original_image_sizes")
  if hw is None and isinstance(sizes, (list, tuple)) and sizes:
    try:
      hw = tuple(float(v) for v in sizes[0])
    except (TypeError, ValueError):
      hw = None
  return math.hypot(*hw) if hw is not None and len(hw) == 2 else None


def _metrics(kind: str, pred: list | None, payload: Any, truth: Mapping[str, Any],
             context: Mapping[str, Any], extra: Mapping[str, float]) -> dict[str, float]:
  """in_region and the pixel metrics of one completion (`pred` None or empty: nothing parsed)."""
  metrics = {}
  if kind in ("region", "free_point"):
    metrics["in_region"] = extra.get("in_polygon" if kind == "region" else "in_box", 0.0)
  names = {"visual_trace": ("rmse_px", "frechet_px"), "point_ref": ("nearest_px",),
           "free_point": ("nearest_px",)}.get(kind, ())
  if pred:
    metrics.update({k: v for k, v in _pixel_metrics(kind, pred, payload).items() if math.isfinite(v)})
  diagonal = _image_diagonal(truth, context)
  if diagonal is not None:
    metrics.update({name: diagonal for name in names if name not in metrics})
  return metrics


def _points_accuracy(kind: str, pred: list, payload: Any) -> tuple[float, dict[str, float]]:
  """(the task's weighted point terms, at most 0.8; their components) for non-empty `pred`."""
  if kind == "point_ref":
    dist = mean_nearest_ramp(pred, payload)
    return 0.8 * dist, {"dist": dist}
  if kind == "free_point":
    box, free = payload
    in_box = _fraction([geometry.point_in_box(p, box) for p in pred])
    dist = mean_nearest_ramp(pred, free)
    return 0.6 * in_box + 0.2 * dist, {"in_box": in_box, "dist": dist}
  if kind == "visual_trace":
    if len(pred) != TRACE_POINTS:
      return 0.0, {"n_ok": 0.0, "frechet": 0.0, "rmse": 0.0}
    frechet = geometry.ramp(geometry.discrete_frechet(pred, payload), 10.0, 100.0)
    rmse = geometry.ramp(trajectory_rmse(pred, payload), 5.0, 50.0)
    return 0.1 + 0.3 * frechet + 0.4 * rmse, {"n_ok": 1.0, "frechet": frechet, "rmse": rmse}
  in_polygon = _fraction([geometry.point_in_polygon(p, payload) for p in pred])
  return 0.8 * in_polygon, {"in_polygon": in_polygon}


def _json_points(content: str) -> list[tuple[float, float]] | None:
  """Points from a JSON list of [x, y] lists, as the public code reads them; None otherwise."""
  value = parsing.parse_literal(content, python=False)
  if not isinstance(value, list) or not all(isinstance(point, list) for point in value):
    return None
  return parsing.parse_points(value)


def _predicted_points(completion: str, truth: Mapping[str, Any], context: Mapping[str, Any]) -> list | None:
  content = parsing.extract_tag(completion, "point")
  points = _json_points(content) if content is not None else None
  if not points:
    return points
  frame = parsing.image_frame(truth, context, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
  return points if frame is None else [tuple(p) for p in frame.to_original(points).tolist()]


@register("embodied_r1")
def embodied_r1_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  type_name, kind, payload = _truth(ground_truth, context)
  completion = completion if isinstance(completion, str) else ""
  fmt = float(parsing.is_think_answer(completion))
  info: dict[str, Any] = {"type": type_name}
  if kind == "qa":
    accuracy = grading.grade_answer(parsing.answer_or_text(completion), payload)
    parsed = parsing.extract_tag(completion, "answer") is not None
    components = {"format": fmt, "point_format": 0.0, "accuracy": accuracy, "parse": float(parsed)}
    return RewardResult(total=0.1 * fmt + 0.9 * accuracy, components=components, info=info)
  pfmt = float(parsing.extract_tag(completion, "point") is not None)
  points = _predicted_points(completion, ground_truth, context)
  point_terms, extra = 0.0, {}
  if points:
    point_terms, extra = _points_accuracy(kind, points, payload)
  components = {"format": fmt, "point_format": pfmt, "accuracy": point_terms / 0.8, "parse": float(points is not None),
                **extra, **_metrics(kind, points, payload, ground_truth, context, extra)}
  return RewardResult(total=0.1 * fmt + 0.1 * pfmt + point_terms, components=components, info=info)
