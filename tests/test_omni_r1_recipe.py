"""The Omni-R1 recipe: its embedded default end to end (two steps of SFT and of GRPO with the frozen detail
system, through experiments/run.py), the eval command, and `:real` reading the released ReVOS layout."""
import json
import math
import os

import pytest

from experiments.configs import omni_r1
from tests import recipe_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REVOS = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "omni_r1", "revos")
COLUMNS = [label for label, _ in omni_r1.SUMMARY]
SMALL_EVAL = ["--config.eval.splits.held_out.synthetic_items=4", "--config.eval.splits.held_out.batch_size=4",
              "--config.data.synthetic_test_size=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("omni_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.grpo.train.steps=2", "--config.stages.grpo.data.batch_size=2",
           "--config.data.synthetic_items=8", "--config.train.log_every=1", "--config.train.async_checkpoints=False",
           *SMALL_EVAL]
  result = recipe_runs.experiment("run.py", "omni_r1.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_sft_then_grpo_with_the_detail_system(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "grpo"]
  for stage in summary.values():
    row = stage["held_out"]
    assert set(COLUMNS) <= set(row) and 0 <= row["hit"] <= 1 and 0 <= row["IoU"] <= 1
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS)
  # The synthetic data was written in the ReVOS layout under the workdir and read back.
  assert os.path.isfile(workdir / "data" / "train" / "meta_expressions_train_.json")
  assert os.path.isfile(workdir / "data" / "train" / "mask_dict.json")
  # The GRPO stage ran the detail system (the frozen SFT model) on every step, and counted its statuses.
  with open(workdir / "grpo" / "metrics.jsonl") as f:
    grpo = [json.loads(line) for line in f if "reward/mean" in line]
  assert [r["step"] for r in grpo] == [1, 2]
  for record in grpo:
    assert record["episode/done"] == 2 * 8 and "reward/detail_failed" in record and "reward/keyframe_hit" in record
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def test_eval_command_scores_the_export_on_the_same_split(run):
  workdir, _ = run
  result = recipe_runs.experiment("eval.py", "omni_r1.py", f"--checkpoint={workdir / 'grpo' / 'hf'}", *SMALL_EVAL)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(workdir / "grpo" / "eval_hf" / "eval.json") as f:
    scored = json.load(f)
  with open(workdir / "summary.json") as f:
    trained = json.load(f)["eval"]["grpo"]["held_out"]
  # The same checkpoint, split and detail model: the same greedy scores as the run's final evaluation.
  for label, key in omni_r1.SUMMARY:
    assert scored[f"eval/held_out/{key}"] == pytest.approx(trained[label], abs=1e-6), label


def test_real_config_reads_the_released_layout_with_the_released_hyperparameters():
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines import registry  # pylint: disable=g-import-not-at-top
  config = omni_r1.get_config(f"real,model=/ckpt/policy,detail_model=/ckpt/detail,data={REVOS}")
  assert (config.rl.beta, config.rl.kl_estimator, config.rl.num_iterations) == (0.04, "low_var_kl", 1)
  assert (config.sampling.num_samples, config.sampling.temperature, config.sampling.top_p) == (8, 1.0, 0.95)
  assert (config.optim.learning_rate, config.optim.schedule, config.optim.weight_decay) == (1e-6, "cosine", 0.01)
  assert (config.sampling.max_new_tokens, config.optim.max_grad_norm, config.optim.freeze) == (2048, 5.0,
                                                                                              ("visual/.*",))
  assert config.frozen.detail.init_from == "/ckpt/detail" and config.env.name == "omni_r1"
  data_config, spec = registry.build(config.data)
  assert isinstance(data_config, data_pipelines.DataConfig) and len(spec.source) == 2
  example = spec.to_example(spec.source[0])
  assert len(example.ground_truth["bboxs"][0]) == 6  # all 6 frames (<= 24)
  with pytest.raises(ValueError, match="options are"):
    omni_r1.get_config("real,audio=/x")
