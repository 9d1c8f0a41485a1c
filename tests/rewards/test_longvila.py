"""Hand-computed cases for the LongVILA-R1 reward."""
import pytest

from r1jax.rewards import longvila


@pytest.mark.parametrize("completion, truth, total", [
    ("<think>watch</think><answer>C</answer>", {"answer": "C"}, 1.0),
    ("<think>watch</think><answer>(c) the dog</answer>", {"answer": "C"}, 1.0),
    ("<think>watch</think><answer>B</answer>", {"answer": "C"}, 0.1),
    ("<answer>C</answer>", {"answer": "C"}, 0.9),
    ("<think>watch</think><answer>\\frac{3}{4}</answer>", {"answer": "0.75"}, 1.0),
    ("<think>watch</think><answer>12</answer>", {"solution": 12}, 1.0),
    ("", {"answer": "C"}, 0.0),
])
def test_longvila(completion, truth, total):
  result = longvila.longvila_reward(completion, truth)
  assert result.total == pytest.approx(total)
  assert result.total == pytest.approx(0.9 * result.components["accuracy"] + 0.1 * result.components["format"])


@pytest.mark.parametrize("truth", [{"answer": "<answer>C</answer>"}, {"answer": "<answer> C </answer>"},
                                   {"solution": "<answer>C</answer>"}, {"answer": ["<answer>C</answer>", "D"]}])
def test_tagged_ground_truth_as_longvideo_reason_stores_it(truth):
  result = longvila.longvila_reward("<think>watch</think><answer>C</answer>", truth)
  assert result.components["accuracy"] == 1.0 and result.total == pytest.approx(1.0)
  assert longvila.longvila_reward("<think>watch</think><answer>B</answer>", truth).components["accuracy"] == 0.0


@pytest.mark.parametrize("truth, error, field", [
    ({}, KeyError, "answer"), ({"question": "why?"}, KeyError, "answer"), ({"answer": ""}, ValueError, "answer"),
    ({"answer": "<answer> </answer>"}, ValueError, "answer"), ({"answer": None}, ValueError, "answer"),
    ({"answer": {"text": "C"}}, ValueError, "answer"), ({"answer": True}, ValueError, "answer"),
    ({"answer": float("nan")}, ValueError, "answer"), ({"answer": []}, ValueError, "answer"),
    ({"solution": ["C", None]}, ValueError, "solution"),
])
def test_malformed_ground_truth_names_the_field(truth, error, field):
  with pytest.raises(error, match=f"longvila: ground_truth.*'{field}'"):
    longvila.longvila_reward("<think>watch</think><answer>C</answer>", truth)
