"""The fused, donated train steps equal `*_grads` + `apply_update`, free the old state, compile once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, rl
from r1jax.train import learner, optim
from r1jax.train.config import default_config
from tests.models.hf_fixtures import tiny_qwen2
from tests.compile_counter import count_lowerings

ROWS, LENGTH, COMPLETION, VOCAB = 4, 20, 8, 200
LOSS_CONFIG = rl.PolicyLossConfig(epsilon_high=0.28, entropy_coeff=0.01)


@pytest.fixture(scope="module")
def model_and_params(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_qwen2")
  tiny_qwen2(path, vocab=VOCAB)
  return models.load_pretrained(str(path))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {"input_ids": jnp.asarray(rng.integers(1, VOCAB, (ROWS, LENGTH)), jnp.int32),
          "attention_mask": jnp.ones((ROWS, LENGTH), bool),
          "positions": jnp.broadcast_to(jnp.arange(LENGTH), (ROWS, LENGTH)),
          "completion_mask": jnp.asarray(rng.random((ROWS, COMPLETION)) < 0.8),
          "advantages": jnp.asarray(rng.normal(size=ROWS), jnp.float32),
          "sampler_logprobs": jnp.asarray(-rng.random((ROWS, COMPLETION)) - 3.0, jnp.float32),
          "loss_mask": jnp.asarray(rng.random((ROWS, LENGTH)) < 0.5)}


def _state(params, freeze=()):
  config = default_config().optim
  config.learning_rate, config.weight_decay = 1e-2, 0.01
  tx = optim.make_optimizer(config, total_updates=10)
  frozen = optim.frozen_paths(params, freeze)
  copy = jax.tree_util.tree_map(jnp.copy, params)  # the steps donate the state: the fixture's params stay
  return learner.create_state(copy, tx, jax.random.PRNGKey(0), frozen), tx


def _steps(model, kind):
  """(separate, fused): each (tx, state, batch) -> (state, metrics dict of device scalars, skipped)."""
  if kind == "grpo":
    grads_fn = lambda p, b, frozen: learner.grpo_grads(model, LOSS_CONFIG, 0.7, p, b, 0, frozen)
    fused = lambda tx, state, b: learner.grpo_train_step(model, LOSS_CONFIG, 0.7, tx, state, b)
  else:
    grads_fn = lambda p, b, frozen: learner.sft_grads(model, p, b, 0, frozen)
    fused = lambda tx, state, b: learner.sft_train_step(model, tx, state, b)

  def separate(tx, state, b):
    grads, loss_sum, count, metrics = grads_fn(state.params, b, state.frozen)
    state, stats = learner.apply_update(tx, state, grads, loss_sum, count)
    return state, {**rl.finalize_metrics(metrics), "loss": stats["loss"], "grad_norm": stats["grad_norm"]}, \
        stats["skipped"]

  return separate, fused


def _assert_close(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["grpo", "sft"])
@pytest.mark.parametrize("freeze", [(), (r".*layers_0/.*",)], ids=["all_trainable", "layer_0_frozen"])
def test_fused_step_equals_grads_then_apply_update(model_and_params, kind, freeze):
  model, params = model_and_params
  separate, fused = _steps(model, kind)
  state_a, tx = _state(params, freeze)
  state_b, _ = _state(params, freeze)
  for step in range(2):  # two updates: the second reads the first's Adam moments
    batch = _batch(step)
    state_a, metrics_a, skipped_a = separate(tx, state_a, batch)
    state_b, metrics_b, skipped_b = fused(tx, state_b, batch)
    assert not bool(skipped_a) and not bool(skipped_b)
    assert metrics_a.keys() == metrics_b.keys() and {"loss", "grad_norm"} <= metrics_b.keys()
    _assert_close(metrics_a, metrics_b)
  _assert_close(state_a.params, state_b.params)
  _assert_close(state_a.opt_state, state_b.opt_state)
  assert int(state_b.step) == 2
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                     jax.tree_util.tree_leaves(state_b.params))]
  names = [optim.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for name, changed in zip(names, moved):  # frozen leaves stay, the others are trained
    assert changed == (name not in state_b.frozen), name


@pytest.mark.parametrize("kind", ["grpo", "sft"])
def test_fused_step_skips_a_nonfinite_step_leaving_params_and_moments(model_and_params, kind):
  model, params = model_and_params
  _, fused = _steps(model, kind)
  state, tx = _state(params)
  state, _, _ = fused(tx, state, _batch(0))  # non-zero moments to keep
  before = jax.tree_util.tree_map(np.asarray, (state.params, state.opt_state))
  batch = dict(_batch(1), advantages=jnp.full((ROWS,), jnp.nan))
  if kind == "sft":  # a NaN in the embedding of a token of the batch reaches the SFT loss
    token = batch["input_ids"][0, 0]
    state = state.replace(params=jax.tree_util.tree_map_with_path(
        lambda p, x: x.at[token].set(jnp.nan) if "embed_tokens" in optim.path_name(p) else x, state.params))
    before = (jax.tree_util.tree_map(np.asarray, state.params), before[1])
  state, metrics, skipped = fused(tx, state, batch)
  assert bool(skipped) and int(state.step) == 2
  jax.tree_util.tree_map(np.testing.assert_array_equal, (state.params, state.opt_state), before)
  assert not np.isfinite(float(metrics["loss"])) or not np.isfinite(float(metrics["grad_norm"]))


@pytest.mark.parametrize("kind", ["grpo", "sft"])
def test_fused_step_donates_the_state(model_and_params, kind):
  model, params = model_and_params
  _, fused = _steps(model, kind)
  state, tx = _state(params)
  old_leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
  new_state, _, _ = fused(tx, state, _batch(0))
  assert all(leaf.is_deleted() for leaf in old_leaves)  # no second copy of params or moments
  assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves((new_state.params, new_state.opt_state)))


def test_fused_step_compiles_once_for_steps_of_equal_shapes(model_and_params):
  model, params = model_and_params
  _, fused = _steps(model, "grpo")
  state, tx = _state(params)  # a new optimizer (a static argument): the first step compiles
  with count_lowerings() as first:
    state, _, _ = fused(tx, state, _batch(0))
  with count_lowerings() as later:
    for step in range(1, 4):
      state, metrics, _ = fused(tx, state, _batch(step))
    jax.block_until_ready(metrics)
  assert first["jit(grpo_train_step)"] == 1, dict(first)
  assert not later, dict(later)  # nothing at all compiles again
