"""Building blocks shared by the language model and the vision tower.

Parameters carry logical axis names (see `r1jax.sharding` for the rules that map them onto mesh
axes); activations are constrained with `act_*` names so that parameter rules (e.g. `embed` ->
`fsdp`) never leak onto activations.
"""
from __future__ import annotations

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
  """Softmax attention with grouped-query heads.

  Args:
    q: [batch, q_len, heads, head_dim].
    k, v: [batch, kv_len, kv_heads, head_dim]; heads is a multiple of kv_heads.
    mask: bool, broadcastable to [batch, q_len, kv_len]; True = may attend. A query row with no
      allowed key (left padding) outputs zeros, as torch's SDPA (transformers' default) does.

  Returns:
    [batch, q_len, heads, head_dim] in q's dtype. Scores and softmax are fp32.
  """
  batch, q_len, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  q = q.reshape(batch, q_len, kv_heads, groups, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = scores * (head_dim**-0.5)
  probs = jax.nn.softmax(scores, axis=-1) if mask is None else _masked_softmax(scores, mask[:, None, None])
  probs = probs.astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


class DenseND(nn.Module):
  """Contracts the last `in_dims` axes of x with kernel [*in_shape, *features] (+ bias [*features]).

  Unlike nn.DenseGeneral, the kernel is created at its real rank, so its logical axis names
  apply at init time too (sharded init inside a mesh context).
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
    y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.in_dims)
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
      return nn.Dense(features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=dtype_of(self.param_dtype),
                      kernel_init=param_with_axes(nn.initializers.normal(0.02), axes),
                      bias_init=param_with_axes(nn.initializers.zeros, axes[1:]), name=name)

    gate = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), "gate_proj")(x)
    up = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), "up_proj")(x)
    hidden = nn.silu(gate) * up
    hidden = constrain(hidden, ("act_batch", "act_length", "act_mlp")) if hidden.ndim == 3 else hidden
    return dense(self.hidden_size, (self.mlp_axis, self.embed_axis), "down_proj")(hidden)
