"""The LOVE-R1 recipe: its embedded default end to end (two steps of SFT and of two-turn GRPO, through
experiments/run.py), and `:real` reading the released record layout."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs import love_r1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "love_r1")
COLUMNS = [label for label, _ in love_r1.SUMMARY]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("love_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.grpo.train.steps=2", "--config.stages.grpo.data.batch_size=2",
           "--config.data.synthetic_items=12", "--config.data.synthetic_test_size=4",
           "--config.train.log_every=1", "--config.train.async_checkpoints=False"]
  small += [f"--config.eval.splits.{split}.{key}=4" for split in ("held_out", "no_zoom")
            for key in ("synthetic_items", "batch_size")]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "run.py"),
                           "--config=" + os.path.join(ROOT, "experiments", "configs", "love_r1.py"),
                           f"--workdir={workdir}", *small], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_embedded_default_runs_sft_then_two_turn_grpo_and_prints_the_table(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "grpo"]
  for stage in summary.values():
    assert sorted(stage) == ["held_out", "no_zoom"]
    for row in stage.values():
      assert set(COLUMNS) - {"zoom_iou"} <= set(row)  # zoom_iou only when an episode zoomed
      assert all(0 <= row[c] <= (2 if c == "reward" else 1) for c in ("accuracy", "format", "zoom", "reward"))
  assert summary["grpo"]["no_zoom"]["zoom"] == 0  # the forced answer prefix never zooms
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("no_zoom") == 2
  # The synthetic data was written in the released layout under the workdir, and read back.
  assert os.path.isfile(workdir / "data" / "train.json") and os.path.isfile(workdir / "data" / "train_cot.json")
  grpo = [r for r in _records(workdir / "grpo" / "metrics.jsonl") if "reward/mean" in r]
  assert [r["step"] for r in grpo] == [1, 2]
  for record in grpo:  # every episode ended with a status, and the step's turns were counted
    ended = sum(record[f"episode/{s}"] for s in ("done", "max_turns", "context_limit", "env_error", "timeout"))
    assert ended == 2 * 8 and 1 <= record["episode/turns"] <= 2
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def test_eval_command_scores_the_export_on_the_same_splits(run):
  workdir, _ = run
  small = [f"--config.eval.splits.{split}.{key}=4" for split in ("held_out", "no_zoom")
           for key in ("synthetic_items", "batch_size")] + ["--config.data.synthetic_test_size=4"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "eval.py"),
                           "--config=" + os.path.join(ROOT, "experiments", "configs", "love_r1.py"),
                           f"--checkpoint={workdir / 'grpo' / 'hf'}", *small], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(workdir / "grpo" / "eval_hf" / "eval.json") as f:
    scored = json.load(f)
  with open(workdir / "summary.json") as f:
    trained = json.load(f)["eval"]["grpo"]
  for split in ("held_out", "no_zoom"):  # the same greedy episodes as the run's own final evaluation
    for column in ("accuracy", "format", "zoom"):
      assert scored[f"eval/{split}/{column}"] == pytest.approx(trained[split][column]), (split, column)


def test_real_config_reads_the_released_records_with_the_paper_s_settings(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import love_r1_synthetic  # pylint: disable=g-import-not-at-top
  config = love_r1.get_config(f"real,model=/ckpt/qwen,data={FIXTURES}/records.json,video_dir={FIXTURES},"
                              f"sft_data={FIXTURES}/cot.json")
  assert config.init_from == "/ckpt/qwen" and config.stage_order == ("sft", "grpo")
  assert (config.sampling.num_samples, config.rl.num_iterations, config.rl.beta) == (8, 2, 0.0)
  assert (config.optim.learning_rate, config.optim.schedule, config.optim.weight_decay) == (1e-6, "cosine", 0.01)
  assert config.stages.sft.optim.learning_rate == 1e-5 and config.stages.sft.data.num_epochs == 2
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), love_r1_synthetic.text_corpus(num_items=16), vocab_size=600))
  config.data.update(dict(batch_size=2, shuffle=False, num_epochs=1, overview_max_frames=8,
                          overview_max_pixels=28 * 28))
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  text = tokenizer.decode(batch["input_ids"][0])
  assert "The red numbers on each frame represent the timestamp" in text and "Full video [0, " in text
  assert batch["ground_truth"][0]["answer"] in "ABCD" and batch["reward_context"][0]["video"].endswith(".mp4")
  assert np.asarray(batch["video_grid_thw"]).shape[0] >= 1
  with pytest.raises(ValueError, match="options are model=, data="):
    love_r1.get_config("real,modle=/x")
