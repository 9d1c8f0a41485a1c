"""The Embodied-R1 recipe: its embedded default end to end (two steps of SFT, of stage-1 GRPO and of stage-2 GRPO,
through experiments/run.py), the eval command on the export, and `:real` reading the released Parquet folders
with the paper's settings."""
import json
import math
import os

import pytest

from experiments.configs import embodied_r1
from tests import recipe_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data_pipelines", "fixtures", "embodied_r1")
COLUMNS = [label for label, _ in embodied_r1.SUMMARY]
SPLITS = [name for name, _ in embodied_r1.HELD_OUT]
# Small held-out splits and short completions keep the run to seconds.
SMALL_EVAL = [f"--config.eval.splits.{split}.{key}=4" for split in SPLITS for key in ("test_size", "batch_size")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("embodied_r1")
  small = ["--config.stages.sft.train.steps=2", "--config.stages.sft.data.batch_size=4",
           "--config.stages.stage1.train.steps=2", "--config.stages.stage1.data.batch_size=2",
           "--config.stages.stage2.train.steps=2", "--config.stages.stage2.data.batch_size=2",
           "--config.sampling.max_new_tokens=16", "--config.train.log_every=1",
           "--config.train.async_checkpoints=False", *SMALL_EVAL]
  result = recipe_runs.experiment("run.py", "embodied_r1.py", f"--workdir={workdir}", *small)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, result


def test_embedded_default_runs_sft_then_both_grpo_stages_and_prints_the_table(run):
  workdir, result = run
  with open(workdir / "summary.json") as f:
    summary = json.load(f)["eval"]
  assert list(summary) == ["sft", "stage1", "stage2"]
  for stage in summary.values():
    assert sorted(stage) == sorted(SPLITS)
    assert {"format", "acc", "reward"} <= set(stage["qa"]) and "in_region" not in stage["qa"]
    assert 0 <= stage["point"]["in_region"] <= 1 and 0 <= stage["free"]["in_region"] <= 1
    # Pixel metrics are always defined: an unparsed answer counts as the 84x84 image's diagonal.
    assert 0 <= stage["free"]["nearest"] <= math.hypot(84, 84) + 1e-3
    assert 0 <= stage["trace"]["rmse"] <= math.hypot(84, 84) + 1e-3
  table = result.stdout[result.stdout.index("stage "):]
  assert all(c in table for c in COLUMNS) and table.count("trace") == 3
  for stage in ("stage1", "stage2"):
    grpo = [r for r in recipe_runs.read_jsonl(workdir / stage / "metrics.jsonl") if "reward/mean" in r]
    assert [r["step"] for r in grpo] == [1, 2]
    assert all(math.isfinite(v) for r in grpo for v in r.values() if isinstance(v, float))
  # Stage 2 starts from stage 1's export (the curriculum), stage 1 from SFT's.
  log = result.stderr
  assert f"stage stage1: building the policy (from {workdir / 'sft' / 'hf'})" in log
  assert f"stage stage2: building the policy (from {workdir / 'stage1' / 'hf'})" in log


def test_eval_command_scores_the_export_on_the_same_splits(run):
  workdir, _ = run
  result = recipe_runs.experiment("eval.py", "embodied_r1.py", f"--checkpoint={workdir / 'stage2' / 'hf'}",
                                  "--config.sampling.max_new_tokens=16", "--splits=point,trace", *SMALL_EVAL)
  assert result.returncode == 0, result.stderr[-5000:]
  with open(workdir / "stage2" / "eval_hf" / "eval.json") as f:
    scored = json.load(f)
  with open(workdir / "summary.json") as f:
    trained = json.load(f)["eval"]["stage2"]
  assert not any(key.startswith(("eval/qa/", "eval/free/")) for key in scored)  # --splits picks splits
  for split in ("point", "trace"):  # the same greedy answers as the run's own final evaluation
    for label, component in embodied_r1.SUMMARY:
      if label in trained[split]:
        assert scored[f"eval/{split}/{component}"] == pytest.approx(trained[split][label]), (split, label)


def test_real_config_reads_the_released_parquet_folders_with_the_paper_s_settings(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import embodied_r1_synthetic  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), embodied_r1_synthetic.text_corpus(num_examples=16), vocab_size=400))
  config = embodied_r1.get_config(f"real,model=/ckpt/qwen,data={FIXTURES},image_dir=/images")
  assert config.init_from == "/ckpt/qwen" and config.stage_order == ("stage1", "stage2")
  assert (config.sampling.num_samples, config.sampling.temperature, config.sampling.max_new_tokens) == (8, 1.0, 2048)
  rl = config.rl
  assert (rl.beta, rl.kl_estimator, rl.epsilon_low, rl.epsilon_high, rl.clip_ratio_c, rl.loss_agg_mode) == (
      1e-2, "low_var_kl", 0.2, 0.3, 3.0, "token-mean")
  assert (config.optim.learning_rate, config.optim.weight_decay) == (1e-6, 1e-2)
  assert (config.data.image.min_pixels, config.data.image.max_pixels) == (262144, 1638400)
  assert config.data.media_root == "/images" and "init_from" not in config.stages.stage2  # stage 2 from stage 1
  types = {}
  for stage in config.stage_order:
    data = config.data.copy_and_resolve_references()
    data.update(config.stages[stage].data.to_dict())
    data.update(dict(batch_size=2, shuffle=False, num_epochs=1, max_prompt_length=4096, read_threads=1))
    iterator = data_pipelines.make_prompt_iterator(dict(data=data), tokenizer)
    try:
      types[stage] = {ctx["task_type"] for batch in iterator for ctx in batch["reward_context"]}
    finally:
      iterator.close()
  assert types["stage1"] == {"spatial_qa", "general_qa"}
  assert types["stage2"] == {"point_ref", "fsd_free_point", "fsd_visual_trace", "point_rec", "grounding_rec"}
  assert all(os.path.isfile(split.path) for split in config.eval.splits.values())
  with pytest.raises(ValueError, match="options are model=, data=, image_dir="):
    embodied_r1.get_config("real,images=/x")
