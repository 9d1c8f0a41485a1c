"""SATORI-R1 reward: caption, then regions, then the answer (spatially anchored VQA).

Source: "SATORI-R1: Incentivizing Multimodal Reasoning with Spatial Grounding and Verifiable
Rewards" (2025) and its public `plugin.py` (ms-swift ORMs: format, bbox, VQA, caption).

Ground truth keys (VQA-Verify's own fields):
  bboxs: list of `[x1, y1, x2, y2]` in original-image pixels.
  possible_answers: list of accepted answer strings (a single string is one accepted answer).
  image_caption: reference caption.
  width, height: original image size in pixels.
Context keys (all optional):
  resized_height, resized_width: the model-input size, when the processor passes it.
  min_pixels, max_pixels: otherwise the resized size is `smart_resize` with these limits.
    Defaults 256*28*28 and 512*28*28, SATORI's training values.
  normalize_vqa: compare answers case-folded with whitespace collapsed and a final "." dropped
    (default False: exact match, as the source).
  width, height: used when the ground truth lacks them.

Completion: `<caption>…</caption><bbox>[[x1,y1,x2,y2],…]</bbox><answer>…</answer>`, whitespace
allowed between and around the blocks, boxes in resized-input pixels.

Formula (each term in [0, 1], total in [0, 4]):
  format  = 1 if the whole completion is those three blocks in that order, no block contains a
            caption/bbox/answer tag, and the bbox content parses as a non-empty list of lists.
  bbox    = IoU(union of predicted boxes mapped to original pixels, union of `bboxs`), exact area
            of the unions of rectangles; 0 if the first `<bbox>` block does not parse as boxes.
  vqa     = 1 if the stripped first `<answer>` content is in `possible_answers`.
  caption = (sentence BLEU-4, smoothing method1, on lowercased tokens
             + ROUGE-L F1 with Porter stemming) / 2, on the stripped first `<caption>` content.
  total   = format + bbox + vqa + caption.
bbox, vqa and caption read their blocks wherever they are, whether or not the format holds (as
the source does).

Choices:
  * Tokenizer: nltk's TreebankWordTokenizer on the whole lowercased caption. The source calls
    `nltk.word_tokenize`, which needs the `punkt` data (not downloadable offline) to split
    sentences first; the Treebank tokenizer needs no data. The two differ only in that a "."
    ending an inner sentence stays attached to its word.
  * The IoU has no +1e-6 in the denominator (the source adds it): a perfect match scores 1.
  * Predicted boxes with x2 < x1 or y2 < y1 cover no area. A ground truth without a usable image
    size scores bbox 0 (the rescaling is undefined), reported in info["bbox_error"].

Components: format, bbox, vqa, caption, bleu4, rouge_l, parse (1 if the bbox block parsed).
"""
from __future__ import annotations

from collections.abc import Mapping
import functools
import re
from typing import Any

from r1jax.rewards import geometry, grading, parsing
from r1jax.rewards.base import RewardResult, register

DEFAULT_MIN_PIXELS = 256 * 28 * 28
DEFAULT_MAX_PIXELS = 512 * 28 * 28

_TAGS = r"</?(?:caption|bbox|answer)>"
_CONTENT = rf"(?:(?!{_TAGS}).)*"
_FORMAT = re.compile(
    rf"\s*<caption>{_CONTENT}</caption>\s*<bbox>({_CONTENT})</bbox>\s*<answer>{_CONTENT}</answer>\s*", re.DOTALL)


@functools.cache
def _caption_metrics():
  """(tokenize, sentence_bleu, smoothing, ROUGE-L scorer).

  Imported on first use: nltk and rouge_score take seconds to import and only this reward needs
  them.
  """
  from nltk.tokenize.treebank import TreebankWordTokenizer
  from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
  from rouge_score import rouge_scorer

  return (TreebankWordTokenizer().tokenize, sentence_bleu, SmoothingFunction().method1,
          rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True))


def caption_scores(prediction: str, reference: str) -> tuple[float, float]:
  """(sentence BLEU-4 with smoothing method1 on lowercased tokens, ROUGE-L F1 with stemming)."""
  tokenize, sentence_bleu, smoothing, rouge = _caption_metrics()
  bleu = sentence_bleu([tokenize(reference.lower())], tokenize(prediction.lower()), smoothing_function=smoothing)
  rouge_l = rouge.score(reference, prediction)["rougeL"].fmeasure
  return float(bleu), float(rouge_l)


def _format_ok(completion: str) -> bool:
  match = _FORMAT.fullmatch(completion)
  if not match:
    return False
  boxes = parsing.parse_literal(match.group(1))
  return isinstance(boxes, list) and bool(boxes) and all(isinstance(b, list) for b in boxes)


def _bbox_score(completion: str, ground_truth: Mapping[str, Any],
                context: Mapping[str, Any]) -> tuple[float, bool, str]:
  """(union IoU, parsed, error text)."""
  content = parsing.extract_tag(completion, "bbox")
  pred = parsing.parse_boxes(content) if content is not None else None
  if not pred:
    return 0.0, pred is not None, ""
  gt = parsing.parse_boxes(ground_truth.get("bboxs"))
  if not gt:
    return 0.0, True, "ground truth `bboxs` missing or malformed"
  frame = parsing.image_frame(ground_truth, context, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
  if frame is None:
    return 0.0, True, "no usable `width`/`height` (or pixel limits) to rescale the boxes"
  return geometry.union_iou(frame.to_original(pred).tolist(), gt), True, ""


def _vqa_score(completion: str, possible_answers: Any, normalize: bool) -> float:
  answer = parsing.extract_tag(completion, "answer")
  if answer is None:
    return 0.0
  possible_answers = parsing.plain(possible_answers)
  accepted = [possible_answers] if isinstance(possible_answers, str) else possible_answers
  if not isinstance(accepted, (list, tuple)):
    return 0.0
  accepted = [a for a in accepted if isinstance(a, str)]
  if normalize:
    return float(grading.normalize_text(answer) in {grading.normalize_text(a) for a in accepted})
  return float(answer.strip() in accepted)


@register("satori")
def satori_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  completion = completion if isinstance(completion, str) else ""
  ground_truth = ground_truth if isinstance(ground_truth, Mapping) else {}
  fmt = float(_format_ok(completion))
  bbox, parsed, bbox_error = _bbox_score(completion, ground_truth, context)
  vqa = _vqa_score(completion, ground_truth.get("possible_answers"), bool(context.get("normalize_vqa", False)))
  caption = parsing.extract_tag(completion, "caption")
  reference = ground_truth.get("image_caption")
  bleu = rouge_l = 0.0
  if caption is not None and isinstance(reference, str):
    bleu, rouge_l = caption_scores(caption.strip(), reference)
  caption_score = (bleu + rouge_l) / 2
  components = {"format": fmt, "bbox": bbox, "vqa": vqa, "caption": caption_score, "bleu4": bleu,
                "rouge_l": rouge_l, "parse": float(parsed)}
  info = {"bbox_error": bbox_error} if bbox_error else {}
  return RewardResult(total=fmt + bbox + vqa + caption_score, components=components, info=info)
