"""Frozen models (r1jax.frozen) and the judge protocol on one (r1jax.frozen_judge), on 8 CPU devices.

One tiny Qwen2.5-VL folder (random weights, its tokenizer beside them) serves the generation, the
memory and the judge tests; they share its frozen model's compiled sampler (same prompt and count
buckets), so the suite pays for one VL compile.
"""
import copy
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r1jax import envs, frozen, models, sharding, tokenization
from r1jax.envs.base import Environment, Episode, Status, StepResult
from r1jax.envs.runner import EpisodeRunner
from r1jax.frozen_judge import FrozenModelJudge, PromptTemplate, parse_score, status_metrics
from r1jax.rewards import judges
from r1jax.sampling import SamplingControls
from r1jax.train import learner, learner_batch, loop
from r1jax.train.config import default_config
from tests.models.hf_fixtures import tiny_qwen2, tiny_qwen2_5_vl

MAX_NEW = 4


@pytest.fixture(scope="module")
def mesh_rules():
  mesh = sharding.make_mesh(default_config().mesh)  # fsdp over the 8 test devices
  assert mesh.shape["fsdp"] == 8
  return mesh, sharding.logical_rules()


@pytest.fixture(scope="module")
def vl(tmp_path_factory, mesh_rules):
  """A tiny Qwen2.5-VL folder with its tokenizer, loaded as `config.frozen.detail`."""
  folder = str(tmp_path_factory.mktemp("detail"))
  tokenization.build_tokenizer(folder, ["Rate the answer from 1 to 10. Score: 7. The red square moves left."] * 4,
                               vocab_size=300)
  tokenizer = tokenization.load_tokenizer(folder)
  ids = tokenization.special_token_ids(tokenizer)
  tiny_qwen2_5_vl(folder, vocab=-(-len(tokenizer) // 64) * 64, image_token_id=ids.image_pad,
                  video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                  vision_end_token_id=ids.vision_end)
  mesh, rules = mesh_rules
  entry = ml_collections.ConfigDict(dict(init_from=folder, role="detail", max_new_tokens=MAX_NEW))
  return frozen.load("detail", entry, mesh=mesh, rules=rules)


def _requests(n, seed=0):
  rng = np.random.default_rng(seed)
  return [frozen.ChatRequest([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Box {i}"}]}],
                             images=[rng.integers(0, 255, (56 + 28 * (i % 2), 84, 3), dtype=np.uint8)])
          for i in range(n)]


def test_generate_is_one_batched_greedy_call_whose_rows_equal_their_own_prompts(vl):
  requests = _requests(3)
  calls = []
  inner = vl.sampler

  class Counting:  # counts this test's device calls; the compiled executables stay the fixture's
    pad_id = inner.pad_id

    def __call__(self, params, prompts, **kwargs):
      calls.append(len(prompts))
      return inner(params, prompts, **kwargs)

  counted = copy.copy(vl)
  counted.sampler = Counting()
  batched = counted.generate(requests)
  assert calls == [8]  # 3 prompts in one call, padded to a row per device (one compile for 1 to 8 prompts)
  assert len(batched) == 3 and all(len(g.token_ids) == MAX_NEW and g.truncated for g in batched)
  # The same prompts in another order (same shapes, no new compile): each row's answer is its own.
  permuted = counted.generate([requests[1], requests[2], requests[0]])
  for row, original in enumerate((1, 2, 0)):
    np.testing.assert_array_equal(permuted[row].token_ids, batched[original].token_ids)
  assert batched[0].text == vl.tokenizer.decode(batched[0].token_ids, skip_special_tokens=True)
  assert not np.array_equal(batched[0].token_ids, batched[1].token_ids)  # the images change the answer


def test_frozen_params_take_their_bytes_once_per_mesh_not_once_per_device(vl):
  """FSDP over 8 devices: the shards of all devices add up to about one copy of the params."""
  logical = vl.param_bytes
  on_device = np.zeros(8)
  devices = {d: i for i, d in enumerate(vl.mesh.devices.flat)}
  for leaf in jax.tree.leaves(vl.params):
    for shard in leaf.addressable_shards:
      on_device[devices[shard.device]] += shard.data.nbytes
  # Small leaves (norm scales, biases, dims that 8 does not divide) stay replicated: a few percent.
  assert on_device.sum() < 1.3 * logical, (on_device.sum(), logical)
  assert on_device.max() < 0.2 * logical, (on_device.max(), logical)  # replicated would be 1.0


def test_xla_sees_an_eighth_of_the_reference_params_per_device(text_policy, mesh_rules):
  """XLA's memory analysis of the reference's log-prob pass: per device, its params arguments are
  about 1/8 of the params (FSDP), not all of them."""
  model, params, batch = text_policy
  mesh, rules = mesh_rules
  reference = frozen.from_policy("reference", model, params, None, mesh=mesh, rules=rules)
  part = {k: v[:8] for k, v in batch.items()}
  with sharding.use_mesh(mesh, rules):
    placed = learner_batch.place(model, part, mesh, rules)
    analysis = learner.completion_logprobs.lower(model, reference.params, placed, 1.0).compile().memory_analysis()
  batch_bytes = sum(v.nbytes for v in part.values())
  assert analysis.argument_size_in_bytes < 0.2 * reference.param_bytes + batch_bytes, (
      analysis.argument_size_in_bytes, reference.param_bytes)


def _forced(vl, answer: str):
  """`vl` with params whose greedy answer to any prompt is `answer` (one token), then <|im_end|>.

  With every attention and MLP output projection at 0, the last position's hidden state is its
  own token's embedding: all tokens embed to e0 except the answer token (e1); the LM head maps e0
  to the answer token and e1 to the end of the turn."""
  token, end = vl.tokenizer.convert_tokens_to_ids(answer), vl.tokenizer.convert_tokens_to_ids("<|im_end|>")

  def force(path, x):
    name, value = jax.tree_util.keystr(path), np.zeros(x.shape, x.dtype)
    if "language_model" not in name:
      return x
    if "embed_tokens" in name:
      value[:, 0] = 1
      value[token] = 0
      value[token, 1] = 1
    elif "lm_head" in name:
      value[0, token] = value[1, end] = 10
    elif name.endswith("['norm']['scale']") or "layernorm" in name:
      value[:] = 1
    elif "o_proj" not in name and "down_proj" not in name:
      return x
    return jax.device_put(value, x.sharding)

  forced = copy.copy(vl)  # shares the compiled sampler: same shapes
  forced.params = jax.tree_util.tree_map_with_path(force, vl.params)
  return forced


def test_judge_parses_a_valid_score_from_the_generated_answer(vl):
  judge = FrozenModelJudge(_forced(vl, "7"), PromptTemplate("Answer: {answer}\nScore:", image_fields=("image",)),
                           low=1, high=10, timeout_s=600)
  items = [{"answer": f"a{i}", "image": r.images[0]} for i, r in enumerate(_requests(3))]
  calls = judge.judge_batch(items)
  assert [(c.status, c.value) for c in calls] == [("ok", 7.0)] * 3
  assert judge.counts == {"ok": 3}


def test_judge_reports_an_unparseable_answer_as_invalid_and_counts_it(vl):
  # The random model's answers ("tttt"-like) hold no score. Generous limit: a call may compile.
  judge = FrozenModelJudge(vl, PromptTemplate("Answer: {answer}\nScore:", image_fields=("image",)), timeout_s=600)
  items = [{"answer": f"a{i}", "image": r.images[0]} for i, r in enumerate(_requests(4))]
  items[1] = {"image": items[1]["image"]}  # no "answer": this item fails alone, at its template
  calls = judge.judge_batch(items)
  assert [c.status for c in calls] == ["invalid", "error", "invalid", "invalid"]
  assert "no score in the judge's answer" in calls[0].error and "'answer'" in calls[1].error
  assert judge.counts == {"invalid": 3, "error": 1}
  metrics = status_metrics(calls, "detail")
  assert metrics["judge/detail/invalid"] == 3 and metrics["judge/detail/error"] == 1
  assert metrics["judge/detail/ok"] == 0


def test_judge_timeout_and_model_error_fail_every_item_of_the_call():
  class Slow:
    name = "slow"

    def generate(self, requests, max_new_tokens=None):
      time.sleep(2)

  class Broken:
    name = "broken"

    def generate(self, requests, max_new_tokens=None):
      raise RuntimeError("device lost")

  template = PromptTemplate("{x}")
  calls = FrozenModelJudge(Slow(), template, timeout_s=0.2).judge_batch([{"x": 1}, {"x": 2}])
  assert [c.status for c in calls] == ["timeout", "timeout"] and "0.2 s" in calls[0].error
  calls = FrozenModelJudge(Broken(), template).judge_batch([{"x": 1}])
  assert calls[0].status == "error" and "device lost" in calls[0].error


def test_a_reward_judge_on_a_frozen_model_runs_once_per_rollout_round_and_is_counted(vl):
  """The rollout asks a reward's FrozenModelJudge once for all samples (before scoring); the reward
  reads each sample's JudgeCall through `call_judge` as if it had called the judge itself."""
  from r1jax.rewards import base, startup  # pylint: disable=g-import-not-at-top
  from r1jax.rewards.base import RewardResult  # pylint: disable=g-import-not-at-top
  from r1jax.train.rollout import collect_rollout  # pylint: disable=g-import-not-at-top
  from tests.train.test_learner import _scored_rollout  # pylint: disable=g-import-not-at-top

  images = iter([r.images[0] for r in _requests(3)])  # the shapes the fixture's sampler compiled
  startup.register_frozen_judge("test_quality", lambda model, reward_config: FrozenModelJudge(
      model, PromptTemplate("Answer: {answer}\nScore:", image_fields=("image",)), low=1, high=10, timeout_s=600,
      sample_item=lambda completion, truth, context: None if completion == "0" else
      {"answer": completion, "image": next(images)}))

  @base.register("test_frozen_judged", judges=("test_quality",))
  def reward(completion, ground_truth, **context):
    call = judges.score_judge(context.get("test_quality"), completion, low=1, high=10)
    return RewardResult(call.value if call.ok else 0.0, {"judge_failed": float(call.failed)})

  forced = _forced(vl, "7")
  generated = []
  forced.generate = lambda requests, **kwargs: generated.append(len(requests)) or type(vl).generate(
      forced, requests, **kwargs)
  context = startup.judge_context("test_frozen_judged", ml_collections.ConfigDict(), provided={"test_quality": forced})
  assert isinstance(context["test_quality"], FrozenModelJudge)
  rollout = collect_rollout(groups_wanted=1, judge_context=context, **_scored_rollout([1, 0, 2, 3], reward))
  assert generated == [3]  # one batched call for the three samples that need a judgement
  np.testing.assert_array_equal(rollout.rewards, [[7, 0, 7, 7]])  # "0" is not judged: "missing", reward 0
  assert rollout.metrics["judge/test_quality/ok"] == 3 and rollout.metrics["judge/test_quality/missing"] == 1
  assert rollout.metrics["judge/test_quality/invalid"] == 0


@pytest.mark.parametrize("text, score", [("Score: 7", 7.0), ("**Score:** 8.5", 8.5), ("score = 0.25", 0.25),
                                         (" 9. ", 9.0), ("Score: 3 ... final score: 6", 6.0)])
def test_parse_score_reads_the_last_score(text, score):
  assert parse_score(text) == score


@pytest.mark.parametrize("text", ["", "seven", "between 3 and 4", "tttt"])
def test_parse_score_rejects_an_answer_without_one(text):
  with pytest.raises(ValueError, match="no score"):
    parse_score(text)


# --------------------------------------------------------------------------- the GRPO reference


@pytest.fixture(scope="module")
def text_policy(tmp_path_factory, mesh_rules):
  path = tmp_path_factory.mktemp("policy")
  tiny_qwen2(path, vocab=512)
  mesh, rules = mesh_rules
  model, params = models.load_pretrained(str(path), mesh=mesh, rules=rules)
  rng = np.random.default_rng(0)
  rows, length, completion = 32, 24, 10  # 4 log-prob passes of 8 rows: one per device
  batch = {"input_ids": rng.integers(1, 512, (rows, length)).astype(np.int32),
           "attention_mask": np.ones((rows, length), bool),
           "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
           "completion_mask": rng.random((rows, completion)) < 0.8}
  return model, params, batch


def test_reference_logprobs_through_the_frozen_model_equal_the_previous_path(text_policy, mesh_rules):
  model, params, batch = text_policy
  mesh, rules = mesh_rules
  config = default_config()
  config.rl.beta, config.rl.mini_batches, config.optim.micro_batches = 0.04, 2, 2
  config.optim.learning_rate = 1e-2  # an update that visibly moves the policy
  tx = loop.optim.make_optimizer(config.optim, 10)
  with sharding.use_mesh(mesh, rules):
    state = loop.init_state(params, tx, 0, mesh)
    updater = loop._Updater(config, model, mesh, rules, tx)
    # The previous path: a copy of the initial policy's params through the updater's log-prob pass.
    previous = updater.completion_logprobs(jax.tree.map(lambda x: x.copy(), state.params), batch)
    frozen_models, reference = loop.load_frozen_models(config, model, state.params, None, mesh, rules)
    assert frozen_models == {} and reference.role == "reference"
    ours = reference.completion_logprobs(batch, **updater.logprob_options())
    np.testing.assert_array_equal(ours, previous)
    # An update moves (and donates) the policy's params; the reference stays the initial policy.
    grads = jax.tree.map(jnp.ones_like, state.params)
    state, _ = learner.apply_update(tx, state, grads, jnp.float32(1.0), jnp.float32(1.0))
    assert not np.allclose(updater.completion_logprobs(state.params, batch), previous, atol=1e-4)
    np.testing.assert_array_equal(reference.completion_logprobs(batch, **updater.logprob_options()), previous)
    # config.frozen.reference: the initial policy in bf16, placed like the policy.
    config.frozen.reference = dict(init_from="policy", dtype="bfloat16")
    _, bf16 = loop.load_frozen_models(config, model, params, None, mesh, rules)
    assert {x.dtype for x in jax.tree.leaves(bf16.params)} == {jnp.dtype("bfloat16")}
    assert bf16.model.config.dtype == "bfloat16"
    assert jax.tree.leaves(bf16.params)[0].sharding == jax.tree.leaves(params)[0].sharding
    np.testing.assert_allclose(bf16.completion_logprobs(batch, **updater.logprob_options()), previous, atol=0.1)


def test_frozen_models_of_one_source_share_one_copy_of_the_params(text_policy, mesh_rules):
  """Omni-R1's detail system is the frozen initial policy: it and the KL reference are one copy."""
  model, params, _ = text_policy
  config = default_config()
  config.rl.beta = 0.04
  config.frozen.detail = dict(init_from="policy", role="detail", max_new_tokens=8)
  config.frozen.judge = dict(init_from="policy", role="judge")
  config.frozen.small = dict(init_from="policy", role="judge", dtype="bfloat16")
  loaded, reference = loop.load_frozen_models(config, model, params, None, *mesh_rules)
  detail, judge, small = loaded["detail"], loaded["judge"], loaded["small"]
  assert (detail.role, detail.max_new_tokens, judge.role, judge.max_new_tokens) == ("detail", 8, "judge", 256)
  assert judge.params is detail.params and reference.params is detail.params and reference.role == "reference"
  assert small.params is not detail.params  # another dtype, another copy
  assert jax.tree.leaves(detail.params)[0] is not jax.tree.leaves(params)[0]  # a copy of the policy's


def test_no_reference_without_kl_and_none_for_sft(text_policy, mesh_rules):
  model, params, _ = text_policy
  config = default_config()
  assert loop.load_frozen_models(config, model, params, None, *mesh_rules) == ({}, None)  # beta == 0
  config.stage, config.rl.beta = "sft", 0.1
  assert loop.load_frozen_models(config, model, params, None, *mesh_rules) == ({}, None)


# --------------------------------------------------------------------------- start-up and wiring


@envs.register("test_needs_detail", frozen=("detail",))
def _needs_detail(config, hooks, frozen_models):
  return types.SimpleNamespace(detail=frozen_models["detail"], max_turns=1)


def test_a_missing_required_frozen_model_stops_the_run_at_start_up(tmp_path):
  config = default_config()
  config.env.name, config.reward.name = "test_needs_detail", "target_letter_rate"
  with pytest.raises(frozen.MissingFrozenModelError,
                     match=r"environment 'test_needs_detail' needs the frozen model 'detail': set "
                           r"config.frozen.detail.init_from"):
    loop.run(config, str(tmp_path / "run"), loop.DataHooks())
  assert not (tmp_path / "run").exists()  # nothing was built
  config.frozen.detail = dict(init_from=str(tmp_path / "nowhere"))
  loop.check_frozen_models(config)  # configured: the folder is checked when the stage loads it
  with pytest.raises(frozen.MissingFrozenModelError, match=r"config.frozen.detail.init_from=.*nowhere.*not a local HF"):
    frozen.load("detail", config.frozen.detail, mesh=None, rules=None)
  with pytest.raises(frozen.MissingFrozenModelError, match="config.frozen.detail.init_from"):
    envs.build(config, None, {})
  detail = object()
  assert envs.build(config, None, {"detail": detail, "judge": object()}).detail is detail
  # A reward's judge that config.reward cannot build is a frozen model: checked at start-up too.
  from r1jax.rewards import base  # pylint: disable=g-import-not-at-top
  from r1jax.rewards.base import RewardResult  # pylint: disable=g-import-not-at-top
  base.register("test_needs_grader", judges=("grader",))(lambda c, g, **k: RewardResult(0.0))
  config.reward.name = "test_needs_grader"
  with pytest.raises(frozen.MissingFrozenModelError, match=r"reward 'test_needs_grader' needs the frozen model "
                                                           r"'grader': set config.frozen.grader.init_from"):
    loop.check_frozen_models(config)


def test_unknown_keys_of_a_frozen_entry_are_config_errors():
  config = default_config()
  config.frozen.detail = dict(init_from="x", dtyp="bfloat16")
  with pytest.raises(ValueError, match=r"unknown config key 'frozen.detail.dtyp'; did you mean 'frozen.detail.dtype'"):
    loop.config_lib.validate(config)
  config.frozen.detail = dict(init_from="x")
  with pytest.raises(ValueError, match=r"'frozen.detail.role' must be one of \('reference', 'detail'"):
    loop.config_lib.validate(config)
  config.frozen.detail.role = "detail"
  config.frozen.reference = dict(init_from="policy")  # the name "reference" implies its role
  loop.config_lib.validate(config)


class _Batched(Environment):
  batched = True
  timeout_s = 1.0

  def __init__(self, behaviour="ok"):
    self.behaviour, self.calls = behaviour, []

  def step_batch(self, episodes, turn):
    self.calls.append([e.context["id"] for e in episodes])
    if self.behaviour == "raise":
      raise RuntimeError("detail model failed")
    if self.behaviour == "hang":
      time.sleep(3)
    if self.behaviour == "short":
      return [StepResult(done=True)]
    return [StepResult(done=True, info={"box": e.context["id"]}) for e in episodes]


@pytest.mark.parametrize("behaviour, status, error", [("ok", Status.DONE, ""),
                                                       ("raise", Status.ENV_ERROR, "detail model failed"),
                                                       ("short", Status.ENV_ERROR, "1 results for 3 episodes"),
                                                       ("hang", Status.TIMEOUT, "")])
def test_a_batched_environment_steps_every_running_episode_in_one_call(behaviour, status, error):
  env = _Batched(behaviour)
  runner = EpisodeRunner(None, env, SamplingControls(), decode=None)
  episodes = [Episode(context={"id": i}) for i in range(4)]
  active = np.array([True, False, True, True])
  observations = runner._step(episodes, [None] * 4, active, turn=0)
  assert env.calls == [[0, 2, 3]] and observations == [None] * 4
  assert [e.status for e in episodes] == [status, None, status, status]
  assert all(error in e.error for e in episodes if e.status)
  if behaviour == "ok":
    assert [e.infos for e in episodes] == [[{"box": 0}], [], [{"box": 2}], [{"box": 3}]]


def test_an_hf_folder_loads_inside_the_stage_mesh_context(vl, mesh_rules):
  """A GRPO stage loads its frozen models inside `sharding.use_mesh` (flax's unbox used to constrain the
  abstract params eagerly there and raise); the params equal those loaded outside it."""
  mesh, rules = mesh_rules
  with sharding.use_mesh(mesh, rules):
    again = frozen.load("detail", ml_collections.ConfigDict(dict(init_from=vl.source[0], role="detail")),
                        mesh=mesh, rules=rules)
  for ours, theirs in zip(jax.tree.leaves(again.params), jax.tree.leaves(vl.params)):
    assert ours.sharding == theirs.sharding
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
