"""Parsing helpers shared by every reward: tags, safe literals, boxes, points, coordinate rescaling.

Everything here reads model output, so nothing raises on a malformed string: parsers return None
when the text is not what they expect. Literals are read with `json.loads` and then
`ast.literal_eval`; `eval` is never used. Non-finite numbers (NaN, inf, 1e999) are rejected, so
every number a parser returns is finite.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
import dataclasses
import json
import math
import re
from typing import Any
import warnings

import numpy as np

from r1jax.processing import smart_resize

# Longest text `parse_literal` reads. Boxes, points and action JSON are far shorter; the cap keeps
# a degenerate 100k-character completion from costing a deep parse.
MAX_LITERAL_CHARS = 20_000

_TAGS = r"</?(?:think|answer)>"
_THINK_ANSWER = re.compile(
    rf"<think>(?:(?!{_TAGS}).)*</think>\s*<answer>(?:(?!{_TAGS}).)*</answer>", re.DOTALL)
_CODE_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_BOX_KEYS = ("bbox_2d", "bbox", "box")
_POINT_KEYS = ("point_2d", "point")

# Python warns (SyntaxWarning) about odd literals such as "1if" while parsing them; on model
# output that would print one warning per bad completion. Only texts parsed under this file name
# are silenced.
_MODEL_OUTPUT = "<model output>"
warnings.filterwarnings("ignore", category=SyntaxWarning, module=re.escape(_MODEL_OUTPUT))


def _python_literal(text: str) -> Any:
  return ast.literal_eval(ast.parse(text, filename=_MODEL_OUTPUT, mode="eval"))


def is_think_answer(text: str) -> bool:
  """True iff `text` is exactly `<think>…</think>` then `<answer>…</answer>`.

  Whitespace may separate the two blocks; nothing may precede `<think>` or follow `</answer>`.
  Neither block may contain another think/answer tag, so doubled or nested blocks fail.
  """
  return isinstance(text, str) and _THINK_ANSWER.fullmatch(text) is not None


def extract_tag(text: str, tag: str) -> str | None:
  """Content (unstripped) of the first complete `<tag>…</tag>` in `text`, or None."""
  if not isinstance(text, str):
    return None
  # Same result as re.search(r"<tag>(.*?)</tag>", DOTALL), but linear: that regex retries from
  # every repeated open tag when no close tag follows (quadratic on adversarial completions).
  opening, closing = f"<{tag}>", f"</{tag}>"
  start = text.find(opening)
  if start < 0:
    return None
  end = text.find(closing, start + len(opening))
  return None if end < 0 else text[start + len(opening):end]


def _reject_non_finite(value: Any) -> float:
  raise ValueError(f"non-finite constant {value!r}")


def _is_clean(value: Any, depth: int = 0) -> bool:
  """True if `value` holds only finite real numbers (no NaN/inf/complex) at any depth."""
  if depth > 100:
    return False
  if isinstance(value, float):
    return math.isfinite(value)
  if isinstance(value, complex):
    return False
  if isinstance(value, dict):
    return all(_is_clean(k, depth + 1) and _is_clean(v, depth + 1) for k, v in value.items())
  if isinstance(value, (list, tuple, set, frozenset)):
    return all(_is_clean(v, depth + 1) for v in value)
  return True


def parse_literal(text: str, max_chars: int = MAX_LITERAL_CHARS, python: bool = True) -> Any | None:
  """Parses JSON or, when `python` is true, a Python literal; None on any failure (never raises).

  A surrounding Markdown code fence is removed first. Texts longer than `max_chars` (after
  stripping) are refused. Values holding NaN, inf or complex numbers are refused. Recipes whose
  released code reads JSON only pass `python=False`, so that `(1, 2)`, `{'a': 1}` and trailing
  commas stay malformed there too.
  """
  if not isinstance(text, str):
    return None
  text = text.strip()
  fence = _CODE_FENCE.match(text)
  if fence:
    text = fence.group(1).strip()
  if not text or len(text) > max_chars:
    return None
  parsers = (lambda s: json.loads(s, parse_constant=_reject_non_finite), _python_literal)
  for parse in parsers if python else parsers[:1]:
    try:
      value = parse(text)
    except Exception:  # noqa: BLE001  (SyntaxError, ValueError, RecursionError, MemoryError, ...)
      continue
    return value if _is_clean(value) else None
  return None


def plain(value: Any) -> Any:
  """`value` with NumPy arrays and scalars turned into lists and Python numbers.

  Ground truth read through pandas or NumPy holds arrays where the JSON files hold lists.
  """
  return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def _as_finite_floats(value: Any, length: int) -> list[float] | None:
  """`value` as `length` finite floats (bools refused), else None."""
  value = plain(value)
  if not isinstance(value, (list, tuple)) or len(value) != length:
    return None
  out = []
  for v in value:
    v = plain(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      return None
    try:
      f = float(v)
    except OverflowError:  # ints beyond float range
      return None
    if not math.isfinite(f):
      return None
    out.append(f)
  return out


def _unwrap(value: Any, keys: Sequence[str]) -> Any:
  """Takes the coordinates out of a Qwen-style dict such as {"bbox_2d": [...], "label": ...}."""
  if isinstance(value, dict):
    for key in keys:
      if key in value:
        return value[key]
  return value


def _parse_tuples(text: Any, length: int, keys: Sequence[str]) -> list[list[float]] | None:
  value = parse_literal(text) if isinstance(text, str) else plain(text)
  value = plain(_unwrap(value, keys))
  single = _as_finite_floats(value, length)
  if single is not None:
    return [single]
  if not isinstance(value, (list, tuple)):
    return None
  items = []
  for item in value:
    parsed = _as_finite_floats(_unwrap(item, keys), length)
    if parsed is None:
      return None
    items.append(parsed)
  return items


def parse_boxes(text: Any) -> list[list[float]] | None:
  """Boxes `[[x1, y1, x2, y2], ...]` from text (or an already-parsed value); None if malformed.

  Accepts one box `[x1, y1, x2, y2]`, a list of boxes, and Qwen2.5-VL's
  `[{"bbox_2d": [...], "label": ...}, ...]`. Every box must be 4 finite numbers, otherwise the
  whole answer is malformed (None). `[]` parses to no boxes (`[]`). Coordinates are returned as
  given (no reordering).
  """
  return _parse_tuples(text, 4, _BOX_KEYS)


def parse_points(text: Any) -> list[tuple[float, float]] | None:
  """Points `[(x, y), ...]` from `[[x, y], ...]`, `[x, y]` or `[{"point_2d": [x, y]}, ...]`.

  Also reads polygons (a polygon is a list of points). None if malformed; `[]` gives `[]`.
  """
  points = _parse_tuples(text, 2, _POINT_KEYS)
  return None if points is None else [(x, y) for x, y in points]


def _rescale(coords_xy: Any, scale_x: float, scale_y: float) -> np.ndarray:
  coords = np.asarray(coords_xy, dtype=np.float64)
  if coords.ndim == 0 or coords.shape[-1] % 2:
    raise ValueError(f"coordinates must end in an even axis of x, y pairs, got shape {coords.shape}")
  scale = np.tile(np.array([scale_x, scale_y]), coords.shape[-1] // 2)
  with np.errstate(over="ignore"):  # absurd coordinates become inf, which every score treats as a miss
    return coords * scale


def to_original_pixels(coords_xy: Any, original_hw: tuple[int, int], min_pixels: int, max_pixels: int,
                       factor: int = 28) -> np.ndarray:
  """Maps coordinates from resized-input pixels to original-image pixels.

  Args:
    coords_xy: `[..., 2k]` array-like whose last axis alternates x, y (a point, a box
      `[x1, y1, x2, y2]`, or stacks of them).
    original_hw: (height, width) of the original image.
    min_pixels, max_pixels, factor: the `smart_resize` parameters the processor used.

  Returns:
    float64 array of the same shape in original pixels.
  """
  height, width = original_hw
  resized_h, resized_w = smart_resize(height, width, factor, min_pixels, max_pixels)
  return _rescale(coords_xy, width / resized_w, height / resized_h)


def to_resized_pixels(coords_xy: Any, original_hw: tuple[int, int], min_pixels: int, max_pixels: int,
                      factor: int = 28) -> np.ndarray:
  """Inverse of `to_original_pixels`: original-image pixels to resized-input pixels."""
  height, width = original_hw
  resized_h, resized_w = smart_resize(height, width, factor, min_pixels, max_pixels)
  return _rescale(coords_xy, resized_w / width, resized_h / height)


def answer_or_text(text: str) -> str:
  """The stripped `<answer>` content, or the whole stripped text when there is no answer block.

  This is how EasyR1/verl accuracy rewards read an answer; "" for non-strings. Ground-truth
  fields go through it too: LongVideo-Reason, LOVE-R1 and 3D-R1 store answers as
  `<answer>X</answer>`, which no prediction would equal with the tags left on.
  """
  if not isinstance(text, str):
    return ""
  answer = extract_tag(text, "answer")
  return (answer if answer is not None else text).strip()


def _positive_size(mapping: Any, height_key: str, width_key: str) -> tuple[int, int] | None:
  if not isinstance(mapping, Mapping):
    return None
  size = [plain(mapping.get(height_key)), plain(mapping.get(width_key))]
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 1 <= v < 2**31
         for v in size):
    return int(round(size[0])), int(round(size[1]))
  return None


def find_image_hw(*mappings: Any) -> tuple[int, int] | None:
  """(height, width) from the first mapping holding usable `height` and `width`, else None.

  Datasets store the original image size next to the ground truth (SATORI, AndroidControl), or
  the trainer passes it as context; either works.
  """
  for mapping in mappings:
    hw = _positive_size(mapping, "height", "width")
    if hw is not None:
      return hw
  return None


@dataclasses.dataclass(frozen=True)
class ImageFrame:
  """The two pixel grids of one image: original (ground truth) and resized (model input)."""

  original_hw: tuple[int, int]
  resized_hw: tuple[int, int]

  def to_original(self, coords_xy: Any) -> np.ndarray:
    """`[..., 2k]` x, y coordinates from resized-input pixels to original pixels (float64)."""
    return _rescale(coords_xy, self.original_hw[1] / self.resized_hw[1], self.original_hw[0] / self.resized_hw[0])


def image_frame(ground_truth: Any, context: Any, default_min_pixels: int, default_max_pixels: int,
                factor: int = 28) -> ImageFrame | None:
  """The sample's ImageFrame, or None when no usable original size is known (never raises).

  The original size is `height`/`width` from the ground truth, else from the context. The resized
  size is the context's `resized_height`/`resized_width` when the processor passes them (then no
  recomputation can drift from what the model saw), else `smart_resize` of the original size with
  the context's `min_pixels`/`max_pixels`, or the recipe's defaults.
  """
  original = find_image_hw(ground_truth, context)
  if original is None:
    return None
  resized = _positive_size(context, "resized_height", "resized_width")
  if resized is None:
    context = context if isinstance(context, Mapping) else {}
    try:
      resized = smart_resize(*original, factor, int(context.get("min_pixels", default_min_pixels)),
                             int(context.get("max_pixels", default_max_pixels)))
    except Exception:  # noqa: BLE001  (ValueError, TypeError, OverflowError from odd sizes or limits)
      return None
  if min(resized) < 1:  # smart_resize rounds a tiny image to 0 when min_pixels allows it
    return None
  return ImageFrame(original, resized)
