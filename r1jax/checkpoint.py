"""Train-state checkpoints (orbax) with the data iterator's state, and the policy's HF export.

Layout under `<workdir>/checkpoints/<step>/`: `state` (params, optimizer state, step, PRNG key
data; sharded arrays saved by every process as orbax arranges) and `extra` (JSON: the data
iterator state of every host, counters the loop needs to continue exactly). Orbax writes each
step into a temporary folder and renames it only once complete, so a save interrupted by a
kill is never picked up by `restore`; leftovers are removed on the next start.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class _OrbaxInfoFilter(logging.Filter):
  """Drops orbax's INFO records (about twenty per save); its warnings and errors pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logs() -> None:
  """Silences orbax's per-save INFO lines on every root handler (call after logging is set up)."""
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
      handler.addFilter(_OrbaxInfoFilter())


class Checkpointer:
  """Saves every `save_every` steps, keeps the newest `keep`, and restores the latest complete one."""

  def __init__(self, directory: str, *, save_every: int = 100, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_every), max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, item_names=("state", "extra"), options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, extra: dict[str, Any], *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started. `extra` must be JSON."""
    return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            extra=ocp.args.JsonSave(extra)), force=force)

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
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(directory: str, abstract_params: Any, step: int | None = None) -> Any:
  """Only the params of an r1jax checkpoint folder (`<workdir>/checkpoints`), e.g. to start the next
  stage of a multi-stage recipe. `abstract_params` is the {"params": ...} tree to restore into
  (arrays or ShapeDtypeStructs, whose shardings are kept)."""
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "extra"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no complete r1jax checkpoint in {directory!r}")
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_params)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                   partial_restore=True)))
  manager.close()
  return restored["state"]


def is_checkpoint_dir(path: str) -> bool:
  """True for an r1jax checkpoints folder (numbered step subfolders), False for an HF folder."""
  return os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) and any(
      name.isdigit() for name in os.listdir(path))
