"""Train-state checkpoints (orbax) with the data iterator's state, and the policy's HF export.

Layout under `<workdir>/checkpoints/<step>/`: `state` (params, optimizer state, step, PRNG key
data; sharded arrays saved by every process as orbax arranges) and `extra` (JSON: the data
iterator state of every host, counters the loop needs to continue exactly). Orbax writes each
step into a temporary folder and renames it only once complete, so a save interrupted by a
kill is never picked up by `restore`; leftovers are removed on the next start.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from typing import Any

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from r1jax.errors import RunStoppedError


class _OrbaxInfoFilter(logging.Filter):
  """Drops orbax's INFO records (about twenty per save); its warnings and errors pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


class _FailedWriteFilter(logging.Filter):
  """Drops the per-task records of a failed background save: asyncio's "Task exception was never
  retrieved" for each of orbax's write tasks and orbax's own thread errors, hundreds of tracebacks
  for one full disk. `CheckpointSaveError` reports the failure once instead."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("orbax" in message and "never retrieved" in message or
                "_SignalingThread.run() raised an exception" in message)


def _quiet_failed_write_tasks() -> None:
  """Silences the echoes of a failed save that `CheckpointSaveError` already reported: the log
  records above, and the "Exception ignored" lines that orbax's abandoned write coroutines print
  when they are collected (often at interpreter shutdown)."""
  for name in ("asyncio", "absl", ""):
    logging.getLogger(name).addFilter(_FailedWriteFilter())
  for handler in logging.getLogger().handlers:
    handler.addFilter(_FailedWriteFilter())
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is None or "orbax" not in code.co_filename:
      previous(unraisable)

  sys.unraisablehook = hook


def quiet_orbax_logs() -> None:
  """Silences orbax's per-save INFO lines on every root handler (call after logging is set up)."""
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
      handler.addFilter(_OrbaxInfoFilter())


class CheckpointSaveError(RunStoppedError):
  """A checkpoint could not be written (e.g. the disk is full); names the folder, size and free space."""


_SPACE_MARGIN = 1.05  # orbax's files hold the arrays uncompressed, plus small per-array metadata


def _nbytes(tree: Any) -> int:
  return sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(tree))


class Checkpointer:
  """Saves every `save_every` steps, keeps the newest `keep`, and restores the latest complete one."""

  def __init__(self, directory: str, *, save_every: int = 100, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_every), max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, item_names=("state", "extra"), options=options)
    self._saving = (-1, 0)  # (step, bytes) of the latest save started, for error messages
    self._failed = False  # a failure was already raised: close() does not raise it again

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, extra: dict[str, Any], *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started. `extra` must be JSON.

    Raises CheckpointSaveError when this save, or an earlier background one, failed.
    """
    self.wait()  # orbax's save waits for the previous one anyway; this names its step if it failed
    if force or self._manager.should_save(step):
      self._check_free_space(step, _nbytes(state))
    try:
      started = self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                 extra=ocp.args.JsonSave(extra)), force=force)
    except Exception as e:  # noqa: BLE001  (any failure of the write is reported the same way)
      raise self._failure(step, _nbytes(state), e) from e
    if started:
      self._saving = (step, _nbytes(state))
    return started

  def _check_free_space(self, step: int, nbytes: int) -> None:
    """Refuses a save that cannot fit, before writing anything: the usual full-disk case then ends
    with one clear error, instead of a write failing half-way in orbax's background threads. Every
    process takes the decision of any one (a pod's hosts may write to different disks)."""
    if "://" in self.directory:  # object stores have no free-space figure
      return
    os.makedirs(self.directory, exist_ok=True)
    free = shutil.disk_usage(self.directory).free
    needed = int(nbytes * _SPACE_MARGIN) + (1 << 20)  # + metadata
    short = free < needed
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      short = bool(multihost_utils.process_allgather(np.bool_(short)).any())
    if short:
      raise self._failure(step, nbytes, OSError(errno.ENOSPC, f"{needed / 2**20:.1f} MiB needed, "
                                                              f"{free / 2**20:.1f} MiB free (checked before writing)"))

  def check(self) -> None:
    """Raises CheckpointSaveError if a background save has failed (cheap; call before each step)."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # noqa: BLE001
      raise self._failure(*self._saving, e) from e

  def _failure(self, step: int, nbytes: int, error: BaseException) -> "CheckpointSaveError":
    if not self._failed:
      _quiet_failed_write_tasks()
    self._failed = True
    free = shutil.disk_usage(self.directory).free if os.path.isdir(self.directory) else 0
    latest = self.latest_step()
    return CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.directory} failed: {type(error).__name__}: {error}. "
        f"The train state is {nbytes / 2**20:.1f} MiB; {free / 2**20:.1f} MiB are free there. "
        + (f"The last complete checkpoint (step {latest}) is untouched: free space and re-run the same command "
           "to resume from it." if latest is not None else "There is no complete checkpoint yet."))

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores (state, extra) at `step` (default: latest) into `abstract_state`'s shapes/shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory!r}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   extra=ocp.args.JsonRestore()))
    return restored["state"], restored["extra"]

  def wait(self) -> None:
    """Waits for a background save; raises CheckpointSaveError if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._failure(*self._saving, e) from e

  def close(self) -> None:
    """Waits for a background save and releases the manager; after a reported failure, quietly."""
    already_reported = self._failed
    try:
      self.wait()
    except CheckpointSaveError:
      if not already_reported:
        raise
    finally:
      self._manager.close()


def restore_params(directory: str, abstract_params: Any, step: int | None = None) -> Any:
  """Only the params of an r1jax checkpoint folder (`<workdir>/checkpoints`), e.g. to start the next
  stage of a multi-stage recipe or to evaluate a run.

  `abstract_params` is the {"params": ...} tree to restore into (arrays or ShapeDtypeStructs, whose
  shardings are kept). The train state is saved as {"step", "params", "opt_state", "rng"}, so the
  request names the state's `params` entry and leaves the rest unread. Raises ValueError naming the
  folder and the missing parameter paths when the checkpoint does not hold every requested leaf
  (orbax's partial restore would hand back the placeholders silently).
  """
  directory = os.path.abspath(directory)
  manager = ocp.CheckpointManager(directory, item_names=("state", "extra"))
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete r1jax checkpoint in {directory!r}")
    request = {"params": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_params)}
    saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(directory) / str(step) / "state")
    missing = _missing_paths(request, saved.tree if hasattr(saved, "tree") else saved)
    if missing:
      raise ValueError(f"r1jax checkpoint {directory!r} (step {step}) does not hold {len(missing)} of the requested "
                       f"parameters as expected, e.g. {missing[:3]}; it should hold the train state's tree "
                       f"{{'params': {{'params': ...}}}} of this model")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=request, restore_args=ocp.checkpoint_utils.construct_restore_args(request),
                                     partial_restore=True)))
  finally:
    manager.close()
  return restored["state"]["params"]


def _missing_paths(request: Any, saved: Any) -> list[str]:
  """Paths of `request`'s leaves that `saved` (orbax tree metadata) lacks or shapes differently."""
  saved_leaves = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(saved)}
  missing = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(request):
    name = jax.tree_util.keystr(path)
    found = saved_leaves.get(name)
    if found is None or tuple(getattr(found, "shape", ())) != tuple(leaf.shape):
      missing.append(name + ("" if found is None else f" (saved {tuple(found.shape)}, expected {tuple(leaf.shape)})"))
  return missing


def is_checkpoint_dir(path: str) -> bool:
  """True for an r1jax checkpoints folder (numbered step subfolders), False for an HF folder."""
  return os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) and any(
      name.isdigit() for name in os.listdir(path))
