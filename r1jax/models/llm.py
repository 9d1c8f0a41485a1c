"""Qwen2 / Qwen2.5 decoder-only language model (Qwen2ForCausalLM semantics) in Flax linen.

One forward serves training (no cache), prefill and decode (explicit KV cache). Attention
visibility is expressed by *cache slots*: a query written at slot `cache_index + t` sees every
slot `s <= cache_index + t` whose `attention_mask[b, s]` is True. Without a cache the slots are
just the positions of the input, so the same rule gives the causal + padding mask.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.layers import (DenseND, RMSNorm, SwiGLU, apply_rotary, constrain, dot_product_attention, dtype_of,
                                 param_with_axes, rope_cos_sin)

Array = jax.Array
# {"k", "v"}: stacked [layers, batch, cache_len, kv_heads, head_dim], or (non-scanned models only) a
# tuple of per-layer [batch, cache_len, kv_heads, head_dim] arrays, which a decode loop can update
# in place (a stacked cache is sliced and re-stacked, i.e. copied, on every call).
KVCache = dict[str, Any]

_INIT = nn.initializers.normal(0.02)


def init_cache(config: ModelConfig, batch: int, cache_len: int, dtype=None, per_layer: bool = False) -> KVCache:
  """An all-zero KV cache; `dtype` defaults to the computation dtype; `per_layer` gives tuples."""
  t = config.text
  shape = (batch, cache_len, t.num_kv_heads, t.head_dim)
  dtype = dtype or dtype_of(config.dtype)
  if per_layer:
    return {name: tuple(jnp.zeros(shape, dtype) for _ in range(t.num_layers)) for name in ("k", "v")}
  return {name: jnp.zeros((t.num_layers,) + shape, dtype) for name in ("k", "v")}


def decode_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """`dot_product_attention` for one query token per row, over a cache in its own layout.

  A dot_general over [batch, cache_len, kv_heads, head_dim] keys/values makes XLA transpose
  the whole cache to put (batch, kv_heads) first on every decode step; multiply-reduce reads it
  once instead (~15% of a CPU decode step of a 100M model with a 512-slot cache).

  Args:
    q: [batch, 1, heads, head_dim]; k, v: [batch, cache_len, kv_heads, head_dim];
    mask: bool [batch, 1, cache_len]. A row with no visible slot outputs zeros.
  """
  batch, _, heads, head_dim = q.shape
  kv_heads, dtype = k.shape[2], q.dtype
  q = q.reshape(batch, 1, kv_heads, heads // kv_heads, head_dim).astype(jnp.float32)
  scores = jnp.sum(k[:, :, :, None, :].astype(jnp.float32) * q, axis=-1) * head_dim**-0.5  # [b, s, kv, g]
  visible = mask[:, 0, :, None, None]
  scores = jnp.where(visible, scores, jnp.finfo(scores.dtype).min)
  probs = jnp.where(visible.any(axis=1, keepdims=True), jax.nn.softmax(scores, axis=1), 0.0)
  out = jnp.sum(probs[..., None] * v[:, :, :, None, :].astype(jnp.float32), axis=1)  # [b, kv, g, head_dim]
  return out.reshape(batch, 1, heads, head_dim).astype(dtype)


def attention_visibility(attention_mask: Array, q_len: int, cache_index: Array) -> Array:
  """[batch, q_len, kv_len] bool: causal over cache slots AND the key slot is valid."""
  kv_len = attention_mask.shape[1]
  q_slots = cache_index + jnp.arange(q_len)
  causal = jnp.arange(kv_len)[None, :] <= q_slots[:, None]
  return causal[None] & attention_mask.astype(bool)[:, None, :]


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, layer_cache: tuple[Array, Array] | None,
               cache_index: Array) -> tuple[Array, tuple[Array, Array] | None]:
    """x: [batch, length, embed] -> ([batch, length, embed], updated (k, v) cache of this layer)."""
    t, cfg = self.config.text, self.config

    def proj(heads, name):
      axes = ("embed", "heads" if heads == t.num_heads else "kv_heads", "head_dim")
      return DenseND((heads, t.head_dim), axes, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)

    q = proj(t.num_heads, "q_proj")(x)
    k = proj(t.num_kv_heads, "k_proj")(x)
    v = proj(t.num_kv_heads, "v_proj")(x)
    q = constrain(apply_rotary(q, cos, sin), ("act_batch", "act_length", "act_heads", None))
    k = constrain(apply_rotary(k, cos, sin), ("act_batch", "act_length", "act_kv_heads", None))
    v = constrain(v, ("act_batch", "act_length", "act_kv_heads", None))
    if layer_cache is not None:
      cache_k, cache_v = layer_cache
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, cache_index, 0, 0))
      layer_cache = (k, v)
    attend = decode_attention if layer_cache is not None and q.shape[1] == 1 else dot_product_attention
    out = attend(q, k.astype(q.dtype), v.astype(q.dtype), mask)
    out = DenseND(t.hidden_size, ("heads", "head_dim", "embed"), in_dims=2, use_bias=False, dtype=cfg.dtype,
                  param_dtype=cfg.param_dtype, name="o_proj")(out)
    return out, layer_cache


class DecoderLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, layer_cache, cache_index):
    """Pre-norm attention + SwiGLU block. Returns (x, updated layer cache) so it can be scanned."""
    t, cfg = self.config.text, self.config
    norm = lambda name: RMSNorm(t.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    h, layer_cache = Attention(cfg, name="self_attn")(norm("input_layernorm")(x), cos, sin, mask, layer_cache,
                                                        cache_index)
    x = x + h
    x = x + SwiGLU(t.hidden_size, t.intermediate_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                   name="mlp")(norm("post_attention_layernorm")(x))
    return constrain(x, ("act_batch", "act_length", "act_embed")), layer_cache


class LMHead(nn.Module):
  """The untied output projection; returns its kernel [embed, vocab] so logits can be fp32-accumulated."""

  vocab_size: int
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, hidden_size: int) -> Array:
    return self.param("kernel", param_with_axes(_INIT, ("embed", "vocab")), (hidden_size, self.vocab_size),
                      dtype_of(self.param_dtype))


def _remat_policy(name: str):
  return {"full": None, "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


class CausalLM(nn.Module):
  """Qwen2ForCausalLM. Also the language model inside the Qwen2.5-VL model (fed `inputs_embeds`)."""

  config: ModelConfig

  def setup(self):
    t, cfg = self.config.text, self.config
    self.embed_tokens = nn.Embed(t.vocab_size, t.hidden_size, dtype=cfg.dtype, param_dtype=dtype_of(cfg.param_dtype),
                                 embedding_init=param_with_axes(_INIT, ("vocab", "embed")))
    layer = DecoderLayer
    if cfg.remat != "none":
      layer = nn.remat(layer, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                            length=t.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    else:
      self.layers = [layer(cfg, name=f"layers_{i}") for i in range(t.num_layers)]
    self.norm = RMSNorm(t.rms_norm_eps, cfg.dtype, cfg.param_dtype)
    if not t.tie_word_embeddings:
      self.lm_head = LMHead(t.vocab_size, cfg.param_dtype)

  def embed(self, input_ids: Array) -> Array:
    """[batch, length] int -> [batch, length, embed]."""
    return self.embed_tokens(input_ids)

  def output_kernel(self) -> Array:
    """[embed, vocab]: the output projection; the transposed embedding when tied."""
    if self.config.text.tie_word_embeddings:
      return self.embed_tokens.embedding.T
    return self.lm_head(self.config.text.hidden_size)

  def logits(self, hidden: Array, kernel: Array | None = None) -> Array:
    """[batch, length, embed] (final-normed) -> fp32 logits [batch, length, vocab].

    `kernel` [embed, vocab] replaces `output_kernel()`: a decode loop passes a tied embedding
    transposed once, since XLA's CPU matmul over the [vocab, embed] layout is ~30% slower.
    """
    kernel = self.output_kernel() if kernel is None else kernel
    logits = jnp.einsum("ble,ev->blv", hidden, kernel.astype(hidden.dtype), preferred_element_type=jnp.float32)
    return constrain(logits, ("act_batch", "act_length", "act_vocab"))

  def __call__(self, input_ids: Array | None = None, *, inputs_embeds: Array | None = None,
               positions: Array | None = None, attention_mask: Array | None = None,
               cache: KVCache | None = None, cache_index: Array | int = 0,
               return_hidden: bool = False) -> tuple[Array, KVCache | None]:
    """Runs the decoder.

    Args:
      input_ids: [batch, length] token ids (or give `inputs_embeds` [batch, length, embed]).
      positions: [batch, length] rotary positions, or [3, batch, length] for M-RoPE. Defaults to
        `cache_index + arange(length)` for every row (transformers' default position ids).
      attention_mask: [batch, kv_len] with kv_len = cache_len when a cache is given, else length;
        True/1 marks real tokens. Defaults to all ones.
      cache: KV cache from `init_cache` (stacked or per-layer); the new keys/values are written
        at `cache_index` and the cache comes back in the same layout.
      return_hidden: return the final-normed hidden states [batch, length, embed] instead of
        logits (lets the learner compute log-probs in vocabulary chunks).

    Returns:
      (fp32 logits [batch, length, vocab] or hidden states, updated cache or None).
    """
    cfg, t = self.config, self.config.text
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(cfg.dtype)
    batch, length = x.shape[:2]
    x = constrain(x, ("act_batch", "act_length", "act_embed"))
    cache_index = jnp.asarray(cache_index, jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(cache_index + jnp.arange(length, dtype=jnp.int32), (batch, length))
    kv_len = cache["k"][0].shape[-3] if cache is not None else length
    if attention_mask is None:
      attention_mask = jnp.ones((batch, kv_len), bool)
    if attention_mask.shape != (batch, kv_len):
      raise ValueError(f"attention_mask has shape {attention_mask.shape}, expected {(batch, kv_len)} "
                       f"([batch, {'cache_len' if cache is not None else 'length'}])")
    mask = attention_visibility(attention_mask, length, cache_index)
    cos, sin = rope_cos_sin(positions, t.head_dim, t.rope_theta, t.mrope_section)

    if cfg.scan_layers:
      if cache is not None and isinstance(cache["k"], (tuple, list)):
        raise ValueError("a per-layer (tuple) KV cache needs scan_layers=False; scanned layers use a stacked cache")
      layer_caches = None if cache is None else (cache["k"], cache["v"])
      x, new = self.layers(x, cos, sin, mask, layer_caches, cache_index)
      new_cache = None if cache is None else {"k": new[0], "v": new[1]}
    else:
      ks, vs = [], []
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else (cache["k"][i], cache["v"][i])
        x, layer_cache = layer(x, cos, sin, mask, layer_cache, cache_index)
        if cache is not None:
          ks.append(layer_cache[0])
          vs.append(layer_cache[1])
      if cache is None:
        new_cache = None
      elif isinstance(cache["k"], (tuple, list)):
        new_cache = {"k": tuple(ks), "v": tuple(vs)}
      else:
        new_cache = {"k": jnp.stack(ks), "v": jnp.stack(vs)}
    hidden = self.norm(x)
    return (hidden if return_hidden else self.logits(hidden)), new_cache


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
