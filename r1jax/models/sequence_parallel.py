"""Sequence-parallel attention: the query rows of a long sequence split over the mesh's `sequence` axis.

Under a mesh whose `sequence` axis has n > 1 devices, the decoder's activations are split on
length (`act_length` -> sequence), so each device holds L / n query rows. Attention is the one
place where a row needs the keys of other devices. Two explicit strategies (`shard_map`):

  all_gather  each device all-gathers K and V over `sequence` (cheap: 2-8 KV heads of GQA) and
              attends its own query rows to all keys. Per-device scores: [L/n, L].
  ring        K/V blocks travel around the ring of `sequence` devices (`ppermute`); each device
              combines the softmax partials of its query rows over the n blocks flash-style
              (running max, sum, weighted values), never holding more than one K/V block.
              Per-device scores: [L/n, L/n] per step.

Both give the attention of `layers.dot_product_attention` (the same visibility mask, fp32
softmax, zeros for a query that sees no key) to fp32 rounding. The causal work is not balanced
across shards (the last shard's rows see the most keys); see the notes for zig-zag chunks.

Outside a mesh, or with sequence = 1, nothing here runs: the default path is unchanged.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from r1jax.models.layers import dot_product_attention

Array = jax.Array
SEQUENCE_AXIS = "sequence"
STRATEGIES = ("all_gather", "ring")


def _current_mesh():
  """The mesh set by `jax.set_mesh` (`sharding.use_mesh`), or None."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh is None or mesh.empty else mesh


def sequence_shards() -> int:
  """Devices on the ambient mesh's `sequence` axis (1 outside a mesh)."""
  mesh = _current_mesh()
  return 1 if mesh is None else int(dict(mesh.shape).get(SEQUENCE_AXIS, 1))


def _dim_axes(logical: str | None, size: int, mesh, used: set[str]) -> tuple[str, ...]:
  """Mesh axes (size > 1, not `sequence`, not used yet) that flax's current rules give a
  logical axis, trailing ones dropped until `size` divides (as `sharding.logical_to_spec`)."""
  if logical is None:
    return ()
  rules = dict(reversed(tuple(nn.get_logical_axis_rules())))
  rule = rules.get(logical)
  axes = [a for a in ((rule,) if isinstance(rule, str) else tuple(rule or ()))
          if dict(mesh.shape).get(a, 1) > 1 and a != SEQUENCE_AXIS and a not in used]
  while axes and size % math.prod(dict(mesh.shape)[a] for a in axes):
    axes.pop()
  return tuple(axes)


def _spec(axes_per_dim: Sequence[tuple[str, ...] | str | None]) -> PartitionSpec:
  out = []
  for axes in axes_per_dim:
    if isinstance(axes, tuple):
      axes = None if not axes else axes[0] if len(axes) == 1 else axes
    out.append(axes)
  return PartitionSpec(*out)


def _attention_partials(q: Array, k: Array, v: Array, mask: Array) -> tuple[Array, Array, Array]:
  """Unnormalised softmax attention of q over one K/V block.

  Args:
    q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
    mask: bool [batch, q_len, kv_len].

  Returns:
    (max score [batch, q_len, heads], sum of weights [batch, q_len, heads], weighted values
    [batch, q_len, heads, head_dim]), fp32; the weights of masked keys are 0.
  """
  batch, q_len, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
  scores = jnp.einsum("btkgd,bskd->btkgs", qg, k, preferred_element_type=jnp.float32) * (head_dim**-0.5)
  visible = mask[:, :, None, None, :]
  # The result does not depend on the shift, so it carries no gradient; masked scores become
  # -inf before exp (not after), else a fully masked block's exp(score - min) overflows and its
  # zero-weighted inf turns the gradient into NaN.
  top = jax.lax.stop_gradient(jnp.max(jnp.where(visible, scores, jnp.finfo(jnp.float32).min), axis=-1))
  weights = jnp.exp(jnp.where(visible, scores - top[..., None], -jnp.inf))
  out = jnp.einsum("btkgs,bskd->btkgd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return (top.reshape(batch, q_len, heads), weights.sum(-1).reshape(batch, q_len, heads),
          out.reshape(batch, q_len, heads, head_dim))


def ring_attention_shard(q: Array, k: Array, v: Array, mask: Array, shards: int, axis: str = SEQUENCE_AXIS) -> Array:
  """One device's part of ring attention (inside `shard_map` over `axis`).

  Args:
    q: [batch, q_len / n, heads, head_dim] this device's query rows; k, v: [batch, kv_len / n,
      kv_heads, head_dim] this device's K/V block; mask: bool [batch, q_len / n, kv_len] this
      device's rows of the visibility mask over ALL keys.
    shards: n, the size of `axis`.

  Returns:
    [batch, q_len / n, heads, head_dim] in q's dtype.
  """
  me = jax.lax.axis_index(axis)
  block = k.shape[1]
  # Device i sends its block to i + 1, so after `step` hops device i holds block (i - step) mod n.
  permutation = [(i, (i + 1) % shards) for i in range(shards)]
  top = total = out = None
  for step in range(shards):
    source = (me - step) % shards
    block_mask = jax.lax.dynamic_slice_in_dim(mask, source * block, block, axis=2)
    # Checkpointed: the backward recomputes each block's scores instead of keeping all n blocks'
    # [L/n, L/n] weights alive, so a gradient holds one block at a time, as the forward does.
    block_top, block_sum, block_out = jax.checkpoint(_attention_partials)(q, k, v, block_mask)
    if top is None:
      top, total, out = block_top, block_sum, block_out
    else:
      new_top = jnp.maximum(top, block_top)
      old_scale, block_scale = jnp.exp(top - new_top), jnp.exp(block_top - new_top)
      total = total * old_scale + block_sum * block_scale
      out = out * old_scale[..., None] + block_out * block_scale[..., None]
      top = new_top
    if step + 1 < shards:
      k, v = jax.lax.ppermute((k, v), axis, permutation)
  return (out / jnp.where(total > 0, total, 1.0)[..., None]).astype(q.dtype)


def sequence_parallel_attention(q: Array, k: Array, v: Array, mask: Array, strategy: str = "all_gather") -> Array:
  """`dot_product_attention` with the query rows split over the ambient mesh's `sequence` axis.

  Args:
    q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
    mask: bool [batch, q_len, kv_len] (True = may attend). q_len must divide by the sequence
      size; "ring" also needs kv_len to (the learner: kv_len = q_len).
    strategy: "all_gather" or "ring" (see the module docstring).

  Returns:
    [batch, q_len, heads, head_dim] in q's dtype, split on length like q.

  Raises:
    ValueError naming the strategy, or the length that does not split over the devices.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"sequence_attention={strategy!r} is not one of {STRATEGIES}")
  mesh = _current_mesh()
  shards = sequence_shards()
  batch, q_len, heads, _ = q.shape
  kv_len, kv_heads = k.shape[1], k.shape[2]
  if q_len % shards:
    raise ValueError(f"sequence-parallel attention: {q_len} query rows do not split over sequence={shards} devices")
  kv_split = kv_len % shards == 0
  if strategy == "ring" and not kv_split:
    raise ValueError(f"ring attention: {kv_len} keys do not split over sequence={shards} devices")
  mask = jnp.broadcast_to(mask, (batch, q_len, kv_len))
  used: set[str] = set()
  batch_axes = _dim_axes("act_batch", batch, mesh, used)
  used.update(batch_axes)
  # Heads split over `tensor` only when query and KV heads both do, so each device keeps whole GQA groups.
  head_axes = _dim_axes("act_heads", heads, mesh, used)
  if head_axes != _dim_axes("act_kv_heads", kv_heads, mesh, used):
    head_axes = ()
  seq = (SEQUENCE_AXIS,)
  q_spec = _spec((batch_axes, seq, head_axes, None))
  kv_spec = _spec((batch_axes, seq if kv_split else (), head_axes, None))
  mask_spec = _spec((batch_axes, seq, None))

  def gathered(q, k, v, mask):
    if kv_split:
      k = jax.lax.all_gather(k, SEQUENCE_AXIS, axis=1, tiled=True)
      v = jax.lax.all_gather(v, SEQUENCE_AXIS, axis=1, tiled=True)
    return dot_product_attention(q, k, v, mask)

  def ring(q, k, v, mask):
    return ring_attention_shard(q, k, v, mask, shards)

  body = gathered if strategy == "all_gather" else ring
  return jax.shard_map(body, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, mask_spec), out_specs=q_spec)(q, k, v,
                                                                                                       mask)
