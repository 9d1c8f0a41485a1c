"""No recompiles after warm-up with varying images (#17): a VL GRPO run over images of 6 sizes.

Each step's two prompts hold one image each, of sizes that give 10, 12, 13, 14 and 16 merged
vision tokens per step: without bucketing every jitted function that sees the pixels would
compile 5 times. Their patches are padded to ladder buckets (12 and 16 tokens,
`vision.pad_vision_patches`) and the learner's vision-token index likewise, so the sampler's
prefill, the learner's log-probs and gradients and the vision tower compile once per bucket and
the decode loop (which never sees a pixel) once. Compilations are counted with jax.monitoring's
lowering events, whoever calls the functions.
"""
import itertools

import jax
import ml_collections
import numpy as np
import optax

from r1jax import processing, sharding
from r1jax.rewards.base import RewardResult
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train import config as config_lib
from r1jax.train import learner, loop
from r1jax.train.rollout import collect_rollout
from r1jax.train.sequences import SequenceBuilder
from tests.compile_counter import count_lowerings
from tests.train.test_shared_vision import END, IMAGE, START, _model

GROUP = 2
# (height, width) of each step's two images; 16 x 16 pixels per merged token.
STEPS = [((56, 56), (56, 84)), ((84, 56), (56, 84)), ((84, 84), (56, 56)), ((56, 112), (84, 56)),
         ((112, 56), (56, 112))]


def _prompt_batches(rng):
  """One batch of 2 one-image prompts per step, all in the 16-token prompt bucket."""
  for step in itertools.count():
    ids, pixels, grids = [], [], []
    for height, width in STEPS[step % len(STEPS)]:
      images = processing.process_images([rng.integers(0, 256, (height, width, 3), dtype=np.uint8)])
      text = list(rng.integers(2, 50, 14 - int(np.prod(images.grid_thw[0])) // 4))
      ids.append([START] + [IMAGE] * (int(np.prod(images.grid_thw[0])) // 4) + [END] + text)
      pixels.append(images.pixel_values)
      grids.append(images.grid_thw)
    yield {"input_ids": np.array(ids, np.int32), "attention_mask": np.ones((2, 16), bool),
           "pixel_values": np.concatenate(pixels), "image_grid_thw": np.concatenate(grids),
           "image_counts": np.array([1, 1]), "ground_truth": [{}, {}], "reward_context": [{}, {}]}


def _name(fun_name: str, function: str) -> bool:
  return fun_name == f"jit({function})"


def test_a_vl_grpo_run_compiles_each_function_once_per_bucket():
  model, params = _model()
  config = config_lib.default_config()
  config.sampling.num_samples = GROUP
  config.mesh.shape = ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2, sequence=1))
  mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules()
  builder = SequenceBuilder(model)
  sampler = Sampler(model, pad_id=builder.pad_id)
  controls = SamplingControls(max_new_tokens=6, temperature=1.0)
  draws = itertools.count()
  reward = lambda completion, ground_truth, **context: RewardResult(float(next(draws) % 2))
  tx = optax.sgd(1e-3)
  loss_config = loop.loss_config(config)
  grad_fn = lambda p, b, frozen: learner.grpo_grads(model, loss_config, 1.0, p, b, 0, frozen)
  # The loop's fused step (one micro-batch), as _GrpoStep calls it.
  train_step = lambda state, b: learner.grpo_train_step(model, loss_config, 1.0, tx, state, b, 0)

  @jax.jit
  def encode_vision(p, pixels, grid):
    return model.apply(p, pixels, grid, method=model.encode_vision)

  def sample(prompts, key):
    output = sampler(params, builder.prompts(prompts), key=key, num_samples=GROUP, controls=controls)
    return builder.learner_batch(prompts, output, GROUP), {}

  batches = _prompt_batches(np.random.default_rng(0))
  patches, buckets, index_buckets = set(), set(), set()
  with sharding.use_mesh(mesh, rules), count_lowerings() as lowerings:
    updater = loop._Updater(config, model, mesh, rules, tx)  # pylint: disable=protected-access
    # Placed as the loop places them, so the learner sees one sharding from the first step on.
    state = loop.init_state(sharding.shard_params(params, mesh, rules, model), tx, 0, mesh)
    for step in range(len(STEPS)):
      rollout = collect_rollout(sample=sample, prompt_batches=batches, reward_fn=reward,
                                decode=lambda ids: [str(r) for r in ids], rl_config=config.rl,
                                sampling_config=config.sampling, reward_config=config.reward,
                                rng=jax.random.PRNGKey(step), groups_wanted=2, pad_id=builder.pad_id)
      batch = {k: v for k, v in rollout.batch.items() if isinstance(v, np.ndarray)}
      batch["old_logprobs"] = updater.completion_logprobs(state.params, batch)
      state, _, _ = updater.update(state, batch, grad_fn, train_step)
      device = updater.device_batch(batch)
      encode_vision(state.params, device["pixel_values"], device["image_grid_thw"])
      patches.add(len(batch["pixel_values"]) // GROUP)  # each prompt's image once
      buckets.add(device["pixel_values"].shape[0])
      index_buckets.add(device["image_embed_index"].shape[0])

  assert len(patches) == 5 and len(buckets) == 2 and len(index_buckets) == 2, (patches, buckets, index_buckets)
  compiles = {function: sum(n for name, n in lowerings.items() if _name(name, function))
              for function in ("_prefill", "_decode", "completion_logprobs", "grpo_train_step", "encode_vision")}
  assert compiles == {"_prefill": 2, "_decode": 1, "completion_logprobs": 2, "grpo_train_step": 2,
                      "encode_vision": 2}, \
      (compiles, sorted(lowerings.items()))
  assert [e.function for e in sampler.compile_events] == ["prefill", "decode", "prefill"]
