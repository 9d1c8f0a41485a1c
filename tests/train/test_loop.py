"""The training loop on the letters sanity task: learning, exact resume, SFT -> GRPO chaining.

Runs that several tests only read (the 40-step GRPO run, the straight runs of the resume tests, the
SFT -> GRPO chain) are module fixtures, made once.
"""
import functools
import json
import os
import time

import flax
import jax
import ml_collections
import numpy as np
import pytest

from experiments import hooks as hooks_lib
from experiments.configs import letters_grpo
from r1jax import checkpoint, models, train
from r1jax.checkpoint import Checkpointer
from r1jax.train import optim
from r1jax.train.writer import read_metrics


def _config(workdir, rl=None, **train_overrides):
  config = letters_grpo.get_config()
  config.train.update({"progress_bar": False, "async_checkpoints": False, "export_hf": False, **train_overrides})
  config.rl.update(rl or {})
  hooks_lib.prepare(config, str(workdir))
  return config


def _train(workdir, config):
  train.run(config, str(workdir), hooks_lib.data_hooks(config))
  return workdir, config


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
  """(workdir, config) of the letters config's 40-step GRPO run (checkpoints every 10 steps)."""
  workdir = tmp_path_factory.mktemp("grpo_40_steps")
  return _train(workdir, _config(workdir, steps=40))


def test_grpo_raises_the_reward(grpo_run):
  tmp_path, config = grpo_run
  rewards = [r["reward/mean"] for r in read_metrics(str(tmp_path)) if "reward/mean" in r]
  assert len(rewards) == 40 and np.all(np.isfinite(rewards))
  assert read_metrics(str(tmp_path))[-1]["data/examples"] >= 40 * config.data.batch_size  # the pipeline's counts
  first, last = np.mean(rewards[:8]), np.mean(rewards[-8:])
  assert last > first + 0.1, (first, last)
  assert os.path.isfile(tmp_path / "curves.png")


class _StopAfter:
  """Wraps a data iterator and raises after `n` batches, like a preempted job."""

  def __init__(self, iterator, n):
    self.iterator, self.n = iterator, n

  def __next__(self):
    if self.n == 0:
      raise KeyboardInterrupt("preempted")
    self.n -= 1
    return next(self.iterator)

  def __getattr__(self, name):
    return getattr(self.iterator, name)


def _final_params(workdir, config):
  """(latest step, {"params": ...} restored from `workdir/checkpoints`)."""
  model = models.build_model(models.config_from_hf(config.model.hf_config.to_dict()))
  step = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False).latest_step()
  params = checkpoint.restore_params(os.path.join(workdir, "checkpoints"),
                                     flax.linen.unbox(models.abstract_params(model)))
  assert all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in jax.tree_util.tree_leaves(params))  # values
  return step, params


def _assert_same_params(a, b):
  """Equal trees, checked so that the check itself is shown to catch one perturbed value."""
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  leaves, treedef = jax.tree_util.tree_flatten(b)
  changed = np.array(leaves[0])
  changed.flat[0] += 1e-3
  perturbed = jax.tree_util.tree_unflatten(treedef, [changed] + leaves[1:])
  with pytest.raises(AssertionError):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, perturbed)


def test_restoring_params_that_the_checkpoint_lacks_is_an_error(grpo_run):
  tmp_path, config = grpo_run
  model = models.build_model(models.config_from_hf(dict(config.model.hf_config.to_dict(), num_hidden_layers=3)))
  with pytest.raises(ValueError, match=r"does not hold \d+ of the requested parameters.*layers_2"):
    checkpoint.restore_params(str(tmp_path / "checkpoints"), flax.linen.unbox(models.abstract_params(model)))


# The second case keeps a KL reference and recomputes old log-probs (2 passes x 2 mini-batches):
# the reference must stay the stage's initial policy across updates and a resume. Its cosine
# schedule has no warmup and decays to 0, for test_learning_rate_schedule_counts_every_optimizer_update.
RESUME_CASES = {
    "plain": ({}, {}),
    "kl_reference_and_mini_batches": ({"beta": 0.05, "num_iterations": 2, "mini_batches": 2},
                                      {"warmup_steps": 0, "schedule": "cosine", "end_lr_ratio": 0.0}),
}


def _resume_config(workdir, case):
  rl, optim_overrides = RESUME_CASES[case]
  config = _config(workdir, rl, steps=4, checkpoint_every=2)
  config.optim.update(optim_overrides)
  return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """case -> (workdir, config) of that case's 4-step run without interruption, made on first use."""
  runs = {}

  def get(case):
    if case not in runs:
      workdir = tmp_path_factory.mktemp(f"straight_{case}")
      runs[case] = _train(workdir, _resume_config(workdir, case))
    return runs[case]

  return get


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_is_exact(tmp_path, straight_run, case):
  straight, _ = straight_run(case)
  resumed = tmp_path / "resumed"

  # Preempted during step 4, after step 3 was logged but not saved: the resume re-runs step 3.
  config = _resume_config(resumed, case)
  hooks = hooks_lib.data_hooks(config)
  preempted = train.DataHooks(prompt_iterator=lambda c, t: _StopAfter(hooks.prompt_iterator(c, t), 3))
  with pytest.raises(KeyboardInterrupt):
    train.run(config, str(resumed), preempted)
  assert Checkpointer(str(resumed / "checkpoints"), async_save=False).latest_step() == 2
  assert [r["step"] for r in read_metrics(str(resumed))] == [1, 2, 3]
  train.run(config, str(resumed), hooks)

  def records(workdir):  # in order, so a re-run step logged twice would show
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_metrics(str(workdir))]

  assert [r["step"] for r in records(resumed)] == [1, 2, 3, 4]
  assert records(straight) == records(resumed)
  step_a, params_a = _final_params(str(straight), config)
  step_b, params_b = _final_params(str(resumed), config)
  assert step_a == step_b == 4
  _assert_same_params(params_a, params_b)


def test_init_from_a_checkpoints_folder_starts_from_its_params(tmp_path, grpo_run):
  first, _ = grpo_run  # checkpoints at steps 10, ..., 40
  second = tmp_path / "second"
  config = _config(second, steps=1, checkpoint_every=1)
  config.init_from = str(first / "checkpoints")
  config.optim.learning_rate = 0.0  # the run keeps its initial params
  train.run(config, str(second), hooks_lib.data_hooks(config))
  _assert_same_params(_final_params(str(first), config)[1], _final_params(str(second), config)[1])


@pytest.fixture(scope="module")
def sft_grpo_run(tmp_path_factory):
  """The workdir of a 12-step SFT stage from scratch (exported to sft/hf) chained into 2 GRPO steps."""
  workdir = tmp_path_factory.mktemp("sft_grpo")
  config = _config(workdir)
  config.stages = ml_collections.ConfigDict({
      "sft": {"stage": "sft", "optim": {"learning_rate": 3e-3, "schedule": "constant"}, "data": {"batch_size": 8},
              "train": {"steps": 12, "export_hf": True}},
      "grpo": {"train": {"steps": 2}},
  })
  config.stage_order = ("sft", "grpo")
  return _train(workdir, config)[0]


def test_sft_lowers_loss_and_its_export_starts_grpo(sft_grpo_run):
  tmp_path = sft_grpo_run
  nll = [r["sft/nll"] for r in read_metrics(str(tmp_path / "sft"))]
  assert len(nll) == 12 and nll[-1] < 0.75 * nll[0]
  with open(tmp_path / "grpo" / "config.json") as f:
    assert json.load(f)["init_from"] == str(tmp_path / "sft" / "hf")
  assert len(read_metrics(str(tmp_path / "grpo"))) == 2


def test_later_stages_chain_from_the_previous_stage_even_when_the_base_sets_init_from(tmp_path, sft_grpo_run):
  base = sft_grpo_run / "sft"  # any HF export of the letters model: that run's SFT stage
  workdir = tmp_path / "run"
  config = _config(workdir)
  config.init_from = str(base / "hf")
  sft = {"stage": "sft", "data": {"batch_size": 8}}
  sft_train = {"export_hf": True, "checkpoint_every": 1}
  config.stages = ml_collections.ConfigDict({
      "sft1": dict(sft, optim={"learning_rate": 3e-3, "schedule": "constant"}, train=dict(sft_train, steps=3)),
      "sft2": dict(sft, optim={"learning_rate": 0.0}, train=dict(sft_train, steps=1)),  # keeps what it starts from
      "grpo": {"train": {"steps": 1}},
  })
  config.stage_order = ("sft1", "sft2", "grpo")
  train.run(config, str(workdir), hooks_lib.data_hooks(config))
  init_from = {}
  for stage in ("sft1", "sft2", "grpo"):
    with open(workdir / stage / "config.json") as f:
      init_from[stage] = json.load(f)["init_from"]
  assert init_from == {"sft1": str(base / "hf"), "sft2": str(workdir / "sft1" / "hf"),
                       "grpo": str(workdir / "sft2" / "hf")}
  sft1, sft2 = (_final_params(str(workdir / s), config)[1] for s in ("sft1", "sft2"))
  _assert_same_params(sft1, sft2)  # stage 2 started from stage 1's final params
  base_model, base_params = models.load_pretrained(str(base / "hf"))
  assert not np.allclose(jax.tree_util.tree_leaves(base_params)[0], jax.tree_util.tree_leaves(sft1)[0])


def test_learning_rate_schedule_counts_every_optimizer_update(straight_run):
  """mu = 2 passes x 2 mini-batches = 4 updates per step: the cosine schedule spans 4 x steps updates."""
  tmp_path, config = straight_run("kl_reference_and_mini_batches")  # 4 steps, no warmup, decays to 0
  assert (config.rl.num_iterations, config.rl.mini_batches, config.train.steps) == (2, 2, 4)
  assert (config.optim.warmup_steps, config.optim.schedule, config.optim.end_lr_ratio) == (0, "cosine", 0.0)
  lrs = [r["optim/lr"] for r in read_metrics(str(tmp_path)) if "optim/lr" in r]
  schedule = optim.learning_rate_schedule(config.optim, 16)
  np.testing.assert_allclose(lrs, [float(schedule(4 * step - 1)) for step in (1, 2, 3, 4)], rtol=1e-6)
  assert lrs[-1] > 0 and all(a > b for a, b in zip(lrs, lrs[1:]))  # the floor is not reached early


def test_the_loop_draws_the_next_batch_before_reading_a_steps_metrics(tmp_path, monkeypatch):
  """The host does not wait for a step's metrics: SFT steps 2 and 3 hold their loss on device
  (a callback) until the loop has drawn the next step's batch. A loop that read each step's
  metrics before going on would never draw it, and the callback would give up after 20 s."""
  from r1jax.train import learner  # pylint: disable=g-import-not-at-top
  config = _config(tmp_path, steps=4, checkpoint_every=100)  # steps 1 (first save) and 4 (last) are read at once
  config.update({"stage": "sft", "data": dict(config.data, batch_size=8)})
  hooks = hooks_lib.data_hooks(config)
  drawn, held = [], {}

  class _Counted:
    def __init__(self, iterator):
      self.iterator = iterator

    def __next__(self):
      drawn.append(1)
      return next(self.iterator)

    def __getattr__(self, name):
      return getattr(self.iterator, name)

  def hold(step, loss):
    deadline = time.monotonic() + 20
    while len(drawn) <= step and time.monotonic() < deadline:
      time.sleep(0.01)
    held[step] = len(drawn) > step  # step + 1 batches drawn while this step's loss was not ready
    return loss

  real = learner.sft_train_step

  def held_step(model, tx, state, batch, chunk=0):
    state, metrics, skipped = real(model, tx, state, batch, chunk)
    step = len(drawn)  # this step's batch is the latest drawn
    if step in (2, 3):
      metrics = dict(metrics, loss=jax.jit(lambda x: jax.pure_callback(
          functools.partial(hold, step), jax.ShapeDtypeStruct((), np.float32), x))(metrics["loss"]))
    return state, metrics, skipped

  monkeypatch.setattr(learner, "sft_train_step", held_step)
  sft_iterator = hooks.sft_iterator
  hooks.sft_iterator = lambda c, t: _Counted(sft_iterator(c, t))
  train.run(config, str(tmp_path), hooks)
  assert held == {2: True, 3: True}
  records = read_metrics(str(tmp_path))
  assert [r["step"] for r in records] == [1, 2, 3, 4]  # every step logged once, in order
  assert all(np.isfinite(r["loss"]) and r["perf/step_s"] > 0 and r["train/skipped_updates"] == 0 for r in records)
