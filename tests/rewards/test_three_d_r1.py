"""Tests for the 3D-R1 reward and view selection (r1jax.rewards.three_d_r1)."""
import numpy as np
import pytest

from r1jax.rewards import base, judges, three_d_r1

THINK = "The red chair stands left of the table."   # > 20 characters
ANSWER = "The chair is red."                           # > 10 characters
TRUTH = {"boxes": [[0, 0, 0, 2, 1, 1]], "answer": "<answer>The chair is red.</answer>"}


class TableEmbedder:
  """Embeds known texts as fixed vectors (cosines chosen by hand)."""

  def __init__(self, table):
    self.table = table
    self.calls = 0

  def embed(self, texts):
    self.calls += 1
    return np.array([self.table[t] for t in texts], dtype=np.float64)


SAME = TableEmbedder({ANSWER: [1.0, 0.0], "The chair is red.": [1.0, 0.0]})


def score(text, truth=TRUTH, **context):
  context.setdefault("embedder", SAME)
  result = three_d_r1.three_d_r1(text, truth, **context)
  return result.total, result.components


def test_registered_under_module_name():
  assert base.get("three_d_r1") is three_d_r1.three_d_r1


def test_perfect_answer_scores_one():
  total, comps = score(f"<think>{THINK}</think><answer>{ANSWER} box: [0, 0, 0, 2, 1, 1]</answer>",
                       embedder=TableEmbedder({f"{ANSWER} box: [0, 0, 0, 2, 1, 1]": [1.0, 0.0],
                                               "The chair is red.": [2.0, 0.0]}))
  assert comps == {"format": 1.0, "perception": 1.0, "semantic": pytest.approx(1.0), "answer_match": 1.0,
                   "has_think": 1.0,
                   "has_answer": 1.0, "num_boxes": 1.0, "malformed_boxes": 0.0, "invalid_boxes": 0.0,
                   "embed_failed": 0.0, "embed_error": 0.0, "embed_timeout": 0.0, "embed_invalid": 0.0}
  assert total == pytest.approx(1.0)


@pytest.mark.parametrize("text, fmt", [
    (f"<think>{THINK}</think><answer>{ANSWER}</answer>", 1.0),
    (f"<think>short</think><answer>{ANSWER}</answer>", 0.75),
    (f"<think>{'x' * 20}</think><answer>{'y' * 10}</answer>", 0.5),   # not longer than 20 / 10
    (f"<think>{'x' * 21}</think><answer>{'y' * 11}</answer>", 1.0),
    (f"<think>{THINK}</think> no answer tags", 0.25),
    (f"<answer>{ANSWER}</answer>", 0.25),
    ("plain text", 0.0),
])
def test_format_parts(text, fmt):
  assert three_d_r1.format_score(text)[0] == fmt


@pytest.mark.parametrize("boxes, perception", [
    (["[0, 0, 0, 2, 1, 1]"], 1.0),
    (["[1, 0, 0, 3, 1, 1]"], 1 / 3),                  # overlap 1, union 3
    (["[2, 1, 1, 0, 0, 0]"], 0.0),                    # x2 < x1: an invalid box, IoU 0 (not an exception)
    (["[0, 0, 0, 2, 1, 1]", "[5, 5, 5, 6, 6, 6]"], 0.5),  # mean over predicted boxes
    (["[0, 0, 0, 1, 1, 1]"], 0.5),
    ([], 0.0),
])
def test_perception(boxes, perception):
  text = " ".join(f"box: {b}" for b in boxes)
  _, comps = score(f"<answer>{ANSWER}</answer> {text}")
  assert comps["perception"] == pytest.approx(perception)
  assert comps["num_boxes"] == len(boxes)


def test_perception_takes_best_ground_truth_box():
  truth = {**TRUTH, "boxes": [[10, 10, 10, 11, 11, 11], [0, 0, 0, 1, 1, 1]]}
  assert score("box: [0, 0, 0, 1, 1, 1]", truth)[1]["perception"] == 1.0
  assert score("box: [0, 0, 0, 1, 1, 1]", {**TRUTH, "boxes": []})[1]["perception"] == 0.0


@pytest.mark.parametrize("text", ["box: [1, 2, 3]", "box: [NaN, 0, 0, 1, 1, 1]", "box: [1e999, 0, 0, 1, 1, 1]",
                                  "box: [a, b, c, d, e, f]", "box: [true, 0, 0, 1, 1, 1]",
                                  # The public pattern allows digits, ".", "-", "," and spaces only.
                                  "box: [5e-1, 0, 0, 1, 1, 1]", "box: [0, 0, 0, 1, 1, 1,]", "box: [+1, 0, 0, 1, 1, 1]",
                                  "box: [0, 0, 0, 1, 1, 1_0]", "box: [1-2, 0, 0, 1, 1, 1]",
                                  "box: [" + "9" * 400 + ", 0, 0, 1, 1, 1]"])
def test_malformed_boxes_are_skipped_and_counted(text):
  _, comps = score(f"{text} box: [0, 0, 0, 2, 1, 1]")
  assert comps["malformed_boxes"] == 1.0 and comps["num_boxes"] == 1.0 and comps["perception"] == 1.0


def test_semantic_uses_answer_and_best_reference():
  embedder = TableEmbedder({ANSWER: [3.0, 4.0], "red": [4.0, -3.0], "a red chair": [3.0, 4.0], "blue": [-1.0, 0.0]})
  _, comps = score(f"<answer>{ANSWER}</answer>", {**TRUTH, "answer": ["red", "a red chair"]}, embedder=embedder)
  assert comps["semantic"] == pytest.approx(1.0)
  _, comps = score(f"<answer>{ANSWER}</answer>", {**TRUTH, "answer": "blue"}, embedder=embedder)
  assert comps["semantic"] == pytest.approx(-0.6)  # raw cosine, may be negative
  # Without answer tags the whole completion is the answer.
  _, comps = score(ANSWER, {**TRUTH, "answer": "red"}, embedder=embedder)
  assert comps["semantic"] == pytest.approx(0.0)


def test_total_weights():
  embedder = TableEmbedder({"The seat is red.": [1.0, 0.0], "The chair is red.": [0.6, 0.8]})
  total, comps = score("<think>short</think><answer>The seat is red.</answer> box: [1, 0, 0, 3, 1, 1]",
                       embedder=embedder)
  assert (comps["format"], comps["perception"], comps["semantic"]) == pytest.approx((0.75, 1 / 3, 0.6))
  assert total == pytest.approx(0.3 * 0.75 + 0.4 / 3 + 0.3 * 0.6)


def test_semantic_off_or_failing():
  assert score(f"<answer>{ANSWER}</answer>", embedder=None)[1]["semantic"] == 0.0

  class Broken:

    def embed(self, texts):
      raise RuntimeError("CUDA out of memory")

  total, comps = score(f"<think>{THINK}</think><answer>{ANSWER}</answer>", embedder=Broken())
  assert comps["embed_failed"] == comps["embed_error"] == 1.0 and comps["semantic"] == 0.0
  assert total == pytest.approx(0.3)
  embedder = TableEmbedder({})
  assert score("<answer> </answer>", embedder=embedder)[1]["semantic"] == 0.0 and embedder.calls == 0


def test_default_embedder_is_local_minilm():
  judges.default_text_embedder().load()  # shared with test_judges: loaded once per session
  truth = {"boxes": [], "answer": "The chair is next to the table."}
  close = three_d_r1.three_d_r1("<answer>A chair stands beside the table.</answer>", truth)
  far = three_d_r1.three_d_r1("<answer>Interest rates rose in March.</answer>", truth)
  assert close.components["semantic"] > far.components["semantic"] + 0.3


@pytest.mark.parametrize("truth, error, field", [
    ({"boxes": []}, KeyError, "answer"), ({"answer": None}, ValueError, "answer"), ({"answer": ""}, ValueError, "answer"),
    ({"answer": ["red", "<answer></answer>"]}, ValueError, "answer"),
    ({"boxes": [[0, 0, 1, 1]], "answer": "a"}, ValueError, "boxes"),
    ({"boxes": [0, 0, 0, 1, 1, 1], "answer": "a"}, ValueError, "boxes"),
    ({"boxes": [["0", 0, 0, 1, 1, 1]], "answer": "a"}, ValueError, "boxes"),
    ({"boxes": "[[0, 0, 0, 1, 1, 1]]", "answer": "a"}, ValueError, "boxes"),
])
def test_bad_ground_truth_is_named(truth, error, field):
  with pytest.raises(error, match=f"three_d_r1: ground_truth.*'{field}'"):
    three_d_r1.three_d_r1("x", truth, embedder=None)


def test_tagged_and_numpy_ground_truth():
  truth = {"boxes": np.array([[0, 0, 0, 1, 1, 1]]), "answer": np.array(["<answer>red</answer>"])}
  _, comps = score("<answer>red</answer> box: [0, 0, 0, 1, 1, 1]", truth, embedder=TableEmbedder({"red": [1.0, 0.0]}))
  assert comps["perception"] == 1.0 and comps["semantic"] == pytest.approx(1.0)


def test_view_scores_and_selection():
  text = [0.9, 0.1, 0.5, 0.5, 0.0, 0.2, 0.3, 0.8]
  coverage = [0.1, 0.9, 0.5, 0.5, 0.0, 0.2, 0.3, 0.8]
  similarity = [0.0, 0.0, 0.5, 0.5, 1.0, 0.2, 0.3, 0.1]
  scores = three_d_r1.view_scores(text, coverage, similarity)
  assert scores[0] == pytest.approx(0.3 * 0.9 + 0.35 * 0.1)
  assert scores[7] == pytest.approx(0.3 * 0.8 + 0.35 * 0.8 + 0.35 * 0.1)
  np.testing.assert_array_equal(three_d_r1.select_views(text, coverage, similarity), [7, 2, 3, 4])  # 2, 3 tie
  np.testing.assert_array_equal(three_d_r1.select_views(text, coverage, similarity, num_selected=2,
                                                        weights=(1.0, 0.0, 0.0)), [0, 7])


def test_view_selection_rejects_bad_inputs():
  with pytest.raises(ValueError, match="coverage"):
    three_d_r1.view_scores([0.1] * 8, [0.1] * 7, [0.1] * 8)
  with pytest.raises(ValueError, match="non-finite"):
    three_d_r1.view_scores([0.1] * 8, [0.1] * 8, [np.nan] * 8)
  with pytest.raises(ValueError, match="num_selected"):
    three_d_r1.select_views([0.1] * 8, [0.1] * 8, [0.1] * 8, num_selected=9)


def test_invalid_box_is_counted_and_scores_zero():
  _, comps = score("box: [2, 0, 0, 0, 1, 1] box: [0, 0, 0, 2, 1, 1]")
  assert (comps["invalid_boxes"], comps["num_boxes"], comps["perception"]) == (1.0, 2.0, 0.5)


def test_semantic_judge_embeds_a_rollout_in_one_call():
  from r1jax import frozen_judge  # pylint: disable=g-import-not-at-top
  embedder = TableEmbedder({ANSWER: [1.0, 0.0], "The chair is red.": [1.0, 0.0], "blue": [0.0, 1.0],
                            "It is blue.": [0.6, 0.8]})
  judge = three_d_r1.SemanticJudge(embedder)
  texts = [f"<answer>{ANSWER}</answer>", "<answer>It is blue.</answer>", "<answer> </answer>", ANSWER]
  truths = [TRUTH, {**TRUTH, "answer": ["blue", "The chair is red."]}, TRUTH, TRUTH]
  contexts = [{"embedder": judge} for _ in texts]
  metrics = frozen_judge.judge_rollout({"embedder": judge}, texts, truths, contexts)
  assert embedder.calls == 1  # every sample's texts in one call
  assert metrics["judge/embedder/ok"] == 3 and metrics["judge/embedder/missing"] == 1  # the empty answer
  semantic = [three_d_r1.three_d_r1(t, g, **c).components["semantic"] for t, g, c in zip(texts, truths, contexts)]
  assert semantic == pytest.approx([1.0, 0.8, 0.0, 1.0]) and embedder.calls == 1
  # The same scores as embedding per sample.
  assert semantic == pytest.approx([score(t, g, embedder=embedder)[1]["semantic"] for t, g in zip(texts, truths)])


@pytest.mark.parametrize("embed, status", [
    (lambda texts: (_ for _ in ()).throw(RuntimeError("device lost")), "error"),
    (lambda texts: np.zeros((len(texts), 2)), "invalid"),
    (lambda texts: np.ones((len(texts) + 1, 2)), "invalid"),  # a row too many
])
def test_semantic_judge_failure_is_a_status_in_the_components(embed, status):
  class Embedder:
    def embed(self, texts):
      return embed(texts)

  judge = three_d_r1.SemanticJudge(Embedder())
  text = f"<think>{THINK}</think><answer>{ANSWER}</answer>"
  (call,) = judge.judge_batch([judge.sample_item(text, TRUTH, {})])
  assert call.status == status and judge.counts == {status: 1}
  result = three_d_r1.three_d_r1(text, TRUTH, embedder=call)
  assert result.components[f"embed_{status}"] == result.components["embed_failed"] == 1.0
  assert result.components["semantic"] == 0.0 and result.total == pytest.approx(0.3)
  assert status in result.info["embed_error"]


def test_semantic_judge_timeout_is_a_status():
  import time  # pylint: disable=g-import-not-at-top

  class Slow:
    def embed(self, texts):
      time.sleep(2)
      return np.ones((len(texts), 2))

  calls = three_d_r1.SemanticJudge(Slow(), timeout_s=0.2).judge_batch([{"answer": "a", "references": ["b"]}] * 2)
  assert [c.status for c in calls] == ["timeout", "timeout"]


def test_semantic_judge_from_config_loads_minilm_on_the_default_device():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from r1jax.rewards import startup  # pylint: disable=g-import-not-at-top
  context = startup.judge_context("three_d_r1", ml_collections.ConfigDict({"text_embedder": ""}))
  judge = context["embedder"]
  assert isinstance(judge, three_d_r1.SemanticJudge) and judge.embedder._encoder is not None  # loaded at start-up
  close, far = judge.judge_batch([{"answer": "A chair stands beside the table.", "references": ["The chair is next "
                                                                                                 "to the table."]},
                                  {"answer": "Interest rates rose.", "references": ["The chair is next to the table."]}])
  assert close.value[0] > far.value[0] + 0.3


@pytest.mark.parametrize("answer, match", [("The chair is red.", 1.0), ("the chair is red, box: [0, 0, 0, 1, 1, 1]", 1.0),
                                           ("chair is  RED", 1.0), ("The chair is blue.", 0.0), ("", 0.0)])
def test_answer_match_is_scanqa_exact_match_without_the_box(answer, match):
  _, comps = score(f"<answer>{answer}</answer>", embedder=None)
  assert comps["answer_match"] == match
