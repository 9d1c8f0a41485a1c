"""The 3D-R1 recipe: its embedded default end to end (two steps of SFT and of GRPO through
experiments/run.py, the frozen embedder scoring every rollout), and `:real` reading ScanQA-style
records over point clouds with the released settings."""
import json
import math
import os

import pytest

from experiments.configs import three_d_r1
from tests import recipe_runs

COLUMNS = [label for label, _ in three_d_r1.SUMMARY]
SMALL_EVAL = ["--config.eval.splits.held_out.synthetic_items=4", "--config.eval.splits.held_out.batch_size=4",
              "--config.eval.splits.fixed_views.synthetic_items=4", "--config.eval.splits.fixed_views.batch_size=4",
              "--config.data.synthetic_test_size=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("three_d_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.grpo.train.steps=2", "--config.stages.grpo.data.batch_size=2",
           "--config.data.synthetic_items=12", "--config.train.log_every=1",
           "--config.train.async_checkpoints=False", *SMALL_EVAL]
  result = recipe_runs.experiment("run.py", "three_d_r1.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_sft_then_grpo_and_prints_the_table(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "grpo"]
  for stage in summary.values():
    assert set(stage) == {"held_out", "fixed_views"}  # the view selector against the fixed views
    for row in stage.values():
      assert 0 <= row["format"] <= 1 and 0 <= row["IoU_3d"] <= 1 and 0 <= row["accuracy"] <= 1
      assert -1 <= row["semantic"] <= 1 and -0.3 <= row["reward"] <= 1
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("held_out") == 2 and table.count("fixed_views") == 2
  # ScanQA-style records with Scene-30K CoT and .npy point clouds were written and read back.
  with open(workdir / "data" / "train.json") as f:
    record = json.load(f)[0]
  assert set(record) >= {"scene_id", "question", "answers", "object_names", "boxes", "cot"}
  assert os.path.isfile(workdir / "data" / "scenes" / f"{record['scene_id']}.npy")
  with open(workdir / "grpo" / "metrics.jsonl") as f:
    grpo = [r for r in map(json.loads, f) if "reward/mean" in r]
  assert [r["step"] for r in grpo] == [1, 2]
  for record in grpo:
    # The frozen embedder judged every sample of the rollout in one batch: 2 prompts x 8 samples.
    assert record["judge/embedder/ok"] + record["judge/embedder/missing"] == 16
    assert record["judge/embedder/error"] == record["judge/embedder/timeout"] == 0
    assert -0.3 <= record["reward/mean"] <= 1 and all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def test_real_config_reads_scanqa_records_over_point_clouds_with_the_released_settings(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import three_d_r1_synthetic  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  out = three_d_r1_synthetic.write_split(str(tmp_path / "data"), "test", 2, test_size=2)
  config = three_d_r1.get_config(f"real,model=/ckpt/qwen,data={out['path']},scenes={out['scene_dir']}")
  assert config.init_from == "/ckpt/qwen" and config.stage_order == ("sft", "grpo")
  assert (config.sampling.num_samples, config.rl.beta, config.optim.learning_rate) == (8, 0.1, 1e-5)
  assert config.optim.schedule == "cosine" and config.optim.learning_rate * config.optim.end_lr_ratio == pytest.approx(1e-7)
  assert config.stages.sft.data.path == out["path"] and config.reward.name == "three_d_r1"
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), three_d_r1_synthetic.text_corpus(num_items=16), vocab_size=600))
  config.data.update(dict(batch_size=2, shuffle=False, num_epochs=1, view_image_size=56, max_prompt_length=128,
                          max_seq_length=256))
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  assert three_d_r1_synthetic.QUESTION in tokenizer.decode(batch["input_ids"][0])
  truth = batch["ground_truth"][0]
  assert truth["answer"] and len(truth["boxes"]) == 1 and len(truth["view_names"]) == 4
  with pytest.raises(ValueError, match="options are model=, data=, scenes=, sft_data=, eval_data="):
    three_d_r1.get_config("real,images=/x")
