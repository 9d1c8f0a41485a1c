"""Hand-computed cases for the SATORI-R1 reward."""
import math

import pytest

from r1jax.processing import smart_resize
from r1jax.rewards import satori

# 700x1000 (h x w) with SATORI's limits (256*28*28 .. 512*28*28): area 700000 > 401408, so
# beta = sqrt(700000 / 401408) = 1.32056, height = floor(700 / beta / 28) * 28 = 504 and
# width = floor(1000 / beta / 28) * 28 = 756. x scales by 1000/756, y by 700/504.
HEIGHT, WIDTH = 700, 1000
GT = {"bboxs": [[0, 0, 500, 350]], "possible_answers": ["cat", "a cat"], "image_caption": "A cat sits on the mat.",
      "width": WIDTH, "height": HEIGHT}


def _completion(caption="A cat sits on the mat.", bbox="[[0, 0, 378, 252]]", answer="cat"):
  return f"<caption>{caption}</caption>\n<bbox>{bbox}</bbox>\n<answer>{answer}</answer>"


def test_resized_size_by_hand():
  assert smart_resize(HEIGHT, WIDTH, 28, satori.DEFAULT_MIN_PIXELS, satori.DEFAULT_MAX_PIXELS) == (504, 756)


def test_perfect_answer_scores_four():
  result = satori.satori_reward(_completion(), GT)
  assert result.total == pytest.approx(4.0)
  for name in ("format", "bbox", "vqa", "caption", "bleu4", "rouge_l", "parse"):
    assert result.components[name] == pytest.approx(1.0), name


def test_boxes_are_rescaled_to_original_pixels():
  # Unscaled, [0, 0, 378, 252] would overlap the ground truth by 378*252 / (500*350) = 0.544.
  assert satori.satori_reward(_completion(), GT).components["bbox"] == pytest.approx(1.0)
  # Context limits change the resize: with max_pixels large the image is only rounded to 700x1008.
  result = satori.satori_reward(_completion(bbox="[[0, 0, 504, 350]]"), GT, min_pixels=3136, max_pixels=2_000_000)
  assert result.components["bbox"] == pytest.approx(1.0)
  # A model-input size passed by the processor is used as is.
  result = satori.satori_reward(_completion(bbox="[[0, 0, 50, 35]]"), GT, resized_height=70, resized_width=100)
  assert result.components["bbox"] == pytest.approx(1.0)


def test_union_of_boxes_is_exact():
  # Two predicted halves cover the ground truth exactly; a half alone scores 0.5.
  halves = satori.satori_reward(_completion(bbox="[[0, 0, 189, 252], [189, 0, 378, 252]]"), GT)
  assert halves.components["bbox"] == pytest.approx(1.0)
  half = satori.satori_reward(_completion(bbox="[[0, 0, 189, 252]]"), GT)
  assert half.components["bbox"] == pytest.approx(0.5)
  # Overlapping predictions are not double counted: union 0.75 of the box.
  overlap = satori.satori_reward(_completion(bbox="[[0, 0, 189, 252], [94.5, 0, 283.5, 252]]"), GT)
  assert overlap.components["bbox"] == pytest.approx(0.75)


def test_format_failures_alone():
  flat_box = satori.satori_reward(_completion(bbox="[0, 0, 378, 252]"), GT)
  assert flat_box.components["format"] == 0 and flat_box.components["bbox"] == pytest.approx(1.0)
  assert flat_box.total == pytest.approx(3.0)
  trailing = satori.satori_reward(_completion() + " more", GT)
  assert trailing.components["format"] == 0 and trailing.total == pytest.approx(3.0)
  wrong_order = ("<bbox>[[0, 0, 378, 252]]</bbox><caption>A cat sits on the mat.</caption><answer>cat</answer>")
  assert satori.satori_reward(wrong_order, GT).components["format"] == 0


def test_unparseable_bbox_scores_zero():
  result = satori.satori_reward(_completion(bbox="[[0, 0, 378]]"), GT)
  assert result.components["bbox"] == 0 and result.components["parse"] == 0
  assert result.components["format"] == 1  # still a list of lists


def test_image_size_may_come_from_the_context():
  truth = {k: v for k, v in GT.items() if k not in ("width", "height")}
  assert satori.satori_reward(_completion(), truth, width=WIDTH, height=HEIGHT).components["bbox"] == pytest.approx(1)
  unusable_limits = satori.satori_reward(_completion(), GT, min_pixels="many")
  assert unusable_limits.components["bbox"] == 0 and "bbox_error" in unusable_limits.info


@pytest.mark.parametrize("change, error, field", [
    ({"bboxs": None}, KeyError, "bboxs"),
    ({"bboxs": [[0, 0, 500]]}, ValueError, "bboxs"),
    ({"bboxs": []}, ValueError, "bboxs"),
    ({"possible_answers": None}, KeyError, "possible_answers"),
    ({"possible_answers": [3]}, ValueError, "possible_answers"),
    ({"image_caption": None}, KeyError, "image_caption"),
    ({"image_caption": ["a cat"]}, ValueError, "image_caption"),
    ({"width": None, "height": None}, KeyError, "width"),
    ({"width": "wide"}, ValueError, "width"),
])
def test_malformed_ground_truth_names_the_field(change, error, field):
  truth = {k: v for k, v in {**GT, **change}.items() if v is not None}
  with pytest.raises(error, match=rf"satori: ground_truth.*{field}"):
    satori.satori_reward(_completion(), truth)


def test_ground_truth_must_be_a_mapping():
  with pytest.raises(ValueError, match="satori: ground_truth must be a mapping"):
    satori.satori_reward(_completion(), ["not", "a", "mapping"])


def test_vqa_exact_match_and_normalisation_flag():
  assert satori.satori_reward(_completion(answer=" a cat "), GT).components["vqa"] == 1
  assert satori.satori_reward(_completion(answer="Cat."), GT).components["vqa"] == 0
  assert satori.satori_reward(_completion(answer="Cat."), GT, normalize_vqa=True).components["vqa"] == 1
  assert satori.satori_reward(_completion(answer="dog"), GT, normalize_vqa=True).components["vqa"] == 0


def test_caption_bleu_smoothing_and_rouge_by_hand():
  truth = dict(GT, image_caption="a cat sits on the mat")
  result = satori.satori_reward(_completion(caption="a cat sits"), truth)
  # BLEU: p1 = p2 = p3 = 1, p4 = 0/0 -> method1 gives 0.1; brevity penalty exp(1 - 6/3).
  bleu = math.exp(1 - 6 / 3) * 0.1 ** 0.25
  # ROUGE-L: LCS 3, precision 1, recall 0.5 -> F1 = 2/3.
  assert result.components["bleu4"] == pytest.approx(bleu)
  assert result.components["rouge_l"] == pytest.approx(2 / 3)
  assert result.components["caption"] == pytest.approx((bleu + 2 / 3) / 2)


def test_rouge_uses_stemming():
  truth = dict(GT, image_caption="cats running")
  result = satori.satori_reward(_completion(caption="cat run"), truth)
  assert result.components["rouge_l"] == pytest.approx(1.0) and result.components["bleu4"] == 0


@pytest.mark.parametrize("caption", [
    "“A cat” sits on the mat.", "A cat — grey — sits «here».", "The sign reads “STOP”—twice.",
])
def test_caption_tokens_split_unicode_punctuation_like_word_tokenize(caption):
  # nltk.word_tokenize (the source) runs NLTKWordTokenizer on each sentence; these captions are one
  # sentence each, so the tokens must be NLTKWordTokenizer's. TreebankWordTokenizer keeps “A and
  # «here» whole, which changes BLEU.
  from nltk.tokenize import NLTKWordTokenizer
  from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

  reference = "a cat sits on the mat near “the” door — «ici»."
  tokenize = NLTKWordTokenizer().tokenize
  expected = sentence_bleu([tokenize(reference.lower())], tokenize(caption.lower()),
                           smoothing_function=SmoothingFunction().method1)
  assert satori.caption_scores(caption, reference)[0] == pytest.approx(expected)
  tokens = tokenize(caption.lower())
  assert any(t in ("“", "”", "«", "»", "—") for t in tokens)
