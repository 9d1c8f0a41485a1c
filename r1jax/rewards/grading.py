"""The one answer grader shared by the recipes: multiple choice, numbers and math equivalence.

`grade_answer(pred, truth)` returns 1.0 or 0.0 and never raises or hangs. It tries, in order:
  1. multiple choice: when the truth is a single letter ("B", "(B)", "b."), the prediction's
     leading choice letter ("B", "(b)", "B. 42 apples", "\\boxed{B}") must equal it, case-folded;
  2. exact match after stripping, case folding, collapsing whitespace and dropping a final ".";
  3. plain numbers ("1,000", "-2.50"): equal within a relative 1e-6;
  4. mathematical equivalence with `math_verify` ("1/2" vs "\\frac{1}{2}" vs "0.5").
Step 4 runs under `call_with_timeout`: math_verify's own timeout uses `signal.alarm`, which works
only in the main thread (and raises ValueError elsewhere), while rewards run in worker threads.
So math_verify's timeouts are disabled and the helper thread is abandoned (and interrupted) on a
timeout, which grades 0.
"""
from __future__ import annotations

import math
import re
from typing import Any

import math_verify

from r1jax.rewards.scorer import OK, call_with_timeout

# math_verify reads at most this many trailing characters of a prediction: answers sit at the end,
# and parsing cost grows with length.
MAX_MATH_CHARS = 2_000
# Ground truths given as a list accept any of their first MAX_ALTERNATIVES entries.
MAX_ALTERNATIVES = 32

_TRUTH_LETTER = re.compile(r"\(?([A-Za-z])\)?[.:]?")
_PRED_LETTER = re.compile(r"(?:\\boxed\{\s*)?\(?([A-Za-z])(?:\)|[.:]|\s*\}|(?=\s)|$)")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def normalize_text(text: str) -> str:
  """Case-folded text with whitespace collapsed and a final "." dropped."""
  return " ".join(text.split()).casefold().rstrip(".").strip()


def _choice_letter_of_pred(pred: str) -> str | None:
  """The choice letter a prediction starts with, e.g. "(b) red" -> "b"; None if it does not."""
  match = _PRED_LETTER.match(pred)
  if not match:
    return None
  rest = pred[match.end():]
  # "I think" starts with a letter and a space but is prose: a bare letter must stand alone or be
  # followed by punctuation.
  if match.group(0) == match.group(1) and rest.strip():
    return None
  return match.group(1).casefold()


def _as_number(text: str) -> float | None:
  text = text.strip().rstrip(".")
  if not _NUMBER.fullmatch(text):
    return None
  return float(text.replace(",", ""))


def _math_equal(pred: str, truth: str) -> bool:
  # math_verify warns once that its timeouts are off; the caller provides the time limit.
  gold = math_verify.parse(truth, parsing_timeout=None) or math_verify.parse(f"${truth}$", parsing_timeout=None)
  if not gold:
    return False
  answer = math_verify.parse(pred[-MAX_MATH_CHARS:], parsing_timeout=None)
  return bool(answer) and bool(math_verify.verify(gold, answer, timeout_seconds=None))


def _grade_one(pred: str, truth: Any, timeout_s: float) -> float:
  if truth is None or isinstance(truth, (dict, bytes)):
    return 0.0
  if isinstance(truth, float) and not math.isfinite(truth):
    return 0.0
  truth_text = str(truth).strip()
  if not truth_text:
    return 0.0
  letter = _TRUTH_LETTER.fullmatch(truth_text)
  if letter and not isinstance(truth, (int, float)):
    return float(_choice_letter_of_pred(pred) == letter.group(1).casefold())
  if normalize_text(pred) == normalize_text(truth_text):
    return 1.0
  pred_number, truth_number = _as_number(pred), _as_number(truth_text)
  if pred_number is not None and truth_number is not None:
    return float(math.isclose(pred_number, truth_number, rel_tol=1e-6, abs_tol=1e-12))
  status, equal = call_with_timeout(_math_equal, timeout_s, pred, truth_text)
  return float(status == OK and equal)


def grade_answer(pred: str, truth: Any, timeout_s: float = 2.0) -> float:
  """1.0 if `pred` answers `truth` (see the module docstring), else 0.0. Never raises.

  Args:
    pred: the model's answer text (the `<answer>` content, or a bare answer).
    truth: the ground truth: a string or number, or a list/tuple of acceptable answers.
    timeout_s: time limit for the math-equivalence check.
  """
  if not isinstance(pred, str):
    return 0.0
  pred = pred.strip()
  if not pred:
    return 0.0
  truths = list(truth)[:MAX_ALTERNATIVES] if isinstance(truth, (list, tuple)) else [truth]
  try:
    return max((_grade_one(pred, t, timeout_s) for t in truths), default=0.0)
  except Exception:  # noqa: BLE001  (str() of an odd ground-truth object, ...): grade 0, never raise
    return 0.0
