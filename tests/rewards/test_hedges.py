"""No credit for hedging, in every recipe that grades answers with `grading.grade_answer`.

An answer naming two different options, or two different numbers, scores 0, while each alone
scores as it should: under RL a policy would learn any hedge that earns credit.
"""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from r1jax.rewards import embodied_r1, infigui, longvila, love_r1

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _longvila(answer, truth):
  return longvila.longvila_reward(f"<think>t</think><answer>{answer}</answer>", {"answer": truth})


def _embodied_r1(answer, truth):
  return embodied_r1.embodied_r1_reward(f"<think>t</think><answer>{answer}</answer>",
                                        {"answer": f"<type>spatial_qa</type>{truth}"})


def _infigui(answer, truth):
  return infigui.infigui_reward(f"<think>t</think><answer>{answer}</answer>", {"task_type": "answer", "answer": truth})


def _love_r1(answer, truth):
  return love_r1.love_r1(f"{love_r1.ANSWER_PREFIX}So it is \\boxed{{{answer}}}",
                         {"solution": f"<answer>{truth}</answer>", "duration": 120.0})


RECIPES = [_longvila, _embodied_r1, _infigui, _love_r1]
JOINERS = st.sampled_from([" or ", ", ", " and ", "/", " / ", " or maybe "])


def accuracy(recipe, answer, truth):
  return recipe(answer, truth).components["accuracy"]


OPTION_STYLES = st.sampled_from(["{}", "({})", "{}.", "{})", "\\boxed{{{}}}", "{}:"])
OPTIONS = st.lists(st.sampled_from("ABCDE"), min_size=2, max_size=2, unique=True)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.__name__[1:])
@SETTINGS
@given(options=OPTIONS, style=OPTION_STYLES, joiner=JOINERS, lower=st.booleans())
def test_two_options_score_zero_each_alone_scores_right(recipe, options, style, joiner, lower):
  first, second = (style.format(o.lower() if lower else o) for o in options)
  truth = options[0]
  assert accuracy(recipe, first, truth) == 1.0
  assert accuracy(recipe, second, truth) == 0.0
  for hedge in (first + joiner + second, second + joiner + first):
    assert accuracy(recipe, hedge, truth) == 0.0, hedge


def _number_text(value, style):
  return {"plain": str(value), "thousands": f"{value:,}", "decimal": f"{value}.5", "latex": f"${value}$"}[style]


NUMBER_STYLES = st.sampled_from(["plain", "thousands", "decimal", "latex"])
# Below 10**5 distinct numbers differ by more than the grader's relative tolerance (1e-6).
NUMBERS = st.lists(st.integers(-10**5, 10**5), min_size=2, max_size=2, unique=True)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.__name__[1:])
@SETTINGS
@given(numbers=NUMBERS, style=NUMBER_STYLES, joiner=st.sampled_from([" or ", ", ", " and ", "; ", " or maybe "]))
def test_two_numbers_score_zero_each_alone_scores_right(recipe, numbers, style, joiner):
  first, second = (_number_text(n, style) for n in numbers)
  truth = _number_text(numbers[0], "decimal" if style == "decimal" else "plain")
  assert accuracy(recipe, first, truth) == 1.0
  assert accuracy(recipe, second, truth) == 0.0
  for hedge in (first + joiner + second, second + joiner + first, f"between {first} and {second}"):
    assert accuracy(recipe, hedge, truth) == 0.0, hedge


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.__name__[1:])
@pytest.mark.parametrize("answer, truth", [
    ("B. The red cube", "B"), ("(B) 3 cubes and 2 spheres", "B"), ("(C) both (a) and (b)", "C"), ("(B), a cube", "B"),
    ("12.5", "12.5"), ("1,000", "1000"), ("-3", "-3"), ("3/4", "0.75"), ("\\boxed{12}", "12"), ("12 apples", "12"),
    ("\\frac{1}{2}", "0.5"), ("1,000,000", "1000000"),
])
def test_legitimate_answers_keep_their_credit(recipe, answer, truth):
  assert accuracy(recipe, answer, truth) == 1.0
