"""The training loop on the letters sanity task: learning, exact resume, SFT -> GRPO chaining."""
import json
import os

import flax
import jax
import ml_collections
import numpy as np
import pytest

from experiments import hooks as hooks_lib
from experiments.configs import letters_grpo
from r1jax import checkpoint, models, train
from r1jax.checkpoint import Checkpointer
from r1jax.train.writer import read_metrics


def _config(workdir, rl=None, **train_overrides):
  config = letters_grpo.get_config()
  config.train.update(dict(progress_bar=False, async_checkpoints=False, export_hf=False, **train_overrides))
  config.rl.update(rl or {})
  hooks_lib.prepare(config, str(workdir))
  return config


def test_grpo_raises_the_reward(tmp_path):
  config = _config(tmp_path, steps=40)
  train.run(config, str(tmp_path), hooks_lib.data_hooks(config))
  rewards = [r["reward/mean"] for r in read_metrics(str(tmp_path)) if "reward/mean" in r]
  assert len(rewards) == 40 and np.all(np.isfinite(rewards))
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
  model = models.build_model(models.config_from_hf(config.model.hf_config.to_dict()))
  step = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False).latest_step()
  return step, checkpoint.restore_params(os.path.join(workdir, "checkpoints"),
                                         flax.linen.unbox(models.abstract_params(model)))


# The second case keeps a KL reference and recomputes old log-probs (2 passes x 2 mini-batches):
# the reference must stay the stage's initial policy across updates and a resume.
@pytest.mark.parametrize("rl", [{}, {"beta": 0.05, "num_iterations": 2, "mini_batches": 2}])
def test_resume_is_exact(tmp_path, rl):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  config = _config(straight, rl, steps=4, checkpoint_every=1)
  train.run(config, str(straight), hooks_lib.data_hooks(config))

  config = _config(resumed, rl, steps=4, checkpoint_every=1)
  hooks = hooks_lib.data_hooks(config)
  preempted = train.DataHooks(prompt_iterator=lambda c, t: _StopAfter(hooks.prompt_iterator(c, t), 2))
  with pytest.raises(KeyboardInterrupt):
    train.run(config, str(resumed), preempted)
  assert Checkpointer(str(resumed / "checkpoints"), async_save=False).latest_step() == 2
  train.run(config, str(resumed), hooks)

  def by_step(workdir):
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_metrics(str(workdir))}

  assert by_step(straight) == by_step(resumed)
  step_a, params_a = _final_params(str(straight), config)
  step_b, params_b = _final_params(str(resumed), config)
  assert step_a == step_b == 4
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_a, params_b)


def test_sft_lowers_loss_and_its_export_starts_grpo(tmp_path):
  config = _config(tmp_path)
  config.stages = ml_collections.ConfigDict({
      "sft": {"stage": "sft", "optim": {"learning_rate": 3e-3, "schedule": "constant"}, "data": {"batch_size": 8},
              "train": {"steps": 12, "export_hf": True}},
      "grpo": {"train": {"steps": 2}},
  })
  config.stage_order = ("sft", "grpo")
  train.run(config, str(tmp_path), hooks_lib.data_hooks(config))
  nll = [r["sft/nll"] for r in read_metrics(str(tmp_path / "sft"))]
  assert len(nll) == 12 and nll[-1] < 0.75 * nll[0]
  with open(tmp_path / "grpo" / "config.json") as f:
    assert json.load(f)["init_from"] == str(tmp_path / "sft" / "hf")
  assert len(read_metrics(str(tmp_path / "grpo"))) == 2
