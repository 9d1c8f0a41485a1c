"""SATORI-R1 reward: caption, then regions, then the answer (spatially anchored VQA).

Source: "SATORI-R1: Incentivizing Multimodal Reasoning with Spatial Grounding and Verifiable
Rewards" (2025) and its public `plugin.py` (ms-swift ORMs: format, bbox, VQA, caption).

Ground truth keys (VQA-Verify's own fields; a missing or malformed one raises, naming it):
  bboxs: non-empty list of `[x1, y1, x2, y2]` in original-image pixels.
  possible_answers: list of accepted answer strings (a single string is one accepted answer).
  image_caption: reference caption, a non-empty string.
  width, height: original image size in pixels (may come through the context instead).
Context keys (all optional):
  resized_height, resized_width: the model-input size, when the processor passes it; else
    resized_image_sizes[0] (the data pipeline's (height, width) of the image it fed the model).
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
  * Tokenizer: nltk's NLTKWordTokenizer on the whole lowercased caption. The source calls
    `nltk.word_tokenize`, which splits sentences with the `punkt` data (not downloadable offline)
    and then applies this same tokenizer to each sentence, so Unicode quotes and dashes
    (“ ” « » —) split off as there. r1jax does not split sentences, so the two differ only in
    that a "." ending an inner sentence stays attached to its word ("a cat. a dog." gives
    "cat." where the source gives "cat", ".").
  * The IoU has no +1e-6 in the denominator (the source adds it): a perfect match scores 1.
  * Predicted boxes with x2 < x1 or y2 < y1 cover no area. Context pixel limits that
    `smart_resize` cannot use score bbox 0 (the rescaling is undefined), reported in
    info["bbox_error"].

Components: format, bbox, vqa, caption, bleu4, rouge_l, parse (1 if the bbox block parsed).
"""
from __future__ import annotations

from collections.abc import Mapping
import functools
import re
from typing import Any

from r1jax.rewards import geometry, grading, parsing, schema
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
  from nltk.tokenize import NLTKWordTokenizer
  from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
  from rouge_score import rouge_scorer

  return (NLTKWordTokenizer().tokenize, sentence_bleu, SmoothingFunction().method1,
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


def _truth(ground_truth: Any, context: Mapping[str, Any]) -> tuple[list[list[float]], list[str], str]:
  """(ground-truth boxes, accepted answers, reference caption); raises naming a malformed field."""
  recipe = "satori"
  value = schema.field(recipe, ground_truth, "bboxs", "the target boxes")
  boxes = parsing.parse_boxes(value)
  if not boxes:
    raise schema.malformed(recipe, "bboxs", "a non-empty list of [x1, y1, x2, y2] boxes", value)
  value = schema.field(recipe, ground_truth, "possible_answers", "the accepted answers")
  accepted = [value] if isinstance(value, str) else value
  if not (isinstance(accepted, (list, tuple)) and accepted and all(isinstance(a, str) for a in accepted)):
    raise schema.malformed(recipe, "possible_answers", "a string or a non-empty list of strings", value)
  caption = schema.field(recipe, ground_truth, "image_caption", "the reference caption")
  if not (isinstance(caption, str) and caption.strip()):
    raise schema.malformed(recipe, "image_caption", "a non-empty string", caption)
  schema.image_size(recipe, ground_truth, context, required=True)
  return boxes, list(accepted), caption


def _bbox_score(completion: str, gt_boxes: list[list[float]], ground_truth: Mapping[str, Any],
                context: Mapping[str, Any]) -> tuple[float, bool, str]:
  """(union IoU, parsed, error text)."""
  content = parsing.extract_tag(completion, "bbox")
  pred = parsing.parse_boxes(content) if content is not None else None
  if not pred:
    return 0.0, pred is not None, ""
  sizes = context.get("resized_image_sizes")
  if "resized_height" not in context and isinstance(sizes, (list, tuple)) and len(sizes) == 1:
    context = dict(context, resized_height=sizes[0][0], resized_width=sizes[0][1])
  frame = parsing.image_frame(ground_truth, context, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
  if frame is None:
    return 0.0, True, "the context's pixel limits cannot rescale the boxes"
  return geometry.union_iou(frame.to_original(pred).tolist(), gt_boxes), True, ""


def _vqa_score(completion: str, accepted: list[str], normalize: bool) -> float:
  answer = parsing.extract_tag(completion, "answer")
  if answer is None:
    return 0.0
  if normalize:
    return float(grading.normalize_text(answer) in {grading.normalize_text(a) for a in accepted})
  return float(answer.strip() in accepted)


@register("satori")
def satori_reward(completion: str, ground_truth: Mapping[str, Any], **context: Any) -> RewardResult:
  gt_boxes, accepted, reference = _truth(ground_truth, context)
  completion = completion if isinstance(completion, str) else ""
  fmt = float(_format_ok(completion))
  bbox, parsed, bbox_error = _bbox_score(completion, gt_boxes, ground_truth, context)
  vqa = _vqa_score(completion, accepted, bool(context.get("normalize_vqa", False)))
  caption = parsing.extract_tag(completion, "caption")
  bleu = rouge_l = 0.0
  if caption is not None:
    bleu, rouge_l = caption_scores(caption.strip(), reference)
  caption_score = (bleu + rouge_l) / 2
  components = {"format": fmt, "bbox": bbox, "vqa": vqa, "caption": caption_score, "bleu4": bleu,
                "rouge_l": rouge_l, "parse": float(parsed)}
  info = {"bbox_error": bbox_error} if bbox_error else {}
  return RewardResult(total=fmt + bbox + vqa + caption_score, components=components, info=info)
