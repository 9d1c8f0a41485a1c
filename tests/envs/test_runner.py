"""The episode runner: statuses, action masks, observations as chat-template deltas, per-turn samples,
and learner rows whose log-probs equal the sampler's (token-in/token-out across turns)."""
import logging
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r1jax import models, tokenization
from r1jax.envs import Environment, Observation, RewardSample, Sample, Status, StepResult
from r1jax.envs.observations import ObservationEncoder
from r1jax.envs.runner import EpisodeRunner, Trajectory, completion_columns, completion_width, reward_fields
from r1jax.rewards.base import RewardResult
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train import learner
from r1jax.train.rollout import collect_rollout
from r1jax.train.sequences import SequenceBuilder
from tests.models.hf_fixtures import tiny_qwen2

GROUP = 2
KINDS = ("continue", "done", "raise", "hang")


class ToyEnv(Environment):
  """Continues 'continue' prompts once with a text observation; 'raise' and 'hang' fail."""

  max_turns = 2
  max_observation_tokens = 32
  timeout_s = 1.0

  def step(self, episode, turn):
    kind = episode.context["kind"]
    if kind == "raise":
      raise RuntimeError("the environment broke")
    if kind == "hang":
      time.sleep(3)
    if kind == "continue" and turn == 0:
      return StepResult(done=False, observation=Observation([{"type": "text", "text": "look again"}]))
    return StepResult(done=True, info={"turn": turn})

  def samples(self, episode):
    return [Sample((t,), text, {"turn": t}, f"turn{t}") for t, text in enumerate(episode.actions)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  corpus = [f"question {i} answer {i * 7} look again" for i in range(50)]
  tokenizer = tokenization.load_tokenizer(
      tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tok")), corpus, vocab_size=300))
  path = tmp_path_factory.mktemp("model")
  tiny_qwen2(path, vocab=len(tokenizer))
  model, params = models.load_pretrained(str(path))
  builder = SequenceBuilder(model)
  sampler = Sampler(model, pad_id=builder.pad_id)
  decode = lambda ids: tokenizer.batch_decode(ids, skip_special_tokens=True)
  controls = SamplingControls(max_new_tokens=6, temperature=1.0, stop_token_ids=())
  env = ToyEnv()
  runner = EpisodeRunner(sampler, env, controls, decode, ObservationEncoder(tokenizer))
  rng = np.random.default_rng(0)
  ids = [np.concatenate([[tokenizer.convert_tokens_to_ids("<|im_start|>")], rng.integers(10, 200, 4 + i)]).astype(
      np.int32) for i in range(len(KINDS))]
  batch = {"input_ids": [], "ground_truth": [{} for _ in KINDS], "reward_context": [{"kind": k} for k in KINDS]}
  prompts = [{"input_ids": i} for i in ids]
  records = []
  handler = logging.Handler()
  handler.emit = lambda record: records.append(record.getMessage())
  logging.getLogger("r1jax.envs.runner").addHandler(handler)
  try:
    episodes = runner(params, prompts, batch["reward_context"], batch["ground_truth"], num_samples=GROUP,
                      key=jax.random.key(0))
  finally:
    logging.getLogger("r1jax.envs.runner").removeHandler(handler)
  learner_batch = builder.trajectory_batch(batch, episodes.prompts, episodes.trajectories, GROUP,
                                           episodes.completion_width)
  return types.SimpleNamespace(tokenizer=tokenizer, model=model, params=params, env=env, episodes=episodes,
                               batch=learner_batch, builder=builder, log="\n".join(records))


def test_episodes_end_with_their_status_and_failures_are_counted(setup):
  statuses = [e.status for e in setup.episodes.episodes]
  assert statuses == [Status.DONE] * 4 + [Status.ENV_ERROR] * 2 + [Status.TIMEOUT] * 2
  assert "RuntimeError: the environment broke" in setup.episodes.episodes[4].error
  assert [len(e.actions) for e in setup.episodes.episodes] == [2, 2, 1, 1, 1, 1, 1, 1]
  stats = setup.episodes.stats
  assert (stats["episode/done"], stats["episode/env_error"], stats["episode/timeout"]) == (4, 2, 2)
  assert "episodes: 4 of 8 ended without finishing (env_error=2, timeout=2)" in setup.log
  assert "the environment broke" in setup.log


def test_the_learner_takes_the_bucketed_columns_of_the_longest_trajectory(setup):
  longest = max(len(t) for t in setup.episodes.trajectories)
  assert longest == max(len(a0) + len(o.input_ids) + len(a1) for t in setup.episodes.trajectories[:2]
                        for (a0, _), o, (a1, _) in [(t.actions[0], t.observations[0], t.actions[1])])
  full = completion_width(setup.env, 6)
  assert setup.episodes.completion_width == min(16 if longest <= 16 else 32 if longest <= 32 else 64, full)
  assert setup.batch["completion_ids"].shape[1] == setup.episodes.completion_width >= longest
  action = lambda n: Trajectory(actions=[(np.zeros(n, np.int32), np.zeros(n, np.float32))])
  assert completion_columns([action(5), action(3)], 100) == 16
  assert completion_columns([action(17)], 100) == 32
  assert completion_columns([action(40)], 36) == 36  # never past the widest a trajectory can be
  assert completion_columns([action(0)], 36) == 16


def test_observation_tokens_are_masked_and_are_the_chat_template_delta(setup):
  batch, tokenizer = setup.batch, setup.tokenizer
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  for row in (0, 1):
    trajectory = setup.episodes.trajectories[row]
    (a0, _), (a1, _) = trajectory.actions
    observation = trajectory.observations[0].input_ids
    n0, n1, no = len(a0), len(a1), len(observation)
    np.testing.assert_array_equal(batch["completion_ids"][row, :n0 + no + n1], np.concatenate([a0, observation, a1]))
    mask = batch["completion_mask"][row]
    assert mask[:n0].all() and not mask[n0:n0 + no].any() and mask[n0 + no:n0 + no + n1].all()
    assert not mask[n0 + no + n1:].any()
    # The truncated action did not end the turn, so the observation starts by closing it.
    text = tokenizer.decode(observation)
    assert observation[0] == im_end and "look again" in text and text.endswith("<|im_start|>assistant\n")
  for row in range(2, 8):
    assert batch["completion_mask"][row].sum() == len(setup.episodes.trajectories[row].actions[0][0])


def test_observation_delta_equals_the_re_rendered_conversation(setup):
  tokenizer = setup.tokenizer
  encoder = ObservationEncoder(tokenizer)
  render = lambda messages, **kw: tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False, **kw),
                                                   add_special_tokens=False)
  question, action = [{"role": "user", "content": "question 3"}], "answer 21"
  prompt = render(question, add_generation_prompt=True)
  action_ids = tokenizer.encode(action + "<|im_end|>", add_special_tokens=False)
  observation = [{"type": "text", "text": "look again"}]
  delta = encoder.encode(Observation(observation), last_action_token=action_ids[-1]).input_ids
  full = render(question + [{"role": "assistant", "content": action}, {"role": "user", "content": observation}],
                add_generation_prompt=True)
  assert list(prompt) + list(action_ids) + list(delta) == list(full)


def test_learner_log_probs_of_whole_trajectories_equal_the_sampler_s(setup):
  batch = {k: v for k, v in setup.batch.items() if isinstance(v, np.ndarray) and k not in ("completion_ids",)}
  batch = setup.builder.shared_vision(batch)
  logprobs = np.asarray(learner.completion_logprobs(setup.model, setup.params, {k: jnp.asarray(v) for k, v in
                                                                              batch.items()}, 1.0))
  mask = setup.batch["completion_mask"]
  np.testing.assert_allclose(logprobs[mask], setup.batch["sampler_logprobs"][mask], atol=1e-4, rtol=0)


def test_reward_fields_give_per_turn_samples_and_mask_failed_episodes(setup):
  fields = reward_fields(setup.episodes, setup.env)
  np.testing.assert_array_equal(fields["episode_failed"], [False] * 4 + [True] * 4)
  assert [(s.row, s.turns, s.group) for s in fields["reward_samples"]] == [
      (0, (0,), "turn0"), (0, (1,), "turn1"), (1, (0,), "turn0"), (1, (1,), "turn1"), (2, (0,), "turn0"),
      (3, (0,), "turn0")]
  turn_index = fields["turn_index"]
  mask = setup.batch["completion_mask"]
  assert set(turn_index[0][mask[0]].tolist()) == {0, 1} and (turn_index[0][~mask[0]] <= 1).all()
  assert (turn_index[0][turn_index[0] >= 0] >= 0).all() and (turn_index[4] <= 0).all()


def test_per_turn_samples_get_advantages_over_their_own_groups():
  """Two prompts x G=2; each row trains turn 0 (group 'a', reward = row) and turn 1 (group 'b',
  reward = 10 x row): each turn's tokens get the GRPO advantage of its own group."""
  rows, width = 4, 5
  batch = {"input_ids": np.zeros((rows, 3), np.int32), "attention_mask": np.ones((rows, 3), bool),
           "positions": np.zeros((rows, 3), np.int32), "completion_ids": np.zeros((rows, width), np.int32),
           "completion_mask": np.array([[1, 1, 0, 1, 0]] * rows, bool), "sampler_logprobs": np.zeros((rows, width)),
           "turn_index": np.array([[0, 0, -1, 1, -1]] * rows), "episode_failed": np.zeros(rows, bool),
           "ground_truth": [{}] * rows, "reward_context": [{}] * rows,
           "reward_samples": [RewardSample(r, Sample((t,), str((10 if t else 1) * r), {}, "ab"[t]))
                              for r in range(rows) for t in (0, 1)]}
  config = ml_collections.ConfigDict(dict(dynamic_sampling=False, max_sampling_rounds=1, overlong_buffer=0,
                                          overlong_penalty=1.0, advantage="grpo"))
  rollout = collect_rollout(
      sample=lambda prompts, key: (dict(batch), {}), prompt_batches=iter(lambda: {}, None),
      reward_fn=lambda completion, ground_truth, **c: RewardResult(float(completion)), decode=None,
      rl_config=config, sampling_config=ml_collections.ConfigDict(dict(num_samples=2, max_new_tokens=2)),
      reward_config=ml_collections.ConfigDict(dict(name="fake", timeout_s=5.0, num_workers=1, max_error_frac=0.5)),
      rng=jax.random.PRNGKey(0), groups_wanted=2, pad_id=0)
  np.testing.assert_array_equal(rollout.rewards, [[0, 1], [0, 10], [2, 3], [20, 30]])
  advantages = rollout.batch["advantages"]
  assert advantages.shape == (rows, width)
  grpo = lambda x: (x - np.mean(x)) / (np.std(x, ddof=1) + 1e-6)
  for prompt in range(2):
    a, b = grpo(np.array([2 * prompt, 2 * prompt + 1.0])), grpo(np.array([20 * prompt, 20 * prompt + 10.0]))
    for g in range(2):
      row = 2 * prompt + g
      np.testing.assert_allclose(advantages[row], [a[g], a[g], 0, b[g], 0], rtol=1e-5)


def test_groups_follow_prompt_ids_not_row_order():
  """Rows of two prompts interleaved (ids 7, 9, 7, 9): each group is its prompt's rows."""
  rows = 4
  batch = {"input_ids": np.zeros((rows, 3), np.int32), "attention_mask": np.ones((rows, 3), bool),
           "positions": np.zeros((rows, 3), np.int32), "completion_ids": np.array([[1], [10], [2], [30]]),
           "completion_mask": np.ones((rows, 1), bool), "sampler_logprobs": np.zeros((rows, 1)),
           "prompt_id": np.array([7, 9, 7, 9]), "ground_truth": [{}] * rows, "reward_context": [{}] * rows}
  config = ml_collections.ConfigDict(dict(dynamic_sampling=False, max_sampling_rounds=1, overlong_buffer=0,
                                          overlong_penalty=1.0, advantage="grpo"))
  rollout = collect_rollout(
      sample=lambda prompts, key: (dict(batch), {}), prompt_batches=iter(lambda: {}, None),
      reward_fn=lambda completion, ground_truth, **c: RewardResult(float(completion)),
      decode=lambda ids: [str(int(r[0])) for r in ids], rl_config=config,
      sampling_config=ml_collections.ConfigDict(dict(num_samples=2, max_new_tokens=1)),
      reward_config=ml_collections.ConfigDict(dict(name="fake", timeout_s=5.0, num_workers=1, max_error_frac=0.5)),
      rng=jax.random.PRNGKey(0), groups_wanted=2, pad_id=0)
  np.testing.assert_array_equal(rollout.rewards, [[1, 2], [10, 30]])
  np.testing.assert_array_equal(rollout.batch["prompt_id"], [7, 7, 9, 9])
  np.testing.assert_array_equal(rollout.batch["completion_ids"][:, 0], [1, 2, 10, 30])
  assert rollout.batch["advantages"][0] < 0 < rollout.batch["advantages"][1]


def test_a_context_s_forced_prefix_starts_its_first_actions_and_cannot_be_combined(setup):
  """A prompt's own forced prefix (its tokens already end the prompt, as the data pipeline puts them)
  is in front of its first actions' text; other prompts' actions are as sampled."""
  env = types.SimpleNamespace(max_turns=1, max_observation_tokens=0, timeout_s=1.0,
                              reset=lambda context, truth: None,
                              step=lambda episode, turn: StepResult(done=True))
  decode = lambda ids: setup.tokenizer.batch_decode(ids, skip_special_tokens=True)
  runner = EpisodeRunner(Sampler(setup.model, pad_id=setup.builder.pad_id), env,
                         SamplingControls(max_new_tokens=4, temperature=1.0, stop_token_ids=()), decode)
  prefix = "look again "
  ids = [np.asarray([5, 6, 7], np.int32),
         np.asarray([5, 6, 7] + setup.tokenizer.encode(prefix, add_special_tokens=False), np.int32)]
  contexts = [{}, {"forced_prefix": prefix}]
  out = runner(setup.params, [{"input_ids": i} for i in ids], contexts, [{}, {}], num_samples=2, key=jax.random.key(1))
  for row, episode in enumerate(out.episodes):
    sampled = decode(out.trajectories[row].actions[0][0][None])[0]
    assert episode.actions[0] == (prefix if row >= 2 else "") + sampled
  with pytest.raises(ValueError, match="carry their own context\\['forced_prefix'\\]"):
    runner(setup.params, [{"input_ids": i} for i in ids], contexts, [{}, {}], num_samples=2, key=jax.random.key(1),
           forced_prefix=(np.asarray([8], np.int32), "x"))
