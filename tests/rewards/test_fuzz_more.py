"""Property-based fuzzing of LOVE-R1, Omni-R1, 3D-R1 and GoT-R1: no completion makes a reward raise,
and every total and component is finite, with the total inside the reward's documented range."""
import json
import math
import re
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from r1jax.rewards import got_r1, love_r1, omni_r1, three_d_r1
from r1jax.rewards.parsing import extract_tag

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FRAGMENTS = st.one_of(
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<|obj_start|>", "<|obj_end|>", "<|box_start|>",
                     "<|box_end|>", love_r1.ZOOM_PREFIX, love_r1.ANSWER_PREFIX, "\\boxed{", "box: [", "(", ")",
                     "[", "]", "{", "}", ",", ":", '"', "\n", " ", '"start_time": "', '"end_time": "',
                     '"description": "', '"bbox_2d": [', "00:01.50", "99:99.99", "NaN", "Infinity", "-Infinity",
                     "1e999", "-0", "9" * 400, "\ufffd", "🙂", "é", "\x00"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.text(max_size=20),
)
_KEYFRAME = json.dumps({"start_time": "00:01.00", "end_time": "00:01.50", "description": "the dog"})
_VALID = {
    "love_r1": love_r1.ZOOM_PREFIX + "Zoom on the start. \\boxed{[10, 40]}",
    "omni_r1": f"<think>find it</think><answer>{_KEYFRAME}\n{_KEYFRAME.replace('01.', '02.')}</answer>",
    "three_d_r1": "<think>The chair is left of the table.</think><answer>It is red. box: [0, 0, 0, 1, 1, 1]</answer>",
    "got_r1": "A <|obj_start|>cat<|obj_end|> <|box_start|>(10,20),(300,400)<|box_end|> on a "
              "<|obj_start|>mat<|obj_end|> <|box_start|>(0,300),(1000,1000)<|box_end|>",
}
_HUGE = ["x" * 100_000, "{" * 100_000, "{}" * 50_000, "\\boxed{" * 14_000, "<|obj_start|>" * 7_000,
         "<|obj_start|>a<|obj_end|>" * 4_000, "box: [" * 16_000, "box: [0, 0, 0, 1, 1, 1] " * 4_000,
         "<think>x</think><answer>" + "<|box_end|>}" * 8_000]


def _completions(name):
  valid = _VALID[name]
  arbitrary = st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=40).map("".join))
  truncated = st.integers(0, len(valid)).map(lambda k: valid[:k])
  spliced = st.tuples(st.integers(0, len(valid)), _FRAGMENTS).map(lambda a: valid[:a[0]] + a[1] + valid[a[0]:])
  nested = st.sampled_from(["<think><think>", "<answer><answer>", "</answer>"]).map(lambda t: valid + t + valid)
  return st.one_of(arbitrary, truncated, spliced, nested, st.just(valid), st.just(valid * 3))


def _check(result, low, high):
  values = [result.total, *result.components.values()]
  assert all(isinstance(v, float) and math.isfinite(v) for v in values), result
  assert low - 1e-9 <= result.total <= high + 1e-9, result


class HashEmbedder:
  """Fast deterministic stand-in for MiniLM: character-count vectors (never zero)."""

  def embed(self, texts):
    out = np.ones((len(texts), 16))
    for i, text in enumerate(texts):
      for ch in text[:2000]:
        out[i, ord(ch) % 16] += 1
    return out


LOVE_TRUTHS = [{"solution": "<answer>B</answer>", "tgt": None, "duration": 300.0},
               {"solution": "", "tgt": [[5, 12], [100, 130]], "duration": 150.0}]
OMNI_TRUTH = {"bboxs": [[[10, 10, 50, 50]] * 6 + [[-1, -1, -1, -1]] * 6, [[60, 60, 90, 95]] * 12]}
OMNI_FRAMES, OMNI_OBJECTS = 12, 2
THREE_D_TRUTH = {"boxes": [[0, 0, 0, 1, 1, 1], [2, 2, 0, 3, 4, 1]], "answer": ["It is red.", "red"]}
GOT_TRUTH = {"layout": _VALID["got_r1"], "prompt": "a cat on a mat"}


@SETTINGS
@given(_completions("love_r1"), st.sampled_from(LOVE_TRUTHS), st.sampled_from([1, 2]),
       st.one_of(st.none(), _completions("love_r1")))
def test_love_r1_fuzz(completion, truth, step, step2):
  result = love_r1.love_r1(completion, truth, step=step, earlier_zooms=[[0, 30]], step2_completion=step2)
  _check(result, 0.0, 2.0)
  assert result.components["mask"] in (0.0, 1.0)


def _omni_bounds(completion, detail_text, alpha_k=1.0, alpha_a=1.0):
  """The documented range for this completion (J objects, F frames) and detail answer."""
  num_objects = len(omni_r1.json_spans(extract_tag(completion, "answer") or ""))
  extra = max(0, len(omni_r1.json_spans(detail_text)) - OMNI_OBJECTS) if detail_text else 0
  low = alpha_k * (0.4 * min(0, 7 - OMNI_FRAMES) - 0.7 * OMNI_FRAMES * num_objects) - 0.5 * extra / OMNI_OBJECTS
  return low, 2.6 + 1.6 * alpha_k + alpha_a


@SETTINGS
@given(_completions("omni_r1"),
       st.one_of(st.none(), _completions("omni_r1"), st.just('{"bbox_2d": [10, 10, 50, 50]}')))
def test_omni_r1_fuzz(completion, detail_text):
  detail = None if detail_text is None else (lambda frame, description: detail_text)
  result = omni_r1.omni_r1(completion, OMNI_TRUTH, detail_system=detail, frame_hw=(480, 640))
  _check(result, *_omni_bounds(completion, detail_text))


@SETTINGS
@given(_completions("three_d_r1"))
def test_three_d_r1_fuzz(completion):
  _check(three_d_r1.three_d_r1(completion, THREE_D_TRUTH, embedder=HashEmbedder()), -0.3, 1.0)


@SETTINGS
@given(_completions("got_r1"), st.sampled_from([GOT_TRUTH, {"layout": [{"name": "cat", "box": [0, 0, 10, 10]}]}]))
def test_got_r1_fuzz(completion, truth):
  _check(got_r1.got_r1(completion, truth), 0.0, 2.0)


@SETTINGS
@given(_completions("got_r1"), st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                                         st.lists(st.floats(allow_nan=True), max_size=5)))
def test_got_r1_fuzz_with_odd_judges(completion, judge_answer):
  result = got_r1.got_r1(completion, GOT_TRUTH, image="IMAGE", image_judge=lambda *a: judge_answer,
                         semantic_judge=lambda *a: judge_answer, layout_judge=lambda *a: judge_answer,
                         grounder=lambda *a: judge_answer)
  _check(result, 0.0, 2.0)


@pytest.mark.parametrize("completion", _HUGE, ids=lambda c: repr(c[:16]))
def test_huge_completions_are_fast_and_bounded(completion):
  start = time.monotonic()
  _check(love_r1.love_r1(completion, LOVE_TRUTHS[0], step2_completion=completion), 0.0, 2.0)
  _check(omni_r1.omni_r1(completion, OMNI_TRUTH), *_omni_bounds(completion, None))
  _check(three_d_r1.three_d_r1(completion, THREE_D_TRUTH, embedder=HashEmbedder()), -0.3, 1.0)
  _check(got_r1.got_r1(completion, GOT_TRUTH), 0.0, 2.0)
  # Linear-time parsing: a quadratic scan of 100k characters would take far longer.
  assert time.monotonic() - start < 5.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "x", " ", "<", ">"]), max_size=40))
def test_extract_tag_equals_the_lazy_regex(pieces):
  text = "".join(pieces)
  for tag in ("think", "answer"):
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    assert extract_tag(text, tag) == (match.group(1) if match else None)
