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
    ("<think>watch</think><answer>12</answer>", {}, 0.1),
    ("", {"answer": "C"}, 0.0),
])
def test_longvila(completion, truth, total):
  result = longvila.longvila_reward(completion, truth)
  assert result.total == pytest.approx(total)
  assert result.total == pytest.approx(0.9 * result.components["accuracy"] + 0.1 * result.components["format"])
