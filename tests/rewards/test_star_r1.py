"""Hand-computed cases for the STAR-R1 reward."""
import numpy as np
import pytest

from r1jax.rewards import star_r1

GT = {"answer": ["1.color.red", "2.size.large"]}


def _reward(answer, think=True, truth=GT):
  prefix = "<think>compare the two scenes</think>" if think else ""
  return star_r1.star_r1_reward(f"{prefix}<answer>{answer}</answer>", truth)


def test_perfect_answer_scores_the_maximum():
  result = _reward("1.color.red, 2.size.large")
  assert result.total == 1 + 5 * 2
  assert result.components["r_pos"] == 10 and result.components["r_pun"] == 0
  assert result.components["exact_set"] == 1 and result.components["parse"] == 1


def test_partial_match_scores_and_counts_as_miss():
  # 5.0 + 1.5 (index and attribute); n_pred == n_gt, n_miss = 1 -> R_pun = -1.
  result = _reward("1.color.red, 2.size.small")
  assert result.components["r_pos"] == 6.5 and result.components["r_pun"] == -1
  assert result.total == 1 + 6.5 - 1


def test_index_only_match():
  result = _reward("1.size.big", truth={"answer": ["1.color.red"]})
  assert result.components["r_pos"] == 0.5 and result.components["r_pun"] == -1


def test_excessive_enumeration_penalty_alone():
  result = _reward("1.color.red, 2.size.large, 3.shape.cube")
  assert result.components["r_pos"] == 10 and result.components["r_pun"] == -1
  assert result.total == 1 + 10 - 1


def test_passive_inaction_penalty_alone():
  # One exact prediction out of two: n_miss = 0, R_pun = -(n_gt - n_pred) = -1.
  result = _reward("1.color.red")
  assert result.components["r_pos"] == 5 and result.components["r_pun"] == -1
  assert result.total == 1 + 5 - 1


def test_empty_answer_scores_minus_n_gt():
  result = _reward("")
  assert result.components["accuracy"] == -2 and result.total == 1 - 2
  no_answer = star_r1.star_r1_reward("no tags at all", GT)
  assert no_answer.total == -2 and no_answer.components["parse"] == 0


def test_duplicates_score_zero_and_count_as_misses():
  result = _reward("1.color.red, 1.color.red")
  assert result.components["r_pos"] == 5 and result.components["r_pun"] == -1
  assert result.components["exact_set"] == 0


def test_matching_is_optimal_not_greedy():
  # Greedy in order: blue->red (1.5) then red->size (0.5) = 2.0. Optimal: red->red (5) + blue->size (0.5).
  truth = {"answer": ["1.color.red", "1.size.large"]}
  result = _reward("1.color.blue, 1.color.red", truth=truth)
  assert result.components["r_pos"] == 5.5
  assert result.components["r_pun"] == -1  # one of two predictions is not exact
  assert result.total == pytest.approx(1 + 5.5 - 1)


def test_format_separators_and_normalisation():
  result = _reward(" 1.Color.RED ;\n02.size.large ", think=False)
  assert result.components["format"] == 0 and result.components["r_pos"] == 10
  assert result.total == 10
  assert _reward("1.color.red\n2.size.large", truth={"answer": "1.color.red, 2.size.large"}).total == 11


def test_malformed_items_are_wrong_predictions():
  result = _reward("1.color.red, 2.size.large, nonsense")
  assert result.components["parse"] == 0 and result.components["r_pun"] == -1 and result.total == 10


def test_metrics():
  pred = [{("1", "color", "red")}, {("1", "color", "red"), ("2", "size", "large")}]
  truth = [{("1", "color", "red")}, {("1", "color", "red")}]
  assert star_r1.transformation_accuracy(pred, truth) == 0.5
  assert star_r1.number_difference([1, 3, 2], [1, 1, 4]) == pytest.approx(4 / 3)
  assert star_r1.transformation_accuracy([], []) == 0.0


@pytest.mark.parametrize("truth, error", [
    ({}, KeyError), ({"answers": ["1.color.red"]}, KeyError), ({"answer": 3}, ValueError),
    ({"answer": None}, ValueError), ({"answer": ["1.color.red", 2]}, ValueError),
    ({"answer": ["1.color.red", "two.things"]}, ValueError), ({"answer": "1.color.red, 2.size"}, ValueError),
    ({"answer": ["1.color.red", ""]}, ValueError), ({"answer": {"1": "color.red"}}, ValueError),
])
def test_malformed_ground_truth_names_the_field(truth, error):
  # Scored, these would have been "zero true answers" (or fewer than there are) without a word.
  with pytest.raises(error, match="star_r1: ground_truth.*'answer'"):
    _reward("1.color.red", truth=truth)


def test_ground_truth_must_be_a_mapping():
  with pytest.raises(ValueError, match="star_r1: ground_truth must be a mapping"):
    star_r1.star_r1_reward("<answer>1.color.red</answer>", "1.color.red")


def test_ground_truth_from_numpy_and_without_transformations():
  assert _reward("1.color.red, 2.size.large", truth={"answer": np.array(["1.color.red", "2.size.large"])}).total == 11
  assert _reward("", truth={"answer": []}).total == 1
