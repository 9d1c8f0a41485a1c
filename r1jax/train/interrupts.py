"""Stopping a run cleanly on SIGINT / SIGTERM (Ctrl-C, a scheduler's preemption notice).

The first signal asks the loop to stop after the step in progress: it saves a checkpoint, says
where it stopped, and exits non-zero (`TrainingInterrupted`, exit code 128 + signal number). A
second signal exits at once. On several processes every one takes the decision of any one
(`GracefulStop.agreed`), so no host waits in a collective that the others have left.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(SystemExit):
  """Raised by the loop after it saved a checkpoint on a stop request; exits with 128 + signal."""

  def __init__(self, signum: int):
    super().__init__(128 + signum)
    self.signum = signum


class GracefulStop:
  """Turns the first SIGINT / SIGTERM into a stop request between `install()` and `uninstall()`.

  Handlers are installed only in the main thread (Python delivers signals there); elsewhere, e.g.
  in a notebook's worker thread, the default behaviour stays.
  """

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def install(self) -> None:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}

  def uninstall(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum:
      sys.stderr.write(f"{_line_start()}second {signal.Signals(signum).name}: exiting now, without saving\n")
      sys.stderr.flush()
      os._exit(128 + signum)
    self.signum = signum
    sys.stderr.write(f"{_line_start()}{signal.Signals(signum).name}: stopping after the current step and saving a "
                     "checkpoint (send it again to exit at once)\n")
    sys.stderr.flush()

  def agreed(self) -> int:
    """The signal number if any process was asked to stop, else 0 (a collective on several processes)."""
    if jax.process_count() == 1:
      return self.signum
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))

  @staticmethod
  def name(signum: int) -> str:
    return signal.Signals(signum).name


def _line_start() -> str:
  """On a terminal, clear the line (a progress bar may be drawn there); elsewhere a newline.
  Written from a signal handler, so it takes no lock (tqdm's included)."""
  return "\r\033[K" if sys.stderr.isatty() else "\n"
