"""Qwen2.5-VL vision tower vs transformers' Qwen2_5_VisionTransformerPretrainedModel (PyTorch CPU)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from transformers import vision_utils

from r1jax import models
from r1jax.models import vision
from tests.models.hf_fixtures import tiny_qwen2_5_vl

# An image with partial edge windows, one whose merged grid is a whole number of windows, and a
# 3-frame video: window attention, full attention and per-frame segments all differ here.
GRID = np.array([[1, 6, 10], [1, 8, 4], [3, 4, 6]])


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tiny_vl"))
  ref = tiny_qwen2_5_vl(path, vision_depth=3, fullatt_block_indexes=(1,))
  model, params = models.load_pretrained(path)
  # One compiled tower for every test here; it also returns each block's output (window order).
  encode = jax.jit(lambda p, pixels, grid: model.apply(
      p, pixels, grid, method=model.encode_vision,
      capture_intermediates=lambda mdl, _: isinstance(mdl, vision.VisionBlock)))
  return ref, model, params, encode


def _pixels(model, grid, seed=0):
  rows = int(np.prod(grid, axis=1).sum())
  return np.random.default_rng(seed).standard_normal((rows, model.config.vision.patch_dim)).astype(np.float32)


@pytest.mark.parametrize("window_size, grid", [(56, GRID), (56, [[2, 16, 8]]), (56, [[1, 2, 2], [1, 2, 6], [2, 6, 2]]),
                                                (112, [[1, 20, 36], [4, 12, 8]])])  # 112: the released models
def test_vision_grid_matches_transformers_window_layout(window_size, grid):
  v = models.VisionConfig(patch_size=14, window_size=window_size)
  ours = vision.vision_grid(v, grid)
  grid_t = torch.tensor(grid)
  window_index, cu_windows = vision_utils.get_vision_window_index(grid_t, v.spatial_merge_size, v.window_size,
                                                                  v.patch_size)
  np.testing.assert_array_equal(ours.window_index, window_index.numpy())
  np.testing.assert_array_equal(ours.window_index[ours.reverse_index], np.arange(len(ours.window_index)))

  def boundaries(segment_ids):
    return np.concatenate([[0], np.flatnonzero(np.diff(segment_ids)) + 1, [len(segment_ids)]])

  np.testing.assert_array_equal(boundaries(ours.segments[0]), cu_windows.numpy())
  cu_frames = vision_utils.get_vision_cu_seqlens(grid_t)
  np.testing.assert_array_equal(boundaries(ours.segments[1]), cu_frames.numpy())
  # transformers permutes its (h, w) rotary positions with the same window index.
  positions = vision_utils.get_vision_position_ids(grid_t, v.spatial_merge_size).numpy()
  unit = v.spatial_merge_size**2
  expected = positions.reshape(-1, unit, 2)[window_index.numpy()].reshape(-1, 2)
  np.testing.assert_array_equal(ours.positions, expected)


def test_tower_matches_transformers_block_by_block(tower):
  ref, model, params, encode = tower
  pixels = _pixels(model, GRID)
  with torch.no_grad():
    out = ref.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(GRID), output_hidden_states=True)
  features, state = encode(params, pixels, vision.vision_grid(model.config.vision, GRID))
  blocks = state["intermediates"]["visual"]
  depth = model.config.vision.depth
  # hidden_states[0] is the window-ordered patch embedding, then one entry per block.
  assert len(out.hidden_states) == depth + 1
  for i in range(depth):  # blocks 0 and 2 use window attention, block 1 full attention
    ours = np.asarray(blocks[f"blocks_{i}"]["__call__"][0][0])
    theirs = out.hidden_states[i + 1].numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-5 * np.abs(theirs).max(), rtol=0, err_msg=f"block {i}")
  np.testing.assert_allclose(np.asarray(features), out.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_attention_stays_inside_each_image_and_frame(tower):
  _, model, params, encode = tower
  layout = vision.vision_grid(model.config.vision, GRID)
  pixels = _pixels(model, GRID)
  base = np.asarray(encode(params, pixels, layout)[0])
  # Changing the second frame of the video must leave the images and the video's first frame alone.
  image_patches = int(np.prod(GRID[:2], axis=1).sum())
  frame = 4 * 6
  changed = pixels.copy()
  changed[image_patches + frame:image_patches + 2 * frame] += 1.0
  after = np.asarray(encode(params, changed, layout)[0])
  merged = lambda patches: patches // model.config.vision.spatial_merge_size**2
  untouched = merged(image_patches + frame)
  np.testing.assert_array_equal(after[:untouched], base[:untouched])
  second_frame = slice(untouched, untouched + merged(frame))
  assert np.abs(after[second_frame] - base[second_frame]).min() > 0
  np.testing.assert_array_equal(after[second_frame.stop:], base[second_frame.stop:])


def test_scanned_tower_equals_unrolled(tower, tmp_path):
  _, model, params, encode = tower
  layout = vision.vision_grid(model.config.vision, GRID)
  pixels = _pixels(model, GRID)
  models.save_pretrained(model, params, str(tmp_path))
  scanned, scanned_params = models.load_pretrained(str(tmp_path), scan_layers=True)
  assert scanned_params["params"]["visual"]["blocks"]["attn"]["qkv"]["kernel"].shape[0] == model.config.vision.depth
  ours = jax.jit(lambda p, x, g: scanned.apply(p, x, g, method=scanned.encode_vision))(scanned_params, pixels, layout)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(encode(params, pixels, layout)[0]), atol=1e-5, rtol=0)


def test_tower_rejects_bad_inputs(tower):
  _, model, params, _ = tower
  v = model.config.vision
  pixels = _pixels(model, GRID)
  with pytest.raises(ValueError, match=f"pixel values must be \\[num_patches, {v.patch_dim}\\]"):
    model.apply(params, pixels[:, :-1], GRID, method=model.encode_vision)
  with pytest.raises(ValueError, match="describes 164"):
    model.apply(params, pixels[:-4], GRID, method=model.encode_vision)
  with pytest.raises(ValueError, match="grid_thw is required"):
    model.apply(params, pixels, None, method=model.encode_vision)
  with pytest.raises(ValueError, match="multiples of spatial_merge_size=2"):
    vision.vision_grid(v, [[1, 3, 4]])
  with pytest.raises(ValueError, match="traced array"):
    jax.jit(lambda g: model.apply(params, pixels, g, method=model.encode_vision))(GRID)


def test_vision_parameters_carry_logical_axes(tower):
  _, model, _, _ = tower
  axes = nn.get_partition_spec(models.abstract_params(model))["params"]["visual"]
  assert tuple(axes["patch_embed"]["kernel"]) == ("vision_patch", "vision_embed")
  block = axes["blocks_0"]
  assert tuple(block["attn"]["qkv"]["kernel"]) == ("vision_embed", None, "vision_heads", "head_dim")
  assert tuple(block["attn"]["proj"]["kernel"]) == ("vision_heads", "head_dim", "vision_embed")
  assert tuple(block["mlp"]["gate_proj"]["kernel"]) == ("vision_embed", "vision_mlp")
  assert tuple(block["mlp"]["down_proj"]["bias"]) == ("vision_embed",)
  assert tuple(axes["merger"]["mlp_2"]["kernel"]) == ("vision_mlp", "embed")


def _dense_segment_attention(q, k, v, segments):
  from r1jax.models.layers import dot_product_attention
  return dot_product_attention(q[None], k[None], v[None], (segments[:, None] == segments[None, :])[None])[0]


def test_blocked_segment_attention_equals_dense_masked_attention():
  """Windows of up to 6 patches (and 50 patches, not a whole number of blocks); frames of any size."""
  keys = iter(jax.random.split(jax.random.key(0), 4))
  n, heads, dim = 50, 2, 8
  q, k, v = (jax.random.normal(next(keys), (n, heads, dim)) for _ in range(3))
  windows = np.repeat(np.arange(12), [6, 2, 5, 6, 1, 4, 6, 3, 6, 5, 2, 4])
  frames = np.repeat(np.arange(3), [7, 30, 13])
  # Jitted, as inside the tower (eager, the blocked loops run op by op: ~3x slower on CPU).
  local = jax.jit(lambda q, segments: vision.local_segment_attention(q, k, v, segments, span=6))
  chunked = jax.jit(lambda q, segments: vision.chunked_segment_attention(q, k, v, segments, chunk=16))
  dense = jax.jit(lambda q, segments: _dense_segment_attention(q, k, v, segments))
  np.testing.assert_allclose(local(q, windows), dense(q, windows), atol=1e-6)
  np.testing.assert_allclose(chunked(q, frames), dense(q, frames), atol=1e-6)
  # Gradients too: the tower's blocks are trained.
  grad = lambda fn, segments: jax.jit(jax.grad(lambda q: (fn(q, segments) ** 2).sum()))(q)
  np.testing.assert_allclose(grad(chunked, frames), grad(dense, frames), atol=1e-5)
  np.testing.assert_allclose(grad(local, windows), grad(dense, windows), atol=1e-5)


def test_window_attention_memory_grows_linearly_with_patches():
  """4,096 patches in 64-patch windows (the released models' 112-pixel windows)."""
  n, heads, dim = 4096, 4, 16
  q = k = v = jax.ShapeDtypeStruct((n, heads, dim), np.float32)
  segments = jax.ShapeDtypeStruct((n,), np.int32)
  temp = lambda fn: jax.jit(fn).lower(q, k, v, segments).compile().memory_analysis().temp_size_in_bytes
  local = temp(lambda q, k, v, s: vision.local_segment_attention(q, k, v, s, span=64))
  dense = temp(_dense_segment_attention)
  assert vision.window_span(models.VisionConfig(patch_size=14, window_size=112)) == 64
  assert local * 10 < dense, (local, dense)  # dense scores alone are 4 x 4096**2 floats (256 MiB)


def test_ladder_buckets_grow_geometrically():
  assert [vision.ladder_bucket(n) for n in (0, 1, 3, 4, 5, 7, 9, 13, 17, 25, 33, 100)] == \
      [2, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 128]
  assert [vision.ladder_bucket(n, unit=4) for n in (1, 8, 9, 13, 96, 97)] == [8, 8, 12, 16, 96, 128]
  for n in range(1, 300):  # at most 1.5 times the count (once past the smallest bucket)
    assert n <= vision.ladder_bucket(n) <= max(2, 1.5 * n)
  with pytest.raises(ValueError, match="count >= 0 and unit >= 1"):
    vision.ladder_bucket(-1)


def test_patch_padding_is_one_blank_item_whose_layout_depends_only_on_the_bucket(tower):
  _, model, _, _ = tower
  v = model.config.vision
  pixels, grid = vision.pad_vision_patches(v, _pixels(model, GRID), GRID)  # 164 patches = 41 merged tokens
  assert grid.tolist() == GRID.tolist() + [[1, 2, 14]] and pixels.shape == (192, v.patch_dim)  # bucket 48 tokens
  assert not pixels[164:].any()
  # Other items in the same bucket: every array of the layout has the same shape.
  other = np.array([[1, 4, 4], [2, 8, 10]])  # 176 patches
  shapes = lambda layout: [x.shape for x in layout]
  assert shapes(vision.vision_grid(v, vision.pad_vision_patches(v, _pixels(model, other), other)[1])) == \
      shapes(vision.vision_grid(v, grid))
  same, same_grid = vision.pad_vision_patches(v, _pixels(model, [[1, 8, 24]]), [[1, 8, 24]])  # 192: on the ladder
  assert same.shape[0] == 192 and same_grid.tolist() == [[1, 8, 24]]
  with pytest.raises(ValueError, match="with the 164 patches grid_thw describes"):
    vision.pad_vision_patches(v, _pixels(model, GRID)[:-4], GRID)


@pytest.mark.parametrize("grid", [GRID, [[1, 2, 2]], [[2, 6, 4], [1, 10, 2]]])
def test_padding_leaves_the_real_items_features_unchanged(tower, grid):
  """The padding item attends only within its own windows and frame, and its features come last."""
  _, model, params, encode = tower
  v = model.config.vision
  pixels = _pixels(model, grid)
  padded, padded_grid = vision.pad_vision_patches(v, pixels, grid)
  assert len(padded) > len(pixels)
  real = np.asarray(encode(params, pixels, vision.vision_grid(v, grid))[0])
  with_padding = np.asarray(encode(params, padded, vision.vision_grid(v, padded_grid))[0])
  assert with_padding.shape[0] == len(padded) // v.spatial_merge_size**2
  np.testing.assert_allclose(with_padding[:len(real)], real, rtol=1e-5, atol=1e-6)
