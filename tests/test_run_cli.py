"""The command lines of experiments/run.py and experiments/eval.py: unknown config keys, eval's output folder."""
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments.cli import eval_output_dir, missing_key_message

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, *overrides):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "run.py"),
                         "--config=" + os.path.join(ROOT, "experiments", "configs", "letters_grpo.py"),
                         f"--workdir={workdir}", *overrides],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,named,suggested", [
    ("--config.nope=1", "'nope'", "valid keys at the top level: data, env, eval"),
    ("--config.train.stepz=3", "'train.stepz'", "did you mean 'train.steps'?"),
])
def test_unknown_override_is_one_line_naming_the_key_and_exit_code_2(tmp_path, override, named, suggested):
  result = _run(tmp_path / "w", override)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert f"unknown config key {named}" in lines[-1] and suggested in lines[-1] and override in lines[-1], lines[-3:]
  assert not os.path.exists(tmp_path / "w")  # stopped before anything ran


def test_missing_key_message_walks_sections_and_leaves():
  config = ml_collections.ConfigDict({"train": {"steps": 3, "log_every": 1}, "mesh": {"shape": [1, 2]}})
  assert missing_key_message(config, ["train", "steps"]) is None
  assert missing_key_message(config, ["mesh", "shape", "1"]) is None
  assert missing_key_message(config, ["train", "log_evry"]) == (
      "unknown config key 'train.log_evry'; did you mean 'train.log_every'?")
  assert missing_key_message(config, ["train", "steps", "x"]) == (
      "config key 'train.steps' holds a value of type int, not a section: it has no key 'x'")


def test_eval_writes_next_to_the_checkpoint_not_into_it():
  assert eval_output_dir("/w/grpo/hf/") == "/w/grpo/eval_hf"
  assert eval_output_dir("/w/grpo/checkpoints") == "/w/grpo/eval_checkpoints"
