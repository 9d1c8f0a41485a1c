"""Sanity-check rewards for learner tests and demos (not from a paper).

`target_letter_rate`: the fraction of non-space characters of the completion that equal
ground_truth["answer"] (one character, case-insensitive); 0 for an empty completion. Range [0, 1].
A ground truth whose answer is not one character raises, naming the field.
Components: `rate`, `parse` (always 1: kept so every reward reports a parse status).
"""
from __future__ import annotations

from typing import Any, Mapping

from r1jax.rewards import schema
from r1jax.rewards.base import RewardResult, register


@register("target_letter_rate")
def target_letter_rate(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  del context
  answer = schema.field("target_letter_rate", ground_truth, "answer", "the target letter")
  target = answer.strip().casefold() if isinstance(answer, str) else ""
  if len(target) != 1:
    raise schema.malformed("target_letter_rate", "answer", "one character", answer)
  chars = [c for c in str(completion).casefold() if not c.isspace()]
  rate = sum(c == target for c in chars) / len(chars) if chars else 0.0
  return RewardResult(rate, {"rate": rate, "parse": 1.0})
