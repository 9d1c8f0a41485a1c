"""LongVILA-R1 reward: long-video question answering.

Source: "Scaling RL to Long Videos" (LongVILA-R1, 2025); reward as in shared/specs/rewards.md.

Ground truth keys:
  answer: the answer — a choice letter ("B"), a number, a math expression or text; or a list of
    accepted answers. `solution` is read when `answer` is missing. LongVideo-Reason stores it as
    `<answer>X</answer>`; the tags are removed. A missing, empty or non-text answer raises,
    naming the field.
Context keys: none.

Formula (total in [0, 1]):
  format   = 1 if the completion is think-then-answer (`parsing.is_think_answer`), else 0.
  accuracy = `grading.grade_answer(answer, ground truth)` on the `<answer>` content (the whole
             completion when there is no `<answer>` block, as EasyR1's accuracy reward does).
  total    = 0.9 * accuracy + 0.1 * format.

Components: format, accuracy, parse (1 if an `<answer>` block was found).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from r1jax.rewards import grading, parsing, schema
from r1jax.rewards.base import RewardResult, register

ACCURACY_WEIGHT, FORMAT_WEIGHT = 0.9, 0.1


def _truth(ground_truth: Any) -> list[str | int | float]:
  """The accepted answers, `<answer>` tags removed; raises naming a missing or malformed field."""
  fields = schema.mapping("longvila", ground_truth)
  name = "solution" if "answer" not in fields and "solution" in fields else "answer"
  value = schema.field("longvila", ground_truth, name, "the answer, or a list of accepted answers")
  return schema.answer_values("longvila", value, name)


@register("longvila")
def longvila_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  del context  # LongVILA-R1 needs no context
  truth = _truth(ground_truth)
  completion = completion if isinstance(completion, str) else ""
  fmt = float(parsing.is_think_answer(completion))
  accuracy = grading.grade_answer(parsing.answer_or_text(completion), truth)
  parsed = parsing.extract_tag(completion, "answer") is not None
  return RewardResult(total=ACCURACY_WEIGHT * accuracy + FORMAT_WEIGHT * fmt,
                      components={"format": fmt, "accuracy": accuracy, "parse": float(parsed)})
