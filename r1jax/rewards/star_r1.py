"""STAR-R1 reward: transformation-driven visual reasoning (TVR) with triplet matching.

Source: "STAR-R1: Spatial TrAnsformation Reasoning by Reinforcing Multimodal LLMs" (2025); formulas
as in shared/specs/rewards.md.

Ground truth keys:
  answer: the transformations, a list of "index.attribute.value" strings (e.g. "2.color.cyan"),
    or one string of them separated by commas, semicolons or newlines (may be empty). A missing
    answer, or one holding anything else, raises naming the field (it would otherwise score every
    prediction against fewer true triplets, silently).
Context keys: none.

The completion is `<think>…</think><answer>t1, t2, …</answer>`; the predicted triplets are the
items of the first `<answer>` block split on commas, semicolons and newlines.

Formula:
  format = 1 if the completion is think-then-answer (`parsing.is_think_answer`), else 0.
  Predicted and ground-truth triplets are matched one-to-one (Hungarian, maximising) with scores
    5.0 index, attribute and value match; 1.5 index and attribute match; 0.5 only the index; 0.
  R_pos = sum of matched scores.  n_miss = n_pred - (number of matched pairs scoring 5.0).
  R_pun = -n_miss - (n_gt - n_pred) if n_pred < n_gt, else -n_miss.
  total = format + R_pos + R_pun, within [-max(n_pred, n_gt), 1 + 5 * n_gt].

Choices where the source is ambiguous:
  * Partially matched triplets count in n_miss (the stricter reading).
  * Fields compare after stripping and case folding; an all-digit index compares as an integer
    ("02" == "2"). The value keeps any further dots ("1.size.0.5" has value "0.5").
  * A repeated prediction (same normalised triplet) stays in n_pred but is left out of the
    matching, so it scores 0 and counts in n_miss.
  * An item that is not "index.attribute.value" still counts as a (wrong) prediction.
  * No `<answer>` block means an empty prediction: total = format - n_gt.

Components: format, r_pos, r_pun, accuracy (= R_pos + R_pun), parse (1 if an `<answer>` block
was found and every item is a well-formed triplet), exact_set (1 if the predicted set equals the
ground-truth set: per-sample TAcc), n_diff (|n_pred - n_gt|: per-sample NDiff), n_pred, n_gt.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
from typing import Any

import numpy as np

from r1jax.rewards import geometry, parsing, schema
from r1jax.rewards.base import RewardResult, register

FULL, INDEX_ATTRIBUTE, INDEX_ONLY = 5.0, 1.5, 0.5

Triplet = tuple[str, str, str]
_SEPARATORS = re.compile(r"[,;\n]")


def _normalise_field(text: str) -> str:
  text = " ".join(text.split()).casefold()
  return str(int(text)) if text.isdigit() and len(text) < 20 else text


def parse_triplet(item: str) -> Triplet | None:
  """"2.color.cyan" -> ("2", "color", "cyan"); None unless there are three non-empty fields."""
  parts = item.split(".", 2)
  if len(parts) != 3:
    return None
  fields = tuple(_normalise_field(p) for p in parts)
  return fields if all(fields) else None


def split_items(text: str) -> list[str]:
  """Non-empty stripped items of `text` split on commas, semicolons and newlines."""
  return [item.strip() for item in _SEPARATORS.split(text) if item.strip()]


def _ground_truth_triplets(ground_truth: Any) -> list[Triplet]:
  """The ground-truth triplets (possibly none); raises naming `answer` unless every item is one."""
  answer = schema.field("star_r1", ground_truth, "answer", "the transformations")
  expected = "a list of 'index.attribute.value' strings"
  if isinstance(answer, str):
    items = split_items(answer)
  elif isinstance(answer, (list, tuple)) and all(isinstance(item, str) for item in answer):
    items = [item.strip() for item in answer]
  else:
    raise schema.malformed("star_r1", "answer", expected, answer)
  triplets = [parse_triplet(item) for item in items]
  if None in triplets:
    raise schema.malformed("star_r1", "answer", expected, answer)
  return triplets


def pair_score(pred: Triplet | None, truth: Triplet) -> float:
  if pred is None or pred[0] != truth[0]:
    return 0.0
  if pred[1] != truth[1]:
    return INDEX_ONLY
  return FULL if pred[2] == truth[2] else INDEX_ATTRIBUTE


def score_triplets(preds: Sequence[Triplet | None], truths: Sequence[Triplet]) -> tuple[float, float, int]:
  """(R_pos, R_pun, n_exact) for predicted triplets (None = malformed item) against ground truth."""
  seen: set[Triplet] = set()
  unique = []  # first occurrences only: a repeated prediction is left out of the matching
  for pred in preds:
    if pred is not None and pred not in seen:
      seen.add(pred)
      unique.append(pred)
  r_pos, n_exact = 0.0, 0
  if unique and truths:
    scores = np.array([[pair_score(p, t) for t in truths] for p in unique])
    for i, j in geometry.hungarian_match(scores, maximize=True):
      r_pos += scores[i, j]
      n_exact += int(scores[i, j] == FULL)
  n_pred, n_gt = len(preds), len(truths)
  n_miss = n_pred - n_exact
  r_pun = -n_miss - (n_gt - n_pred) if n_pred < n_gt else -n_miss
  return float(r_pos), float(r_pun), n_exact


def transformation_accuracy(pred_sets: Sequence[set[Triplet]], truth_sets: Sequence[set[Triplet]]) -> float:
  """TAcc: fraction of samples whose predicted triplet set equals the ground-truth set."""
  if not pred_sets:
    return 0.0
  return float(np.mean([set(p) == set(t) for p, t in zip(pred_sets, truth_sets, strict=True)]))


def number_difference(pred_counts: Sequence[int], truth_counts: Sequence[int]) -> float:
  """NDiff: mean |n_pred - n_gt| over samples."""
  if not pred_counts:
    return 0.0
  return float(np.mean(np.abs(np.asarray(pred_counts, float) - np.asarray(truth_counts, float))))


@register("star_r1")
def star_r1_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  del context  # STAR-R1 needs no context
  truths = _ground_truth_triplets(ground_truth)
  completion = completion if isinstance(completion, str) else ""
  fmt = float(parsing.is_think_answer(completion))
  answer = parsing.extract_tag(completion, "answer")
  items = split_items(answer) if answer is not None else []
  preds = [parse_triplet(item) for item in items]
  r_pos, r_pun, n_exact = score_triplets(preds, truths)
  parsed = answer is not None and all(p is not None for p in preds)
  components = {
      "format": fmt,
      "r_pos": r_pos,
      "r_pun": r_pun,
      "accuracy": r_pos + r_pun,
      "parse": float(parsed),
      "exact_set": float({p for p in preds if p is not None} == set(truths) and None not in preds),
      "n_diff": float(abs(len(preds) - len(truths))),
      "n_pred": float(len(preds)),
      "n_gt": float(len(truths)),
  }
  return RewardResult(total=fmt + r_pos + r_pun, components=components,
                      info={"pred": preds, "truth": truths, "n_exact": n_exact})
