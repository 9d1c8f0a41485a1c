"""Hand-computed cases for the Embodied-R1 reward."""
import json
import math

import pytest

from r1jax.processing import smart_resize
from r1jax.rewards import embodied_r1


def _points(points, think=True):
  prefix = "<think>look at the table</think>" if think else ""
  return f"{prefix}<answer><point>{json.dumps(points)}</point></answer>"


def _truth(kind, payload):
  return {"answer": f"<type>{kind}</type>{payload if isinstance(payload, str) else json.dumps(payload)}"}


def test_qa():
  truth = _truth("spatial_qa", "B")
  assert embodied_r1.embodied_r1_reward("<think>t</think><answer>(B)</answer>", truth).total == pytest.approx(1.0)
  assert embodied_r1.embodied_r1_reward("<think>t</think><answer>C</answer>", truth).total == pytest.approx(0.1)
  assert embodied_r1.embodied_r1_reward("B", truth).total == pytest.approx(0.9)  # no format, whole text graded
  assert embodied_r1.embodied_r1_reward("<think>t</think><answer>3/4</answer>",
                                        _truth("general_qa", "0.75")).total == pytest.approx(1.0)


def test_point_ref_mean_of_ramps():
  truth = _truth("point_ref", [[10, 10], [100, 100]])
  perfect = embodied_r1.embodied_r1_reward(_points([[10, 10], [100, 100]]), truth)
  assert perfect.total == pytest.approx(1.0)
  # Distances to the nearest GT point: 0 -> 1, 30 -> (50 - 30) / 40 = 0.5, 60 -> 0; mean 0.5.
  partial = embodied_r1.embodied_r1_reward(_points([[10, 10], [40, 10], [160, 100]]), truth)
  assert partial.components["dist"] == pytest.approx(0.5)
  assert partial.total == pytest.approx(0.1 + 0.1 + 0.8 * 0.5)


def test_point_format_and_empty_list():
  truth = _truth("point_ref", [[10, 10]])
  assert embodied_r1.embodied_r1_reward(_points([]), truth).total == pytest.approx(0.2)
  no_point = embodied_r1.embodied_r1_reward("<think>t</think><answer>[[10, 10]]</answer>", truth)
  assert no_point.components["point_format"] == 0 and no_point.total == pytest.approx(0.1)
  assert embodied_r1.embodied_r1_reward(_points([[10, 10]], think=False), truth).total == pytest.approx(0.9)
  broken = embodied_r1.embodied_r1_reward("<think>t</think><answer><point>[[10, 10]</point></answer>", truth)
  assert broken.components["parse"] == 0 and broken.total == pytest.approx(0.2)


def test_free_point():
  ground_truth = {"bbox": [0, 0, 50, 50], "free_points": [[10, 10]] * 8}
  truth = _truth("fsd_free_point", ground_truth)
  # One of two points inside the box; ramps 1 (distance 0) and 0 (distance 127).
  result = embodied_r1.embodied_r1_reward(_points([[10, 10], [100, 100]]), truth)
  assert result.components["in_box"] == 0.5 and result.components["dist"] == pytest.approx(0.5)
  assert result.total == pytest.approx(0.2 + 0.6 * 0.5 + 0.2 * 0.5)
  assert embodied_r1.embodied_r1_reward(_points([[10, 10]]), _truth("free_point", ground_truth)).total == (
      pytest.approx(1.0))


def test_visual_trace():
  trajectory = [[i * 20, 0] for i in range(8)]
  truth = _truth("fsd_visual_trace", {"trajectory": trajectory})
  assert embodied_r1.embodied_r1_reward(_points(trajectory), truth).total == pytest.approx(1.0)
  # Shifted 20 px: Fréchet 20 -> (100 - 20) / 90, RMSE 20 -> (50 - 20) / 45.
  shifted = embodied_r1.embodied_r1_reward(_points([[x, y + 20] for x, y in trajectory]), truth)
  assert shifted.components["frechet"] == pytest.approx(80 / 90)
  assert shifted.components["rmse"] == pytest.approx(30 / 45)
  assert shifted.total == pytest.approx(0.3 + 0.3 * 80 / 90 + 0.4 * 30 / 45)
  # Seven points: only fmt and pfmt count.
  assert embodied_r1.embodied_r1_reward(_points(trajectory[:7]), truth).total == pytest.approx(0.2)


def test_visual_trace_rmse_resamples_the_ground_truth():
  # GT of 2 points resampled to 8 evenly spaced points along x from 0 to 140: exactly the prediction.
  truth = _truth("visual_trace", {"trajectory": [[0, 0], [140, 0]]})
  result = embodied_r1.embodied_r1_reward(_points([[i * 20, 0] for i in range(8)]), truth)
  assert result.components["rmse"] == pytest.approx(1.0)
  assert embodied_r1.trajectory_rmse([(0, 0), (0, 0)], [(3, 4)]) == pytest.approx(5.0)
  assert embodied_r1.trajectory_rmse([], [(3, 4)]) == math.inf


@pytest.mark.parametrize("kind", ["point_rec", "grounding_rec"])
def test_points_in_polygon(kind):
  truth = _truth(kind, {"segmentation": [[0, 0], [10, 0], [10, 10], [0, 10]]})
  result = embodied_r1.embodied_r1_reward(_points([[5, 5], [20, 20], [10, 5], [1, 1]]), truth)
  assert result.components["in_polygon"] == 0.75
  assert result.total == pytest.approx(0.2 + 0.8 * 0.75)


def test_points_rescaled_when_image_size_is_given():
  # 1400x2000 (h x w) with the default limits: beta = sqrt(2.8e6 / 1003520) = 1.67037, height
  # floor(1400 / beta / 28) * 28 = 812, width floor(2000 / beta / 28) * 28 = 1176.
  assert smart_resize(1400, 2000) == (812, 1176)
  truth = _truth("point_ref", [[1000, 700]])
  resized_point = [[1000 * 1176 / 2000, 700 * 812 / 1400]]
  assert embodied_r1.embodied_r1_reward(_points(resized_point), truth, width=2000, height=1400).total == (
      pytest.approx(1.0))
  assert embodied_r1.embodied_r1_reward(_points(resized_point), truth).components["dist"] == 0  # 500 px away


@pytest.mark.parametrize("truth, error", [
    ({}, KeyError), ({"answer": None}, ValueError), ({"answer": 5}, ValueError), ({"answer": "no type tag"}, ValueError),
    (_truth("unknown", []), ValueError), (_truth("point_ref", "{broken"), ValueError), (_truth("point_ref", []), ValueError),
    (_truth("spatial_qa", ""), ValueError), (_truth("point_rec", {"x": 1}), ValueError),
    (_truth("point_rec", {"segmentation": [[0, 0], [1, 1]]}), ValueError),
    (_truth("free_point", {"bbox": [0, 0, 5], "free_points": [[1, 1]]}), ValueError),
    (_truth("free_point", {"bbox": [0, 0, 5, 5]}), ValueError), (_truth("visual_trace", {"trajectory": "NaN"}), ValueError),
])
def test_malformed_ground_truth_names_the_field(truth, error):
  # Each used to score 0 in every term that needs it (info["gt_error"] at best), like a wrong answer.
  with pytest.raises(error, match="embodied_r1: ground_truth.*'answer'"):
    embodied_r1.embodied_r1_reward(_points([[1, 2]]), truth)


def test_malformed_image_size_names_the_field():
  with pytest.raises(ValueError, match="embodied_r1: ground_truth.*'width/height'"):
    embodied_r1.embodied_r1_reward(_points([[1, 2]]), {**_truth("point_ref", [[1, 2]]), "width": 0, "height": 10})


@pytest.mark.parametrize("content", [
    "[10, 10]", "[(10, 10)]", "((10, 10),)", '[{"point_2d": [10, 10]}]', '{"point_2d": [10, 10]}', "[[10, 10],]",
    "[[10, 10, 1]]",
])
def test_points_must_be_a_json_list_of_pairs_as_the_public_code_reads_them(content):
  truth = _truth("point_ref", [[10, 10]])
  result = embodied_r1.embodied_r1_reward(f"<think>t</think><answer><point>{content}</point></answer>", truth)
  assert result.components["parse"] == 0 and result.components["point_format"] == 1
  assert result.total == pytest.approx(0.2)  # fmt and pfmt only
  assert embodied_r1.embodied_r1_reward(_points([[10, 10]]), truth).total == pytest.approx(1.0)
