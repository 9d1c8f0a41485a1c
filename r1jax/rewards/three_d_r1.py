"""3D-R1: multi-view 3D scene reasoning (reward `three_d_r1`) and its view-selection scoring.

Source: "3D-R1: Enhancing Reasoning in 3D VLMs for Unified Scene Understanding"
(AIGeeksGroup/3D-R1, `models/rl/reward_functions.py`, `models/3dr1/dynamic_view_selection.py`).

Reward, total = 0.3·format + 0.4·perception + 0.3·semantic, in [-0.3, 1]:
  format = 0.5 if a `<think>…</think>` and an `<answer>…</answer>` block are both present,
    + 0.25 if the think text is longer than 20 characters, + 0.25 if the answer text is longer
    than 10 characters (each bonus counts on its own; texts are stripped)         ∈ [0, 1]
  perception = mean over predicted boxes `box: [x1, y1, z1, x2, y2, z2]` (anywhere in the
    completion) of the best axis-aligned 3D IoU against the ground-truth boxes; 0 without
    predicted or ground-truth boxes                                               ∈ [0, 1]
  semantic = cosine similarity between the embeddings of the answer (the `<answer>` text, or the
    whole completion when there is none) and the reference answer; with several references the
    best one counts; 0 for an empty answer or when the embedder fails           ∈ [-1, 1]

Ground truth (the dataset's fields; a missing or malformed one raises, naming it):
  boxes: ground-truth boxes `[[x1, y1, z1, x2, y2, z2], ...]` (may be empty or absent).
  answer: the reference answer text, or a list of acceptable answers (ScanQA has several);
    `<answer>` tags around it are removed.
Context:
  embedder: a `TextEmbedder`; default: the shared local MiniLM (`judges.default_text_embedder`);
    None turns the semantic term off (0).
  embed_timeout_s: time limit of the embedding call (default `judges.DEFAULT_EMBED_TIMEOUT_S`).
Components: format, perception, semantic, has_think, has_answer, num_boxes (predicted boxes
scored), malformed_boxes (`box: [...]` matches that are not 6 finite numbers), embed_failed.

Ambiguities and r1jax's choices:
  * The public code measures the think/answer lengths including the tags (so ~6 characters of
    text already pass); r1jax measures the text inside the tags, as the paper states.
  * Semantic similarity: the paper uses a CLIP text encoder; r1jax uses a local sentence-embedding
    model behind `TextEmbedder`. The raw cosine is kept (it can be negative), as in the source.
  * Corners are ordered per axis (min, max) before the IoU, as the public code does by building
    the 8 corners; `box:` is matched case-sensitively as in the source. A box is read as the
    source reads it: only digits, ".", "-", "," and spaces between the brackets, split on commas
    into 6 numbers; so `5e-1`, `+1` or a trailing comma make it malformed there and here.
    Malformed boxes are skipped (as in the source) and counted in malformed_boxes; so are boxes
    with a number too large for a float, which would make the source's IoU NaN.

View selection (`view_scores`, `select_views`): each candidate view v (8 by default) scores
U(v) = w_t·text_relevance + w_c·coverage + w_s·image_text_similarity, weights (0.3, 0.35, 0.35)
by default and configurable, and the top 4 views are kept. The per-view feature scores come from
the data pipeline's encoders; these functions are pure. (The public code renormalises w_c and w_s
to sum to 1, which doubles them to 0.5 each; r1jax uses the paper's weights as given.)
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from r1jax.rewards import schema
from r1jax.rewards.base import RewardResult, register
from r1jax.rewards.geometry import box3d_iou
from r1jax.rewards.judges import DEFAULT_EMBED_TIMEOUT_S, default_text_embedder, embedding_similarity
from r1jax.rewards.parsing import extract_tag, plain

FORMAT_WEIGHT, PERCEPTION_WEIGHT, SEMANTIC_WEIGHT = 0.3, 0.4, 0.3
BOTH_TAGS_SCORE, THINK_LENGTH_SCORE, ANSWER_LENGTH_SCORE = 0.5, 0.25, 0.25
MIN_THINK_CHARS, MIN_ANSWER_CHARS = 20, 10

VIEW_WEIGHTS = (0.3, 0.35, 0.35)  # text relevance, coverage, image-text similarity
NUM_CANDIDATE_VIEWS = 8
NUM_SELECTED_VIEWS = 4

# `box: [ ... ]`; the bracket body is bounded so a runaway match stays cheap.
_BOX = re.compile(r"box:\s*\[([^\[\]]{0,512})\]")
# The characters the public code's box pattern allows between the brackets.
_BOX_BODY = re.compile(r"[\d.,\-\s]+")


def format_score(text: str) -> tuple[float, bool, bool]:
  """(format reward, has think block, has answer block) of `text`."""
  think, answer = extract_tag(text, "think"), extract_tag(text, "answer")
  score = BOTH_TAGS_SCORE if think is not None and answer is not None else 0.0
  if think is not None and len(think.strip()) > MIN_THINK_CHARS:
    score += THINK_LENGTH_SCORE
  if answer is not None and len(answer.strip()) > MIN_ANSWER_CHARS:
    score += ANSWER_LENGTH_SCORE
  return score, think is not None, answer is not None


def _ordered_box(values: Sequence[float]) -> list[float]:
  """[x1, y1, z1, x2, y2, z2] with min corner first on every axis."""
  lo = [min(values[k], values[k + 3]) for k in range(3)]
  hi = [max(values[k], values[k + 3]) for k in range(3)]
  return lo + hi


def _box_values(body: str) -> list[float] | None:
  """The 6 finite numbers between a box's brackets, read as the public code reads them; else None."""
  if not _BOX_BODY.fullmatch(body):
    return None
  try:
    values = [float(v) for v in body.split(",")]
  except ValueError:  # "", "1-2", "1.2.3": the public code skips these boxes too
    return None
  return values if len(values) == 6 and all(math.isfinite(v) for v in values) else None


def parse_3d_boxes(text: str) -> tuple[list[list[float]], int]:
  """(boxes `[[x1, y1, z1, x2, y2, z2], ...]` corner-ordered, count of malformed matches)."""
  boxes, malformed = [], 0
  for match in _BOX.finditer(text):
    values = _box_values(match.group(1))
    if values is None:
      malformed += 1
    else:
      boxes.append(_ordered_box(values))
  return boxes, malformed


def _is_box(value: Any) -> bool:
  return (isinstance(value, (list, tuple)) and len(value) == 6
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _truth_boxes(ground_truth: Mapping[str, Any]) -> list[list[float]]:
  boxes = plain(schema.mapping("three_d_r1", ground_truth).get("boxes")) or []
  if not (isinstance(boxes, (list, tuple)) and all(_is_box(plain(box)) for box in boxes)):
    raise schema.malformed("three_d_r1", "boxes", "a list of finite [x1, y1, z1, x2, y2, z2] boxes", boxes)
  return [_ordered_box([float(v) for v in plain(box)]) for box in boxes]


def _references(ground_truth: Mapping[str, Any]) -> list[str]:
  answer = schema.field("three_d_r1", ground_truth, "answer", "the reference answer text, or a list of them")
  return [str(ref) for ref in schema.answer_values("three_d_r1", answer)]


@register("three_d_r1", judges=("embedder",))  # the trainer builds it from config.reward.text_embedder
def three_d_r1(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  """Scores one 3D-R1 completion (see the module docstring); total in [-0.3, 1]."""
  text = completion if isinstance(completion, str) else ""
  info: dict[str, Any] = {}
  fmt, has_think, has_answer = format_score(text)

  predicted, malformed = parse_3d_boxes(text)
  truth = _truth_boxes(ground_truth)
  perception = 0.0
  if predicted and truth:
    perception = float(np.mean([max(box3d_iou(p, t) for t in truth) for p in predicted]))

  answer = extract_tag(text, "answer")
  answer = (answer if answer is not None else text).strip()
  references = _references(ground_truth)
  embedder = context["embedder"] if "embedder" in context else default_text_embedder()
  semantic, embed_failed = 0.0, False
  if answer and references and embedder is not None:
    call = embedding_similarity(embedder, answer, references,
                                timeout_s=float(context.get("embed_timeout_s", DEFAULT_EMBED_TIMEOUT_S)))
    if call.ok:
      semantic = float(np.max(call.value))
    else:
      embed_failed = call.failed
      info["embed_error"] = call.error

  comps = {"format": fmt, "perception": perception, "semantic": semantic, "has_think": float(has_think),
           "has_answer": float(has_answer), "num_boxes": float(len(predicted)), "malformed_boxes": float(malformed),
           "embed_failed": float(embed_failed)}
  total = FORMAT_WEIGHT * fmt + PERCEPTION_WEIGHT * perception + SEMANTIC_WEIGHT * semantic
  return RewardResult(total, comps, info)


def view_scores(text_relevance: Sequence[float], coverage: Sequence[float], image_text_similarity: Sequence[float],
                weights: Sequence[float] = VIEW_WEIGHTS) -> np.ndarray:
  """Utility U(v) = w_t·text_relevance + w_c·coverage + w_s·image_text_similarity per view.

  Args:
    text_relevance, coverage, image_text_similarity: one score per candidate view, `[num_views]`.
    weights: (w_t, w_c, w_s).

  Returns:
    float64 `[num_views]`.
  """
  features = [np.asarray(x, dtype=np.float64) for x in (text_relevance, coverage, image_text_similarity)]
  names = ("text_relevance", "coverage", "image_text_similarity")
  for name, values in zip(names, features):
    if values.ndim != 1 or values.shape != features[0].shape:
      raise ValueError(f"view score {name!r} must be [num_views] like text_relevance {features[0].shape}, "
                       f"got shape {values.shape}")
    if not np.isfinite(values).all():
      raise ValueError(f"view score {name!r} holds non-finite values: {values}")
  if len(weights) != 3:
    raise ValueError(f"view weights are (text relevance, coverage, image-text similarity), got {weights!r}")
  return sum(w * values for w, values in zip(weights, features))


def select_views(text_relevance: Sequence[float], coverage: Sequence[float], image_text_similarity: Sequence[float],
                 num_selected: int = NUM_SELECTED_VIEWS, weights: Sequence[float] = VIEW_WEIGHTS) -> np.ndarray:
  """Indices `[num_selected]` of the best views by `view_scores`, best first (ties: lower index first)."""
  scores = view_scores(text_relevance, coverage, image_text_similarity, weights)
  if not 1 <= num_selected <= len(scores):
    raise ValueError(f"select_views: num_selected={num_selected} must be in [1, {len(scores)}] (the candidate views)")
  return np.argsort(-scores, kind="stable")[:num_selected]
