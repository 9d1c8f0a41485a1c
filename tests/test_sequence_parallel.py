"""Sequence parallelism over the mesh's `sequence` axis (r1jax/models/sequence_parallel.py).

On the 8 simulated CPU devices of tests/conftest.py: logits, loss and gradients of the decoder
(text, and Qwen2.5-VL with a video) under sequence = 2, 4, 8 and fsdp x sequence equal the run
without a mesh; greedy decoding through the sampler is identical; the compiled per-device
temporaries of attention fall as the sequence axis grows (XLA's memory analysis).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax import models, sampling, sharding
from r1jax.models import api, vision, vlm
from r1jax.models.layers import dot_product_attention
from r1jax.models.llm import CausalLM
from r1jax.models.sequence_parallel import sequence_parallel_attention, sequence_shards
from r1jax.sampling import Sampler, SamplingControls

TOL = 1e-5
# 8 heads / 4 kv heads, 2 layers; lengths below are multiples of 8 so every sequence size divides them.
TINY = models.ModelConfig(models.TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                                            num_heads=8, num_kv_heads=4, rope_theta=10000.0))
TINY_VL = models.ModelConfig(
    models.TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                      num_kv_heads=2, rope_theta=10000.0, mrope_section=(2, 3, 3)),
    models.VisionConfig(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                        window_size=56, fullatt_block_indexes=(1,)),
    image_token_id=125, video_token_id=126, vision_start_token_id=123, vision_end_token_id=124)
LAYOUTS = {  # fsdp x sequence on the 8 devices
    "sequence2": {"fsdp": 4, "sequence": 2},
    "sequence4": {"fsdp": 2, "sequence": 4},
    "sequence8": {"fsdp": 1, "sequence": 8},
    "fsdp2_tensor2_sequence2": {"fsdp": 2, "tensor": 2, "sequence": 2},
}


def _mesh(layout):
  return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1, "sequence": 1, **layout})


def _text_batch(batch=4, length=64, seed=1):
  """Token ids and a mask with left padding (row 0) and right padding (row 1), as learner rows."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, TINY.text.vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), bool)
  mask[0, :11] = False
  mask[1, 45:] = False
  return ids, mask


def _loss(model, params, ids, mask, **kwargs):
  """Mean next-token NLL over real tokens, and the logits."""
  logits = model.apply(params, ids, attention_mask=mask, **kwargs)[0]
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
  weights = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
  return jnp.sum(nll * weights) / jnp.sum(weights), logits


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def text_model():
  model = CausalLM(TINY.replace(text=dataclasses.replace(TINY.text, num_layers=1)))
  return model, api.init_params(model, jax.random.key(0))


@pytest.fixture(scope="module")
def text_reference(text_model):
  model, params = text_model
  ids, mask = _text_batch()
  step = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, ids, mask), has_aux=True))
  (loss, logits), grads = step(params)
  return loss, logits, grads


# Each strategy at sequence 8 and at one smaller size, and fsdp x tensor x sequence (compiles dominate).
CASES = [("sequence2", "all_gather"), ("sequence4", "ring"), ("sequence8", "all_gather"), ("sequence8", "ring"),
         ("fsdp2_tensor2_sequence2", "all_gather")]


@pytest.mark.parametrize("layout, strategy", CASES)
def test_logits_loss_and_gradients_equal_the_unsharded_run(text_model, text_reference, layout, strategy):
  _, params = text_model
  model = CausalLM(text_model[0].config.replace(sequence_attention=strategy))
  ids, mask = _text_batch()
  mesh = _mesh(LAYOUTS[layout])
  with sharding.use_mesh(mesh):
    placed = sharding.shard_params(params, mesh, model=model)
    step = jax.jit(jax.value_and_grad(lambda p, i, m: _loss(model, p, i, m), has_aux=True))
    lowered = step.lower(placed, ids, mask)
    (loss, logits), grads = step(placed, ids, mask)
  hlo = lowered.as_text()
  # The explicit path really ran: K/V all-gathered over `sequence`, or passed around the ring.
  assert ("all_gather" in hlo) if strategy == "all_gather" else ("collective_permute" in hlo)
  assert abs(float(loss) - float(text_reference[0])) < TOL
  assert _max_diff(logits, text_reference[1]) < TOL
  assert _max_diff(grads, text_reference[2]) < TOL
  # Logits come out split on length over `sequence` (the activation rule act_length -> sequence).
  assert logits.sharding.spec[1] == "sequence", logits.sharding.spec


def test_vl_forward_with_a_video_under_sequence_parallelism():
  """M-RoPE positions [3, B, L] and the video features placed at the pad tokens, fsdp 2 x sequence 4."""
  cfg = TINY_VL
  model = vlm.VisionLanguageModel(cfg)
  params = api.init_params(model, jax.random.key(0))
  grid_thw = np.array([[4, 4, 4]])  # 4 temporal patches of 2 x 2 merged tokens: 16 video tokens
  tokens = vision.num_merged_tokens(cfg.vision, grid_thw)
  rng = np.random.default_rng(0)
  rows = []
  for prefix in (3, 9):
    row = list(rng.integers(0, 120, prefix)) + [cfg.vision_start_token_id] + [cfg.video_token_id] * tokens + [
        cfg.vision_end_token_id] + list(rng.integers(0, 120, 40 - prefix - tokens))
    rows.append(row)
  ids = np.zeros((2, 64), np.int32)
  mask = np.zeros((2, 64), bool)
  for r, row in enumerate(rows):  # left padding, as prompts
    ids[r, 64 - len(row):] = row
    mask[r, 64 - len(row):] = True
  pixels = rng.normal(size=(2 * int(grid_thw.prod()), cfg.vision.patch_dim)).astype(np.float32)
  grid2 = np.concatenate([grid_thw, grid_thw])
  positions = vlm.get_rope_index(cfg, ids, video_grid_thw=grid2, attention_mask=mask)[0]
  layout = vision.vision_grid(cfg.vision, grid2)

  def forward(p, ids, mask, positions, pixels, index=None):
    return model.apply(p, ids, attention_mask=mask, positions=positions, pixel_values_videos=pixels,
                       video_grid_thw=layout, video_feature_index=index)[0]

  reference = jax.jit(forward)(params, ids, mask, positions, pixels)  # placement by a cumsum on device
  index = vlm.feature_index(ids == cfg.video_token_id)  # placement per token, on the host
  mesh = _mesh({"fsdp": 2, "sequence": 4})
  with sharding.use_mesh(mesh):
    placed = sharding.shard_params(params, mesh, model=model)
    lowered = jax.jit(forward).lower(placed, ids, mask, positions, pixels, index)
    logits = lowered.compile()(placed, ids, mask, positions, pixels, index)
  assert _max_diff(logits, reference) < TOL
  assert "cumsum" not in lowered.as_text()  # no global cumsum over B*L on device
  assert "cumsum" in jax.jit(forward).lower(params, ids, mask, positions, pixels).as_text()


def test_feature_index_places_features_row_major_per_token():
  mask = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], bool)
  np.testing.assert_array_equal(vlm.feature_index(mask), [[-1, 0, 1, -1], [2, -1, -1, 3]])


def test_greedy_decoding_is_identical_with_sequence_parallel_prefill_and_a_length_split_cache(text_model):
  model, params = text_model
  rng = np.random.default_rng(3)
  prompts = [rng.integers(1, 200, n) for n in (13, 5, 16, 9)]
  controls = SamplingControls(max_new_tokens=8, greedy=True, stop_token_ids=())
  alone = Sampler(model, buckets=(16,))(params, prompts, key=jax.random.key(0), num_samples=2, controls=controls)
  for layout in ({"fsdp": 2, "sequence": 4},):
    mesh = _mesh(layout)
    placed = sharding.shard_params(params, mesh, model=model)
    sampler = Sampler(model, buckets=(16,), mesh=mesh)
    split = sampler(placed, prompts, key=jax.random.key(0), num_samples=2, controls=controls)
    np.testing.assert_array_equal(np.asarray(split.tokens), np.asarray(alone.tokens))
    np.testing.assert_allclose(np.asarray(split.logprobs), np.asarray(alone.logprobs), atol=TOL, rtol=0)
    # The prompt's KV cache is split on length: [prompts, kv_heads, prefix_len, head_dim].
    cache = sampler.prefill(placed, prompts, num_samples=2, max_new_tokens=8).cache
    assert cache["prefix_k"][0].sharding.spec[2] == "sequence", cache["prefix_k"][0].sharding


def _attention_temp_bytes(shape, strategy, batch=1, length=512, heads=8, kv_heads=2, head_dim=32) -> int:
  """Compiled per-device temporaries of one causal attention over [batch, length] under a mesh."""
  mesh = _mesh(shape)
  q = jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.float32)
  kv = jax.ShapeDtypeStruct((batch, length, kv_heads, head_dim), jnp.float32)
  valid = jax.ShapeDtypeStruct((batch, length), jnp.bool_)
  length_split = NamedSharding(mesh, P(None, "sequence"))

  def attention(q, k, v, valid):
    mask = jnp.tril(jnp.ones((length, length), bool))[None] & valid[:, None, :]
    if sequence_shards() > 1:
      return sequence_parallel_attention(q, k, v, mask, strategy)
    return dot_product_attention(q, k, v, mask)

  with sharding.use_mesh(mesh):
    compiled = jax.jit(attention, in_shardings=(length_split,) * 4, out_shardings=length_split).lower(
        q, kv, kv, valid).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def test_attention_temporaries_fall_with_the_sequence_size():
  """XLA's memory analysis of the compiled attention: per-device temporaries shrink with `sequence`."""
  sizes = {n: _attention_temp_bytes({"fsdp": 8 // n, "sequence": n}, "all_gather") for n in (1, 2, 4, 8)}
  assert sizes[1] > sizes[2] > sizes[4] > sizes[8], sizes
  assert sizes[8] < sizes[1] / 4, sizes  # ~1/n of the [L, L] scores, plus the gathered K/V
  ring = _attention_temp_bytes({"sequence": 8}, "ring")
  assert ring < sizes[8], (ring, sizes)  # one [L/n, L/n] block of scores at a time


def test_bad_strategy_and_lengths_that_do_not_split_are_named():
  with pytest.raises(ValueError, match="sequence_attention='zigzag'"):
    TINY.replace(sequence_attention="zigzag")
  mesh = _mesh({"fsdp": 2, "sequence": 4})
  q = jnp.zeros((2, 6, 4, 8))
  with sharding.use_mesh(mesh), pytest.raises(ValueError, match="6 query rows do not split over sequence=4"):
    sequence_parallel_attention(q, q[:, :, :2], q[:, :, :2], jnp.ones((2, 6, 6), bool))


def test_a_too_long_video_prompt_fails_before_device_work_naming_frames_and_limit():
  cfg = TINY_VL
  model = vlm.VisionLanguageModel(cfg)
  grid_thw = np.array([[8, 4, 4]])  # 8 temporal patches x 2 frames = 16 frames of 2 tokens each
  tokens = vision.num_merged_tokens(cfg.vision, grid_thw)
  ids = np.array([1, 2, cfg.vision_start_token_id] + [cfg.video_token_id] * tokens + [cfg.vision_end_token_id, 3])
  pixels = np.zeros((int(grid_thw.prod()), cfg.vision.patch_dim), np.float32)
  prompt = sampling.Prompt(ids, pixel_values_videos=pixels, video_grid_thw=grid_thw)
  sampler = Sampler(model, max_prompt_length=24)
  controls = SamplingControls(max_new_tokens=2, greedy=True, stop_token_ids=())
  with pytest.raises(ValueError, match=r"prompt 0 has 37 tokens, more than the limit of 24 .*16 frames x 2 tokens "
                                       r"per frame = 32 video tokens .*at most 8 "):
    sampler(None, [prompt], key=jax.random.key(0), controls=controls)  # params never needed: fails first
  assert not sampler.compile_events


def test_the_video_tower_runs_once_per_prefill_under_a_sequence_mesh():
  """2 video prompts x G = 3 rows, fsdp 2 x sequence 4: one tower run over both prompts' patches, one
  multimodal prefill of the 2 prompts; the decode steps never touch the tower."""
  from tests.sampling.helpers import CALLS, CountingVisionLanguageModel  # pylint: disable=g-import-not-at-top
  cfg = TINY_VL
  model = CountingVisionLanguageModel(cfg)
  params = api.init_params(vlm.VisionLanguageModel(cfg), jax.random.key(0))
  rng = np.random.default_rng(0)
  grid_thw = np.array([[2, 4, 4]])
  tokens = vision.num_merged_tokens(cfg.vision, grid_thw)
  prompts = [sampling.Prompt(np.array([5] * n + [cfg.vision_start_token_id] + [cfg.video_token_id] * tokens
                                      + [cfg.vision_end_token_id, 7]),
                             pixel_values_videos=rng.normal(size=(int(grid_thw.prod()), cfg.vision.patch_dim)).astype(
                                 np.float32), video_grid_thw=grid_thw) for n in (3, 6)]
  mesh = _mesh({"fsdp": 2, "sequence": 4})
  placed = sharding.shard_params(params, mesh, model=model)
  controls = SamplingControls(max_new_tokens=4, greedy=True, stop_token_ids=())
  CALLS.clear()
  split = Sampler(model, mesh=mesh)(placed, prompts, key=jax.random.key(0), num_samples=3, controls=controls)
  jax.block_until_ready(split.tokens)
  jax.effects_barrier()
  assert sorted(name for name, _ in CALLS) == ["encode_vision", "multimodal_forward"], CALLS
  assert dict(CALLS)["multimodal_forward"][0] == 2  # the prompts, not their 6 rows
