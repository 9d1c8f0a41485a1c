"""The one answer grader shared by the recipes: multiple choice, numbers and math equivalence.

`grade_answer(pred, truth)` returns 1.0 or 0.0 and never raises or hangs. It tries, in order:
  1. multiple choice: when the truth is a single letter ("B", "(B)", "b."), the prediction's
     leading choice letter ("B", "(b)", "B. 42 apples", "\\boxed{B}") must equal it, case-folded;
  2. exact match after stripping, case folding, collapsing whitespace and dropping a final ".";
  3. plain numbers ("1,000", "-2.50"): equal within a relative 1e-6;
  4. mathematical equivalence with `math_verify` ("1/2" vs "\\frac{1}{2}" vs "0.5").

No credit for hedging: under RL a policy learns any hedge the grader rewards, and math_verify
alone grades "11 or 12" as 12 (it reads the last number).
  * A choice answer scores 0 when its leading option is followed, at once or after a joiner
    ("or", "and", ",", "/", ";", "&", "|"), by a different option: "(B) or (C)", "B) C)",
    "\\boxed{B} or \\boxed{C}". Bare "B or C", "B, C" and "B/C" already fail step 1 (a bare
    letter must stand alone). Only the option right after the first is read, so an option text
    that mentions others ("(C) both (a) and (b)") keeps its credit; the cost is that "B. C.
    elegans" reads as a hedge, and a hedge hidden after option text ("(B) red or (C) blue") is
    not caught.
  * When the truth is one numeric answer (it holds a digit and no joiner), a prediction whose
    parts between joiners ("or", "and", ",", ";"; not "/", which divides) hold two or more
    different numeric texts scores 0: "11 or 12", "11, 12", "between 11 and 12", "x = 2, y = 3".
    A comma followed by three digits is a thousands separator ("1,000"), not a joiner.

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
# Words and marks that join alternatives in a hedge ("or maybe" too).
_JOINER = r"(?:,|/|;|&|\||\bor\b|\band\b)(?:\s*(?:maybe|perhaps|possibly|probably)\b)?"
# The option a hedge names right after the first one: after a joiner, a letter that ends there
# ("or C", ", (C)", "/ \\boxed{C}"); without one, a marked letter ("(C)", "C)", "C.").
_NEXT_OPTION = re.compile(
    rf"\s*(?:{_JOINER}\s*(?:\\boxed\{{\s*)?\(?(?P<joined>[A-Za-z])(?=\s*(?:$|[.,;:/&|)}}]|(?:or|and)\b))"
    r"|(?:\\boxed\{\s*)?\((?P<paren>[A-Za-z])\)|(?P<marked>[A-Za-z])[.)](?!\S))", re.IGNORECASE)
# Joiners between numeric alternatives; a comma before exactly three digits separates thousands.
_NUMBER_JOINER = re.compile(r",(?!\d{3}(?!\d))|;|\bor\b|\band\b", re.IGNORECASE)


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
  letter = match.group(1).casefold()
  following = _NEXT_OPTION.match(rest)
  if following and next(g for g in following.groups() if g).casefold() != letter:
    return None  # a hedge: it names a second option
  return letter


def _numeric_parts(text: str) -> set[str]:
  """The normalised parts of `text` between numeric joiners that hold a digit."""
  return {normalize_text(part) for part in _NUMBER_JOINER.split(text) if any(c.isdigit() for c in part)}


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
  if len(_numeric_parts(truth_text)) == 1 and len(_numeric_parts(pred)) > 1:
    return 0.0  # a hedge between numbers
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
