"""Metrics out: JSONL in the workdir, TensorBoard event files, a tqdm bar, and a reward-curve PNG;
`samples.jsonl` holds, per logged GRPO step, the first group's completions with what the reward said.

The bar is drawn only when its stream (stderr) is a terminal; otherwise (a file, a pipe, CI) each
written step is one log line. While the bar is shown, log records and warnings are written above
it (the bar is cleared, the record written, the bar redrawn), and `close()` leaves its final state
on screen once.

Only process 0 writes; other processes get a writer that records nothing, so the loop calls it
unconditionally on every host.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from typing import IO, Mapping

import jax
import numpy as np

from r1jax.errors import RunStoppedError

_log = logging.getLogger(__name__)
PROGRESS_KEYS = (("reward", "reward/mean"), ("kl", "kl"), ("len", "response_length/mean"), ("nll", "sft/nll"),
                 ("loss", "loss"), ("steps/s", "perf/steps_per_s"))


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0, progress_bar: bool = True,
               name: str = "", stream: IO[str] | None = None):
    """`progress_bar`: draw a bar on `stream` (default: sys.stderr) when that is a terminal; without
    a bar, each written step is one log line."""
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.total_steps, self.name = total_steps, name or "train"
    self._tb = self._bar = self._above_bar = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    for path in (self.jsonl_path, os.path.join(workdir, "samples.jsonl")):
      _drop_records_after(path, initial_step)  # steps re-run after a resume are written again
    self._tb = _EventFile(os.path.join(workdir, "tensorboard"))
    stream = sys.stderr if stream is None else stream
    if progress_bar and _is_terminal(stream):
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=initial_step, desc=self.name, unit="step", dynamic_ncols=True,
                       file=stream, leave=True)
      self._above_bar = _AboveBar(self._bar)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    _append_line(self.jsonl_path,
                 json.dumps({"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}))
    self._tb.add_scalars(step, {k: v for k, v in clean.items() if math.isfinite(v)})
    progress = {label: f"{clean[key]:.4g}" for label, key in PROGRESS_KEYS if key in clean}
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(progress, refresh=True)
    elif progress:  # Without a bar (e.g. output to a file), one log line per written step.
      _log.info("%s step %d/%d: %s", self.name, step, self.total_steps,
                " ".join(f"{label}={value}" for label, value in progress.items()))

  def write_samples(self, step: int, samples: list[Mapping]) -> None:
    """Appends a step's sample records (completion, reward, components, the reward's info, status,
    error) to `samples.jsonl`; values JSON cannot hold are written as their repr."""
    if not self.enabled or not samples:
      return
    _append_line(os.path.join(self.workdir, "samples.jsonl"),
                 json.dumps({"step": step, "samples": list(samples)}, default=repr))

  def close(self) -> None:
    """Flushes TensorBoard and closes the bar (its final state stays on screen, once); idempotent, and
    meant for a `finally:` so that an interrupt or an error also leaves the terminal clean."""
    bar, above_bar, self._bar, self._above_bar = self._bar, self._above_bar, None, None
    if above_bar is not None:
      above_bar.uninstall()
    if bar is not None:
      bar.close()
    tb, self._tb = self._tb, None
    if tb is not None:
      tb.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class _EventFile:
  """TensorBoard scalars, written and flushed in the calling thread, one event per written step.

  Not tensorboardX's SummaryWriter: it hands events to a background thread through a bounded queue,
  and when that thread dies on a write error (a full disk) the queue fills and the next `add_scalar`,
  or `close()`, blocks forever. Here a failed write is reported once and ends TensorBoard output for
  the run; `metrics.jsonl` stays the record (its own failed write stops the run).
  """

  def __init__(self, directory: str):
    from tensorboardX.event_file_writer import EventsWriter  # pylint: disable=g-import-not-at-top
    self.directory = directory
    self._events = None
    try:
      os.makedirs(directory, exist_ok=True)
      self._events = EventsWriter(os.path.join(directory, "events"))
    except OSError as e:
      self._fail(e)

  def add_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._events is None or not scalars:
      return
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    values = [summary_pb2.Summary.Value(tag=key, simple_value=value) for key, value in scalars.items()]
    event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values))
    try:
      self._events.write_event(event)
      self._events.flush()
    except OSError as e:
      self._fail(e)

  def close(self) -> None:
    events, self._events = self._events, None
    if events is not None:
      try:
        events.close()
      except OSError as e:
        _log.warning("could not close the TensorBoard events in %s: %s", self.directory, e)

  def _fail(self, error: OSError) -> None:
    _log.warning("writing TensorBoard events in %s failed (%s); no more TensorBoard output for this run, "
                 "metrics.jsonl goes on", self.directory, error)
    events, self._events = self._events, None
    if events is not None:
      with contextlib.suppress(OSError):
        events.close()


def _is_terminal(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
    return False


class _AboveBar:
  """While a bar is shown, the root logger's handlers and `warnings.showwarning` write with the bar
  cleared and redraw it after: their lines land above the bar, whole, instead of inside it."""

  def __init__(self, bar):
    self.bar = bar
    root = logging.getLogger()
    self.handlers = [_HandlerAboveBar(handler, bar) for handler in root.handlers]
    root.handlers[:] = self.handlers  # same order and levels, each wrapped
    self.showwarning = warnings.showwarning
    warnings.showwarning = self._showwarning

  def _showwarning(self, *args, **kwargs):
    with _cleared(self.bar):
      self.showwarning(*args, **kwargs)

  def uninstall(self) -> None:
    root = logging.getLogger()
    # Each wrapper is put back as the handler it wraps, wherever it is now; handlers added meanwhile stay.
    root.handlers[:] = [h.inner if isinstance(h, _HandlerAboveBar) and h.bar is self.bar else h
                        for h in root.handlers]
    if warnings.showwarning == self._showwarning:
      warnings.showwarning = self.showwarning


class _HandlerAboveBar(logging.Handler):
  """Passes records to `inner` (its filters, format, stream and lock) with `bar` cleared meanwhile."""

  def __init__(self, inner: logging.Handler, bar):
    super().__init__(inner.level)
    self.inner, self.bar = inner, bar

  def handle(self, record: logging.LogRecord) -> bool:
    if record.levelno < self.inner.level:
      return False
    with _cleared(self.bar):
      return self.inner.handle(record)

  def emit(self, record: logging.LogRecord) -> None:
    self.handle(record)

  def flush(self) -> None:
    self.inner.flush()


@contextlib.contextmanager
def _cleared(bar):
  """`bar` cleared from its line (under tqdm's lock) within the context, redrawn after."""
  with bar.get_lock():
    bar.clear(nolock=True)
    try:
      yield
    finally:
      bar.refresh(nolock=True)


class MetricsWriteError(RunStoppedError):
  """A metrics file could not be written (e.g. the disk is full)."""


def _append_line(path: str, line: str) -> None:
  """Appends `line` + newline whole or not at all: a failed write (a full disk) is cut back, so
  the file stays valid JSONL, and stops the run naming the file and the free space."""
  size = os.path.getsize(path) if os.path.exists(path) else 0
  try:
    with open(path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
  except OSError as e:
    with open(path, "r+b") as f:
      f.truncate(size)
    free = shutil.disk_usage(os.path.dirname(path) or ".").free
    raise MetricsWriteError(f"writing {path} failed: {e}; {free / 2**20:.1f} MiB are free there. Free space and "
                            "re-run the same command to resume from the last checkpoint.") from e


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites the JSONL file at `path` without its records of steps after `step` (atomically)."""
  if not os.path.isfile(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) == len(lines):
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: list[dict], path: str, keys=("reward/mean",), title: str = "") -> str | None:
  """Writes a PNG with one panel per present key of `keys` against step, plus a "held-out" panel of
  the evaluation records' `eval/<split>/reward` points.

  Records of one step are merged, later values winning (the end-of-stage evaluation's record, a
  re-logged step after a resume). Each curve is drawn raw (faint) and smoothed (an exponential
  moving average over ~5% of the steps); the y-range spans at least 20% of the values' magnitude,
  so a flat curve's noise is not blown up to the panel's height.
  """
  by_step = {}
  for record in records:
    by_step.setdefault(record["step"], {}).update(record)
  panels = [(k, [k]) for k in keys if any(by_step[s].get(k) is not None for s in by_step)]
  held_out = sorted({k for r in by_step.values() for k in r if k.startswith("eval/") and k.endswith("/reward")})
  if held_out:
    panels.append(("held-out reward", held_out))
  if not panels or jax.process_index() != 0:
    return None
  # A bare Figure renders without pyplot, so the caller's backend (e.g. a notebook's inline one) stays.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(4.5 * len(panels), 3.5))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (name, series) in zip(axes[0], panels):
    values_seen = []
    for key in series:
      steps = sorted(s for s in by_step if by_step[s].get(key) is not None)
      values = np.array([by_step[s][key] for s in steps], np.float64)
      values_seen.append(values)
      label = key.split("/")[1] if name == "held-out reward" else None
      if name == "held-out reward" or len(steps) < 8:
        ax.plot(steps, values, marker="o", label=label)
        continue
      raw = ax.plot(steps, values, alpha=0.25, linewidth=0.8)[0]
      ax.plot(steps, _smoothed(values), color=raw.get_color(), linewidth=1.8)
    _readable_ylim(ax, np.concatenate(values_seen))
    if name == "held-out reward":
      ax.legend(fontsize="small", loc="best")
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


def _smoothed(values: np.ndarray) -> np.ndarray:
  """Exponential moving average with a time constant of ~5% of the points, debiased at the start."""
  decay = 1.0 - 1.0 / max(2.0, 0.05 * len(values))
  out, average, weight = np.empty_like(values), 0.0, 0.0
  for i, v in enumerate(values):
    average, weight = decay * average + (1 - decay) * v, decay * weight + (1 - decay)
    out[i] = average / weight
  return out


def _readable_ylim(ax, values: np.ndarray) -> None:
  """A y-range around `values` at least 20% of their magnitude wide (never a zoom into noise)."""
  values = values[np.isfinite(values)]
  if not len(values):
    return
  low, high = float(values.min()), float(values.max())
  span = max(high - low, 0.2 * max(abs(low), abs(high)), 1e-6)
  middle = (low + high) / 2
  ax.set_ylim(middle - 0.55 * span, middle + 0.55 * span)
