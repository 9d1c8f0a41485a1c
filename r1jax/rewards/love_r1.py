"""LOVE-R1: long-video QA with adaptive zoom-in, a two-step rollout (reward `love_r1`).

Source: "LOVE-R1: Advancing Long Video Understanding with an Adaptive Zoom-in Mechanism via
Multi-Step Reasoning" (HumanMLLM/LOVE-R1, `src/r1-v/src/open_r1/trainer/grpo_trainer.py`).

Rollout. Step 1 sees the overview: `overview_budget(duration)` frames (min(⌊2·duration⌋, 768),
each of 32·28·28 pixels, doubled under 60 s), every frame stamped with its integer second in
red (the prompt text and the data side are data_pipelines/tasks/love_r1.py). The step-1
completion starts with one of two prefixes:
  * `I need to zoom in on the video.\\n\\n` then `\\boxed{[t1, t2]}` (integer seconds), or
  * `I get the answer.\\n\\n` then `\\boxed{X}`.
A zoom appends the clip `zoom_budget(t1, t2)` (min(⌊2·(t2 − t1)⌋, 16) frames of 256·28·28
pixels, stamped like the overview) captioned `zoom_clip_caption(t1, t2)`, and step 2 answers.
Both steps train as separate single-step samples; this reward scores one step's completion.

A zoom is valid when 0 ≤ t1 < t2 ≤ duration + 1, 1 ≤ t2 − t1 ≤ min(duration / 2, 60), and its
1-D IoU with every earlier zoom is ≤ 0.7.

Reward: total = accuracy + format, in [0, 2].
  * format = 1 when the completion parses (prefix, `\\boxed{…}`, a valid zoom); 0 on any parse or
    constraint failure, and then accuracy = 0 too.
  * An answer (either step) earns its own correctness: `grade_answer(X, truth)`.
  * A step-1 zoom earns the accuracy of the step-2 completion, passed as `step2_completion` and
    scored here with this zoom added to the earlier ones.
  * A zoom at step 2 (a second zoom) sets `mask` = 1: the trainer must drop the sample from the
    loss and from the group statistics (mean/std). Masked samples score 0 (format and accuracy),
    and a step-1 zoom whose step 2 is masked is masked as well (both halves of the rollout go).
  * Grounding samples (non-empty `tgt`) always zoom; each valid zoom earns accuracy 1 if its IoU
    with any target interval is > 0, at step 1 and at step 2 alike.

Ground truth (the dataset's fields; a missing or malformed one raises, naming it):
  solution: the answer, as `<answer>X</answer>` (the tags are optional); unused by grounding samples.
  tgt: None / [] for QA samples; a list of target intervals [[s, e], ...] (seconds) for grounding.
  duration: video length in seconds.
Context:
  step: 1 (default) or 2.
  earlier_zooms: zooms taken before this completion, [[t1, t2], ...] (default none). At step 2
    this includes the step-1 zoom.
  step2_completion: for a step-1 zoom on a QA sample, the step-2 text (absent: accuracy 0).
Components: format, accuracy, parsed (prefix and `\\boxed{}` found), zoom (the completion asks
for a zoom), zoom_valid, mask. `info` holds the parsed answer or zoom, the error, and for a step-1
zoom the step-2 info.

Ambiguities and r1jax's choices:
  * Missing prefix: the public trainer leaves format at 1 when a step-1 completion starts with
    neither prefix; r1jax follows the spec (any parse failure gives format 0).
  * Step 2: the public trainer grades any `\\boxed{…}` at step 2; r1jax requires the answer prefix
    there too (the same grammar as step 1), so format 0 if it is missing.
  * Reversed zooms: the public trainer sorts [t2, t1]; r1jax follows the spec (t1 < t2), so a
    reversed zoom is invalid.
  * Answer grading: the public trainer compares the first character of `\\boxed{…}` with the
    letter; r1jax uses the shared `grade_answer` (choice letters, numbers, math), which strips
    the answer, so `\\boxed{ B }` counts as B (the public code reads " " there). Kept on purpose:
    the space does not change which answer was given, and the first-character rule would in
    turn credit `\\boxed{Bad}` as B.
  * Zoom grammar: as in the public trainer, the `\\boxed{…}` content must be exactly `[t1, t2]`,
    spaces allowed only around the numbers; `\\boxed{ [t1, t2] }` is a format failure.
  * Grounding prefix: the public trainer pre-fills the zoom prefix into the prompt for grounding
    samples, so their completions may lack it; a grounding completion without a prefix is read as
    a zoom, and one with the answer prefix fails the format.
  * `\\boxed{…}` content is read with balanced braces (the first `\\boxed` after the prefix).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

from r1jax.rewards import parsing, schema
from r1jax.rewards.base import RewardResult, register
from r1jax.rewards.geometry import interval_iou
from r1jax.rewards.grading import grade_answer

ZOOM_PREFIX = "I need to zoom in on the video.\n\n"
ANSWER_PREFIX = "I get the answer.\n\n"

PIXELS_PER_TOKEN = 28 * 28
OVERVIEW_MAX_FRAMES = 768
OVERVIEW_TOKENS_PER_FRAME = 32
SHORT_VIDEO_S = 60.0  # overview frames of shorter videos get twice the pixels
ZOOM_MAX_FRAMES = 16
ZOOM_TOKENS_PER_FRAME = 256
MAX_ZOOM_S = 60.0
MIN_ZOOM_S = 1.0
MAX_ZOOM_IOU = 0.7

# A zoom is `[int, int]`; 12 digits bound the integers so huge ones cannot cost a slow parse.
_ZOOM = re.compile(r"\[\s*(-?\d{1,12})\s*,\s*(-?\d{1,12})\s*\]")
_BOXED = "\\boxed{"


@dataclasses.dataclass(frozen=True)
class FrameBudget:
  """How to sample a video segment: `num_frames` frames of at most `max_pixels` pixels each."""

  num_frames: int
  max_pixels: int


def overview_budget(duration: float, *, max_frames: int | None = None,
                    max_pixels: int | None = None) -> FrameBudget:
  """Step-1 sampling of the whole video: min(⌊2·duration⌋, 768) frames of 32·28·28 pixels (×2 under 60 s).

  `max_frames` / `max_pixels` replace the paper's caps (768 frames; the pixel rule) for models
  smaller than the paper's; None keeps them. The sampling rate (2 frames per second) stays.
  This is the single definition of the rule: data_pipelines.video builds its samplings from it.
  """
  if not (math.isfinite(duration) and duration >= 0.5):
    raise ValueError(f"LOVE-R1 overview needs a finite video duration >= 0.5 s, got duration={duration!r}")
  if max_pixels is None:
    max_pixels = OVERVIEW_TOKENS_PER_FRAME * PIXELS_PER_TOKEN * (2 if duration < SHORT_VIDEO_S else 1)
  cap = OVERVIEW_MAX_FRAMES if max_frames is None else max_frames
  return FrameBudget(min(math.floor(2 * duration), cap), max_pixels)


def zoom_budget(t1: float, t2: float, *, max_frames: int | None = None,
                max_pixels: int | None = None) -> FrameBudget:
  """Step-2 sampling of the zoom clip [t1, t2]: min(⌊2·(t2 − t1)⌋, 16) frames of 256·28·28 pixels.

  `max_frames` / `max_pixels` replace the caps 16 / 256·28·28 (None keeps them).
  """
  if not (math.isfinite(t1) and math.isfinite(t2) and t2 - t1 >= 0.5):
    raise ValueError(f"LOVE-R1 zoom clip needs finite t2 - t1 >= 0.5 s, got [t1, t2]=[{t1!r}, {t2!r}]")
  cap = ZOOM_MAX_FRAMES if max_frames is None else max_frames
  pixels = ZOOM_TOKENS_PER_FRAME * PIXELS_PER_TOKEN if max_pixels is None else max_pixels
  return FrameBudget(min(math.floor(2 * (t2 - t1)), cap), pixels)


def zoom_clip_caption(t1: float, t2: float) -> str:
  """The text placed before a zoom clip (integer seconds, as the released code formats it)."""
  return "Subset zoom-in video clip [%d, %d]:" % (int(t1), int(t2))


def _boxed_content(text: str) -> str | None:
  """Content of the first `\\boxed{…}` in `text`, with balanced braces; None if absent or unclosed."""
  start = text.find(_BOXED)
  if start < 0:
    return None
  depth, begin = 1, start + len(_BOXED)
  for i in range(begin, len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[begin:i]
  return None


def _parse_zoom(content: str) -> tuple[int, int] | None:
  match = _ZOOM.fullmatch(content)
  return (int(match.group(1)), int(match.group(2))) if match else None


def zoom_is_valid(zoom: tuple[float, float], duration: float, earlier_zooms: Sequence[Sequence[float]] = ()) -> bool:
  """The spec's zoom constraints (see the module docstring)."""
  t1, t2 = zoom
  if not (0 <= t1 < t2 <= duration + 1):
    return False
  if not MIN_ZOOM_S <= t2 - t1 <= min(duration / 2, MAX_ZOOM_S):
    return False
  return all(interval_iou(zoom, earlier) <= MAX_ZOOM_IOU for earlier in earlier_zooms)


def _truth(ground_truth: Any) -> tuple[Any, list[tuple[float, float]], float]:
  """(answer, target intervals, duration) from the ground truth; raises naming a bad field."""
  duration = schema.field("love_r1", ground_truth, "duration", "the video length in seconds")
  if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < math.inf:
    raise schema.malformed("love_r1", "duration", "a positive finite number of seconds", duration)
  tgt = parsing.plain(ground_truth.get("tgt")) or []
  pairs = isinstance(tgt, (list, tuple)) and all(isinstance(t, (list, tuple)) for t in tgt)
  targets = parsing.parse_points(tgt) if pairs else None
  if targets is None:
    raise schema.malformed("love_r1", "tgt", "None or a list of [start, end] intervals in seconds", tgt)
  if targets:
    return None, targets, float(duration)
  solution = schema.field("love_r1", ground_truth, "solution", "the answer, for samples without 'tgt'")
  return schema.answer_value("love_r1", solution, "solution"), [], float(duration)


def _earlier(context: Mapping[str, Any]) -> list[tuple[float, float]]:
  zooms = context.get("earlier_zooms") or ()
  out = []
  for zoom in zooms:
    if len(zoom) != 2:
      raise ValueError(f"LOVE-R1 context 'earlier_zooms' holds [t1, t2] pairs, got {zoom!r}")
    out.append((float(zoom[0]), float(zoom[1])))
  return out


def _score(completion: str, solution: Any, targets: list[tuple[float, float]], duration: float,
           earlier: list[tuple[float, float]], step: int, step2_completion: Any) -> RewardResult:
  comps = {"format": 0.0, "accuracy": 0.0, "parsed": 0.0, "zoom": 0.0, "zoom_valid": 0.0, "mask": 0.0}
  info: dict[str, Any] = {"step": step}
  text = completion if isinstance(completion, str) else ""
  grounding = bool(targets)
  if text.startswith(ZOOM_PREFIX):
    action, body = "zoom", text[len(ZOOM_PREFIX):]
  elif text.startswith(ANSWER_PREFIX):
    action, body = "answer", text[len(ANSWER_PREFIX):]
  elif grounding:  # the trainer may pre-fill the zoom prefix into a grounding prompt
    action, body = "zoom", text
  else:
    info["error"] = "no step prefix"
    return RewardResult(0.0, comps, info)
  info["action"] = action
  if action == "zoom":
    comps["zoom"] = 1.0
    if step == 2 and not grounding:
      comps["mask"] = 1.0
      info["error"] = "second zoom: excluded from loss and group statistics"
      return RewardResult(0.0, comps, info)
  content = _boxed_content(body)
  if content is None:
    info["error"] = "no closed \\boxed{}"
    return RewardResult(0.0, comps, info)
  comps["parsed"] = 1.0

  if action == "answer":
    if grounding:
      info["error"] = "grounding samples must zoom"
      return RewardResult(0.0, comps, info)
    comps["format"] = 1.0
    comps["accuracy"] = grade_answer(content, solution)
    info["answer"] = content[:200]
    return RewardResult(comps["format"] + comps["accuracy"], comps, info)

  zoom = _parse_zoom(content)
  if zoom is None or not zoom_is_valid(zoom, duration, earlier):
    info["error"] = f"invalid zoom {content[:60]!r}"
    return RewardResult(0.0, comps, info)
  comps["zoom_valid"] = comps["format"] = 1.0
  info["zoom"] = zoom
  if grounding:
    comps["accuracy"] = float(any(interval_iou(zoom, target) > 0 for target in targets))
  else:
    step2 = _score(step2_completion, solution, targets, duration, [*earlier, zoom], 2, None)
    info["step2"] = dict(step2.info)
    if step2.components["mask"]:
      comps.update(format=0.0, accuracy=0.0, mask=1.0)
      info["error"] = "step 2 zoomed again: both steps excluded"
      return RewardResult(0.0, comps, info)
    comps["accuracy"] = step2.components["accuracy"]
  return RewardResult(comps["format"] + comps["accuracy"], comps, info)


@register("love_r1")
def love_r1(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  """Scores one LOVE-R1 step (see the module docstring); total in [0, 2]."""
  step = context.get("step", 1)
  if step not in (1, 2):
    raise ValueError(f"LOVE-R1 context 'step' must be 1 or 2, got {step!r}")
  solution, targets, duration = _truth(ground_truth)
  return _score(completion, solution, targets, duration, _earlier(context), step,
                context.get("step2_completion"))


def zoom_request(completion: str, grounding: bool = False) -> tuple[int, int] | None:
  """The interval [t1, t2] a completion asks to zoom into, read as `love_r1` reads it; None for an
  answer or a request that does not parse (validity is `zoom_is_valid`'s question)."""
  text = completion if isinstance(completion, str) else ""
  if text.startswith(ZOOM_PREFIX):
    body = text[len(ZOOM_PREFIX):]
  elif grounding and not text.startswith(ANSWER_PREFIX):  # a pre-filled grounding prefix
    body = text
  else:
    return None
  content = _boxed_content(body)
  return None if content is None else _parse_zoom(content)
