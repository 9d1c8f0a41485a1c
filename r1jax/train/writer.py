"""Metrics out: JSONL in the workdir, TensorBoard event files, a tqdm bar, and a reward-curve PNG.

Only process 0 writes; other processes get a writer that records nothing, so the loop calls it
unconditionally on every host.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Mapping

import jax

_log = logging.getLogger(__name__)
PROGRESS_KEYS = (("reward", "reward/mean"), ("kl", "kl"), ("len", "response_length/mean"), ("nll", "sft/nll"),
                 ("loss", "loss"), ("steps/s", "perf/steps_per_s"))


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0, progress_bar: bool = True,
               name: str = ""):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.total_steps, self.name = total_steps, name or "train"
    self._tb = self._bar = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    if progress_bar:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=initial_step, desc=name or "train", dynamic_ncols=True)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    with open(self.jsonl_path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}) + "\n")
    for key, value in clean.items():
      if math.isfinite(value):
        self._tb.add_scalar(key, value, step)
    progress = {label: f"{clean[key]:.4g}" for label, key in PROGRESS_KEYS if key in clean}
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(progress, refresh=True)
    elif progress:  # Without a bar (e.g. output to a file), one log line per written step.
      _log.info("%s step %d/%d: %s", self.name, step, self.total_steps,
                " ".join(f"{label}={value}" for label, value in progress.items()))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: list[dict], path: str, keys=("reward/mean",), title: str = "") -> str | None:
  """Writes a PNG of `keys` against step (records of one step are merged, later values winning, e.g.
  the end-of-stage evaluation's record or a re-logged step after a resume)."""
  by_step = {}
  for record in records:
    by_step.setdefault(record["step"], {}).update(record)
  present = [k for k in keys if any(by_step[s].get(k) is not None for s in by_step)]
  if not present or jax.process_index() != 0:
    return None
  # A bare Figure renders without pyplot, so the caller's backend (e.g. a notebook's inline one) stays.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5 * len(present), 3.5))
  axes = fig.subplots(1, len(present), squeeze=False)
  for ax, key in zip(axes[0], present):
    steps = sorted(s for s in by_step if by_step[s].get(key) is not None)
    ax.plot(steps, [by_step[s][key] for s in steps], marker="." if len(steps) < 50 else None)
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path
