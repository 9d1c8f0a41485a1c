"""Scoring many completions with per-sample time limits, so that one bad sample never stops a run.

`score_batch` runs a reward over (completion, ground truth, context) triples in a pool of worker
threads. A sample whose reward raises, returns something other than a finite `RewardResult`, or
runs past `timeout_s` scores 0 in every component; it is counted and the run goes on.

Why threads rather than processes:
  * Rewards receive injected judges (LLM clients, embedding models, chess engines) through
    `context`. Those are usually neither picklable nor cheap to copy into worker processes, and
    the trainer process has JAX's runtime threads running, so `fork` is unsafe and `spawn` would
    re-import everything per worker.
  * Judges are I/O bound (HTTP, subprocess), which threads overlap well; the pure-Python rewards
    take micro- to milliseconds, far below one training step.
  * The cost: a thread cannot be killed. A timed-out sample is abandoned: its worker is replaced
    so throughput holds, and `PyThreadState_SetAsyncExc` raises `SampleAbandoned` inside the
    abandoned thread. That stops pure-Python loops (a hung judge written in Python, a sympy
    simplification) at their next bytecode; code blocked inside C (a socket read, `time.sleep`)
    stops when the C call returns. `num_abandoned` counts abandoned workers in the batch.
Process isolation belongs to the judges that need it: an engine or LLM server already lives in
its own process behind a subprocess or socket with its own timeout.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import ctypes
import dataclasses
import math
import queue
import threading
import time
from typing import Any

import numpy as np

from r1jax.rewards.base import RewardResult

OK, ERROR, TIMEOUT = 0, 1, 2
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class SampleAbandoned(BaseException):
  """Raised inside a thread whose sample ran past its time limit.

  A BaseException, so that a reward's own `except Exception` does not swallow it.
  """


def _raise_in_thread(thread: threading.Thread) -> None:
  """Asks CPython to raise SampleAbandoned in `thread` at its next bytecode."""
  if thread.ident is not None and thread.is_alive():
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SampleAbandoned))


def _wait_limit(timeout_s: float) -> float:
  """`timeout_s` clipped to what `threading` waits accept (larger values overflow time_t)."""
  return min(max(float(timeout_s), 0.0), threading.TIMEOUT_MAX)


def call_with_timeout(fn: Callable[..., Any], timeout_s: float, *args: Any, **kwargs: Any) -> tuple[int, Any]:
  """Runs `fn(*args, **kwargs)` in a helper thread for at most `timeout_s` seconds.

  Returns (OK, value), (ERROR, exception) or (TIMEOUT, None); never raises because of `fn`. On a
  timeout the helper thread is abandoned and interrupted as described in the module docstring.
  Limits beyond `threading.TIMEOUT_MAX` (or inf) wait that long.
  """
  outcome: list[tuple[int, Any]] = []

  def run() -> None:
    try:
      outcome.append((OK, fn(*args, **kwargs)))
    except SampleAbandoned:
      pass
    except Exception as e:  # noqa: BLE001  (any failure of the callee is reported, not raised)
      outcome.append((ERROR, e))

  thread = threading.Thread(target=run, name="r1jax-call-with-timeout", daemon=True)
  thread.start()
  thread.join(_wait_limit(timeout_s))
  if outcome:
    return outcome[0]
  _raise_in_thread(thread)
  return TIMEOUT, None


@dataclasses.dataclass(frozen=True)
class BatchScores:
  """Scores of a batch of n samples.

  Attributes:
    totals: float32 `[n]`; 0 for samples that errored or timed out.
    components: name -> float32 `[n]`, over the union of component names any sample returned;
      0 where a sample lacked the component or failed.
    status: int8 `[n]`: OK (0), ERROR (1) or TIMEOUT (2).
    num_errors, num_timeouts: counts of ERROR and TIMEOUT samples.
    num_abandoned: worker threads abandoned (still running or not) because of timeouts.
    errors: (sample index, message) for each errored sample.
    infos: each sample's `RewardResult.info` ({} where it failed).
  """

  totals: np.ndarray
  components: dict[str, np.ndarray]
  status: np.ndarray
  num_errors: int
  num_timeouts: int
  num_abandoned: int
  errors: list[tuple[int, str]]
  infos: list[dict[str, Any]]


def _checked(result: Any) -> RewardResult:
  """`result` if it is a RewardResult whose total and components are finite in float32, else raises."""
  if not isinstance(result, RewardResult):
    raise TypeError(f"reward returned {type(result).__name__}, expected RewardResult")
  values = [result.total, *result.components.values()]
  if not all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and abs(v) <= _FLOAT32_MAX
             for v in values):
    raise ValueError(f"reward returned a non-finite, non-numeric or float32-overflowing score: "
                     f"total={result.total!r}, components={dict(result.components)!r}")
  return result


class _Worker(threading.Thread):
  """Takes sample indices from the pool until none are left or the worker is abandoned."""

  def __init__(self, pool: "_Pool"):
    super().__init__(name="r1jax-reward-worker", daemon=True)
    self.pool = pool
    self.current: int | None = None
    self.started = 0.0
    self.abandoned = False

  def run(self) -> None:
    pool = self.pool
    try:
      while not self.abandoned:
        try:
          index = pool.tasks.get_nowait()
        except queue.Empty:
          return
        with pool.lock:
          self.current, self.started = index, time.monotonic()
        try:
          outcome = (OK, pool.score(index))
        except SampleAbandoned:
          return
        except Exception as e:  # noqa: BLE001  (a failing reward scores 0 and is counted)
          outcome = (ERROR, f"{type(e).__name__}: {e}")
        with pool.lock:
          if self.abandoned:
            return
          self.current = None
          pool.finish(index, outcome)
    except SampleAbandoned:  # delivered late, after the sample was already finished
      return


class _Pool:
  """State shared by the coordinating thread and the workers of one `score_batch` call.

  Workers write outcomes straight into `outcomes`; the coordinator sleeps until the batch is done
  or the earliest running sample's deadline passes, so fast rewards cost no thread hand-offs.
  """

  def __init__(self, fn, completions, ground_truths, contexts, timeout_s: float, num_workers: int):
    self.fn, self.timeout_s = fn, timeout_s
    self.completions, self.ground_truths, self.contexts = completions, ground_truths, contexts
    n = len(completions)
    self.tasks: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(n):
      self.tasks.put(index)
    self.outcomes: list[tuple[int, Any] | None] = [None] * n
    self.remaining = n
    self.done = threading.Event()
    if not n:
      self.done.set()
    self.lock = threading.Lock()
    self.num_abandoned = 0
    self.workers = [_Worker(self) for _ in range(min(num_workers, n))]

  def score(self, index: int) -> RewardResult:
    return _checked(self.fn(self.completions[index], self.ground_truths[index], **self.contexts[index]))

  def finish(self, index: int, outcome: tuple[int, Any]) -> None:
    """Records an outcome; the caller holds `lock`."""
    self.outcomes[index] = outcome
    self.remaining -= 1
    if not self.remaining:
      self.done.set()

  def run(self) -> None:
    for worker in self.workers:
      worker.start()
    next_deadline = time.monotonic() + self.timeout_s
    while not self.done.wait(timeout=_wait_limit(max(next_deadline - time.monotonic(), 1e-3))):
      next_deadline = self._abandon_expired()

  def _abandon_expired(self) -> float:
    """Times out samples past their deadline, replacing their workers; returns the next deadline."""
    with self.lock:
      now = time.monotonic()
      for worker in list(self.workers):
        if worker.current is not None and now - worker.started > self.timeout_s:
          worker.abandoned = True
          self.finish(worker.current, (TIMEOUT, None))
          _raise_in_thread(worker)
          self.num_abandoned += 1
          self.workers.remove(worker)
          replacement = _Worker(self)
          self.workers.append(replacement)
          replacement.start()
      running = [w.started + self.timeout_s for w in self.workers if w.current is not None]
      return min(running, default=now + self.timeout_s)


def score_batch(reward_fn: Callable[..., RewardResult], completions: Sequence[str],
                ground_truths: Sequence[Mapping[str, Any]],
                contexts: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None, *,
                timeout_s: float = 10.0, num_workers: int = 1) -> BatchScores:
  """Scores `reward_fn(completions[i], ground_truths[i], **contexts[i])` for every i.

  Args:
    reward_fn: a reward (see `r1jax.rewards.base`), e.g. `r1jax.rewards.get("satori")`.
    completions: n decoded completions.
    ground_truths: n ground-truth mappings.
    contexts: n context mappings, one mapping shared by all samples, or None (no context).
    timeout_s: time limit per sample, counted from the moment a worker starts it.
    num_workers: worker threads. Pure-Python rewards hold the GIL, so more workers only help
      rewards that wait (judges behind a socket or subprocess).

  Returns:
    BatchScores; never raises because of a sample.
  """
  n = len(completions)
  if len(ground_truths) != n:
    raise ValueError(f"score_batch got {n} completions but {len(ground_truths)} ground truths")
  if contexts is None or isinstance(contexts, Mapping):
    shared = dict(contexts or {})
    contexts = [shared] * n
  elif len(contexts) != n:
    raise ValueError(f"score_batch got {n} completions but {len(contexts)} contexts")
  if num_workers < 1 or not timeout_s > 0:
    raise ValueError(f"score_batch needs num_workers >= 1 and timeout_s > 0, got {num_workers}, {timeout_s}")
  pool = _Pool(reward_fn, completions, ground_truths, contexts, timeout_s, num_workers)
  pool.run()
  return _collect(pool.outcomes, pool.num_abandoned)


def _collect(outcomes: list[tuple[int, Any]], num_abandoned: int) -> BatchScores:
  n = len(outcomes)
  totals = np.zeros(n, np.float32)
  status = np.zeros(n, np.int8)
  components: dict[str, np.ndarray] = {}
  errors = []
  infos: list[dict[str, Any]] = [{} for _ in range(n)]
  for index in range(n):
    code, value = outcomes[index]
    status[index] = code
    if code == OK:
      totals[index] = value.total
      infos[index] = dict(value.info)
      for name, score in value.components.items():
        if name not in components:
          components[name] = np.zeros(n, np.float32)
        components[name][index] = score
    elif code == ERROR:
      errors.append((index, value))
  return BatchScores(totals=totals, components=components, status=status,
                     num_errors=int((status == ERROR).sum()), num_timeouts=int((status == TIMEOUT).sum()),
                     num_abandoned=num_abandoned, errors=errors, infos=infos)
