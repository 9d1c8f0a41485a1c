"""Qwen2.5-VL (transformers' Qwen2_5_VLForConditionalGeneration) in Flax linen.

The vision tower's features replace the `<|image_pad|>` / `<|video_pad|>` token embeddings (in
order), then the Qwen2 decoder runs with 3D M-RoPE positions (temporal, height, width). The
positions depend on the grids, so they are computed on the host by `get_rope_index` (NumPy,
equal to transformers') and passed in; so are the vision layouts (`vision.vision_grid`).

Decoding with a KV cache: prefill the prompt with `positions` from `get_rope_index`, then the
token at cache slot s of row b gets position s + decode_rope_deltas(positions, mask)[b] on all
three axes (transformers' `generate` convention, left padding included).
"""
from __future__ import annotations

import functools
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.config import ModelConfig
from r1jax.models.llm import CausalLM
from r1jax.models.vision import VisionGrid, VisionTransformer, as_vision_grid, vision_grid
from r1jax.models.vision import vision_rules  # noqa: F401  (hf.conversion_rules imports it from here)

Array = jax.Array
_TEXT, _IMAGE, _VIDEO = 0, 1, 2


def feature_index(token_mask) -> np.ndarray:
  """Host NumPy: int32 [batch, length], the row of the features each pad token takes (row-major
  order over the batch), -1 on every other token. `scatter_features` then places features token
  by token, so a length split over devices (sequence parallelism) needs no global cumsum."""
  mask = np.asarray(token_mask).astype(bool)
  return np.where(mask, np.cumsum(mask.reshape(-1)).reshape(mask.shape) - 1, -1).astype(np.int32)


def scatter_features(embeds: Array, token_mask: Array, features: Array, index: Array | None = None) -> Array:
  """Replaces the embeddings where `token_mask` is True by `features`, in row-major order.

  Args:
    embeds: [batch, length, embed]; token_mask: bool [batch, length]; features: [n, embed] with
      n = token_mask.sum(). Under jit a wrong n is not an error (the index is clipped): check
      on the host first, with `check_row_feature_counts`.
    index: optional int [batch, length] from `feature_index(token_mask)` (host); without it the
      index is a cumsum over the flattened batch on device.
  """
  batch, length, width = embeds.shape
  if index is None:
    index = (jnp.cumsum(token_mask.reshape(-1)) - 1).reshape(batch, length)
  index = jnp.clip(index, 0, features.shape[0] - 1)
  return jnp.where(token_mask[..., None], features[index].astype(embeds.dtype), embeds)


def check_feature_counts(config: ModelConfig, input_ids, num_image_features: int, num_video_features: int) -> None:
  """Host-side check that every image/video pad token gets exactly one feature row.

  Raises:
    ValueError naming the token, its id and both counts.
  """
  ids = np.asarray(input_ids)
  for kind, token_id, count in (("image", config.image_token_id, num_image_features),
                                ("video", config.video_token_id, num_video_features)):
    tokens = int((ids == token_id).sum()) if token_id is not None else 0
    if tokens != count:
      raise ValueError(f"{kind} features and {kind} tokens do not match: input_ids hold {tokens} "
                       f"<|{kind}_pad|> tokens ({kind}_token_id={token_id}) but the {kind} inputs give "
                       f"{count} features")


def check_row_feature_counts(config: ModelConfig, input_ids, image_grid_thw=None, video_grid_thw=None,
                             image_counts=None, video_counts=None) -> None:
  """Host-side check, before every jitted call that takes pixels, that each row's image/video pad
  tokens get exactly the merged features of that row's items.

  Under jit `scatter_features` clips its index, so a mismatch would silently give pad tokens
  another row's features (or repeats of the last one); this is the check it relies on.

  Args:
    input_ids: int [batch, length], padding included.
    image_grid_thw / video_grid_thw: int [num_items, 3] patch grids, items packed in row order;
      None when absent.
    image_counts / video_counts: int [batch] items of each row. None: each row takes the next
      whole items until its pad tokens are covered (transformers' convention), the last row the
      rest, so the first row they cannot cover exactly is the one named.

  Raises:
    ValueError naming the row, the kind and both counts: pad tokens in input_ids and merged
    features from grid_thw.
  """
  ids = np.asarray(input_ids)
  features, wrong = {}, np.zeros(len(ids), bool)
  for kind, token_id, grid, counts in (("image", config.image_token_id, image_grid_thw, image_counts),
                                       ("video", config.video_token_id, video_grid_thw, video_counts)):
    tokens = np.zeros(len(ids), np.int64) if token_id is None else (ids == token_id).sum(axis=1)
    features[kind] = _features_per_row(config, kind, grid, counts, tokens)
    wrong |= tokens != features[kind]
  if wrong.any():
    row = int(np.argmax(wrong))
    try:
      check_feature_counts(config, ids[row], int(features["image"][row]), int(features["video"][row]))
    except ValueError as error:
      raise ValueError(f"row {row}: {error}") from None


def _features_per_row(config: ModelConfig, kind: str, grid_thw, counts, tokens: np.ndarray) -> np.ndarray:
  """int64 [batch]: merged features of each row's items (see `check_row_feature_counts`)."""
  if grid_thw is None or not len(grid_thw) or not len(tokens):
    return np.zeros(len(tokens), np.int64)
  per_item = np.asarray(grid_thw, np.int64).reshape(-1, 3).prod(axis=1) // config.vision.spatial_merge_size**2
  ends = np.concatenate([[0], np.cumsum(per_item)])
  if counts is None:
    row_ends = ends[np.searchsorted(ends, np.cumsum(tokens), side="right") - 1]
    row_ends[-1] = ends[-1]
  else:
    counts = np.asarray(counts, np.int64)
    if counts.shape != tokens.shape or counts.sum() != len(per_item):
      raise ValueError(f"{kind}_counts {counts.tolist()} must give one count per row ({len(tokens)} rows) "
                       f"summing to the {len(per_item)} items of {kind}_grid_thw")
    row_ends = ends[np.cumsum(counts)]
  return np.diff(row_ends, prepend=0)


def _token_types(config: ModelConfig, input_ids: np.ndarray) -> np.ndarray:
  types = np.full(input_ids.shape, _TEXT, np.int8)
  if config.image_token_id is not None:
    types[input_ids == config.image_token_id] = _IMAGE
  if config.video_token_id is not None:
    types[input_ids == config.video_token_id] = _VIDEO
  return types


def get_rope_index(config: ModelConfig, input_ids, image_grid_thw=None, video_grid_thw=None,
                   second_per_grid_ts=None, attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
  """3D M-RoPE position ids, equal to transformers' `Qwen2_5_VLModel.get_rope_index`.

  Text tokens advance all three axes by one. An image/video of llm grid (t, h', w') (h' = h /
  merge) starting at position p gets (p + t_i * interval, p + row, p + col), with interval 1 for
  images and `tokens_per_second * second_per_grid_ts` for videos (truncated to an integer as in
  transformers, in float32), and the text after it continues at p + max(h', w').

  Args:
    input_ids: int [batch, length]; the grids are consumed in order across the batch.
    image_grid_thw / video_grid_thw: int [num_items, 3] patch grids (t, h, w).
    second_per_grid_ts: [num_videos] seconds per temporal patch (defaults to 1).
    attention_mask: [batch, length]; masked slots get position 0 and are skipped.

  Returns:
    (position_ids int32 [3, batch, length], rope_deltas int32 [batch, 1] = max position + 1 -
    number of real tokens, as transformers returns them; for decoding slots use
    `decode_rope_deltas`).

  Raises:
    ValueError when a run of image/video tokens does not match the grids' token counts.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {list(ids.shape)}")
  mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
  v = config.vision
  merge = v.spatial_merge_size
  grids = {_IMAGE: iter(np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw)),
           _VIDEO: iter(np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw))}
  seconds = iter(np.ones(0) if second_per_grid_ts is None else np.asarray(second_per_grid_ts, np.float64).reshape(-1))
  positions = np.zeros((3,) + ids.shape, np.int64)
  deltas = np.zeros((ids.shape[0], 1), np.int64)
  for row in range(ids.shape[0]):
    types = _token_types(config, ids[row][mask[row]])
    pieces, current = [], 0
    for kind, run in itertools.groupby(types.tolist()):
      run_length = len(list(run))
      if kind == _TEXT:
        pieces.append(np.broadcast_to(np.arange(run_length) + current, (3, run_length)))
        current += run_length
        continue
      while run_length > 0:  # Adjacent items without separators form one run.
        name = "image" if kind == _IMAGE else "video"
        grid = next(grids[kind], None)
        if grid is None:
          raise ValueError(f"input_ids row {row} has more <|{name}_pad|> tokens than {name}_grid_thw describes")
        t, h, w = (int(x) for x in grid)
        h, w = h // merge, w // merge
        if t * h * w > run_length:
          raise ValueError(f"input_ids row {row} has a run of {run_length} <|{name}_pad|> tokens where the next "
                           f"{name} (grid {[int(x) for x in grid]}) needs {t * h * w}")
        if kind == _VIDEO:
          second = next(seconds, None)
          interval = np.float32(v.tokens_per_second * (1.0 if second is None else second))
        else:
          interval = np.float32(1)
        temporal = (np.arange(t, dtype=np.float32) * interval).astype(np.int64)
        tt, hh, ww = np.meshgrid(temporal, np.arange(h), np.arange(w), indexing="ij")
        pieces.append(np.stack([tt, hh, ww]).reshape(3, -1) + current)
        current += max(h, w)
        run_length -= t * h * w
    llm_positions = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
    positions[:, row, mask[row]] = llm_positions
    deltas[row, 0] = (llm_positions.max() + 1 if llm_positions.size else 0) - llm_positions.shape[1]
  return positions.astype(np.int32), deltas.astype(np.int32)


def decode_rope_deltas(position_ids, attention_mask=None) -> np.ndarray:
  """int32 [batch, 1]: the token at cache slot s >= length gets M-RoPE position s + delta[b].

  Generated tokens continue one past the last prompt token's position on all three axes
  (prompts end in text, where the axes agree). That is transformers' `generate` convention and
  what `get_rope_index` gives the same tokens when run on prompt + completion, so sampler and
  learner agree. It is not get_rope_index's `rope_deltas` (max position + 1 - real tokens): those
  ignore the padded slots of left-padded rows, and a video whose temporal ids run past the text
  after it makes the max exceed the last position.

  Args:
    position_ids: [3, batch, length] from `get_rope_index` of a left-padded prompt batch.
    attention_mask: [batch, length]; the last real token of each row is its last True slot.
  """
  positions = np.asarray(position_ids)
  length = positions.shape[-1]
  if attention_mask is None:
    last = np.full(positions.shape[1], length - 1)
  else:
    mask = np.asarray(attention_mask).astype(bool)
    last = length - 1 - np.argmax(mask[:, ::-1], axis=1)
  last_positions = positions[:, np.arange(positions.shape[1]), last].max(axis=0)
  return (last_positions + 1 - length).astype(np.int32)[:, None]


class VisionLanguageModel(nn.Module):
  """Qwen2.5-VL: `visual` (VisionTransformer) + `language_model` (CausalLM with M-RoPE)."""

  config: ModelConfig

  def setup(self):
    self.visual = VisionTransformer(self.config)
    self.language_model = CausalLM(self.config)

  def encode_vision(self, pixel_values: Array, grid_thw) -> Array:
    """Features [num_merged_tokens, text hidden] of packed pixel values [num_patches, patch_dim].

    `grid_thw` is a concrete int [num_items, 3] or, under jit, a `vision.vision_grid(...)`.
    """
    return self.visual(pixel_values, as_vision_grid(self.config.vision, grid_thw))

  def encode_vision_patches(self, pixel_values: Array, grid_thw) -> Array:
    """The tower before its merger (`VisionTransformer.encode_patches`): [num_merged_tokens,
    merge**2, vision hidden] of packed pixel values; `grid_thw` as `encode_vision`'s."""
    return self.visual.encode_patches(pixel_values, as_vision_grid(self.config.vision, grid_thw))

  def merge_vision(self, patch_groups: Array) -> Array:
    """The tower's merger (`VisionTransformer.merge`): [n, merge**2, vision hidden] -> features [n, text hidden]."""
    return self.visual.merge(patch_groups)

  def dummy_inputs(self) -> dict[str, Any]:
    """One image of a single merged token: touches every parameter of both towers."""
    cfg = self.config
    if cfg.image_token_id is None:
      raise ValueError("a Qwen2.5-VL config needs image_token_id (config.json field image_token_id)")
    m = cfg.vision.spatial_merge_size
    return {"input_ids": jnp.full((1, 1), cfg.image_token_id, jnp.int32),
            "positions": jnp.zeros((3, 1, 1), jnp.int32),
            "pixel_values": jnp.zeros((m * m, cfg.vision.patch_dim), jnp.float32),
            "image_grid_thw": vision_grid(cfg.vision, [[1, m, m]])}

  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None, positions: Array | None = None,
               pixel_values: Array | None = None, image_grid_thw=None, pixel_values_videos: Array | None = None,
               video_grid_thw=None, image_embeds: Array | None = None, video_embeds: Array | None = None,
               cache=None, cache_index: Array | int = 0, return_hidden: bool = False,
               image_feature_index: Array | None = None, video_feature_index: Array | None = None):
    """Embeds tokens, scatters vision features at the pad tokens, runs the decoder.

    Args:
      input_ids: [batch, length].
      attention_mask: [batch, length] (or [batch, cache_len] with a cache), True for real tokens.
      positions: [3, batch, length] M-RoPE ids (`get_rope_index`; for decode steps slot +
        `decode_rope_deltas`). Required with vision inputs; text-only calls default to
        cache_index + arange(length) on all axes, as transformers.
      pixel_values / pixel_values_videos: [num_patches, patch_dim] packed patches.
      image_grid_thw / video_grid_thw: concrete int [num_items, 3], or `VisionGrid`s under jit.
      image_embeds / video_embeds: precomputed `encode_vision` outputs instead of pixels.
      image_feature_index / video_feature_index: optional int [batch, length] `feature_index`
        of the pad tokens, computed on the host (concrete input_ids get it here); else a cumsum on device.
      cache, cache_index, return_hidden: as `CausalLM.__call__`.

    Returns:
      (fp32 logits [batch, length, vocab] or final hidden states, updated cache or None).
    """
    cfg = self.config
    if positions is None and any(x is not None and x.shape[0] for x in (pixel_values, pixel_values_videos,
                                                                         image_embeds, video_embeds)):
      raise ValueError("vision inputs need M-RoPE positions [3, batch, length]: pass "
                       "positions=get_rope_index(config, input_ids, image_grid_thw, video_grid_thw, "
                       "second_per_grid_ts, attention_mask)[0]")
    x = self.language_model.embed(input_ids)
    counts = {}
    concrete = not isinstance(input_ids, jax.core.Tracer)
    for kind, token_id, pixels, grid, embeds, index in (
        ("image", cfg.image_token_id, pixel_values, image_grid_thw, image_embeds, image_feature_index),
        ("video", cfg.video_token_id, pixel_values_videos, video_grid_thw, video_embeds, video_feature_index)):
      if pixels is not None and pixels.shape[0] == 0:  # the processor's "no images" (zero rows)
        pixels = None
      if pixels is not None:
        if embeds is not None:
          raise ValueError(f"give either {kind} pixel values or {kind}_embeds, not both")
        embeds = self.visual(pixels, as_vision_grid(cfg.vision, grid, f"{kind}_grid_thw"))
      counts[kind] = 0 if embeds is None else embeds.shape[0]
      if counts[kind]:
        if index is None and concrete:
          index = jnp.asarray(feature_index(np.asarray(input_ids) == token_id))
        x = scatter_features(x, input_ids == token_id, embeds, index)
    if concrete:
      check_feature_counts(cfg, input_ids, counts["image"], counts["video"])
    return self.language_model(inputs_embeds=x, positions=positions, attention_mask=attention_mask, cache=cache,
                               cache_index=cache_index, return_hidden=return_hidden)

  def forward_logits(self, params, input_ids, attention_mask=None, position_ids=None, *, pixel_values=None,
                     image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                     second_per_grid_ts=None, mm_token_type_ids=None) -> Array:
    """fp32 logits [batch, length, vocab] with transformers' arguments and semantics.

    Validates on the host (pixel width, grids, each row's token/feature counts), computes the M-RoPE
    positions with `get_rope_index` when vision grids are given (transformers' default; text
    only: 0..length-1 per row), then runs one jitted apply (compiled once per shape).
    `mm_token_type_ids` (transformers' processor output) is optional: the modality of each
    token follows from the pad token ids, and a given one must agree with them.
    """
    cfg = self.config
    ids = np.asarray(input_ids)
    if mm_token_type_ids is not None and not np.array_equal(np.asarray(mm_token_type_ids), _token_types(cfg, ids)):
      raise ValueError("mm_token_type_ids disagree with the <|image_pad|>/<|video_pad|> tokens of input_ids "
                       f"(image_token_id={cfg.image_token_id}, video_token_id={cfg.video_token_id})")
    mask = None if attention_mask is None else np.asarray(attention_mask).astype(bool)
    pixels = {"image": pixel_values, "video": pixel_values_videos}
    grids = {"image": image_grid_thw, "video": video_grid_thw}
    layouts = {"image": None, "video": None}
    for kind in ("image", "video"):
      name = "pixel_values" if kind == "image" else "pixel_values_videos"
      if pixels[kind] is None or np.shape(pixels[kind])[0] == 0:  # zero rows: the processor's "no images"
        if grids[kind] is not None and len(np.asarray(grids[kind])):
          raise ValueError(f"{kind}_grid_thw was given without {name}")
        pixels[kind] = None
        continue
      shape = list(np.shape(pixels[kind]))
      if len(shape) != 2 or shape[1] != cfg.vision.patch_dim:
        raise ValueError(f"{name} must be [num_patches, {cfg.vision.patch_dim}] (in_channels * temporal_patch_size"
                         f" * patch_size**2), got {shape}")
      if grids[kind] is None:
        raise ValueError(f"{name} was given without {kind}_grid_thw ([num_{kind}s, 3] patch grids)")
      layouts[kind] = vision_grid(cfg.vision, np.asarray(grids[kind]))
      if layouts[kind].num_patches != shape[0]:
        raise ValueError(f"{name} has {shape[0]} patches but {kind}_grid_thw describes "
                         f"{layouts[kind].num_patches} (sum of t*h*w)")
    check_row_feature_counts(cfg, ids, *(grids[kind] if layouts[kind] is not None else None
                                         for kind in ("image", "video")))
    if position_ids is None and (layouts["image"] is not None or layouts["video"] is not None):
      position_ids = get_rope_index(cfg, ids, image_grid_thw, video_grid_thw, second_per_grid_ts, mask)[0]
    as_array = lambda x: None if x is None else jnp.asarray(x)
    return _jitted_forward(self)(params, jnp.asarray(ids, jnp.int32), as_array(mask), as_array(position_ids),
                                 as_array(pixels["image"]), layouts["image"], as_array(pixels["video"]),
                                 layouts["video"])


@functools.lru_cache(maxsize=16)
def _jitted_forward(model: VisionLanguageModel):
  def forward(params, input_ids, mask, positions, pixel_values, image_grid: VisionGrid | None,
              pixel_values_videos, video_grid: VisionGrid | None):
    return model.apply(params, input_ids, attention_mask=mask, positions=positions, pixel_values=pixel_values,
                       image_grid_thw=image_grid, pixel_values_videos=pixel_values_videos,
                       video_grid_thw=video_grid)[0]

  return jax.jit(forward)
