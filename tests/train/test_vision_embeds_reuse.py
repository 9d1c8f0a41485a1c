"""A GRPO step with a frozen vision tower encodes each distinct image / video once (#23): every
learner pass (old log-probs, the reference's, each update's micro-batches) takes the cached
pre-merger hidden states (`learner_batch.VisionCache`) and runs only the merger, with the numbers
of the path that encodes the pixels in every pass.

Tower executions are counted as host calls: the cache's one jitted tower call
(`learner_batch.encode_vision_patches`), plus every call of a jitted learner function whose batch
holds pixels (their programs encode them: `learner.hidden_states`, checked below by intercepting
the tower's methods while tracing).
"""
import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from r1jax import frozen as frozen_lib
from r1jax import processing, rl, sharding
from r1jax.models.vision import VisionTransformer
from r1jax.train import config as config_lib
from r1jax.train import learner, learner_batch, loop, optim
from r1jax.train.sequences import SequenceBuilder
from tests.train.test_shared_vision import END, IMAGE, START, VIDEO, _model, _rows

BLOCKS = ("visual/(patch_embed|blocks_).*",)  # the recipes' default: the merger trains
TOWER = ("visual/.*",)
PIXEL_KEYS = ("pixel_values", "pixel_values_videos")


class _Letters:
  """A tokenizer stand-in: token t decodes to a letter."""

  def batch_decode(self, rows, skip_special_tokens=True):
    del skip_special_tokens
    return ["".join(chr(97 + int(t) % 26) for t in row) for row in rows]


def _prompt_batches():
  """Two one-image prompts (4 merged tokens each) per step, the same every step."""
  rng = np.random.default_rng(0)
  images = [processing.process_images([rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)]) for _ in range(2)]
  ids = [[START] + [IMAGE] * 4 + [END] + list(rng.integers(2, 50, 6)) for _ in images]
  batch = {"input_ids": np.array(ids, np.int32), "attention_mask": np.ones((2, 12), bool),
           "pixel_values": np.concatenate([i.pixel_values for i in images]),
           "image_grid_thw": np.concatenate([i.grid_thw for i in images]), "image_counts": np.array([1, 1]),
           "ground_truth": [{"answer": "c"}, {"answer": "e"}], "reward_context": [{}, {}]}
  while True:
    yield dict(batch)


def _make_step(mesh, rules, beta=0.1, num_iterations=2, micro_batches=2):
  """(the loop's GRPO step `loop._GrpoStep`, its initial state): 2 prompts x G=8, `num_iterations`
  passes (2: old log-probs), a KL reference (the initial policy) when beta > 0, `micro_batches`,
  SGD with lr 1 (the update is the gradient), the tower frozen up to the merger."""
  model, params = _model()
  config = config_lib.default_config()
  config.sampling.num_samples, config.sampling.max_new_tokens = 8, 4
  config.data.batch_size = 2
  config.rl.update(beta=beta, num_iterations=num_iterations)
  config.optim.micro_batches = micro_batches
  config.reward.name = "target_letter_rate"
  tx = optax.sgd(1.0)
  params = sharding.shard_params(params, mesh, rules, model)
  state = loop.init_state(params, tx, 0, mesh, optim.frozen_paths(params, BLOCKS))
  reference = frozen_lib.from_policy("reference", model, state.params, None, mesh=mesh, rules=rules) \
      if beta else None
  step = loop._GrpoStep(config, model, _Letters(), reference, loop._Updater(config, model, mesh, rules, tx),  # pylint: disable=protected-access
                        loop.DataHooks())
  return step, state


def _grpo_step(mesh, rules, force_pixels: bool):
  """One step of `_make_step`'s; returns (its trainable params, its metrics, {pass: log-probs},
  tower executions)."""
  step, state = _make_step(mesh, rules)
  reference = step.reference
  if force_pixels:
    step.vision_reuse = (False, False)
  else:
    assert step.vision_plan(state) == (True, True)
  towers, logprobs = collections.Counter(), collections.defaultdict(list)
  patch = pytest.MonkeyPatch()

  def counted(name, function):
    def call(*args, **kwargs):
      batch = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, dict) and "input_ids" in a)
      if not isinstance(batch["input_ids"], jax.core.Tracer) and any(k in batch for k in PIXEL_KEYS):
        towers[name] += 1  # this program encodes the pixels
      return function(*args, **kwargs)
    return call

  encode = learner_batch.encode_vision_patches

  def encode_counted(*args, **kwargs):
    towers["step cache"] += 1
    return encode(*args, **kwargs)

  def logprobs_recorded(model_, params_, *args, **kwargs):
    out = passes(model_, params_, *args, **kwargs)
    logprobs["reference" if params_ is reference.params else "old"].append(out)
    return out

  passes = learner_batch.completion_logprobs
  patch.setattr(learner_batch, "encode_vision_patches", encode_counted)
  patch.setattr(learner_batch, "completion_logprobs", logprobs_recorded)
  for name in ("completion_logprobs", "grpo_grads", "grpo_train_step"):
    patch.setattr(learner, name, counted(name, getattr(learner, name)))
  try:
    with sharding.use_mesh(mesh, rules):
      state, metrics = step(state, _prompt_batches(), jax.random.PRNGKey(3))
  finally:
    patch.undo()
  trainable = jax.tree_util.tree_map(np.asarray, state.trainable_params)
  return trainable, {k: float(v) for k, v in metrics.items() if isinstance(v, jax.Array)}, logprobs, towers


def test_a_grpo_step_encodes_each_prompts_image_once_with_the_numbers_of_encoding_in_every_pass():
  mesh, rules = sharding.make_mesh(sharding.default_mesh_config()), sharding.logical_rules()
  reused, reused_metrics, reused_logprobs, reused_towers = _grpo_step(mesh, rules, force_pixels=False)
  pixels, pixel_metrics, pixel_logprobs, pixel_towers = _grpo_step(mesh, rules, force_pixels=True)
  # The cache: one tower call for the step; no learner program encodes pixels. Without it, each
  # pass does: 2 old + 2 reference log-prob pieces, 2 passes x 2 micro-batches of gradients.
  assert reused_towers == {"step cache": 1}, reused_towers
  assert pixel_towers == {"completion_logprobs": 4, "grpo_grads": 4}, pixel_towers
  for name in ("old", "reference"):
    assert len(reused_logprobs[name]) == len(pixel_logprobs[name]) == 1
    np.testing.assert_allclose(reused_logprobs[name][0], pixel_logprobs[name][0], rtol=0, atol=1e-5)
  for key in ("loss", "kl", "grad_norm"):
    assert key in reused_metrics, sorted(reused_metrics)
    np.testing.assert_allclose(reused_metrics[key], pixel_metrics[key], rtol=1e-5, atol=1e-6)
  assert reused_metrics["grad_norm"] > 0 and reused_metrics["kl"] > 0  # the second pass moved off the reference
  # SGD with lr 1: the params are the initial ones minus the two passes' gradients.
  names = lambda tree: [optim.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert any("visual/merger" in n for n in names(reused))  # the trained merger ran in the learner
  for a, b in zip(jax.tree_util.tree_leaves(reused), jax.tree_util.tree_leaves(pixels)):
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())


def test_a_step_with_one_learner_pass_keeps_encoding_its_pixels():
  """Nothing to reuse: no old or reference log-probs, one micro-batch (the cache would add a call)."""
  mesh, rules = sharding.make_mesh(sharding.default_mesh_config()), sharding.logical_rules()
  with sharding.use_mesh(mesh, rules):
    for (beta, iterations, micro), plan in (((0.0, 1, 1), (False, False)), ((0.0, 1, 2), (True, False)),
                                            ((0.0, 2, 1), (True, False)), ((0.1, 1, 1), (True, True))):
      step, state = _make_step(mesh, rules, beta, iterations, micro)
      assert step.vision_plan(state) == plan, (beta, iterations, micro)


def test_the_reuse_needs_a_frozen_tower_and_a_reference_with_its_weights():
  model, params = _model()
  assert learner_batch.vision_reuse(model, params, optim.frozen_paths(params, BLOCKS))[:2] == (True, False)
  policy, reference, why = learner_batch.vision_reuse(model, params, ())
  assert (policy, reference) == (False, False) and "visual/" in why and "config.optim.freeze" in why
  frozen = optim.frozen_paths(params, TOWER)
  same = frozen_lib.FrozenModel("reference", "reference", model, params)
  assert learner_batch.vision_reuse(model, params, frozen, reference=same)[:2] == (True, True)
  moved = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 1 if "blocks_0" in optim.path_name(p) else x, params)
  policy, reference, why = learner_batch.vision_reuse(
      model, params, frozen, reference=frozen_lib.FrozenModel("reference", "reference", model, moved))
  assert (policy, reference) == (True, False) and "differ" in why
  # A reference whose merger differs (it trained before) still shares the cache: the merger runs per pass.
  merger = jax.tree_util.tree_map_with_path(lambda p, x: x + 1 if "merger" in optim.path_name(p) else x, params)
  assert learner_batch.vision_reuse(
      model, params, frozen, reference=frozen_lib.FrozenModel("reference", "reference", model, merger))[:2] == \
      (True, True)


def _video_rows(group: int):
  """2 prompts x `group` rows: prompt 0 a 4-frame video (2 temporal patches), prompt 1 a video and an image."""
  rng = np.random.default_rng(1)
  prompts = []
  for with_image in (False, True):
    video = processing.process_video(rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8))
    ids = [START] + [VIDEO] * (int(np.prod(video.grid_thw)) // 4) + [END]
    image = processing.process_images([rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)]) if with_image else None
    if image is not None:
      ids += [START] + [IMAGE] * (int(np.prod(image.grid_thw)) // 4) + [END]
    prompts.append((ids + list(rng.integers(2, 50, 8)), video, image))
  length = max(len(ids) for ids, _, _ in prompts)
  keys = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "video_counts",
          "second_per_grid_ts", "pixel_values", "image_grid_thw", "image_counts", "prompt_id")
  batch = {k: [] for k in keys}
  for index, (ids, video, image) in enumerate(prompts):
    for _ in range(group):
      batch["input_ids"].append(np.pad(ids, (length - len(ids), 0)))
      batch["attention_mask"].append(np.arange(length) >= length - len(ids))
      batch["pixel_values_videos"].append(video.pixel_values)
      batch["video_grid_thw"].append(video.grid_thw)
      batch["video_counts"].append(1)
      batch["second_per_grid_ts"].append([1.0])
      batch["pixel_values"].append(image.pixel_values if image else np.zeros((0, video.pixel_values.shape[1])))
      batch["image_grid_thw"].append(image.grid_thw if image else np.zeros((0, 3), np.int64))
      batch["image_counts"].append(1 if image else 0)
      batch["prompt_id"].append(index)
  packed = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "image_grid_thw")
  out = {k: np.concatenate(v).astype(np.float32 if "pixel" in k or "second" in k else v[0].dtype) if k in packed
         else np.asarray(v) for k, v in batch.items()}
  out["input_ids"] = out["input_ids"].astype(np.int32)
  return out


def _grpo_rows(model, batch, completion: int = 5):
  """The rows' last `completion` tokens as their completions, with advantages and sampler log-probs."""
  batch = SequenceBuilder(model).with_positions(batch)
  rows = len(batch["input_ids"])
  rng = np.random.default_rng(2)
  return dict(batch, completion_mask=rng.random((rows, completion)) < 0.9,
              advantages=rng.normal(size=rows).astype(np.float32),
              sampler_logprobs=-rng.random((rows, completion)).astype(np.float32),
              old_logprobs=-rng.random((rows, completion)).astype(np.float32),
              ref_logprobs=-rng.random((rows, completion)).astype(np.float32))


@pytest.mark.parametrize("freeze", [TOWER, BLOCKS], ids=["whole_tower", "blocks"])
def test_video_and_image_features_from_the_cache_equal_the_pixels_sharded_and_on_one_device(freeze):
  model, params = _model()
  batch = _grpo_rows(model, _video_rows(group=4))
  frozen = optim.frozen_paths(params, freeze)
  loss_config = rl.PolicyLossConfig(beta=0.1)
  grads = jax.jit(lambda p, b: learner.grpo_grads(model, loss_config, 1.0, p, b, 0, frozen)[:2])
  results = {}
  # blocks: the cache and the pixels on the default mesh (8 devices), the cache on one device too;
  # whole tower: both on one device (fewer compilations).
  for devices in (8, 1) if freeze == BLOCKS else (1,):
    mesh = sharding.make_mesh(sharding.default_mesh_config(), jax.devices()[:devices])
    rules = sharding.logical_rules()
    with sharding.use_mesh(mesh, rules):
      placed = sharding.shard_params(params, mesh, rules, model)
      cache = learner_batch.encode_step_vision(model, placed, batch, mesh, rules)
      assert sorted(cache.starts) == ["image", "video"] and len(cache.starts["video"]) == 2  # one per prompt
      with_pixels = devices == 8 or freeze == TOWER
      for name, vision_cache in (("cache", cache), ("pixels", None)) if with_pixels else (("cache", cache),):
        device = learner_batch.place(model, batch, mesh, rules, vision_cache)
        assert any(k in device for k in PIXEL_KEYS) == (vision_cache is None)
        # On one device in two pieces: prompt 0's rows hold a video and no image.
        logprobs = learner_batch.completion_logprobs(model, placed, batch, mesh=mesh, rules=rules, temperature=1.0,
                                                     pieces=2 if devices == 1 else 1, vision_cache=vision_cache)
        results[name, devices] = (logprobs, *jax.tree_util.tree_map(np.asarray, grads(placed, device)))
  reference = results.pop(next(key for key in results if key[0] == "pixels"))
  assert len(results) == (2 if freeze == BLOCKS else 1)
  for logprobs, tree, loss in results.values():
    np.testing.assert_allclose(logprobs, reference[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(loss, reference[2], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(reference[1])):
      assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())
  merger = [g for p, g in jax.tree_util.tree_flatten_with_path(reference[1])[0] if "merger" in optim.path_name(p)]
  assert bool(merger) == (freeze == BLOCKS)  # a trained merger gets gradients through the cached features
  assert not merger or all(np.abs(g).max() > 0 for g in merger)


def test_a_cached_batch_traces_no_tower_only_its_merger():
  """What the counts above rely on: a learner program over cached features calls no tower
  method but the merger; over pixels it encodes them."""
  model, params = _model()
  builder = SequenceBuilder(model)
  batch = builder.with_positions(_rows(group=2))
  mesh = sharding.make_mesh(sharding.default_mesh_config(), jax.devices()[:1])
  rules = sharding.logical_rules()
  calls = collections.Counter()

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, VisionTransformer) and context.method_name != "setup":
      calls[context.method_name] += 1
    return next_fun(*args, **kwargs)

  with sharding.use_mesh(mesh, rules):
    cache = learner_batch.encode_step_vision(model, params, batch, mesh, rules)
    for vision_cache in (cache, None):
      device = learner_batch.place(model, batch, mesh, rules, vision_cache)
      calls.clear()
      with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda p, b: learner.hidden_states(model, p, b), params, device)
      assert dict(calls) == ({"merge": 1} if vision_cache is not None else
                             {"__call__": 1, "encode_patches": 1, "merge": 1}), dict(calls)
