"""Optimizer from `config.optim`: AdamW, warmup + constant/cosine, global-norm clipping, freezing.

Freezing splits the parameters instead of masking their updates: `split_frozen` gives the trainable
tree (frozen leaves None) that is differentiated and optimised, and the frozen tree that the
forward pass reads as a constant. So a frozen vision tower costs its forward pass only (no
backward, no gradient buffers, no optimizer state), and the gradient norm covers trainable leaves.
The schedule counts optimizer updates: a GRPO step makes `rl.num_iterations * rl.mini_batches` of
them (`updates_per_step`).
"""
from __future__ import annotations

import re
from typing import Any

import jax
import optax


def learning_rate_schedule(optim, total_updates: int) -> optax.Schedule:
  """Learning rate as a function of the optimizer update count (warmup, then constant or cosine)."""
  warmup = max(0, int(optim.warmup_steps))
  if optim.schedule == "constant":
    decay = optax.constant_schedule(optim.learning_rate)
  elif optim.schedule == "cosine":
    decay = optax.cosine_decay_schedule(optim.learning_rate, max(1, total_updates - warmup), alpha=optim.end_lr_ratio)
  else:
    raise ValueError(f"config.optim.schedule={optim.schedule!r} must be 'constant' or 'cosine'")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, optim.learning_rate, warmup), decay], [warmup])


def path_name(path) -> str:
  """'language_model/layers_0/mlp/up_proj/kernel' for a tree_util key path (the "params" level dropped)."""
  names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
  return "/".join(names[1:] if names and names[0] == "params" else names)


def frozen_paths(params: Any, freeze_patterns) -> tuple[str, ...]:
  """Sorted `path_name`s of the parameters matching any of the `freeze_patterns` regexes (fullmatch)."""
  patterns = [re.compile(p) for p in freeze_patterns]
  names = [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  frozen = tuple(sorted(n for n in names if any(p.fullmatch(n) for p in patterns)))
  if freeze_patterns and not frozen:
    raise ValueError(f"config.optim.freeze={list(freeze_patterns)} matches no parameter")
  return frozen


def split_frozen(params: Any, frozen: tuple[str, ...]) -> tuple[Any, Any]:
  """(trainable, frozen) trees of `params`' structure, each with None where the other has the leaf."""
  frozen = frozenset(frozen)
  pick = lambda keep_frozen: jax.tree_util.tree_map_with_path(
      lambda path, x: x if (path_name(path) in frozen) == keep_frozen else None, params)
  return pick(False), pick(True)


def merge_frozen(trainable: Any, frozen_tree: Any) -> Any:
  """The inverse of `split_frozen`."""
  return jax.tree_util.tree_map(lambda t, f: f if t is None else t, trainable, frozen_tree,
                                is_leaf=lambda x: x is None)


def updates_per_step(config) -> int:
  """Optimizer updates in one loop step: mu passes x mini-batches for GRPO, one for SFT."""
  return config.rl.num_iterations * config.rl.mini_batches if config.stage == "grpo" else 1


def update_count(opt_state: Any) -> jax.Array:
  """Optimizer updates applied so far, as the device scalar the schedule reads (skipped non-finite
  updates do not count); reading it does not wait for the device."""
  counts = [v for path, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count")
            if any(getattr(k, "tuple_name", "") == "ScaleByScheduleState" for k in path)]
  if len(counts) != 1:
    raise ValueError(f"expected one learning-rate schedule in the optimizer state, found {len(counts)}")
  return counts[0]


def make_optimizer(optim, total_updates: int) -> optax.GradientTransformation:
  """AdamW with the schedule over `total_updates` optimizer updates, for the trainable tree."""
  chain = []
  if optim.max_grad_norm > 0:
    chain.append(optax.clip_by_global_norm(optim.max_grad_norm))
  chain.append(optax.adamw(learning_rate_schedule(optim, total_updates), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay))
  return optax.chain(*chain)
