"""Qwen2.5-VL vision tower (transformers' Qwen2_5_VisionTransformerPretrainedModel) in Flax linen.

The patches of every image and video of a batch are packed along one axis, `[num_patches,
patch_dim]`, in the processor's row order (item, frame, h_block, w_block, h_in_block,
w_in_block), so each run of `spatial_merge_size**2` rows is one merged LLM token.

Everything that depends on the grid sizes (the window permutation, which patches may attend to
which, the 2D rotary positions) is computed on the host in NumPy by `vision_grid`. It returns
arrays whose shapes depend only on the number of patches, and attention is restricted by segment
ids: there are no Python loops over images inside jit and no attention across images, videos or
video frames. `pad_vision_patches` pads the patches to a bucket with a blank item that attends
only to itself, so the jitted tower compiles once per bucket, not once per patch count.

Logical parameter axes: `vision_patch` (patch_dim input of the patch embedding), `vision_embed`
(tower width, also the 4x concatenated merger input), `vision_heads`, `head_dim`, `vision_mlp`
(block MLP and merger hidden), `norm`, `embed` (merger output = LLM width), `layers` (scan).
Activations: `act_patches` (packed patch axis), `act_embed`, `act_heads`.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.config import ModelConfig, VisionConfig
from r1jax.models.hf import IDENTITY, TensorRule, layer_rules, linear, linear_in, reshape
from r1jax.models.layers import (DenseND, RMSNorm, SwiGLU, apply_rotary, constrain, dot_product_attention,
                                 rope_inv_freq)
from r1jax.models.llm import _remat_policy

Array = jax.Array
_INIT = nn.initializers.normal(0.02)
_WINDOW, _FULL = 0, 1  # Rows of the stacked segment ids a block attends within.


class VisionGrid(NamedTuple):
  """Host-computed layout of packed patches; a pytree, so it can be passed into `jax.jit`.

  The tower runs its blocks in *window order*: merged tokens regrouped so that each attention
  window is contiguous (transformers' `window_index`); the merger output is put back into the
  processor's order with `reverse_index`.

  Attributes:
    window_index: int32 [num_merged]; window-order slot i holds merged token window_index[i].
    reverse_index: int32 [num_merged]; the inverse permutation.
    positions: int32 [num_patches, 2]; (row, col) of each patch inside its frame, window order.
    segments: int32 [2, num_patches], window order. Row 0: attention window of each patch
      (window-attention blocks); row 1: frame of each patch (full-attention blocks attend within
      one frame of one image or video, as transformers' `cu_seqlens`).
  """

  window_index: np.ndarray
  reverse_index: np.ndarray
  positions: np.ndarray
  segments: np.ndarray

  @property
  def num_patches(self) -> int:
    return self.positions.shape[0]


def _check_grid(vision: VisionConfig, grid_thw) -> np.ndarray:
  grid = np.asarray(grid_thw)
  if grid.ndim != 2 or grid.shape[1] != 3 or not np.issubdtype(grid.dtype, np.integer):
    raise ValueError(f"grid_thw must be integer [num_items, 3] (t, h, w), got {grid.dtype} {list(grid.shape)}")
  m = vision.spatial_merge_size
  bad = [row.tolist() for row in grid if row.min() <= 0 or row[1] % m or row[2] % m]
  if bad:
    raise ValueError(f"grid_thw rows {bad} must be positive with h and w multiples of "
                     f"spatial_merge_size={m}")
  return grid.astype(np.int64)


def ladder_bucket(count: int, unit: int = 1) -> int:
  """The smallest size >= `count` on a geometric ladder of `unit`s: 2, 3, 4, 6, 8, 12, 16, 24, ... units.

  Jitted functions whose shapes follow a count that varies with the data (packed patches,
  vision tokens) compile once per bucket instead of once per count. Two steps per doubling: a
  bucket is at most 1.5 times its count (rounded up to units), and a run over many image sizes
  sees about two buckets per doubling of size.
  """
  if count < 0 or unit < 1:
    raise ValueError(f"ladder_bucket needs count >= 0 and unit >= 1, got count={count} unit={unit}")
  units = max(-(-count // unit), 2)
  power = 1 << (units - 1).bit_length()  # the smallest power of two >= units
  return unit * (power * 3 // 4 if power >= 4 and power * 3 // 4 >= units else power)


def pad_vision_patches(vision: VisionConfig, pixels, grid_thw) -> tuple[np.ndarray, np.ndarray]:
  """Packed items followed by one blank padding item, so that the patch count is a ladder bucket.

  Every array the tower takes (`VisionGrid` included) has a length set by the patch count, so
  images of any sizes, and any number of them, compile the jitted functions that encode them once
  per bucket (`ladder_bucket` of merged tokens). The padding item is a 1-frame strip of merged
  tokens (grid (1, merge, k * merge)): its windows and its frame are segments of their own, so
  real patches never attend to it, and its features come after every real item's, so nothing
  places or gathers them.

  Args:
    pixels: float [patches, patch_dim]; grid_thw: int [items, 3] (t, h, w), h and w multiples of
      `vision.spatial_merge_size`.

  Returns:
    (pixels [bucket, patch_dim] zero-padded, grid_thw [items (+ 1), 3]).
  """
  grid = _check_grid(vision, np.asarray(grid_thw).reshape(-1, 3))
  pixels = np.asarray(pixels)
  patches = int(grid.prod(axis=1).sum())
  if pixels.ndim != 2 or len(pixels) != patches:
    raise ValueError(f"pixel values {list(pixels.shape)} must be [patches, patch_dim] with the {patches} patches "
                     "grid_thw describes (sum of t*h*w)")
  m = vision.spatial_merge_size
  extra = ladder_bucket(patches, m * m) - patches
  if not extra:
    return pixels, grid
  blank = np.zeros((extra, pixels.shape[1]), pixels.dtype)
  return np.concatenate([pixels, blank]), np.concatenate([grid, [[1, m, extra // m]]])


def vision_grid(vision: VisionConfig, grid_thw) -> VisionGrid:
  """The `VisionGrid` of items with patch grids `grid_thw` int [num_items, 3] (t, h, w).

  Follows transformers' `get_vision_window_index`: windows of `window_size // spatial_merge_size
  // patch_size` merged tokens per side, tiled from the top-left of every frame (edge windows
  are partial).
  """
  grid = _check_grid(vision, grid_thw)
  m = vision.spatial_merge_size
  unit = m * m
  win = vision.window_size // m // vision.patch_size
  if win < 1:
    raise ValueError(f"vision window_size={vision.window_size} is smaller than one merged token "
                     f"(spatial_merge_size * patch_size = {m * vision.patch_size})")
  # (row, col) of the m*m patches of one merged token, in the processor's order within it.
  in_unit = np.stack(np.meshgrid(np.arange(m), np.arange(m), indexing="ij"), -1).reshape(unit, 2)
  window_index, unit_positions, window_ids, frame_ids = [], [], [], []
  offset = num_windows = num_frames = 0
  for t, h, w in grid.tolist():
    lh, lw = h // m, w // m
    index = np.arange(t * lh * lw).reshape(t, lh, lw)
    # Pad to whole windows with -1, group by window, drop the padding (transformers' recipe).
    pad_h, pad_w = -lh % win, -lw % win
    padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-1)
    nh, nw = padded.shape[1] // win, padded.shape[2] // win
    windows = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, win * win)
    sizes = (windows >= 0).sum(axis=1)
    order = windows[windows >= 0]
    window_index.append(order + offset)
    window_ids.append(np.repeat(np.arange(len(sizes)) + num_windows, sizes))
    frame_ids.append(order // (lh * lw) + num_frames)
    rows, cols = (order % (lh * lw)) // lw, order % lw
    unit_positions.append(np.stack([rows, cols], -1)[:, None, :] * m + in_unit[None])
    offset += t * lh * lw
    num_windows += len(sizes)
    num_frames += t
  window_index = np.concatenate(window_index or [np.zeros(0, np.int64)])
  segments = np.stack([np.concatenate(window_ids or [np.zeros(0, np.int64)]),
                       np.concatenate(frame_ids or [np.zeros(0, np.int64)])])
  return VisionGrid(
      window_index=window_index.astype(np.int32),
      reverse_index=np.argsort(window_index).astype(np.int32),
      positions=np.concatenate(unit_positions or [np.zeros((0, unit, 2), np.int64)]).reshape(-1, 2).astype(np.int32),
      segments=np.repeat(segments, unit, axis=1).astype(np.int32))


def as_vision_grid(vision: VisionConfig, grid, what: str = "grid_thw") -> VisionGrid:
  """Accepts a `VisionGrid` or a concrete grid_thw [num_items, 3] (converted on the host)."""
  if isinstance(grid, VisionGrid):
    return grid
  if grid is None:
    raise ValueError(f"{what} is required with pixel values: the [num_items, 3] (t, h, w) patch grid of each item")
  if isinstance(grid, jax.core.Tracer):
    raise ValueError(f"{what} is a traced array: grid sizes decide shapes and must be known on the host; "
                     "under jax.jit pass `vision.vision_grid(config.vision, grid_thw)` instead")
  return vision_grid(vision, np.asarray(grid))


def num_merged_tokens(vision: VisionConfig, grid_thw) -> int:
  """LLM placeholder tokens of `grid_thw` [num_items, 3]: sum(t * h * w) / spatial_merge_size**2."""
  grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
  return int(grid.prod(axis=1).sum()) // vision.spatial_merge_size**2


def check_prompt_fits(vision: VisionConfig, prompt_tokens: int, limit: int, video_grid_thw=None,
                      what: str = "prompt") -> None:
  """Host check, before any device work, that a prompt of `prompt_tokens` tokens fits `limit`.

  Args:
    prompt_tokens: the prompt's tokens, vision placeholders expanded.
    limit: the configured maximum prompt length.
    video_grid_thw: int [num_videos, 3] patch grids of the prompt's videos, to name the cause.

  Raises:
    ValueError naming the frame count, the tokens per frame and the limit (when the prompt has
    videos), else the token count and the limit.
  """
  if prompt_tokens <= limit:
    return
  grid = None if video_grid_thw is None else np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
  if grid is None or not len(grid):
    raise ValueError(f"{what} has {prompt_tokens} tokens, more than the limit of {limit} (max prompt length)")
  frames = int(grid[:, 0].sum()) * vision.temporal_patch_size
  video_tokens = num_merged_tokens(vision, grid)
  per_frame = video_tokens / frames
  budget = max(limit - (prompt_tokens - video_tokens), 0)
  fit = int(budget // per_frame) // vision.temporal_patch_size * vision.temporal_patch_size  # whole temporal patches
  raise ValueError(
      f"{what} has {prompt_tokens} tokens, more than the limit of {limit} (max prompt length): its video(s) have "
      f"{frames} frames x {per_frame:g} tokens per frame = {video_tokens} video tokens (+ {prompt_tokens - video_tokens}"
      f" text tokens); sample fewer frames (at most {fit} at this frame size), use smaller frames, or raise the limit")


def vision_rope_cos_sin(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """2D rotary tables [1, num_patches, head_dim] (fp32) from (row, col) positions [num_patches, 2].

  As transformers' Qwen2_5_VLVisionRotaryEmbedding: head_dim/4 frequencies over head_dim/2 per
  axis, laid out [row freqs, col freqs] and repeated for the two rotated halves.
  """
  freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(head_dim // 2, theta)  # [N, 2, head_dim/4]
  freqs = freqs.reshape(positions.shape[0], -1)
  emb = jnp.concatenate([freqs, freqs], axis=-1)[None]
  return jnp.cos(emb), jnp.sin(emb)


def _dense(features, axes, cfg: ModelConfig, name: str, use_bias=True, in_dims=1):
  return DenseND(features, axes, in_dims=in_dims, use_bias=use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                 kernel_init=_INIT, name=name)


# Full-attention blocks score this many queries at a time against every patch, so their scores
# take [heads, chunk, num_patches] memory instead of [heads, num_patches, num_patches].
FULL_ATTENTION_QUERY_CHUNK = 1024


def window_span(vision: VisionConfig) -> int:
  """The most patches one attention window holds: (window_size / merge / patch)**2 merged tokens."""
  win = vision.window_size // vision.spatial_merge_size // vision.patch_size
  return win * win * vision.spatial_merge_size**2


def local_segment_attention(q: Array, k: Array, v: Array, segments: Array, span: int) -> Array:
  """Attention within contiguous segments of at most `span` patches (the attention windows).

  Queries go in blocks of `span`; each block sees the keys from `span` before it to `span` after
  it, which holds every key of its queries' segments. Work and memory are O(num_patches * span)
  instead of O(num_patches**2).

  Args:
    q, k, v: [num_patches, heads, head_dim]; segments: int [num_patches], contiguous ids.
  Returns:
    [num_patches, heads, head_dim].
  """
  n, heads, head_dim = q.shape
  blocks = -(-n // span)
  tail = blocks * span - n
  pad = lambda x, before, after, value=0: jnp.pad(x, [(before, after)] + [(0, 0)] * (x.ndim - 1),
                                                   constant_values=value)
  keys = np.arange(blocks)[:, None] * span + np.arange(3 * span)[None]  # [blocks, 3 * span] into the padded keys
  block_k, block_v = (pad(x, span, span + tail)[keys] for x in (k, v))
  key_segments = pad(segments, span, span + tail, -2)[keys]
  query_segments = pad(segments, 0, tail, -1).reshape(blocks, span)
  mask = query_segments[:, :, None] == key_segments[:, None, :]
  out = dot_product_attention(pad(q, 0, tail).reshape(blocks, span, heads, head_dim), block_k, block_v, mask)
  return out.reshape(blocks * span, heads, head_dim)[:n]


def chunked_segment_attention(q: Array, k: Array, v: Array, segments: Array, chunk: int) -> Array:
  """Attention within segments of any length, `chunk` queries at a time (recomputed for gradients).

  Args:
    q, k, v: [num_patches, heads, head_dim]; segments: int [num_patches].
  Returns:
    [num_patches, heads, head_dim].
  """
  n, heads, head_dim = q.shape
  if n <= chunk:
    return dot_product_attention(q[None], k[None], v[None], (segments[:, None] == segments[None, :])[None])[0]
  chunks = -(-n // chunk)
  tail = chunks * chunk - n
  query_blocks = jnp.pad(q, ((0, tail), (0, 0), (0, 0))).reshape(chunks, chunk, heads, head_dim)
  segment_blocks = jnp.pad(segments, (0, tail), constant_values=-1).reshape(chunks, chunk)

  @jax.checkpoint
  def attend(block):
    queries, query_segments = block
    mask = (query_segments[:, None] == segments[None, :])[None]
    return dot_product_attention(queries[None], k[None], v[None], mask)[0]

  return jax.lax.map(attend, (query_blocks, segment_blocks)).reshape(chunks * chunk, heads, head_dim)[:n]


class VisionAttention(nn.Module):
  """Multi-head self-attention with a fused qkv projection and 2D RoPE."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, segments: Array, full: Array | bool) -> Array:
    """x: [num_patches, vision_embed] -> [num_patches, vision_embed].

    Patches attend within their segment (`segments` int [num_patches]): within their window
    when `full` is False, within their frame when True (may be traced, under a scanned tower).
    """
    v, cfg = self.config.vision, self.config
    qkv = _dense((3, v.num_heads, v.head_dim), ("vision_embed", None, "vision_heads", "head_dim"), cfg, "qkv")(x)
    qkv = constrain(qkv, ("act_patches", None, "act_heads", None))
    q, k, val = (qkv[:, i] for i in range(3))  # [num_patches, heads, head_dim]
    q, k = apply_rotary(q[None], cos, sin)[0], apply_rotary(k[None], cos, sin)[0]
    window = lambda: local_segment_attention(q, k, val, segments, window_span(v))
    frame = lambda: chunked_segment_attention(q, k, val, segments, FULL_ATTENTION_QUERY_CHUNK)
    if isinstance(full, bool):
      out = frame() if full else window()
    else:
      out = jax.lax.cond(full, frame, window)
    return _dense(v.hidden_size, ("vision_heads", "head_dim", "vision_embed"), cfg, "proj", in_dims=2)(out)


class VisionBlock(nn.Module):
  """Pre-norm attention + SwiGLU (with biases); attends within row `mask_row` of `segments`."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, segments: Array, mask_row: Array | int):
    """Returns (x, None) so that it can be scanned; mask_row selects window (0) or full (1) attention."""
    v, cfg = self.config.vision, self.config
    full = mask_row == _FULL  # a bool when the blocks are unrolled, traced when scanned
    norm = lambda name: RMSNorm(v.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    x = x + VisionAttention(cfg, name="attn")(norm("norm1")(x), cos, sin, segments[mask_row], full)
    x = x + SwiGLU(v.hidden_size, v.intermediate_size, use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                   embed_axis="vision_embed", mlp_axis="vision_mlp", name="mlp")(norm("norm2")(x))
    return constrain(x, ("act_patches", "act_embed")), None


class PatchMerger(nn.Module):
  """RMSNorm, then each spatial_merge_size**2 consecutive patches -> one LLM-width token (2-layer GELU MLP)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[num_patches, vision_embed] -> [num_patches / merge**2, out_hidden_size]."""
    v, cfg = self.config.vision, self.config
    width = v.hidden_size * v.spatial_merge_size**2
    x = RMSNorm(v.rms_norm_eps, cfg.dtype, cfg.param_dtype, name="ln_q")(x).reshape(-1, width)
    x = _dense(width, ("vision_embed", "vision_mlp"), cfg, "mlp_0")(x)
    x = nn.gelu(x, approximate=False)
    return _dense(v.out_hidden_size, ("vision_mlp", "embed"), cfg, "mlp_2")(x)


class VisionTransformer(nn.Module):
  """The tower: patch embedding, window/full-attention blocks, 2x2 merger.

  `config.scan_layers` scans the blocks (the per-block window/full choice becomes a scanned
  index) and `config.remat` rematerialises each block, as in the language model.
  """

  config: ModelConfig

  def setup(self):
    v, cfg = self.config.vision, self.config
    if v.hidden_size % v.num_heads or v.head_dim % 4:
      raise ValueError(f"vision hidden_size={v.hidden_size} / num_heads={v.num_heads} must give a head_dim "
                       "divisible by 4 (2D RoPE)")
    self.patch_embed = _dense(v.hidden_size, ("vision_patch", "vision_embed"), cfg, "patch_embed", use_bias=False)
    block = VisionBlock
    if cfg.remat != "none":
      block = nn.remat(block, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0), length=v.depth,
                            metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    else:
      self.blocks = [block(cfg, name=f"blocks_{i}") for i in range(v.depth)]
    self.merger = PatchMerger(cfg)

  def __call__(self, pixel_values: Array, grid: VisionGrid) -> Array:
    """pixel_values [num_patches, patch_dim] -> features [num_patches / merge**2, out_hidden_size].

    Features come out in the processor's order: those of item i are the i-th run of
    t*h*w / merge**2 rows, matching the item's placeholder tokens. Equal to
    `merge(encode_patches(pixel_values, grid))`.
    """
    return self.merge(self.encode_patches(pixel_values, grid))

  def merge(self, patch_groups: Array) -> Array:
    """The merger alone: [num_merged, merge**2, vision_embed] -> [num_merged, out_hidden_size].

    It acts on each merged token's patches on their own, so any selection of rows of
    `encode_patches`' output (a learner pass's items) merges to the same features.
    """
    return self.merger(patch_groups.reshape(-1, patch_groups.shape[-1]))

  def encode_patches(self, pixel_values: Array, grid: VisionGrid) -> Array:
    """Everything before the merger: pixel_values [num_patches, patch_dim] -> the last block's
    hidden states grouped by merged token, [num_patches / merge**2, merge**2, vision_embed], in
    the processor's order (item i's merged tokens are its i-th run of rows, as `__call__`'s).

    This is the boundary the GRPO step caches when the patch embedding and the blocks are frozen
    (`train.learner_batch.VisionCache`): the merger, trainable or not, then runs in the learner.
    """
    v, cfg = self.config.vision, self.config
    if pixel_values.ndim != 2 or pixel_values.shape[1] != v.patch_dim:
      raise ValueError(f"pixel values must be [num_patches, {v.patch_dim}] (in_channels * temporal_patch_size * "
                       f"patch_size**2 = {v.in_channels}*{v.temporal_patch_size}*{v.patch_size}**2), "
                       f"got {list(pixel_values.shape)}")
    if pixel_values.shape[0] != grid.num_patches:
      raise ValueError(f"pixel values have {pixel_values.shape[0]} patches but grid_thw describes "
                       f"{grid.num_patches} (sum of t*h*w)")
    unit = v.spatial_merge_size**2
    x = self.patch_embed(pixel_values.astype(cfg.dtype))
    x = x.reshape(-1, unit, v.hidden_size)[grid.window_index].reshape(-1, v.hidden_size)
    x = constrain(x, ("act_patches", "act_embed"))
    cos, sin = vision_rope_cos_sin(jnp.asarray(grid.positions), v.head_dim, v.rope_theta)
    segments = jnp.asarray(grid.segments)
    mask_rows = np.array([_FULL if i in v.fullatt_block_indexes else _WINDOW for i in range(v.depth)], np.int32)
    if cfg.scan_layers:
      x, _ = self.blocks(x, cos, sin, segments, jnp.asarray(mask_rows))
    else:
      for block, row in zip(self.blocks, mask_rows):
        x, _ = block(x, cos, sin, segments, int(row))
    # Window order -> the processor's order, a merged token's patches staying together.
    return x.reshape(-1, unit, v.hidden_size)[grid.reverse_index]


def _patch_embed_transforms(v: VisionConfig):
  """torch Conv3d weight [embed, C, t, p, p] <-> our matmul kernel [C*t*p*p, embed] (same row layout)."""
  shape = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
  return (lambda w: w.reshape(w.shape[0], -1).T, lambda k: k.T.reshape(shape))


def vision_rules(config: ModelConfig, ours_prefix: tuple[str, ...], hf_prefix: str) -> list[TensorRule]:
  """Conversion rules for the tower's tensors (`hf_prefix` is "visual." or "model.visual.")."""
  v = config.vision
  h, d = v.num_heads, v.head_dim
  per_block = [
      (("norm1", "scale"), "norm1.weight", IDENTITY),
      (("norm2", "scale"), "norm2.weight", IDENTITY),
      (("attn", "qkv", "kernel"), "attn.qkv.weight", linear(3, h, d)),
      (("attn", "qkv", "bias"), "attn.qkv.bias", reshape(3, h, d)),
      (("attn", "proj", "kernel"), "attn.proj.weight", linear_in(h, d)),
      (("attn", "proj", "bias"), "attn.proj.bias", IDENTITY),
  ]
  for name, width in (("gate_proj", v.intermediate_size), ("up_proj", v.intermediate_size),
                      ("down_proj", v.hidden_size)):
    per_block += [(("mlp", name, "kernel"), f"mlp.{name}.weight", linear(width)),
                  (("mlp", name, "bias"), f"mlp.{name}.bias", IDENTITY)]
  merged = v.hidden_size * v.spatial_merge_size**2
  rule = lambda ours, hf, transforms: TensorRule(ours_prefix + ours, (hf_prefix + hf,), *transforms)
  return ([rule(("patch_embed", "kernel"), "patch_embed.proj.weight", _patch_embed_transforms(v))]
          + layer_rules(ours_prefix, hf_prefix, v.depth, config.scan_layers, per_block,
                        ours_layer_name="blocks", hf_layer_name="blocks")
          + [rule(("merger", "ln_q", "scale"), "merger.ln_q.weight", IDENTITY),
             rule(("merger", "mlp_0", "kernel"), "merger.mlp.0.weight", linear(merged)),
             rule(("merger", "mlp_0", "bias"), "merger.mlp.0.bias", IDENTITY),
             rule(("merger", "mlp_2", "kernel"), "merger.mlp.2.weight", linear(v.out_hidden_size)),
             rule(("merger", "mlp_2", "bias"), "merger.mlp.2.bias", IDENTITY)])
