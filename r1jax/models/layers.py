"""Building blocks shared by the language model and the vision tower.

Parameters carry logical axis names (see `r1jax.sharding` for the rules that map them onto mesh
axes); activations are constrained with `act_*` names so that parameter rules (e.g. `embed` ->
`fsdp`) never leak onto activations.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def dtype_of(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def param_with_axes(init, names: Sequence[str | None]):
  """An initializer that records logical axis names for every parameter it creates."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: Array, names: Sequence[str | None]) -> Array:
  """Sharding constraint by logical names; a no-op outside a mesh + rules context."""
  return nn.with_logical_constraint(x, tuple(names))


class RMSNorm(nn.Module):
  """RMSNorm computed in fp32, scaled after casting back (as Qwen2RMSNorm). x: [..., features]."""

  eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", param_with_axes(nn.initializers.ones, ("norm",)), (x.shape[-1],),
                       dtype_of(self.param_dtype))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return scale.astype(self.dtype) * x32.astype(self.dtype)


def rotate_half(x: Array) -> Array:
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates `x` [batch, length, heads, head_dim] by cos/sin [batch, length, head_dim] (fp32)."""
  x32 = x.astype(jnp.float32)
  out = x32 * cos[:, :, None, :] + rotate_half(x32) * sin[:, :, None, :]
  return out.astype(x.dtype)


def rope_inv_freq(dim: int, theta: float) -> Array:
  """[dim // 2] fp32 inverse frequencies theta**(-2i / dim) of a rotary embedding over `dim` features."""
  return 1.0 / (theta**(jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def rope_cos_sin(positions: Array, head_dim: int, theta: float,
                 mrope_section: Sequence[int] | None = None) -> tuple[Array, Array]:
  """cos/sin tables [batch, length, head_dim] in fp32.

  Args:
    positions: [batch, length] for plain RoPE, or [3, batch, length] (temporal, height, width)
      for Qwen2.5-VL M-RoPE; plain positions are broadcast to the three axes.
    mrope_section: frequency pairs taken from each of the three position axes, e.g. (16, 24, 24).
  """
  inv_freq = rope_inv_freq(head_dim, theta)
  if mrope_section is None:
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, length, head_dim/2]
  else:
    if positions.ndim == 2:
      positions = jnp.broadcast_to(positions[None], (3,) + positions.shape)
    freqs3 = positions.astype(jnp.float32)[..., None] * inv_freq  # [3, batch, length, head_dim/2]
    chunks, start = [], 0
    for axis_index, size in enumerate(mrope_section):
      chunks.append(freqs3[axis_index % 3, ..., start:start + size])
      start += size
    freqs = jnp.concatenate(chunks, axis=-1)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None) -> Array:
  """Softmax attention with grouped-query heads: the reference implementation, for any mask.

  Each KV head's queries are laid out [batch, kv_heads, q_len * groups, head_dim] (query-major,
  as they come out of the projection), so scores and outputs are one batched matmul per
  (batch, KV head) and the backward does not transpose the [..., kv_len] scores: the forward +
  backward of one layer's attention ([8, 256] rows, 12/2 heads of 64) ran ~1.3-1.6x faster on
  XLA:CPU than contracting "btkgd,bskd->bkgts" (that layout is kept in benchmarks/learner_layout.py).

  Args:
    q: [batch, q_len, heads, head_dim].
    k, v: [batch, kv_len, kv_heads, head_dim]; heads is a multiple of kv_heads.
    mask: bool, broadcastable to [batch, q_len, kv_len]; True = may attend. A query row with no
      allowed key (left padding) outputs zeros, as torch's SDPA (transformers' default) does.

  Returns:
    [batch, q_len, heads, head_dim] in q's dtype. Scores and softmax are fp32.
  """
  batch, q_len, heads, head_dim = q.shape
  kv_len, kv_heads = k.shape[1], k.shape[2]
  groups = heads // kv_heads
  q = jnp.swapaxes(q.reshape(batch, q_len, kv_heads, groups, head_dim), 1, 2).reshape(
      batch, kv_heads, q_len * groups, head_dim)
  k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [batch, kv_heads, kv_len, head_dim]
  scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
  scores = (scores * (head_dim**-0.5)).reshape(batch, kv_heads, q_len, groups, kv_len)
  if mask is None:
    probs = jax.nn.softmax(scores, axis=-1)
  else:
    try:
      mask = jnp.broadcast_to(mask, (batch, q_len, kv_len))
    except ValueError:
      raise ValueError(f"attention mask of shape {mask.shape} does not broadcast to [batch, q_len, kv_len] = "
                       f"{(batch, q_len, kv_len)}") from None
    probs = _masked_softmax(scores, mask[:, None, :, None, :])
  probs = probs.astype(v.dtype).reshape(batch, kv_heads, q_len * groups, kv_len)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, v, preferred_element_type=jnp.float32)
  out = jnp.swapaxes(out.reshape(batch, kv_heads, q_len, groups, head_dim), 1, 2)
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


def padded_causal_attention(q: Array, k: Array, v: Array, valid: Array, implementation: str) -> Array:
  """Causal self-attention over padded rows through `jax.nn.dot_product_attention` (fused kernels).

  Equals `dot_product_attention(q, k, v, causal & valid[:, None, :])` when each row's real tokens
  are one contiguous run: [left padding][prompt + completion][right padding], as prompts and
  learner rows are built. The fused kernels (cuDNN) express padding only as a count of real keys
  from the start of a row, so each row is rotated left by its leading padding, attends causally
  over its first `count` keys (no [batch, q_len, kv_len] mask is built), and is rotated back.
  Queries before a row's first real token see no key and output zeros, as the reference.

  Args:
    q: [batch, length, heads, head_dim]; k, v: [batch, length, kv_heads, head_dim], same dtype.
    valid: bool [batch, length], True on real tokens.
    implementation: `jax.nn.dot_product_attention`'s: "xla" or "cudnn" (GPU, bf16/fp16 only).

  Returns:
    [batch, length, heads, head_dim] in q's dtype.
  """
  length = valid.shape[1]
  slots = jnp.arange(length)[None]
  first = jnp.argmax(valid, axis=1)[:, None]  # 0 for a row without real tokens
  count = jnp.sum(valid, axis=1, dtype=jnp.int32)
  rotate = lambda x, order: jnp.take_along_axis(x, order[:, :, None, None], axis=1)
  to_front = (slots + first) % length  # rotated slot i holds slot i + first
  # At least one key, so that no softmax row is empty (a row without real tokens is zeroed below).
  out = jax.nn.dot_product_attention(rotate(q, to_front), rotate(k, to_front), rotate(v, to_front), is_causal=True,
                                     key_value_seq_lengths=jnp.maximum(count, 1), implementation=implementation)
  out = rotate(out, (slots - first) % length)
  sees_a_key = (slots >= first) & (count[:, None] > 0)
  return jnp.where(sees_a_key[:, :, None, None], out, 0).astype(q.dtype)


def flat_matmul(x: Array, kernel: Array, in_dims: int = 1, preferred_element_type=None) -> Array:
  """Contracts the last `in_dims` axes of x [*lead, *in] with kernel [*in, *out] -> [*lead, *out].

  Computed as one 2-D matmul [prod(lead), prod(in)] @ [prod(in), prod(out)]: XLA:CPU runs the
  weight gradient of a dot that contracts over batch AND length of a 3-D activation much slower
  than over the flattened rows (issue 17: 161 ms vs ~100 ms for dW of [8, 256, 768]); the loss
  gradient of a 4-layer, 768-wide decoder got ~1.1x faster (benchmarks/learner_layout.py).
  """
  lead, contracted, out = x.shape[:x.ndim - in_dims], x.shape[x.ndim - in_dims:], kernel.shape[in_dims:]
  if tuple(kernel.shape[:in_dims]) != tuple(contracted):
    raise ValueError(f"kernel {kernel.shape} does not take the last {in_dims} axes of x {x.shape}")
  rows, width = math.prod(lead), math.prod(contracted)
  y = jnp.matmul(x.reshape(rows, width), kernel.reshape(width, math.prod(out)),
                 preferred_element_type=preferred_element_type)
  return y.reshape(*lead, *out)


class DenseND(nn.Module):
  """Contracts the last `in_dims` axes of x with kernel [*in_shape, *features] (+ bias [*features]).

  Unlike nn.DenseGeneral, the kernel is created at its real rank, so its logical axis names
  apply at init time too (sharded init inside a mesh context). x: [..., *in_shape] ->
  [..., *features], computed as a 2-D matmul over the flattened leading axes (`flat_matmul`).
  """

  features: int | tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  in_dims: int = 1
  use_bias: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  kernel_init: Any = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = self.features if isinstance(self.features, tuple) else (self.features,)
    shape = tuple(x.shape[-self.in_dims:]) + features
    kernel = self.param("kernel", param_with_axes(self.kernel_init, self.kernel_axes), shape,
                        dtype_of(self.param_dtype))
    y = flat_matmul(x.astype(self.dtype), kernel.astype(self.dtype), self.in_dims)
    if self.use_bias:
      bias = self.param("bias", param_with_axes(nn.initializers.zeros, self.kernel_axes[self.in_dims:]), features,
                        dtype_of(self.param_dtype))
      y = y + bias.astype(self.dtype)
    return y


def _masked_softmax(scores: Array, mask: Array) -> Array:
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  return jnp.where(mask.any(axis=-1, keepdims=True), jax.nn.softmax(scores, axis=-1), 0.0)


class SwiGLU(nn.Module):
  """down(silu(gate(x)) * up(x)); x: [..., embed] -> [..., embed]."""

  hidden_size: int
  intermediate_size: int
  use_bias: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  embed_axis: str = "embed"
  mlp_axis: str = "mlp"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    def dense(features, axes, name):
      return DenseND(features, axes, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=name)

    gate = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), "gate_proj")(x)
    up = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), "up_proj")(x)
    hidden = nn.silu(gate) * up
    hidden = constrain(hidden, ("act_batch", "act_length", "act_mlp")) if hidden.ndim == 3 else hidden
    return dense(self.hidden_size, (self.mlp_axis, self.embed_axis), "down_proj")(hidden)
