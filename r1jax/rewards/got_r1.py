"""GoT-R1: a reasoning chain with a layout plan, then the image (reward `got_r1`).

Source: "GoT-R1: Unleashing Reasoning Capability of MLLM for Visual Generation with
Reinforcement Learning" (gogoduan/GoT-R1; the public repository ships inference only, so the
rewards follow the paper).

The completion is the reasoning chain. Each planned object is written
`<|obj_start|>name<|obj_end|> <|box_start|>(x1,y1),(x2,y2)<|box_end|>` with coordinates on a
0-1000 grid (top-left, bottom-right).

Paper reward: R = R_PI · (R_sem + R_spa) · R_RI, each term in [0, 1], so total ∈ [0, 2]:
  R_sem  does the reasoning cover the prompt's objects and attributes (an MLLM judge);
  R_spa  is the layout right (a judge looks at the boxes drawn on a blank canvas);
  R_RI   IoU between the planned boxes and the boxes grounded in the generated image;
  R_PI   prompt-to-image fidelity (a judge).

How r1jax computes each term:
  R_sem: `semantic_judge(prompt, reasoning) -> [0, 1]` when injected; otherwise, with a
    ground-truth layout, object recall: the fraction of ground-truth objects whose normalised
    name (case-folded, whitespace collapsed, outer punctuation stripped) is planned, counted one
    to one; otherwise 0.
  R_spa: `layout_judge(prompt, objects) -> [0, 1]` when injected (objects: [(name, box or None)]);
    otherwise, with a ground-truth layout, the Hungarian matching of planned to ground-truth
    boxes on IoU, summed matched IoU / max(#ground truth, #planned), so both missing and extra
    objects cost; otherwise 0.
  R_PI: `image_judge(prompt, image) -> [0, 1]` when both are given; otherwise 1.
  R_RI: with `grounder(image, name) -> [x1, y1, x2, y2] | None` (0-1000 grid) and an image, the
    mean over planned objects of IoU(planned box, grounded box) (0 for an object without a valid
    planned box, and for objects past the first MAX_GROUNDED_OBJECTS = 32, which are not
    grounded); otherwise 1.
Layout-planning mode (no image generator: no `image` in the context, the judges absent, and a
ground-truth `layout`): R_PI = R_RI = 1, so
    total = object recall + Σ matched IoU / max(#ground truth, #planned)   ∈ [0, 2].
A judge that raises, hangs past its time limit or answers a non-number scores 0 for its term and
sets `<judge>_failed`; the grounder's failures score IoU 0 for that object.

Ground truth:
  layout: the target layout, either a reasoning chain in the same tag format (the GoT datasets'
    annotation) or a list of {"name": str, "box": [x1, y1, x2, y2]} on the 0-1000 grid, with at
    least one object. Optional only when judges supply both R_sem and R_spa.
  prompt: the generation prompt, passed to the judges (default "").
  A layout or prompt that does not fit raises, naming the field.
Context: semantic_judge, layout_judge, image_judge, grounder, image, judge_timeout_s (default
`judges.DEFAULT_TIMEOUT_S`).
Components: r_sem, r_spa, r_pi, r_ri, parsed (1 if any object was planned), num_objects,
valid_boxes (planned boxes that parsed and lie on the grid), and the four `*_failed` flags.

Ambiguities and r1jax's choices:
  * A planned box must be 4 finite numbers inside [0, 1000]; otherwise the object counts (for
    recall and the R_spa denominator) but has no box (IoU 0).
  * R_spa's denominator is max(#ground truth, #planned) (see above); the paper's "mean matched
    IoU" leaves it open. Matching uses IoU only; names are R_sem's job.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

from r1jax.rewards import schema
from r1jax.rewards.base import RewardResult, register
from r1jax.rewards.geometry import box_iou, hungarian_match
from r1jax.rewards.judges import DEFAULT_TIMEOUT_S, call_judge, score_judge
from r1jax.rewards.parsing import parse_boxes, plain

GRID = 1000.0
# The grounder is called once per planned object; a runaway chain is cut off here.
MAX_GROUNDED_OBJECTS = 32
OBJ_START, OBJ_END = "<|obj_start|>", "<|obj_end|>"
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"

_NUMBER = r"[-+]?(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})"
_COORDS = re.compile(rf"\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*")
_SPACES = re.compile(r"\s*")
_PUNCTUATION = " \t\n.,;:!?\"'()[]{}"


@dataclasses.dataclass(frozen=True)
class PlannedObject:
  """One object of a layout: its name and its box `[x1, y1, x2, y2]` on the grid (None if unusable)."""

  name: str
  box: tuple[float, float, float, float] | None


def _grid_box(values: Sequence[float]) -> tuple[float, float, float, float] | None:
  box = tuple(float(v) for v in values)
  if len(box) != 4 or not all(math.isfinite(v) and 0.0 <= v <= GRID for v in box):
    return None
  return box


def parse_layout(text: str) -> list[PlannedObject]:
  """Objects of a reasoning chain, in order; a name without a following box gets box None.

  Scans with `str.find`, so a long chain costs linear time whatever its tags look like.
  """
  objects, pos = [], 0
  while True:
    start = text.find(OBJ_START, pos)
    if start < 0:
      return objects
    end = text.find(OBJ_END, start + len(OBJ_START))
    if end < 0:
      return objects
    name = text[start + len(OBJ_START):end]
    pos = end + len(OBJ_END)
    box = None
    box_start = _SPACES.match(text, pos).end()
    if text.startswith(BOX_START, box_start):
      box_end = text.find(BOX_END, box_start + len(BOX_START))
      if box_end >= 0:
        coords = _COORDS.fullmatch(text, box_start + len(BOX_START), box_end)
        if coords:
          box = _grid_box([float(g) for g in coords.groups()])
        pos = box_end + len(BOX_END)
    objects.append(PlannedObject(name.strip(), box))


def normalise_name(name: str) -> str:
  return " ".join(name.casefold().split()).strip(_PUNCTUATION)


def _layout_item(item: Any) -> PlannedObject | None:
  """A ground-truth {"name", "box"} item as a PlannedObject; None unless it fits."""
  if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)):
    return None
  boxes = parse_boxes(plain(item.get("box")))
  box = _grid_box(boxes[0]) if boxes and len(boxes) == 1 else None
  return None if box is None else PlannedObject(item["name"].strip(), box)


def _truth_layout(ground_truth: Any) -> list[PlannedObject] | None:
  layout = plain(schema.mapping("got_r1", ground_truth).get("layout"))
  if layout is None:
    return None
  if isinstance(layout, str):
    objects = parse_layout(layout)
  elif isinstance(layout, (list, tuple)):
    objects = [_layout_item(item) for item in layout]
  else:
    objects = []
  if not objects or None in objects:
    raise schema.malformed("got_r1", "layout", "a reasoning chain with tagged objects, or a non-empty list of "
                           f"{{'name': str, 'box': [x1, y1, x2, y2] in [0, {GRID:g}]}}", layout)
  return objects


def object_recall(planned: Sequence[PlannedObject], truth: Sequence[PlannedObject]) -> float:
  """Fraction of ground-truth objects whose normalised name is planned (one to one)."""
  if not truth:
    return 0.0
  wanted = collections.Counter(normalise_name(o.name) for o in truth)
  have = collections.Counter(normalise_name(o.name) for o in planned)
  return sum(min(n, have[name]) for name, n in wanted.items()) / len(truth)


def layout_iou(planned: Sequence[PlannedObject], truth: Sequence[PlannedObject]) -> float:
  """Summed Hungarian-matched IoU / max(#truth, #planned); 0 if either is empty."""
  if not planned or not truth:
    return 0.0
  ious = [[box_iou(t.box, p.box) if p.box is not None and t.box is not None else 0.0 for p in planned] for t in truth]
  matched = sum(ious[i][j] for i, j in hungarian_match(ious, maximize=True))
  return float(matched / max(len(truth), len(planned)))


def _grounded_box(value: Any) -> tuple[float, float, float, float] | None:
  if value is None:
    return None
  boxes = parse_boxes(value)
  if not boxes or len(boxes) != 1:
    raise ValueError(f"grounder answered {value!r}, expected one box [x1, y1, x2, y2] or None")
  return _grid_box(boxes[0])


@register("got_r1")
def got_r1(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  """Scores one GoT-R1 reasoning chain (see the module docstring); total in [0, 2]."""
  text = completion if isinstance(completion, str) else ""
  planned = parse_layout(text)
  truth = _truth_layout(ground_truth)
  if truth is None and (context.get("semantic_judge") is None or context.get("layout_judge") is None):
    raise KeyError("got_r1: ground_truth needs 'layout' unless both semantic_judge and layout_judge are given "
                   "(the term of a missing judge would score 0 on every completion)")
  prompt = ground_truth.get("prompt", "")
  if not isinstance(prompt, str):
    raise schema.malformed("got_r1", "prompt", "the generation prompt as a string", prompt)
  timeout_s = float(context.get("judge_timeout_s", DEFAULT_TIMEOUT_S))
  image = context.get("image")
  info: dict[str, Any] = {"objects": [(o.name[:80], o.box) for o in planned[:64]]}
  failed = {"semantic_judge_failed": 0.0, "layout_judge_failed": 0.0, "image_judge_failed": 0.0,
            "grounder_failed": 0.0}

  def judged(name: str, fallback: float, *args: Any) -> float:
    call = score_judge(context.get(name), *args, timeout_s=timeout_s)
    if call.ok:
      return call.value
    if call.failed:
      failed[f"{name}_failed"] = 1.0
      info[f"{name}_error"] = call.error
      return 0.0
    return fallback

  r_sem = judged("semantic_judge", object_recall(planned, truth) if truth is not None else 0.0, prompt, text)
  r_spa = judged("layout_judge", layout_iou(planned, truth) if truth is not None else 0.0,
                 prompt, [(o.name, o.box) for o in planned])
  r_pi = judged("image_judge", 1.0, prompt, image) if image is not None else 1.0
  r_ri = 1.0
  grounder = context.get("grounder")
  if image is not None and grounder is not None:
    ious = []
    for obj in planned[:MAX_GROUNDED_OBJECTS]:
      if obj.box is None:
        ious.append(0.0)
        continue
      call = call_judge(grounder, image, obj.name, timeout_s=timeout_s, validate=_grounded_box)
      if call.failed:
        failed["grounder_failed"] = 1.0
        info["grounder_error"] = call.error
      ious.append(box_iou(obj.box, call.value) if call.ok and call.value is not None else 0.0)
    r_ri = sum(ious) / len(planned) if planned else 0.0

  comps = {"r_sem": r_sem, "r_spa": r_spa, "r_pi": r_pi, "r_ri": r_ri, "parsed": float(bool(planned)),
           "num_objects": float(len(planned)), "valid_boxes": float(sum(o.box is not None for o in planned)),
           **failed}
  return RewardResult(r_pi * (r_sem + r_spa) * r_ri, comps, info)
