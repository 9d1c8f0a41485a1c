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
                                 flat_matmul, padded_causal_attention, param_with_axes, rope_cos_sin)
from r1jax.models.sequence_parallel import sequence_parallel_attention, sequence_shards

Array = jax.Array
# {"k", "v"}: stacked [layers, batch, cache_len, kv_heads, head_dim], or (non-scanned models only) a
# tuple of per-layer [batch, cache_len, kv_heads, head_dim] arrays, which a decode loop can update
# in place (a stacked cache is sliced and re-stacked, i.e. copied, on every call).
# Decoding may add a read-only prompt shared by groups of consecutive rows (`with_shared_prefix`):
# {"prefix_k", "prefix_v"} in the same per-layer / stacked form, each [prompts, kv_heads,
# prefix_len, head_dim], and "prefix_mask" bool [prompts, prefix_len]. Every row then attends
# over its prompt's prefix and its own cache slots.
KVCache = dict[str, Any]
PREFIX_KEYS = ("prefix_k", "prefix_v", "prefix_mask")

_INIT = nn.initializers.normal(0.02)


def init_cache(config: ModelConfig, batch: int, cache_len: int, dtype=None, per_layer: bool = False) -> KVCache:
  """An all-zero KV cache; `dtype` defaults to the computation dtype; `per_layer` gives tuples."""
  t = config.text
  shape = (batch, cache_len, t.num_kv_heads, t.head_dim)
  dtype = dtype or dtype_of(config.dtype)
  if per_layer:
    return {name: tuple(jnp.zeros(shape, dtype) for _ in range(t.num_layers)) for name in ("k", "v")}
  return {name: jnp.zeros((t.num_layers,) + shape, dtype) for name in ("k", "v")}


def _cache_attention_parts(q: Array, k: Array, v: Array, mask: Array) -> tuple[Array, Array, Array]:
  """Unnormalised softmax attention of one query per row over a cache, multiply-reduce in its layout.

  Args:
    q: fp32 scaled queries [batch, kv_heads, per_kv, head_dim]; k, v: [batch, cache_len, kv_heads,
      head_dim]; mask: bool [batch, 1, cache_len].

  Returns:
    (max score, sum of weights, weighted sum of values): [batch, kv_heads, per_kv] twice and
    [batch, kv_heads, per_kv, head_dim]; the attention output is the last over the second
    (weights exp(score - max) of visible slots, so a row with none visible has sum 0).
  """
  scores = jnp.sum(k[:, :, :, None, :].astype(jnp.float32) * q[:, None], axis=-1)  # [batch, cache_len, kv, per_kv]
  visible = mask[:, 0, :, None, None]
  top = jnp.max(jnp.where(visible, scores, jnp.finfo(jnp.float32).min), axis=1)
  weights = jnp.where(visible, jnp.exp(scores - top[:, None]), 0.0)
  out = jnp.sum(weights[..., None] * v[:, :, :, None, :].astype(jnp.float32), axis=1)
  return top, jnp.sum(weights, axis=1), out


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
  q = q.reshape(batch, kv_heads, heads // kv_heads, head_dim).astype(jnp.float32) * head_dim**-0.5
  _, total, out = _cache_attention_parts(q, k, v, mask)
  out = out / jnp.where(total > 0, total, 1.0)[..., None]
  return out.reshape(batch, 1, heads, head_dim).astype(dtype)


def with_shared_prefix(own: KVCache, prefix: KVCache, prefix_mask: Array) -> KVCache:
  """A decode cache: each row's own slots `own` plus a prompt prefix shared by row groups.

  Args:
    own: {"k", "v"} per layer [rows, cache_len, kv_heads, head_dim], rows = prompts * group,
      prompt-major.
    prefix: {"k", "v"} per layer [prompts, prefix_len, kv_heads, head_dim] (a prefill cache);
      stored transposed, [prompts, kv_heads, prefix_len, head_dim], so that decode reads it as
      one matrix per prompt and head.
    prefix_mask: bool [prompts, prefix_len], True on real prompt tokens.
  """
  # The prompt's slots split over `sequence` like the prefill's activations (a long video's cache
  # is spread over the devices of its tokens); decode's reductions over them then combine
  # per-device softmax partials (max, sum, weighted values) across the devices.
  transpose = lambda x: constrain(jnp.swapaxes(x, -3, -2),
                                  (None,) * (x.ndim - 4) + ("act_batch", "act_kv_heads", "act_length", None))
  return {"k": own["k"], "v": own["v"], "prefix_k": jax.tree.map(transpose, prefix["k"]),
          "prefix_v": jax.tree.map(transpose, prefix["v"]),
          "prefix_mask": constrain(prefix_mask.astype(bool), ("act_batch", "act_length"))}


def shared_prefix_decode_attention(q: Array, k: Array, v: Array, mask: Array, prefix: tuple[Array, Array, Array]) -> Array:
  """`decode_attention` over a shared prompt prefix and each row's own cache slots.

  Row r belongs to prompt r // group. Its softmax runs over the union of its prompt's visible
  prefix slots and its own visible slots, combined from the two parts' maxima and sums as
  flash attention combines blocks. The prefix part is a matmul per prompt and KV head over all
  group * heads // kv_heads queries, so G rows read their prompt's keys/values once instead of G
  times.

  Args:
    q: [rows, 1, heads, head_dim]; k, v: [rows, cache_len, kv_heads, head_dim]; mask: bool
      [rows, 1, cache_len].
    prefix: (keys, values) [prompts, kv_heads, prefix_len, head_dim] and mask bool [prompts,
      prefix_len]. A row with no visible slot in either part outputs zeros.
  """
  prefix_k, prefix_v, prefix_mask = prefix
  rows, _, heads, head_dim = q.shape
  prompts, kv_heads = prefix_k.shape[:2]
  group, per_kv, dtype = rows // prompts, heads // kv_heads, q.dtype
  q = q.reshape(rows, kv_heads, per_kv, head_dim).astype(jnp.float32) * head_dim**-0.5
  lowest = jnp.finfo(jnp.float32).min

  # Prefix: [prompts, kv_heads, group * per_kv, prefix_len] scores.
  grouped = q.reshape(prompts, group, kv_heads, per_kv, head_dim).transpose(0, 2, 1, 3, 4)
  grouped = grouped.reshape(prompts, kv_heads, group * per_kv, head_dim)
  scores = jnp.einsum("bkqd,bkpd->bkqp", grouped, prefix_k.astype(jnp.float32))
  visible = prefix_mask[:, None, None, :]
  prefix_max = jnp.max(jnp.where(visible, scores, lowest), axis=-1)
  weights = jnp.where(visible, jnp.exp(scores - prefix_max[..., None]), 0.0)
  prefix_sum = jnp.sum(weights, axis=-1)
  prefix_out = jnp.einsum("bkqp,bkpd->bkqd", weights, prefix_v.astype(jnp.float32))

  def to_rows(x):  # [prompts, kv_heads, group * per_kv, ...] -> [rows, kv_heads, per_kv, ...]
    x = x.reshape(prompts, kv_heads, group, per_kv, *x.shape[3:])
    return jnp.moveaxis(x, 2, 1).reshape(rows, kv_heads, per_kv, *x.shape[4:])

  prefix_max, prefix_sum, prefix_out = to_rows(prefix_max), to_rows(prefix_sum), to_rows(prefix_out)

  own_max, own_sum, own_out = _cache_attention_parts(q, k, v, mask)

  top = jnp.maximum(prefix_max, own_max)
  prefix_scale, own_scale = jnp.exp(prefix_max - top), jnp.exp(own_max - top)
  total = prefix_sum * prefix_scale + own_sum * own_scale
  out = (prefix_out * prefix_scale[..., None] + own_out * own_scale[..., None]) / jnp.where(total > 0, total, 1.0)[..., None]
  return out.reshape(rows, 1, heads, head_dim).astype(dtype)


def shared_prefix_chunk_attention(q: Array, k: Array, v: Array, mask: Array,
                                  prefix: tuple[Array, Array, Array]) -> Array:
  """Attention of several new tokens per row over a shared prompt prefix and the row's own slots.

  The chunked prefill of a continuation (`Sampler.extend`): every query sees its prompt's whole
  visible prefix (the prefix precedes all own slots) and the own slots `mask` allows. The prefix
  is read per prompt for the G rows that share it, never copied per row.

  Args:
    q: [rows, q_len, heads, head_dim]; k, v: [rows, cache_len, kv_heads, head_dim] own slots;
      mask: bool [rows, q_len, cache_len] (causal over own slots and valid).
    prefix: (keys, values) [prompts, kv_heads, prefix_len, head_dim] and mask bool [prompts,
      prefix_len]; rows = prompts * group, prompt-major. A query with no visible slot outputs zeros.
  """
  prefix_k, prefix_v, prefix_mask = prefix
  rows, q_len, heads, head_dim = q.shape
  prompts, kv_heads = prefix_k.shape[:2]
  group, per_kv, dtype = rows // prompts, heads // kv_heads, q.dtype
  q = q.astype(jnp.float32).reshape(prompts, group, q_len, kv_heads, per_kv, head_dim) * head_dim**-0.5
  prefix_scores = jnp.einsum("pgtkhd,pksd->pgtkhs", q, prefix_k.astype(jnp.float32))
  own_scores = jnp.einsum("rtkhd,rskd->rtkhs", q.reshape(rows, q_len, kv_heads, per_kv, head_dim),
                          k.astype(jnp.float32))
  prefix_visible = prefix_mask.astype(bool)[:, None, None, None, None, :]
  own_visible = mask.astype(bool)[:, :, None, None, :]
  lowest = jnp.finfo(jnp.float32).min
  top = jnp.maximum(
      jnp.max(jnp.where(prefix_visible, prefix_scores, lowest), axis=-1).reshape(rows, q_len, kv_heads, per_kv),
      jnp.max(jnp.where(own_visible, own_scores, lowest), axis=-1))
  prefix_weights = jnp.where(prefix_visible, jnp.exp(prefix_scores - top.reshape(prefix_scores.shape[:-1])[..., None]), 0.0)
  own_weights = jnp.where(own_visible, jnp.exp(own_scores - top[..., None]), 0.0)
  total = prefix_weights.sum(-1).reshape(top.shape) + own_weights.sum(-1)
  out = (jnp.einsum("pgtkhs,pksd->pgtkhd", prefix_weights, prefix_v.astype(jnp.float32)).reshape(
      rows, q_len, kv_heads, per_kv, head_dim) + jnp.einsum("rtkhs,rskd->rtkhd", own_weights, v.astype(jnp.float32)))
  out = out / jnp.where(total > 0, total, 1.0)[..., None]
  return out.reshape(rows, q_len, heads, head_dim).astype(dtype)


def attention_implementation(config: ModelConfig) -> str:
  """What `config.attention_impl` runs on this platform: "xla", "jax_xla" or "cudnn".

  "auto" picks cuDNN's fused attention on a GPU when the compute dtype is bf16/fp16 (cuDNN has no
  fp32 kernel) and r1jax's einsum reference otherwise (CPU, TPU, fp32).
  """
  impl, backend = config.attention_impl, jax.default_backend()
  fused_dtype = config.dtype in ("bfloat16", "float16")
  if impl == "auto":
    return "cudnn" if backend == "gpu" and fused_dtype else "xla"
  if impl == "cudnn" and not (backend == "gpu" and fused_dtype):
    raise ValueError(f"attention_impl='cudnn' needs a GPU and dtype bfloat16 or float16; this is backend "
                     f"{backend!r} with dtype={config.dtype!r} (use attention_impl='auto')")
  return impl


def attention_visibility(attention_mask: Array, q_len: int, cache_index: Array) -> Array:
  """[batch, q_len, kv_len] bool: causal over cache slots AND the key slot is valid."""
  kv_len = attention_mask.shape[1]
  q_slots = cache_index + jnp.arange(q_len)
  causal = jnp.arange(kv_len)[None, :] <= q_slots[:, None]
  return causal[None] & attention_mask.astype(bool)[:, None, :]


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, layer_cache: tuple[Array, ...] | None,
               cache_index: Array, prefix_mask: Array | None = None,
               key_valid: Array | None = None) -> tuple[Array, tuple[Array, Array] | None]:
    """x: [batch, length, embed] -> ([batch, length, embed], updated (k, v) cache of this layer).

    `layer_cache` is (k, v), or (k, v, prefix_k, prefix_v) with `prefix_mask` for one-token
    decoding over a shared prefix (`with_shared_prefix`). `key_valid` bool [batch, length] (the
    attention mask of a call whose queries are all its keys, from slot 0) selects the fused
    `padded_causal_attention` of a `jax_xla` / `cudnn` attention_impl instead of `mask`.
    """
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
    prefix = None
    if layer_cache is not None:
      cache_k, cache_v, *prefix = layer_cache
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, cache_index, 0, 0))
      layer_cache = (k, v)
    if prefix and q.shape[1] == 1:
      out = shared_prefix_decode_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, (*prefix, prefix_mask))
    elif prefix:
      out = shared_prefix_chunk_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, (*prefix, prefix_mask))
    elif key_valid is not None:
      implementation = {"jax_xla": "xla", "cudnn": "cudnn"}[attention_implementation(cfg)]
      out = padded_causal_attention(q, k.astype(q.dtype), v.astype(q.dtype), key_valid, implementation)
    elif layer_cache is not None and q.shape[1] == 1:
      out = decode_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
    elif sequence_shards() > 1 and q.shape[1] % sequence_shards() == 0:
      # Explicit sequence parallelism (learner, prefill); ring needs the keys to split too.
      strategy = cfg.sequence_attention if k.shape[1] % sequence_shards() == 0 else "all_gather"
      out = sequence_parallel_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, strategy)
    else:
      out = dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
    out = DenseND(t.hidden_size, ("heads", "head_dim", "embed"), in_dims=2, use_bias=False, dtype=cfg.dtype,
                  param_dtype=cfg.param_dtype, name="o_proj")(out)
    return out, layer_cache


class DecoderLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, layer_cache, cache_index, prefix_mask=None,
               key_valid=None):
    """Pre-norm attention + SwiGLU block. Returns (x, updated layer cache) so it can be scanned."""
    t, cfg = self.config.text, self.config
    norm = lambda name: RMSNorm(t.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    h, layer_cache = Attention(cfg, name="self_attn")(norm("input_layernorm")(x), cos, sin, mask, layer_cache,
                                                        cache_index, prefix_mask, key_valid)
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
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast,
                                     nn.broadcast),
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
    logits = flat_matmul(hidden, kernel.astype(hidden.dtype), preferred_element_type=jnp.float32)
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
        True/1 marks real tokens. Defaults to all ones. With a fused `attention_impl` ("jax_xla",
        "cudnn"; "auto" on a GPU) each row's real tokens must be one contiguous run (left-padded
        prompt, completion, right padding) whenever the call covers whole rows (no cache, or a
        prefill of the whole cache from slot 0).
      cache: KV cache from `init_cache` (stacked or per-layer), possibly `with_shared_prefix`;
        the new keys/values are written at `cache_index` and the cache comes back in the same
        layout (a shared prefix unchanged).
      return_hidden: return the final-normed hidden states [batch, length, embed] instead of
        logits (lets the learner compute log-probs in vocabulary chunks).

    Returns:
      (fp32 logits [batch, length, vocab] or hidden states, updated cache or None).
    """
    cfg, t = self.config, self.config.text
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(cfg.dtype)
    batch, length = x.shape[:2]
    x = constrain(x, ("act_batch", "act_length", "act_embed"))
    kv_len = cache["k"][0].shape[-3] if cache is not None else length
    # Queries are all the keys, from slot 0 (learner, prefill): causal over the real tokens, which a
    # fused kernel takes as per-row lengths instead of a [batch, length, kv_len] mask.
    whole_rows = (isinstance(cache_index, int) and cache_index == 0 and kv_len == length
                  and (cache is None or "prefix_k" not in cache))
    cache_index = jnp.asarray(cache_index, jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(cache_index + jnp.arange(length, dtype=jnp.int32), (batch, length))
    if attention_mask is None:
      attention_mask = jnp.ones((batch, kv_len), bool)
    if attention_mask.shape != (batch, kv_len):
      raise ValueError(f"attention_mask has shape {attention_mask.shape}, expected {(batch, kv_len)} "
                       f"([batch, {'cache_len' if cache is not None else 'length'}])")
    mask = attention_visibility(attention_mask, length, cache_index)
    key_valid = attention_mask.astype(bool) if whole_rows and attention_implementation(cfg) != "xla" else None
    # Positions ([batch, length] or M-RoPE [3, batch, length]) split on length like the activations.
    positions = constrain(positions, (None,) * (positions.ndim - 2) + ("act_batch", "act_length"))
    cos, sin = rope_cos_sin(positions, t.head_dim, t.rope_theta, t.mrope_section)

    names = ("k", "v") if cache is None or "prefix_k" not in cache else ("k", "v", "prefix_k", "prefix_v")
    prefix_mask = None if cache is None else cache.get("prefix_mask")
    if cfg.scan_layers:
      if cache is not None and isinstance(cache["k"], (tuple, list)):
        raise ValueError("a per-layer (tuple) KV cache needs scan_layers=False; scanned layers use a stacked cache")
      layer_caches = None if cache is None else tuple(cache[name] for name in names)
      x, new = self.layers(x, cos, sin, mask, layer_caches, cache_index, prefix_mask, key_valid)
      new_cache = None if cache is None else {"k": new[0], "v": new[1]}
    else:
      ks, vs = [], []
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else tuple(cache[name][i] for name in names)
        x, layer_cache = layer(x, cos, sin, mask, layer_cache, cache_index, prefix_mask, key_valid)
        if cache is not None:
          ks.append(layer_cache[0])
          vs.append(layer_cache[1])
      if cache is None:
        new_cache = None
      elif isinstance(cache["k"], (tuple, list)):
        new_cache = {"k": tuple(ks), "v": tuple(vs)}
      else:
        new_cache = {"k": jnp.stack(ks), "v": jnp.stack(vs)}
    if cache is not None:
      new_cache.update({name: cache[name] for name in PREFIX_KEYS if name in cache})
    hidden = self.norm(x)
    return (hidden if return_hidden else self.logits(hidden)), new_cache


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
