"""The InfiGUI-R1 recipe: its embedded default end to end (two steps of SFT and of RLOO through
experiments/run.py, the start-up note that no sub-goal judge is set), and `:real` reading
AndroidControl TFRecords and ScreenSpot with the paper's settings."""
import json
import math
import os

import numpy as np
import pytest

from experiments.configs import infigui_r1
from tests import recipe_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "infigui_r1")
COLUMNS = [label for label, _ in infigui_r1.SUMMARY]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("infigui_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.rloo.train.steps=2", "--config.stages.rloo.data.batch_size=2",
           "--config.data.synthetic_items=6", "--config.train.log_every=1",
           "--config.train.async_checkpoints=False", "--config.data.synthetic_test_size=3",
           "--config.eval.splits.held_out.synthetic_items=3", "--config.eval.splits.held_out.batch_size=4",
           # The same eval batch size for both splits: they share the sampler's compiled programs (a batch
           # of 2 compiled two more prefills and decodes, ~9 s of CPU, for the same code path).
           "--config.eval.splits.held_out_clicks.synthetic_items=3",
           "--config.eval.splits.held_out_clicks.batch_size=4"]
  result = recipe_runs.experiment("run.py", "infigui_r1.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_sft_then_rloo_and_prints_the_held_out_table(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "rloo"]
  for stage in summary.values():
    for split in ("held_out", "held_out_clicks"):
      assert all(0 <= stage[split][c] <= 1 for c in COLUMNS)
  table = result.stdout[result.stdout.index("stage"):]
  assert all(c in table for c in COLUMNS) and table.count("held_out_clicks") == 2
  # No sub-goal judge in the default: start-up says its term is 0.
  assert "reward 'infigui': no 'subgoal_judge' judge" in result.stderr
  with open(workdir / "rloo" / "config.json") as f:
    assert json.load(f)["rl"]["advantage"] == "rloo"
  with open(workdir / "rloo" / "metrics.jsonl") as f:
    rloo = [r for r in map(json.loads, f) if "reward/mean" in r]
  assert [r["step"] for r in rloo] == [1, 2]
  for record in rloo:
    assert 0 <= record["reward/mean"] <= 1 and record["reward/subgoal"] == 0
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
  # The synthetic world was written in AndroidControl's episode fields and read back.
  with open(workdir / "data" / "train.jsonl") as f:
    episode = json.loads(f.readline())
  assert len(episode["screenshots"]) == len(episode["actions"]) + 1
  assert os.path.isfile(workdir / "data" / episode["screenshots"][0])


def test_real_config_reads_androidcontrol_and_screenspot_with_the_paper_s_settings(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import infigui_r1_synthetic  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  android_control, screenspot = os.path.join(FIXTURES, "android_control"), os.path.join(FIXTURES, "screenspot")
  config = infigui_r1.get_config(f"real,model=/ckpt/qwen,androidcontrol={android_control},screenspot={screenspot}")
  from r1jax.train import stage_configs  # pylint: disable=g-import-not-at-top
  stages = dict(stage_configs(config))
  assert list(stages) == ["sft", "rloo"] and config.init_from == "/ckpt/qwen" and config.reward.name == "infigui"
  assert stages["sft"].stage == "sft" and stages["sft"].data.sft_targets == "ground_truth"
  rloo = stages["rloo"]
  assert (rloo.stage, rloo.rl.advantage, rloo.sampling.num_samples, rloo.optim.learning_rate) == ("grpo", "rloo", 16, 1e-6)
  assert rloo.data.batch_size * rloo.sampling.num_samples == 256
  assert set(config.eval.splits) == {"androidcontrol_test", "screenspot"}
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), infigui_r1_synthetic.text_corpus(num_episodes=20), vocab_size=700))
  config.data.update(dict(batch_size=2, shuffle=False, num_epochs=1, read_threads=1))
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  assert "mobile_use" in tokenizer.decode(batch["input_ids"][0])
  # Episode 1000 (train split): open the Clock, tap the alarm (rows in either order).
  assert sorted((t["episode_id"], t["action"]) for t in batch["ground_truth"]) == [(1000, "click"), (1000, "open")]
  np.testing.assert_array_equal(batch["image_grid_thw"], [[1, 12, 6], [1, 12, 6]])
  sft = stages["sft"]
  sft.data.update(dict(batch_size=4, shuffle=False, num_epochs=1, read_threads=1))
  iterator = data_pipelines.make_sft_iterator(sft, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  targets = [tokenizer.decode(np.asarray(ids)[np.asarray(mask).astype(bool)])
             for ids, mask in zip(batch["input_ids"], batch["loss_mask"])]
  # Built from the actions, the step instruction as the sub-goal (AndroidControl has no reasoning).
  assert any("<step>Tap the orange 7:00 alarm</step>" in t and '"coordinate": [42, 154]' in t for t in targets), targets
  assert any("<step>Open the Clock app</step>" in t and '"text": "Clock"' in t for t in targets), targets
  screens = config.copy_and_resolve_references()
  screens.data.update(dict(config.eval.splits.screenspot.to_dict(), batch_size=2))
  iterator = data_pipelines.make_prompt_iterator(screens, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  assert [t["task_type"] for t in batch["ground_truth"]] == ["point", "point"]
  with pytest.raises(ValueError, match="options are model=, androidcontrol=, screenspot="):
    infigui_r1.get_config("real,data=/x")
