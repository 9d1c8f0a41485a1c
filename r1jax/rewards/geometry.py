"""Geometry shared by the rewards: ramps, IoUs (2-D, union of boxes, 3-D, 1-D), point tests,
trajectory distances and optimal matching.

Boxes are `[x1, y1, x2, y2]` (3-D: `[x1, y1, z1, x2, y2, z2]`) taken as given: a box with
x2 < x1 (or y2 < y1) is empty, and it never earns overlap. Inputs are finite floats (the parsers
in `r1jax.rewards.parsing` guarantee it); every IoU lies in [0, 1] and is 0 when undefined
(empty union, or areas overflowing to inf for absurdly large coordinates).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize

Box = Sequence[float]
Point = Sequence[float]


def ramp(d: float, lo: float, hi: float) -> float:
  """1 if d <= lo, 0 if d >= hi, linear in between (NaN counts as far: 0)."""
  if d <= lo:
    return 1.0
  if d >= hi or not d == d:  # NaN compares False everywhere
    return 0.0
  return float((hi - d) / (hi - lo))


def _ratio(overlap: float, union: float) -> float:
  """overlap / union clipped to [0, 1]; 0 when undefined (empty union, or inf/NaN from huge
  coordinates whose areas overflow)."""
  if not union > 0:
    return 0.0
  value = overlap / union
  return float(min(1.0, max(0.0, value))) if math.isfinite(value) else 0.0


def _area(box: Box) -> float:
  return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Box, b: Box) -> float:
  """IoU of two boxes `[x1, y1, x2, y2]` (continuous coordinates, no +1)."""
  inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  return _ratio(inter, _area(a) + _area(b) - inter)


def _union_areas(boxes_a: Sequence[Box], boxes_b: Sequence[Box]) -> tuple[float, float, float]:
  # Huge coordinates overflow to inf (or inf - inf = NaN); the IoU callers turn that into 0.
  with np.errstate(over="ignore", invalid="ignore"):
    return _union_areas_unguarded(boxes_a, boxes_b)


def _union_areas_unguarded(boxes_a: Sequence[Box], boxes_b: Sequence[Box]) -> tuple[float, float, float]:
  """Exact areas of (union A, union B, union A ∩ union B) by coordinate compression.

  The x and y edges of all boxes cut the plane into cells, each either fully covered by a box or
  not. A sweep over the x-slabs counts, per slab, which y-cells each set covers, so memory stays
  O(n) and time O(n^2) for n boxes.
  """
  a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
  b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
  a = a[(a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1])]
  b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
  both = np.concatenate([a, b])
  if not len(both):
    return 0.0, 0.0, 0.0
  xs = np.unique(np.concatenate([both[:, 0], both[:, 2]]))
  ys = np.unique(np.concatenate([both[:, 1], both[:, 3]]))
  heights = np.diff(ys)

  def y_cell_coverage(boxes: np.ndarray, x_left: float, x_right: float) -> np.ndarray:
    """Bool `[len(ys) - 1]`: y-cells covered within the slab by any of `boxes`."""
    active = boxes[(boxes[:, 0] <= x_left) & (boxes[:, 2] >= x_right)]
    delta = np.zeros(len(ys), dtype=np.int64)
    np.add.at(delta, np.searchsorted(ys, active[:, 1]), 1)
    np.add.at(delta, np.searchsorted(ys, active[:, 3]), -1)
    return np.cumsum(delta)[:-1] > 0

  area_a = area_b = area_ab = 0.0
  for x_left, x_right in zip(xs[:-1], xs[1:]):
    width = x_right - x_left
    cov_a = y_cell_coverage(a, x_left, x_right)
    cov_b = y_cell_coverage(b, x_left, x_right)
    area_a += float(width * (heights @ cov_a))
    area_b += float(width * (heights @ cov_b))
    area_ab += float(width * (heights @ (cov_a & cov_b)))
  return area_a, area_b, area_ab


def union_area(boxes: Sequence[Box]) -> float:
  """Exact area covered by the union of `boxes` `[n, 4]` (overlaps counted once)."""
  return _union_areas(boxes, [])[0]


def union_iou(pred_boxes: Sequence[Box], gt_boxes: Sequence[Box]) -> float:
  """IoU between the union of `pred_boxes` and the union of `gt_boxes`, computed exactly."""
  area_p, area_g, inter = _union_areas(pred_boxes, gt_boxes)
  return _ratio(inter, area_p + area_g - inter)


def box3d_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two axis-aligned 3-D boxes `[x1, y1, z1, x2, y2, z2]`."""
  inter = 1.0
  for k in range(3):
    inter *= max(0.0, min(a[k + 3], b[k + 3]) - max(a[k], b[k]))
  vol_a = math.prod(max(0.0, a[k + 3] - a[k]) for k in range(3))
  vol_b = math.prod(max(0.0, b[k + 3] - b[k]) for k in range(3))
  return _ratio(inter, vol_a + vol_b - inter)


def point_in_box(p: Point, box: Box) -> bool:
  """True if point (x, y) lies in `[x1, y1, x2, y2]`, borders included."""
  return bool(box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
  cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
  scale = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1.0)
  return (abs(cross) <= 1e-9 * scale * scale
          and min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
          and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
  """True if `p` lies inside `polygon` `[n, 2]` (even-odd rule) or on its border.

  Polygons with fewer than 3 vertices contain nothing.
  """
  n = len(polygon)
  if n < 3:
    return False
  x, y = p[0], p[1]
  inside = False
  for k in range(n):
    a, b = polygon[k], polygon[(k + 1) % n]
    if _on_segment(p, a, b):
      return True
    if (a[1] > y) != (b[1] > y):
      x_cross = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
      if x < x_cross:
        inside = not inside
  return inside


def discrete_frechet(p: Sequence[Point], q: Sequence[Point]) -> float:
  """Discrete Fréchet distance between polylines `p` `[n, 2]` and `q` `[m, 2]` (inf if empty)."""
  p_arr = np.asarray(p, dtype=np.float64).reshape(-1, 2)
  q_arr = np.asarray(q, dtype=np.float64).reshape(-1, 2)
  if not len(p_arr) or not len(q_arr):
    return math.inf
  dist = np.linalg.norm(p_arr[:, None, :] - q_arr[None, :, :], axis=-1)
  coupling = np.empty_like(dist)
  for i in range(len(p_arr)):
    for j in range(len(q_arr)):
      if i == 0 and j == 0:
        prev = 0.0
      elif i == 0:
        prev = coupling[0, j - 1]
      elif j == 0:
        prev = coupling[i - 1, 0]
      else:
        prev = min(coupling[i - 1, j], coupling[i - 1, j - 1], coupling[i, j - 1])
      coupling[i, j] = max(prev, dist[i, j])
  return float(coupling[-1, -1])


def resample_polyline(points: Sequence[Point], n: int) -> np.ndarray:
  """`n` points `[n, 2]` linearly interpolated along `points` at evenly spaced fractional indices.

  Point k of the result sits at index k * (len(points) - 1) / (n - 1) of the input, so both ends
  are kept and resampling to the input's own length returns it unchanged (Embodied-R1's
  trajectory RMSE relies on that). A single input point is repeated `n` times.
  """
  pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
  if not len(pts) or n < 1:
    raise ValueError(f"resample_polyline needs points and n >= 1, got {len(pts)} points, n={n}")
  if len(pts) == 1:
    return np.repeat(pts, n, axis=0)
  source = np.linspace(0.0, 1.0, len(pts))
  target = np.linspace(0.0, 1.0, n)
  return np.stack([np.interp(target, source, pts[:, 0]), np.interp(target, source, pts[:, 1])], axis=-1)


def interval_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of 1-D intervals `[start, end]` (an interval with end < start is empty)."""
  inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
  return _ratio(inter, max(0.0, a[1] - a[0]) + max(0.0, b[1] - b[0]) - inter)


def hungarian_match(score_matrix: Sequence[Sequence[float]], maximize: bool = True) -> list[tuple[int, int]]:
  """Optimal one-to-one assignment of rows to columns of `score_matrix` `[rows, cols]`.

  Returns (row, col) pairs, min(rows, cols) of them, maximising (or minimising) the summed score.
  Non-finite scores count as the worst possible value.
  """
  scores = np.asarray(score_matrix, dtype=np.float64)
  if scores.ndim != 2 or scores.size == 0:
    return []
  finite = np.isfinite(scores)
  if not finite.all():
    worst = (scores[finite].min() - 1.0 if maximize else scores[finite].max() + 1.0) if finite.any() else 0.0
    scores = np.where(finite, scores, worst)
  rows, cols = optimize.linear_sum_assignment(scores, maximize=maximize)
  return [(int(i), int(j)) for i, j in zip(rows, cols)]
