"""Tests for r1jax.rewards.geometry."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from r1jax.rewards import geometry


def test_ramp():
  assert geometry.ramp(5, 10, 50) == 1.0
  assert geometry.ramp(10, 10, 50) == 1.0
  assert geometry.ramp(30, 10, 50) == 0.5
  assert geometry.ramp(50, 10, 50) == 0.0
  assert geometry.ramp(math.inf, 10, 50) == 0.0
  assert geometry.ramp(math.nan, 10, 50) == 0.0


def test_box_iou():
  assert geometry.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
  assert geometry.box_iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
  assert geometry.box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
  assert geometry.box_iou([2, 2, 0, 0], [0, 0, 2, 2]) == 0.0  # an inverted box is empty
  assert geometry.box_iou([0, 0, 1e300, 1e300], [0, 0, 1e300, 1e300]) == 0.0  # areas overflow: undefined


def test_union_area_by_inclusion_exclusion():
  # |A|=16, |B|=16, |C|=6, |AB|=4, |AC|=3, |BC|=2, |ABC|=1 -> 16+16+6-4-3-2+1 = 30.
  assert geometry.union_area([[0, 0, 4, 4], [2, 2, 6, 6], [3, 0, 5, 3]]) == pytest.approx(30.0)
  assert geometry.union_area([[0, 0, 4, 4], [1, 1, 2, 2]]) == pytest.approx(16.0)
  assert geometry.union_area([]) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 12)] * 4), min_size=0, max_size=6),
       st.lists(st.tuples(*[st.integers(0, 12)] * 4), min_size=0, max_size=6))
def test_union_iou_matches_rasterised_areas(raw_a, raw_b):
  def grid(boxes):
    cells = np.zeros((12, 12), bool)
    for x1, y1, x2, y2 in boxes:
      cells[x1:x2, y1:y2] = True  # inverted boxes paint nothing, like the geometry convention
    return cells

  a, b = grid(raw_a), grid(raw_b)
  assert geometry.union_area(raw_a) == pytest.approx(a.sum())
  union = (a | b).sum()
  expected = (a & b).sum() / union if union else 0.0
  assert geometry.union_iou(raw_a, raw_b) == pytest.approx(expected)


def test_union_iou():
  assert geometry.union_iou([[0, 0, 2, 2], [2, 0, 4, 2]], [[0, 0, 4, 2]]) == pytest.approx(1.0)
  assert geometry.union_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]]) == pytest.approx(1 / 7)
  assert geometry.union_iou([], [[0, 0, 1, 1]]) == 0.0


def test_box3d_iou():
  assert geometry.box3d_iou([0, 0, 0, 2, 2, 2], [1, 1, 1, 3, 3, 3]) == pytest.approx(1 / 15)
  assert geometry.box3d_iou([0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]) == 1.0
  assert geometry.box3d_iou([0, 0, 0, 1, 1, 1], [0, 0, 5, 1, 1, 6]) == 0.0


def test_point_in_box_and_polygon():
  assert geometry.point_in_box((1, 1), [0, 0, 2, 2])
  assert geometry.point_in_box((2, 0), [0, 0, 2, 2])  # border counts
  assert not geometry.point_in_box((2.1, 1), [0, 0, 2, 2])
  l_shape = [(0, 0), (4, 0), (4, 1), (1, 1), (1, 4), (0, 4)]
  assert geometry.point_in_polygon((0.5, 3), l_shape)
  assert geometry.point_in_polygon((3, 0.5), l_shape)
  assert not geometry.point_in_polygon((3, 3), l_shape)  # in the notch of the concave polygon
  assert geometry.point_in_polygon((4, 0.5), l_shape)  # on the border
  assert not geometry.point_in_polygon((0, 0), [(0, 0), (1, 1)])  # fewer than 3 vertices


def test_discrete_frechet_by_hand():
  # Coupling DP: c00=1, c10=√2, c20=√5, c01=√5, c11=max(1, √2)=√2, c21=max(√2, 1)=√2.
  p, q = [(0, 0), (1, 0), (2, 0)], [(0, 1), (2, 1)]
  assert geometry.discrete_frechet(p, q) == pytest.approx(math.sqrt(2))
  assert geometry.discrete_frechet(p, p) == 0.0
  assert geometry.discrete_frechet([], q) == math.inf


def test_resample_polyline():
  points = [(0, 0), (1, 0), (10, 0)]
  np.testing.assert_allclose(geometry.resample_polyline(points, 3), points)
  np.testing.assert_allclose(geometry.resample_polyline(points, 5), [(0, 0), (0.5, 0), (1, 0), (5.5, 0), (10, 0)])
  np.testing.assert_allclose(geometry.resample_polyline([(1, 2)], 3), [(1, 2)] * 3)
  with pytest.raises(ValueError, match="n >= 1"):
    geometry.resample_polyline([], 3)


def test_interval_iou():
  assert geometry.interval_iou([0, 2], [1, 3]) == pytest.approx(1 / 3)
  assert geometry.interval_iou([0, 1], [2, 3]) == 0.0
  assert geometry.interval_iou([1, 1], [1, 1]) == 0.0


def test_hungarian_match():
  assert sorted(geometry.hungarian_match([[1, 5], [3, 1]])) == [(0, 1), (1, 0)]
  assert sorted(geometry.hungarian_match([[1, 5], [3, 1]], maximize=False)) == [(0, 0), (1, 1)]
  assert sorted(geometry.hungarian_match([[1, 2, 9]])) == [(0, 2)]
  assert sorted(geometry.hungarian_match([[math.nan, 1], [1, 0]])) == [(0, 1), (1, 0)]
  assert geometry.hungarian_match(np.zeros((0, 3))) == []
