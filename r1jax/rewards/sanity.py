"""Sanity-check rewards for learner tests and demos (not from a paper).

`target_letter_rate`: the fraction of non-space characters of the completion that equal
ground_truth["answer"] (one letter, case-insensitive); 0 for an empty completion. Range [0, 1].
Components: `rate`, `parse` (1 if the ground truth is one character).
"""
from __future__ import annotations

from typing import Any, Mapping

from r1jax.rewards.base import RewardResult, register


@register("target_letter_rate")
def target_letter_rate(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  del context
  target = str(ground_truth.get("answer", "")).strip().casefold()
  if len(target) != 1:
    return RewardResult(0.0, {"rate": 0.0, "parse": 0.0}, {"error": f"answer {target!r} is not one character"})
  chars = [c for c in str(completion).casefold() if not c.isspace()]
  rate = sum(c == target for c in chars) / len(chars) if chars else 0.0
  return RewardResult(rate, {"rate": rate, "parse": 1.0})
