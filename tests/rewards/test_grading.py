"""Tests for r1jax.rewards.grading."""
import threading
import time

import pytest

from r1jax.rewards import grading


@pytest.mark.parametrize("pred, truth, expected", [
    # Multiple choice: strip + case-fold, common letter forms.
    ("B", "B", 1.0), ("b", "B", 1.0), ("(B)", "B", 1.0), ("B.", "(b)", 1.0), ("B) red", "B", 1.0),
    ("B. 42 apples", "B.", 1.0), ("\\boxed{B}", "B", 1.0), ("  C ", "B", 0.0), ("I think", "I", 0.0),
    ("Answer", "A", 0.0),
    # Exact text after normalisation.
    ("Yes.", "yes", 1.0), ("red  car", "Red car", 1.0), ("no", "yes", 0.0),
    # Numbers.
    ("1,000", "1000", 1.0), ("12.0", 12, 1.0), ("-2.50", "-2.5", 1.0), ("13", 12, 0.0),
    # Mathematical equivalence through math_verify.
    ("1/2", "0.5", 1.0), ("\\frac{1}{2}", "0.5", 1.0), ("\\sqrt{2}", "\\sqrt{2}", 1.0), ("x = 2", "2", 1.0),
    ("\\frac{1}{3}", "0.5", 0.0),
    # Lists of accepted answers and odd ground truths.
    ("2", ["1", "2"], 1.0), ("3", ["1", "2"], 0.0), ("", "0", 0.0), ("nan", float("nan"), 0.0),
    ("1", None, 0.0), ("1", {"a": 1}, 0.0), (None, "1", 0.0),
])
def test_grade_answer(pred, truth, expected):
  assert grading.grade_answer(pred, truth) == expected


@pytest.mark.parametrize("pred, truth", [
    ("11 or 12", "12"), ("12 or 11", "12"), ("11, 12", "12"), ("11 and 12", "12"), ("between 11 and 12", 12),
    ("x = 11 or x = 12", "12"), ("\\boxed{11} or \\boxed{12}", "12"), ("1,000, 2,000", "1000"), ("12,13", "12"),
    ("\\frac{3}{4} or \\frac{1}{2}", "0.75"),
    ("(B) or (C)", "B"), ("B) or C)", "B"), ("(B)/(C)", "B"), ("\\boxed{B} or \\boxed{C}", "B"), ("B. or C.", "B"),
    ("(B) (C)", "B"), ("(B), C", "B"), ("(b) or maybe (c)", "B"), ("B or C", "B"), ("B, C", "B"), ("B/C", "B"),
])
def test_hedges_score_zero(pred, truth):
  assert grading.grade_answer(pred, truth) == 0.0


@pytest.mark.parametrize("pred, truth", [
    ("B. The red cube", "B"), ("(B) 3 cubes and 2 spheres", "B"), ("(C) both (a) and (b)", "C"), ("(B), a cube", "B"),
    ("(B) or (b)", "B"), ("12.5", "12.5"), ("1,000", "1000"), ("-3", "-3"), ("3/4", "0.75"), ("\\boxed{12}", "12"),
    ("\\boxed{1,000}", 1000), ("12 apples", "12"), ("12 or 12", "12"), ("(1, 2)", "(1, 2)"),
])
def test_legitimate_answers_are_not_hedges(pred, truth):
  assert grading.grade_answer(pred, truth) == 1.0


def test_slow_math_check_times_out_to_zero(monkeypatch):
  def hang(pred, truth):
    while True:  # a pure-Python hang: the abandoned helper thread gets interrupted
      pass

  monkeypatch.setattr(grading, "_math_equal", hang)
  threads_before = set(threading.enumerate())
  start = time.monotonic()
  assert grading.grade_answer("\\frac{1}{2}", "0.5", timeout_s=0.2) == 0.0
  assert time.monotonic() - start < 1.0
  deadline = time.monotonic() + 2.0
  while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert not set(threading.enumerate()) - threads_before  # the hung thread was stopped, not leaked


def test_failing_math_check_grades_zero(monkeypatch):
  def boom(pred, truth):
    raise RuntimeError("sympy exploded")

  monkeypatch.setattr(grading, "_math_equal", boom)
  assert grading.grade_answer("\\frac{1}{2}", "0.5") == 0.0
