"""The embedded STAR-R1 default end to end through experiments/run.py: SFT + GRPO with a small budget.

Two subprocess runs share a JAX compilation cache, so the second one (the resume) compiles little:
the session's (tests/conftest.py), where tests/test_colab.py's notebook (the same model, one CPU
device) has left its compiled programs when the whole suite runs. The runs keep the recipe's batch
sizes, as the notebook does, so that its SFT and GRPO programs are among those.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from experiments.configs import star_r1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("in_view", "cross_view")
COLUMNS = [label for label, _ in star_r1.SUMMARY]


def _env(cache_dir):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device, as on a user's machine
  return env


def _run(workdir, cache_dir, *overrides):
  small = ["--config.stages.sft.train.steps=3", "--config.train.checkpoint_every=1",
           "--config.train.log_every=1", "--config.train.async_checkpoints=False"]
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "run.py"),
                         "--config=" + os.path.join(ROOT, "experiments", "configs", "star_r1.py"),
                         f"--workdir={workdir}", *_small_eval(), *small, *overrides],
                        cwd=ROOT, env=_env(cache_dir), capture_output=True, text=True, timeout=300)


def _small_eval():
  return [f"--config.eval.splits.{split}.{key}=4" for split in SPLITS for key in ("test_size", "batch_size")]


def _metrics(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _steps(records, key):
  return [r["step"] for r in records if key in r]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("star_r1")
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp_path_factory.mktemp("jax_cache")
  result = _run(workdir, cache, "--config.stages.grpo.train.steps=2")
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, cache, result


def test_default_recipe_trains_evaluates_and_exports(first_run):
  workdir, _, result = first_run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)
  assert list(summary["eval"]) == ["sft", "grpo"]
  for stage in ("sft", "grpo"):
    assert sorted(summary["eval"][stage]) == sorted(SPLITS)
    for split in SPLITS:
      row = summary["eval"][stage][split]
      assert sorted(row) == sorted(COLUMNS)
      assert all(math.isfinite(v) for v in row.values()), row
      assert 0 <= row["format"] <= 1 and 0 <= row["TAcc"] <= 1 and row["NDiff"] >= 0
  # The printed table names every column and both stages' rows.
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("in_view") == 2 and table.count("cross_view") == 2

  sft = _metrics(workdir / "sft" / "metrics.jsonl")
  grpo = _metrics(workdir / "grpo" / "metrics.jsonl")
  assert _steps(sft, "sft/nll") == [1, 2, 3]
  assert _steps(grpo, "reward/mean") == [1, 2]
  for record in sft + grpo:
    assert all(math.isfinite(v) for k, v in record.items() if isinstance(v, float)), record
  for stage, last in (("sft", 3), ("grpo", 2)):
    assert os.path.isdir(workdir / stage / "checkpoints" / str(last))
  with open(workdir / "grpo" / "config.json") as f:
    assert json.load(f)["init_from"] == str(workdir / "sft" / "hf")  # GRPO starts from the SFT export
  export = workdir / "grpo" / "hf"
  assert summary["export"] == str(export)
  assert os.path.isfile(export / "config.json") and os.path.isfile(export / "tokenizer.json")
  assert any(name.endswith(".safetensors") for name in os.listdir(export))
  assert str(workdir / "grpo" / "curves.png") in summary["curves"]


def test_rerun_skips_finished_stages_and_resumes_an_unfinished_one(first_run):
  workdir, cache, _ = first_run
  sft_before = (workdir / "sft" / "metrics.jsonl").read_text()
  os.remove(workdir / "grpo" / "DONE.json")  # as if GRPO had been stopped after its last checkpoint
  result = _run(workdir, cache, "--config.stages.grpo.train.steps=3")
  assert result.returncode == 0, result.stderr[-5000:]
  assert "stage sft already finished" in result.stderr
  assert "resumed stage grpo at step 2" in result.stderr
  assert (workdir / "sft" / "metrics.jsonl").read_text() == sft_before
  grpo = _metrics(workdir / "grpo" / "metrics.jsonl")
  assert _steps(grpo, "reward/mean") == [1, 2, 3]  # continued, nothing redone
  assert os.path.isdir(workdir / "grpo" / "checkpoints" / "3")
  with open(workdir / "summary.json") as f:
    assert sorted(json.load(f)["eval"]["grpo"]) == sorted(SPLITS)


# The HF export and the r1jax checkpoints folder hold the same final weights.
@pytest.mark.parametrize("source", ["hf", "checkpoints"])
def test_eval_command_reproduces_the_final_held_out_figures(first_run, tmp_path, source):
  workdir, cache, _ = first_run
  result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "eval.py"),
                           "--config=" + os.path.join(ROOT, "experiments", "configs", "star_r1.py"),
                           f"--checkpoint={workdir / 'grpo' / source}", f"--output_dir={tmp_path}", *_small_eval()],
                          cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(tmp_path / "eval.json") as f:
    metrics = json.load(f)
  with open(workdir / "summary.json") as f:
    final = json.load(f)["eval"]["grpo"]
  for split in SPLITS:  # Same weights, splits and greedy decoding as the run's own evaluation.
    for label, component in star_r1.SUMMARY:
      assert metrics[f"eval/{split}/{component}"] == pytest.approx(final[split][label], abs=1e-6), (split, label)
  assert "in_view" in result.stdout and "TAcc" in result.stdout
