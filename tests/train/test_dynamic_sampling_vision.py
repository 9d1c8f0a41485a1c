"""DAPO dynamic sampling with a vision-language policy: every row keeps its own prompt's images.

Each sampling round draws new prompts with new images; the learner batch mixes groups of several
rounds, and the learner (which encodes each prompt's images once, `SequenceBuilder.shared_vision`)
must recompute the sampler's log-probs from the right pixels.
"""
import itertools

import jax
import ml_collections
import numpy as np

from r1jax import processing, sharding
from r1jax.rewards.base import RewardResult
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train import config as config_lib
from r1jax.train.loop import _Updater
from r1jax.train.rollout import collect_rollout
from r1jax.train.sequences import SequenceBuilder
from tests.train.test_shared_vision import END, IMAGE, START, _model

GROUP = 2


def _prompt_batches():
  """Endless prompt batches of 2 one-image prompts; every round has new images."""
  for round_index in itertools.count():
    rng = np.random.default_rng(100 + round_index)
    ids, pixels, grids = [], [], []
    for _ in range(2):
      images = processing.process_images([rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)])
      ids.append([START] + [IMAGE] * (int(np.prod(images.grid_thw[0])) // 4) + [END] +
                 list(rng.integers(2, 50, 5)))
      pixels.append(images.pixel_values)
      grids.append(images.grid_thw)
    yield {"input_ids": np.array(ids, np.int32), "attention_mask": np.ones((2, len(ids[0])), bool),
           "pixel_values": np.concatenate(pixels), "image_grid_thw": np.concatenate(grids),
           "image_counts": np.array([1, 1]),
           "ground_truth": [{"round": round_index, "prompt": p} for p in range(2)],
           "reward_context": [{}, {}]}


def test_groups_of_different_rounds_are_scored_with_their_own_images():
  model, params = _model()
  builder = SequenceBuilder(model)
  sampler = Sampler(model, pad_id=builder.pad_id)
  controls = SamplingControls(max_new_tokens=4, temperature=1.0)

  def sample(prompts, key):
    output = sampler(params, builder.prompts(prompts), key=key, num_samples=GROUP, controls=controls)
    return builder.learner_batch(prompts, output, GROUP), {}

  draws = itertools.count()

  def reward(completion, ground_truth, **context):
    # Only prompt 0 of each round has reward variance, so the kept groups come from two rounds.
    return RewardResult(float(next(draws) % 2) if ground_truth["prompt"] == 0 else 0.0)

  config = config_lib.default_config()
  config.rl.dynamic_sampling, config.rl.max_sampling_rounds = True, 3
  config.sampling.num_samples = GROUP
  config.mesh.shape = ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2, sequence=1))
  rollout = collect_rollout(sample=sample, prompt_batches=_prompt_batches(), reward_fn=reward,
                            decode=lambda ids: [str(r) for r in ids], rl_config=config.rl,
                            sampling_config=config.sampling, reward_config=config.reward,
                            rng=jax.random.PRNGKey(0), groups_wanted=2, pad_id=builder.pad_id)
  batch = rollout.batch
  assert rollout.metrics["rollout/rounds"] == 2
  assert [t["round"] for t in batch["ground_truth"][::GROUP]] == [0, 1]

  mesh = sharding.make_mesh(config.mesh)
  with sharding.use_mesh(mesh, sharding.logical_rules()):
    updater = _Updater(config, model, mesh, sharding.logical_rules(), tx=None)
    learner_logprobs = updater.completion_logprobs(params, {k: v for k, v in batch.items()
                                                            if isinstance(v, np.ndarray)})
  mask = batch["completion_mask"].astype(bool)
  mismatch = np.abs(learner_logprobs - batch["sampler_logprobs"])[mask]
  assert mask.sum() > 0 and mismatch.max() < 1e-5, mismatch.max()

  # The learner keeps one copy of each kept prompt's pixels, and they are different images.
  shared = builder.shared_vision(batch)
  first, second = np.split(shared["pixel_values"], 2)
  assert len(shared["pixel_values"]) == len(batch["pixel_values"]) // GROUP and not np.allclose(first, second)
