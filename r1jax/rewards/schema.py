"""Ground-truth checks shared by the recipes: a ground truth that does not fit its schema is an error.

Rewards never raise on model output, but the ground truth is the dataset's. One that lacks a field
or holds the wrong kind of value would otherwise score every completion as wrong without a word,
which under RL looks like a hard task rather than a broken dataset. Recipes read their fields
through these helpers, which raise KeyError (missing) or ValueError (malformed) with a message
that names the recipe and the field, e.g.

    star_r1: ground_truth['answer'] must be a list of 'index.attribute.value' strings, got 3

The scorer counts such a sample as an error, and the trainer reports the message.
"""
from __future__ import annotations

from collections.abc import Mapping
import math
from typing import Any

from r1jax.rewards import parsing

# Longest repr of a bad value quoted in a message; ground truths can hold whole documents.
_MAX_SHOWN_CHARS = 80


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= _MAX_SHOWN_CHARS else text[:_MAX_SHOWN_CHARS - 3] + "..."


def malformed(recipe: str, field: str, expected: str, value: Any) -> ValueError:
  """The error for ground-truth `field` holding `value` where the recipe needs `expected`; raise it."""
  return ValueError(f"{recipe}: ground_truth[{field!r}] must be {expected}, got {_show(value)}")


def mapping(recipe: str, ground_truth: Any) -> Mapping[str, Any]:
  """`ground_truth` itself; ValueError naming the recipe unless it is a mapping of fields."""
  if not isinstance(ground_truth, Mapping):
    raise ValueError(f"{recipe}: ground_truth must be a mapping of the dataset's fields, got {_show(ground_truth)}")
  return ground_truth


def field(recipe: str, ground_truth: Any, name: str, expected: str) -> Any:
  """`ground_truth[name]` as plain Python (NumPy arrays become lists).

  Raises KeyError naming the recipe, the field and `expected` (what it should hold) when the
  field is missing, and ValueError when the ground truth is not a mapping.
  """
  ground_truth = mapping(recipe, ground_truth)
  if name not in ground_truth:
    raise KeyError(f"{recipe}: ground_truth needs {name!r} ({expected})")
  return parsing.plain(ground_truth[name])


def answer_value(recipe: str, value: Any, name: str = "answer") -> str | int | float:
  """A ground-truth answer for `grading.grade_answer`: text with `<answer>` tags removed, or a number.

  Raises ValueError naming the field unless `value` is a non-empty string or a finite number
  (booleans are refused: they are a dataset's yes/no stored as the wrong type).
  """
  value = parsing.plain(value)
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return value
  text = parsing.answer_or_text(value) if isinstance(value, str) else ""
  if not text:
    raise malformed(recipe, name, "a non-empty answer string or a finite number", value)
  return text


def answer_values(recipe: str, value: Any, name: str = "answer") -> list[str | int | float]:
  """A ground-truth answer, or a non-empty list of accepted answers, each through `answer_value`."""
  values = value if isinstance(value, (list, tuple)) and value else [value]
  return [answer_value(recipe, v, name) for v in values]


def image_size(recipe: str, ground_truth: Mapping[str, Any], context: Mapping[str, Any],
               required: bool) -> tuple[int, int] | None:
  """(height, width) of the original image from the ground truth, else from the context.

  Raises ValueError when the ground truth holds `width` or `height` but not both as positive
  numbers (a size that is there but unusable is a dataset bug), and KeyError when neither gives
  a size and the recipe `required` one; else None.
  """
  if "width" in ground_truth or "height" in ground_truth:
    size = parsing.find_image_hw(ground_truth)
    if size is None:
      shown = {k: ground_truth.get(k) for k in ("height", "width")}
      raise malformed(recipe, "width/height", "the original image size as two positive numbers", shown)
    return size
  size = parsing.find_image_hw(context)
  if size is None and required:
    raise KeyError(f"{recipe}: ground_truth needs 'width' and 'height' (the original image size, to map "
                   "predicted coordinates back to it; the reward context may give them instead)")
  return size
