"""3D-R1: multi-view 3D scene reasoning (reward `three_d_r1`) and its view-selection scoring.

Source: "3D-R1: Enhancing Reasoning in 3D VLMs for Unified Scene Understanding"
(AIGeeksGroup/3D-R1, `models/rl/reward_functions.py`, `models/3dr1/dynamic_view_selection.py`).

Reward, total = 0.3·format + 0.4·perception + 0.3·semantic, in [-0.3, 1]:
  format = 0.5 if a `<think>…</think>` and an `<answer>…</answer>` block are both present,
    + 0.25 if the think text is longer than 20 characters, + 0.25 if the answer text is longer
    than 10 characters (each bonus counts on its own; texts are stripped)         ∈ [0, 1]
  perception = mean over predicted boxes `box: [x1, y1, z1, x2, y2, z2]` (anywhere in the
    completion) of the best axis-aligned 3D IoU against the ground-truth boxes; an invalid box
    (x2 < x1, y2 < y1 or z2 < z1) scores 0; 0 without predicted or ground-truth boxes  ∈ [0, 1]
  semantic = cosine similarity between the embeddings of the answer (the `<answer>` text, or the
    whole completion when there is none) and the reference answer; with several references the
    best one counts; 0 for an empty answer or when the embedder fails           ∈ [-1, 1]

Ground truth (the dataset's fields; a missing or malformed one raises, naming it):
  boxes: ground-truth boxes `[[x1, y1, z1, x2, y2, z2], ...]` (may be empty or absent).
  answer: the reference answer text, or a list of acceptable answers (ScanQA has several);
    `<answer>` tags around it are removed.
Context:
  embedder: a `TextEmbedder`, or the `JudgeCall` the rollout's batched `SemanticJudge` made for
    this sample; default: the shared local MiniLM (`judges.default_text_embedder`); None turns
    the semantic term off (0). In a run it is the `SemanticJudge` (all-MiniLM-L6-v2 in JAX, a frozen
    model on the run's device, one call per rollout); the paper's CLIP ViT-B/32 text tower is
    replaced by all-MiniLM-L6-v2 (a sentence model trained for exactly this similarity, 22M params).
  embed_timeout_s: time limit of the embedding call (default `judges.DEFAULT_EMBED_TIMEOUT_S`).
Components: format, perception, semantic, answer_match (logged, not in the total: the answer
equals a reference after ScanQA's exact-match normalisation, `normalise_answer`), has_think, has_answer, num_boxes (predicted boxes
scored), malformed_boxes (`box: [...]` matches that are not 6 finite numbers), invalid_boxes
(boxes with a max corner below the min corner), the embedding judge's status: embed_error,
embed_timeout, embed_invalid (one of them 1 when the call failed) and embed_failed (their sum).

Ambiguities and r1jax's choices:
  * The public code measures the think/answer lengths including the tags (so ~6 characters of
    text already pass); r1jax measures the text inside the tags, as the paper states.
  * Semantic similarity: the paper uses a CLIP text encoder; r1jax uses a local sentence-embedding
    model behind `TextEmbedder`. The raw cosine is kept (it can be negative), as in the source.
  * Predicted corners must come min first per axis: the public code builds the 8 corners and so
    accepts either order; issue 22 makes x2 < x1 an invalid box (IoU 0, counted), never an
    exception. Ground-truth boxes are corner-ordered. `box:` is matched case-sensitively as in the source. A box is read as the
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
from r1jax.rewards.judges import (DEFAULT_EMBED_TIMEOUT_S, JUDGE_ERROR, JUDGE_INVALID, JUDGE_OK, JUDGE_TIMEOUT, MISSING,
                                  JudgeCall, TextEmbedder, default_text_embedder, embedding_similarity,
                                  resolve_text_embedder)
from r1jax.rewards.scorer import ERROR, OK, call_with_timeout
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


def is_valid_box(values: Sequence[float]) -> bool:
  """Whether [x1, y1, z1, x2, y2, z2] has its min corner first on every axis (x1 <= x2, ...)."""
  return all(values[k] <= values[k + 3] for k in range(3))


def parse_3d_boxes(text: str) -> tuple[list[list[float]], int]:
  """(boxes `[[x1, y1, z1, x2, y2, z2], ...]` as written, count of malformed matches)."""
  boxes, malformed = [], 0
  for match in _BOX.finditer(text):
    values = _box_values(match.group(1))
    if values is None:
      malformed += 1
    else:
      boxes.append(values)
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


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise_answer(text: str) -> str:
  """ScanQA's exact-match normalisation of an answer: the `box: [...]` parts removed, lower case,
  punctuation and articles dropped, whitespace collapsed."""
  text = _BOX.sub(" ", text).lower()
  return " ".join(_ARTICLES.sub(" ", _PUNCTUATION.sub(" ", text)).split())


def semantic_texts(completion: str, ground_truth: Mapping[str, Any]) -> tuple[str, list[str]]:
  """(the answer the semantic term embeds: the `<answer>` text, else the whole completion, stripped;
  the reference answers). Raises naming the field when `answer` is missing or malformed."""
  text = completion if isinstance(completion, str) else ""
  answer = extract_tag(text, "answer")
  return (answer if answer is not None else text).strip(), _references(ground_truth)


@register("three_d_r1", judges=("embedder",))  # the trainer builds it from config.reward.text_embedder
def three_d_r1(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  """Scores one 3D-R1 completion (see the module docstring); total in [-0.3, 1]."""
  text = completion if isinstance(completion, str) else ""
  info: dict[str, Any] = {}
  fmt, has_think, has_answer = format_score(text)

  predicted, malformed = parse_3d_boxes(text)
  invalid = sum(not is_valid_box(p) for p in predicted)
  truth = _truth_boxes(ground_truth)
  perception = 0.0
  if predicted and truth:  # an invalid box (x2 < x1, ...) is a wrong prediction: IoU 0
    perception = float(np.mean([max(box3d_iou(p, t) for t in truth) if is_valid_box(p) else 0.0
                                for p in predicted]))

  answer, references = semantic_texts(text, ground_truth)
  embedder = context["embedder"] if "embedder" in context else default_text_embedder()
  semantic, status = 0.0, MISSING
  if answer and references and embedder is not None:
    if isinstance(embedder, JudgeCall):  # the rollout's one batched call (`SemanticJudge.judge_batch`)
      call = embedder
    else:
      call = embedding_similarity(embedder, answer, references,
                                  timeout_s=float(context.get("embed_timeout_s", DEFAULT_EMBED_TIMEOUT_S)))
    status = call.status
    if call.ok:
      semantic = float(np.max(call.value))
    elif call.failed:
      info["embed_error"] = f"{call.status}: {call.error}"

  comps = {"format": fmt, "perception": perception, "semantic": semantic,
           "answer_match": float(bool(answer) and normalise_answer(answer) in {normalise_answer(r) for r in references}),
           "has_think": float(has_think),
           "has_answer": float(has_answer), "num_boxes": float(len(predicted)), "malformed_boxes": float(malformed),
           "invalid_boxes": float(invalid),
           "embed_failed": float(status in (JUDGE_ERROR, JUDGE_TIMEOUT, JUDGE_INVALID)),
           **{f"embed_{s}": float(status == s) for s in (JUDGE_ERROR, JUDGE_TIMEOUT, JUDGE_INVALID)}}
  total = FORMAT_WEIGHT * fmt + PERCEPTION_WEIGHT * perception + SEMANTIC_WEIGHT * semantic
  return RewardResult(total, comps, info)


class SemanticJudge:
  """The semantic term's embedding model as a frozen model of the run: one batched call per rollout.

  It is built at start-up (`rewards.startup`, context key "embedder"), with its weights loaded on the
  run's default JAX device (the accelerator that trains the policy, or the CPU), and the rollout
  asks it once for all of a round's samples (`frozen_judge.judge_rollout`: `sample_item` then
  `judge_batch`) before the per-sample rewards run; each sample's context then holds its
  `JudgeCall` (value: cosine per reference, float64 `[num_references]`), which `three_d_r1` reads
  instead of embedding on its own. It is also a `TextEmbedder` (`embed`), so a reward called
  outside a rollout embeds through it per sample.

  Failures are statuses, never exceptions: the embed call raising ("error"), running past
  `timeout_s` ("timeout": every sample of the call, they share one device call) or returning
  unusable vectors ("invalid"); each reaches the sample's components (`embed_error`,
  `embed_timeout`, `embed_invalid`, `embed_failed`) and the rollout's `judge/embedder/<status>`
  counts. `counts` adds them up since the judge was built.
  """

  def __init__(self, embedder: TextEmbedder, timeout_s: float = DEFAULT_EMBED_TIMEOUT_S):
    self.embedder, self.timeout_s = embedder, float(timeout_s)
    self.counts: dict[str, int] = {}

  @classmethod
  def from_config(cls, reward_config: Any) -> "SemanticJudge":
    """From `config.reward.text_embedder` (a model folder; "" = the packaged all-MiniLM-L6-v2),
    loaded now on the default JAX device. Raises FileNotFoundError saying how to get a model."""
    import jax  # pylint: disable=g-import-not-at-top  (rewards stay importable without touching a backend)
    embedder = resolve_text_embedder(reward_config.get("text_embedder", ""), device=jax.default_backend())
    return cls(embedder.load(), float(reward_config.get("embed_timeout_s", DEFAULT_EMBED_TIMEOUT_S)))

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    return self.embedder.embed(texts)

  @staticmethod
  def sample_item(completion: str, ground_truth: Mapping[str, Any], context: Mapping[str, Any]) -> dict | None:
    """{'answer', 'references'} the reward will compare, or None when it compares nothing."""
    del context
    answer, references = semantic_texts(completion, ground_truth)
    return {"answer": answer, "references": references} if answer and references else None

  def judge_batch(self, items: Sequence[Mapping[str, Any]]) -> list[JudgeCall]:
    """One embed call for the distinct texts of all `items`; a `JudgeCall` per item; never raises."""
    texts = list(dict.fromkeys(t for item in items for t in (item["answer"], *item["references"])))
    if not texts:
      return []
    code, value = call_with_timeout(self.embedder.embed, self.timeout_s, texts)
    if code == ERROR:
      calls = [JudgeCall(JUDGE_ERROR, error=f"{type(value).__name__}: {value}"[:500])] * len(items)
    elif code != OK:
      calls = [JudgeCall(JUDGE_TIMEOUT, error=f"no embeddings within {self.timeout_s:g} s for {len(texts)} "
                                              "texts")] * len(items)
    else:
      row_of = {text: row for row, text in enumerate(texts)}
      calls = [self._similarity(value, row_of, item) for item in items]
    for call in calls:
      self.counts[call.status] = self.counts.get(call.status, 0) + 1
    return calls

  @staticmethod
  def _similarity(embeddings: Any, row_of: Mapping[str, int], item: Mapping[str, Any]) -> JudgeCall:
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(row_of) or emb.shape[1] == 0:
      return JudgeCall(JUDGE_INVALID, error=f"embedder returned shape {emb.shape}, expected [{len(row_of)}, dim]")
    rows = emb[[row_of[t] for t in (item["answer"], *item["references"])]]
    norms = np.linalg.norm(rows, axis=1)
    if not (np.isfinite(rows).all() and (norms > 0).all()):
      return JudgeCall(JUDGE_INVALID, error="embedder returned a non-finite or zero vector")
    unit = rows / norms[:, None]
    return JudgeCall(JUDGE_OK, np.clip(unit[1:] @ unit[0], -1.0, 1.0))


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
