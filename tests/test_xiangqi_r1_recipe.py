"""The Xiangqi-R1 recipe: its embedded default end to end (two steps of each of the three stages, through
experiments/run.py), the eval command on its export, and `:real` reading position records."""
import json
import os

import pytest

from experiments.configs import xiangqi_r1
from tests import recipe_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "xiangqi_r1")
COLUMNS = [label for label, _ in xiangqi_r1.SUMMARY]
SMALL = ["--config.data.synthetic_sparse=24", "--config.data.synthetic_test_size=8",
         "--config.eval.splits.held_out.batch_size=8", "--config.sampling.max_new_tokens=12",
         "--config.model.hf_config.num_hidden_layers=1"]


def _run(script, *flags):
  return recipe_runs.experiment(script, "xiangqi_r1.py", *flags)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("xiangqi_r1")
  small = SMALL + [f"--config.stages.{stage}.train.steps=2" for stage in xiangqi_r1.STAGES]
  small += [f"--config.stages.{stage}.data.batch_size=4" for stage in ("legal_sft", "strategy_sft")]
  small += ["--config.stages.grpo.data.batch_size=2", "--config.train.log_every=1",
            "--config.train.async_checkpoints=False"]
  result = _run("run.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_three_chained_stages_and_prints_the_table(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == list(xiangqi_r1.STAGES)
  for stage in summary.values():
    row = stage["held_out"]
    assert set(COLUMNS) <= set(row)
    assert all(0 <= row[c] <= 1 for c in ("legal", "top1", "analysis", "format", "reward"))
    assert 0 <= row["cp_loss"] <= 1000
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("held_out") == 3
  # The engine (or the fallback) was named at start-up, the data written in the documented format.
  assert "xiangqi_r1: writing positions to" in result.stderr and "xiangqi judge:" in result.stderr
  with open(workdir / "data" / "train.jsonl") as f:
    record = json.loads(f.readline())
  assert {"fen", "pieces", "best_move", "score", "pv", "evaluation", "source"} <= set(record)
  # Each stage started from the previous stage's export.
  log = result.stderr
  assert f"stage strategy_sft: building the policy (from {workdir}/legal_sft/hf)" in log
  assert f"stage grpo: building the policy (from {workdir}/strategy_sft/hf)" in log
  with open(workdir / "grpo" / "metrics.jsonl") as f:
    grpo = [json.loads(line) for line in f if "reward/mean" in line]
  assert [r["step"] for r in grpo] == [1, 2]


def test_eval_command_scores_the_export_like_the_run(run):
  workdir, _ = run
  result = _run("eval.py", f"--checkpoint={workdir / 'grpo' / 'hf'}", *SMALL)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(workdir / "grpo" / "eval_hf" / "eval.json") as f:
    scored = json.load(f)
  with open(workdir / "summary.json") as f:
    trained = json.load(f)["eval"]["grpo"]["held_out"]
  for label, component in xiangqi_r1.SUMMARY:
    assert scored[f"eval/held_out/{component}"] == pytest.approx(trained[label]), label


def test_real_config_reads_position_records_for_every_stage(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  config = xiangqi_r1.get_config(f"real,model=/ckpt/Qwen2.5-7B-Instruct,data={FIXTURES}")
  assert config.init_from == "/ckpt/Qwen2.5-7B-Instruct" and config.stage_order == xiangqi_r1.STAGES
  assert config.stages.grpo.optim.learning_rate == 1e-6 and config.stages.legal_sft.optim.learning_rate == 1e-5
  assert config.eval.splits.held_out.path == f"{FIXTURES}/test.jsonl"
  with open(os.path.join(FIXTURES, "train.jsonl")) as f:
    corpus = f.read().splitlines()
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(str(tmp_path / "tok"), corpus, vocab_size=600))
  from r1jax.train import stage_configs  # pylint: disable=g-import-not-at-top
  for name, stage in stage_configs(config):
    stage.data.update(dict(batch_size=2, shuffle=False, num_epochs=1))
    make = data_pipelines.make_prompt_iterator if name == "grpo" else data_pipelines.make_sft_iterator
    iterator = make(stage, tokenizer)
    try:
      batch = next(iterator)
    finally:
      iterator.close()
    text = tokenizer.decode(batch["input_ids"][0])
    assert "Xiangqi position (FEN):" in text and "Pieces (Red uppercase" in text, name
  with pytest.raises(ValueError, match="options are model=, data="):
    xiangqi_r1.get_config("real,modle=/x")
