"""The SATORI-R1 recipe: its embedded default end to end (two steps of SFT and of GRPO, through
experiments/run.py), the eval command on its export, and `:real` reading VQA-Verify records with the
paper's settings."""
import json
import math
import os

import numpy as np
import pytest

from experiments.configs import satori_r1
from tests import recipe_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "satori_r1")
COLUMNS = [label for label, _ in satori_r1.SUMMARY]
SMALL_EVAL = ["--config.eval.splits.held_out.synthetic_items=4", "--config.eval.splits.held_out.batch_size=4",
              "--config.data.synthetic_test_size=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("satori_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.grpo.train.steps=2", "--config.stages.grpo.data.batch_size=2",
           "--config.data.synthetic_items=12", "--config.train.log_every=1",
           "--config.train.async_checkpoints=False", *SMALL_EVAL]
  result = recipe_runs.experiment("run.py", "satori_r1.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_sft_then_grpo_and_prints_the_paper_metrics(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "grpo"]
  for stage in summary.values():
    row = stage["held_out"]
    assert set(COLUMNS) <= set(row)
    assert all(0 <= row[c] <= (4 if c == "reward" else 1) for c in COLUMNS)
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("held_out") == 2
  # The synthetic data was written in VQA-Verify's layout under the workdir and read back.
  with open(workdir / "data" / "train.jsonl") as f:
    record = json.loads(f.readline())
  assert set(record) >= {"messages", "images", "image_caption", "bboxs", "width", "height", "possible_answers"}
  assert os.path.isfile(workdir / "data" / record["images"][0])
  with open(workdir / "grpo" / "metrics.jsonl") as f:
    grpo = [r for r in map(json.loads, f) if "reward/mean" in r]
  assert [r["step"] for r in grpo] == [1, 2]
  for record in grpo:
    assert 0 <= record["reward/mean"] <= 4 and all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def test_eval_command_scores_the_export_on_the_held_out_split(run):
  workdir, _ = run
  result = recipe_runs.experiment("eval.py", "satori_r1.py", f"--checkpoint={workdir / 'grpo' / 'hf'}", *SMALL_EVAL)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(workdir / "grpo" / "eval_hf" / "eval.json") as f:
    scored = json.load(f)
  with open(workdir / "summary.json") as f:
    trained = json.load(f)["eval"]["grpo"]["held_out"]
  for label, key in satori_r1.SUMMARY:  # the same greedy completions as the run's own final evaluation
    assert scored[f"eval/held_out/{key}"] == pytest.approx(trained[label]), label
  assert all(c in result.stdout for c in COLUMNS)


def test_real_config_reads_vqa_verify_with_the_paper_s_settings(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import satori_r1_synthetic  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  records = os.path.join(FIXTURES, "records.jsonl")
  config = satori_r1.get_config(f"real,model=/ckpt/qwen,data={records},image_dir={FIXTURES}")
  assert config.init_from == "/ckpt/qwen" and config.stage == "grpo" and config.reward.name == "satori"
  assert (config.sampling.num_samples, config.sampling.temperature, config.sampling.top_p,
          config.sampling.top_k) == (16, 1.0, 0.9, 50)
  assert (config.rl.beta, config.rl.num_iterations, config.optim.learning_rate) == (0.001, 1, 1e-6)
  assert config.sampling.max_new_tokens == 512 and config.data.max_seq_length == 2048
  assert (config.data.image.min_pixels, config.data.image.max_pixels) == (200704, 401408)
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), satori_r1_synthetic.text_corpus(num_items=16), vocab_size=600))
  config.data.update(dict(batch_size=2, shuffle=False, num_epochs=1))
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  text = tokenizer.decode(batch["input_ids"][0])
  assert "First, generate a brief image caption" in text and "What is the man flying?" in text
  assert batch["ground_truth"][0]["possible_answers"] == ["kite", "a kite"]
  assert [c["resized_image_sizes"] for c in batch["reward_context"]] == [[(392, 532)], [(392, 532)]]
  np.testing.assert_array_equal(batch["image_grid_thw"], [[1, 28, 38], [1, 28, 38]])
  with pytest.raises(ValueError, match="options are model=, data=, image_dir=, eval_data="):
    satori_r1.get_config("real,images=/x")
