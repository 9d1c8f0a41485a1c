"""Frozen parameters are read as constants: no gradient, no optimizer state, no backward pass."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax import rl
from r1jax.train import learner, optim
from r1jax.train.sequences import SequenceBuilder
from tests.train.test_shared_vision import _model, _rows

TOWER = ("visual/(patch_embed|blocks_).*",)  # the STAR-R1 default's freeze: the tower, not its merger


def _grpo_batch(model):
  builder = SequenceBuilder(model)
  batch = builder.shared_vision(builder.with_positions(_rows(group=2)))
  batch = builder.device_vision({k: v for k, v in batch.items() if k != "image_counts"})
  rows, completion = batch["input_ids"].shape[0], 6
  rng = np.random.default_rng(1)
  batch.update(completion_mask=rng.random((rows, completion)) < 0.9,
               advantages=rng.normal(size=rows).astype(np.float32),
               sampler_logprobs=-rng.random((rows, completion)).astype(np.float32))
  return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def test_frozen_tower_gives_the_same_loss_trainable_grads_only_and_a_cheaper_backward():
  model, params = _model()
  batch = _grpo_batch(model)
  config = rl.PolicyLossConfig()
  frozen = optim.frozen_paths(params, TOWER)
  assert frozen and all(name.startswith("visual/") and "merger" not in name for name in frozen)

  compiled = lambda frozen_paths: learner.grpo_grads.lower(model, config, 1.0, params, batch, 0,
                                                           frozen_paths).compile()
  with_tower, without_tower = compiled(()), compiled(frozen)
  full_grads, full_loss, _, _ = with_tower(params, batch)
  grads, loss, _, _ = without_tower(params, batch)
  np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
  names = lambda tree: {optim.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert names(grads) == names(full_grads) - set(frozen)  # nothing for the frozen leaves
  trainable_full = optim.split_frozen(full_grads, frozen)[0]
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(trainable_full)):
    # fp32 sums in another order: compared relative to the leaf's scale.
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * max(1.0, np.abs(np.asarray(b)).max())
  # The norm that clipping and logging see covers the trainable leaves only.
  tx = optax.sgd(0.0)
  state = learner.create_state(params, tx, jax.random.PRNGKey(0), frozen)
  _, stats = learner.apply_update(tx, state, grads, loss, jnp.float32(1.0))
  np.testing.assert_allclose(float(stats["grad_norm"]), float(optax.tree.norm(trainable_full)), rtol=1e-5)
  assert float(optax.tree.norm(full_grads)) > 1.001 * float(stats["grad_norm"])  # the tower had gradient

  flops = lambda c: c.cost_analysis()["flops"]
  assert flops(without_tower) < 0.9 * flops(with_tower), (flops(without_tower), flops(with_tower))
  out_bytes = lambda c: c.memory_analysis().output_size_in_bytes
  assert out_bytes(without_tower) < out_bytes(with_tower)  # no tower gradients come back
