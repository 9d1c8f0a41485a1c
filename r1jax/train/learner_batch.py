"""A learner batch on the mesh, and its completion log-probs computed in pieces: shared by the
policy's old log-probs (`loop._Updater`) and a frozen model's (`r1jax.frozen`, the GRPO reference).

A GRPO step whose vision tower is frozen up to its merger encodes each distinct vision item of
the step once (`encode_step_vision` -> `VisionCache`, one jitted tower call), and every learner
pass of the step (old log-probs, reference log-probs, each update's micro-batches) takes the
cached pre-merger hidden states instead of pixels (`place(..., vision_cache=...)`): the merger,
trained or frozen, runs in the pass. `vision_reuse` says when that holds.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models, sharding
from r1jax.models.vision import pad_vision_patches, vision_grid
from r1jax.train import learner, optim, rows
from r1jax.train.sequences import SequenceBuilder

# Learner batch fields with one entry per row (split over the batch mesh axes), and those the
# device never sees.
PER_ROW = ("input_ids", "attention_mask", "positions", "completion_mask", "advantages", "old_logprobs",
           "ref_logprobs", "sampler_logprobs", "loss_mask")
HOST_ONLY = ("completion_ids", "prompt_lengths", "sequence_lengths", "image_counts", "video_counts", "turn_index",
             "episode_failed")


@dataclasses.dataclass(frozen=True)
class VisionCache:
  """A GRPO step's vision items encoded once, up to the tower's merger.

  Attributes:
    hidden: [cache tokens, merge**2, vision hidden], replicated on the mesh: the last vision
      block's hidden states of every distinct item of the step (`VisionTransformer.encode_patches`),
      a merged token per row, items one after another (then a blank padding item's rows).
    starts: {kind: {item id: the item's first row in `hidden`}}, the ids of
      `SequenceBuilder.unique_vision` (a prompt's items have one id for its G rows).
  """

  hidden: jax.Array
  starts: dict[str, dict[int, int]]


def vision_reuse(model, params, frozen: tuple[str, ...], mesh=None, reference=None) -> tuple[bool, bool, str]:
  """(policy passes reuse, reference passes reuse, why): whether a GRPO step may encode its vision
  items once (`encode_step_vision`) and give the cache to the policy's passes and to the
  reference's.

  The policy's passes may when every tower parameter before the merger (patch embedding and
  blocks) is in `frozen` (`config.optim.freeze`; the merger may train: it runs in each pass) and
  the mesh is one process's. The reference's may too when it is the same model (config and
  compute dtype) with bit-equal pre-merger tower parameters: true of the default reference, a
  copy of the stage's initial policy (`frozen.from_policy` without a dtype), whose tower the
  policy never updates; not of a reference loaded from another folder or cast to another dtype.
  """
  if not model.config.is_multimodal:
    return False, False, "the policy has no vision tower"
  names = [optim.path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  tower = [n for n in names if n.startswith("visual/") and not n.startswith("visual/merger/")]
  trainable = sorted(set(tower) - set(frozen))
  if trainable:
    return False, False, (f"{len(trainable)} of the {len(tower)} vision tower parameters before the merger train "
                          f"(e.g. {trainable[0]}; config.optim.freeze): every pass encodes the pixels")
  if sharding.spans_processes(mesh):
    return False, False, "the mesh spans processes: every pass encodes the pixels (the cache is one process's)"
  merger = "frozen" if all(n in frozen for n in names if n.startswith("visual/merger/")) else "trained"
  why = (f"the vision tower before the merger is frozen: each step encodes its distinct vision items once, and "
         f"the learner's passes run the {merger} merger on the cached block outputs")
  if reference is None:
    return True, False, why
  if reference.model != model:
    return True, False, why + "; the reference (another config or dtype) encodes its pixels itself"
  if not _same_tower(params, reference.params, tower):
    return True, False, why + "; the reference's tower weights differ from the policy's: it encodes its pixels itself"
  return True, True, why + ", the reference's passes too (it shares the policy's tower weights)"


def _same_tower(params, other, names) -> bool:
  """Whether the leaves named `names` (`optim.path_name`) are bit-equal in `params` and `other`."""
  leaves = lambda tree: {optim.path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  mine, theirs = leaves(params), leaves(other)
  return all(n in theirs and mine[n].shape == theirs[n].shape and mine[n].dtype == theirs[n].dtype
             and bool(jnp.array_equal(mine[n], theirs[n])) for n in names)


@functools.partial(jax.jit, static_argnames=("model", "out_sharding"))
def encode_vision_patches(model, params, pixel_values, grid, out_sharding=None) -> jax.Array:
  """The tower before its merger on packed pixel values (`VisionLanguageModel.encode_vision_patches`):
  [merged tokens, merge**2, vision hidden], placed with `out_sharding` when given."""
  hidden = model.apply(params, pixel_values, grid, method=type(model).encode_vision_patches)
  return hidden if out_sharding is None else jax.lax.with_sharding_constraint(hidden, out_sharding)


def encode_step_vision(model, params, batch: dict[str, Any], mesh, rules) -> VisionCache | None:
  """Every distinct image and video of a GRPO step's learner batch (`trajectory_batch`) through
  the tower up to its merger in ONE jitted call (patches padded to a ladder bucket); None when the
  batch has no vision items. `params` are the policy's (its pre-merger tower is frozen)."""
  items = SequenceBuilder(model).unique_vision(batch)
  if not items:
    return None
  merge = model.config.vision.spatial_merge_size ** 2
  starts, row = {}, 0
  for kind, (ids, _, grid) in items.items():
    tokens = grid.prod(axis=1) // merge
    starts[kind] = dict(zip(ids.tolist(), (row + np.concatenate([[0], np.cumsum(tokens)[:-1]])).tolist()))
    row += int(tokens.sum())
  pixels, grid = pad_vision_patches(model.config.vision, np.concatenate([p for _, p, _ in items.values()]),
                                    np.concatenate([g for _, _, g in items.values()]))
  placed = sharding.shard_batch({"pixels": pixels, "grid": vision_grid(model.config.vision, grid)}, mesh, rules,
                                batch_axis=None)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return VisionCache(encode_vision_patches(model, params, placed["pixels"], placed["grid"], replicated), starts)


def place(model, batch: dict[str, Any], mesh, rules, vision_cache: VisionCache | None = None) -> dict[str, Any]:
  """A learner batch on the mesh: per-row arrays split over the batch mesh axes; vision inputs,
  every process's, replicated (as VisionGrids, `SequenceBuilder.device_vision`), or with a
  `vision_cache` of the step the batch's rows belong to, the cache's hidden states
  (`vision_hidden`) and the rows of them the batch's items take (`*_hidden_index`) instead of
  pixels. Each row's vision pad tokens are checked against its grids first: the jitted scatter
  of features cannot check them."""
  if model.config.is_multimodal:
    models.vlm.check_row_feature_counts(model.config, batch["input_ids"], batch.get("image_grid_thw"),
                                        batch.get("video_grid_thw"), batch.get("image_counts"),
                                        batch.get("video_counts"))
  builder = SequenceBuilder(model)
  batch = builder.shared_vision(batch, None if vision_cache is None else vision_cache.starts)
  arrays = builder.device_vision({k: v for k, v in batch.items() if isinstance(v, np.ndarray) and k not in HOST_ONLY},
                                 mesh, rules)
  axes = {k: (1 if k == "positions" and np.ndim(v) == 3 else 0 if k in PER_ROW else None) for k, v in arrays.items()}
  placed = sharding.shard_batch(arrays, mesh, rules, batch_axis=axes)
  if any(k.endswith("_hidden_index") for k in placed):
    placed["vision_hidden"] = vision_cache.hidden
  return placed


def completion_logprobs(model, params, batch: dict[str, Any], *, mesh, rules, temperature: float, pieces: int = 1,
                        logits_chunk: int = 0, vision_cache: VisionCache | None = None) -> np.ndarray:
  """[rows, completion_len] log-probs of `batch`'s completions under `params`, computed `rows / pieces`
  rows at a time (so the pass needs no more memory than an update of that many rows). On several
  hosts: this process's rows. `vision_cache`: as `place`'s (`params` must hold the same frozen
  tower as the params that encoded it)."""
  n = rows.num_rows(batch)
  if n % pieces:
    raise ValueError(f"{n} rows do not split into {pieces} log-prob passes (config.rl.mini_batches x "
                     "config.optim.micro_batches)")
  return np.concatenate([
      sharding.process_rows(learner.completion_logprobs(model, params, place(
          model, rows.take_rows(batch, np.arange(i * n // pieces, (i + 1) * n // pieces)), mesh, rules, vision_cache),
                                                        temperature, logits_chunk), mesh, rules)
      for i in range(pieces)])
