"""Optimizer from `config.optim`: AdamW, warmup + constant/cosine, global-norm clipping, freezing."""
from __future__ import annotations

import re
from typing import Any

import jax
import optax


def learning_rate_schedule(optim, total_steps: int) -> optax.Schedule:
  warmup = max(0, int(optim.warmup_steps))
  if optim.schedule == "constant":
    decay = optax.constant_schedule(optim.learning_rate)
  elif optim.schedule == "cosine":
    decay = optax.cosine_decay_schedule(optim.learning_rate, max(1, total_steps - warmup), alpha=optim.end_lr_ratio)
  else:
    raise ValueError(f"config.optim.schedule={optim.schedule!r} must be 'constant' or 'cosine'")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, optim.learning_rate, warmup), decay], [warmup])


def path_name(path) -> str:
  """'language_model/layers_0/mlp/up_proj/kernel' for a tree_util key path (the "params" level dropped)."""
  names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
  return "/".join(names[1:] if names and names[0] == "params" else names)


def trainable_mask(params: Any, freeze_patterns) -> Any:
  """True for parameters that train: those matching none of the `freeze_patterns` regexes."""
  patterns = [re.compile(p) for p in freeze_patterns]
  mask = jax.tree_util.tree_map_with_path(lambda path, _: not any(p.fullmatch(path_name(path)) for p in patterns),
                                          params)
  if freeze_patterns and not any(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda m: not m, mask))):
    raise ValueError(f"config.optim.freeze={list(freeze_patterns)} matches no parameter")
  return mask


def make_optimizer(optim, params: Any, total_steps: int) -> optax.GradientTransformation:
  """AdamW with the schedule; frozen parameters get zero updates and no optimizer state."""
  chain = []
  if optim.max_grad_norm > 0:
    chain.append(optax.clip_by_global_norm(optim.max_grad_norm))
  chain.append(optax.adamw(learning_rate_schedule(optim, total_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay))
  tx = optax.chain(*chain)
  if not optim.freeze:
    return tx
  labels = jax.tree_util.tree_map(lambda m: "train" if m else "frozen", trainable_mask(params, optim.freeze))
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
