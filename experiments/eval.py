"""Evaluates a checkpoint on a recipe's held-out splits: `python experiments/eval.py --config=<recipe>.py[:arg]
--checkpoint=DIR [--splits=a,b]
[--output_dir=DIR]`.

    python experiments/eval.py --config=experiments/configs/star_r1.py --checkpoint=/tmp/star_r1/grpo/hf

--checkpoint is a stage's HF export (`<workdir>/<stage>/hf`: weights, config.json and the tokenizer) or an
r1jax `checkpoints` folder (the model then comes from the recipe's config and the tokenizer from
`config.tokenizer`; a `build:` tokenizer is rebuilt, deterministically, under --output_dir).
Decoding is greedy with the recipe's last stage's settings (`sampling.max_new_tokens`, stop tokens) and
the splits are `config.eval.splits` (override any with `--config.eval.splits.<name>.<key>=value`).
Prints the recipe's summary columns per split (for STAR-R1: format rate, TAcc, NDiff, mean reward) and
writes eval.json and eval_samples.json to --output_dir, by default `eval_<checkpoint folder name>` next to
the checkpoint (`/tmp/star_r1/grpo/eval_hf` for the command above): never inside the folder it reads,
nor over the stage's own eval_samples.json.
"""
from __future__ import annotations

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments.cli import eval_output_dir, parse_flags  # noqa: E402
from experiments.summary import eval_table, table_text  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe config file (get_config(arg)).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "An HF folder or an r1jax `checkpoints` folder.")
_SPLITS = flags.DEFINE_list("splits", [], "Names of config.eval.splits to run (default: all).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Where eval.json and eval_samples.json go "
                                  "(default: <checkpoint parent>/eval_<checkpoint name>).")
flags.mark_flags_as_required(["config", "checkpoint"])


def evaluate_checkpoint(config, checkpoint_dir: str, output_dir: str, splits=()) -> dict[str, float]:
  """{"eval/<split>/<component>": mean} of `checkpoint_dir` on `config.eval.splits` (or `splits` of them)."""
  from experiments import hooks  # pylint: disable=g-import-not-at-top
  from r1jax import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  from r1jax.train import loop, stage_configs  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"--checkpoint={checkpoint_dir!r} is not a folder")
  os.makedirs(output_dir, exist_ok=True)
  _, stage = stage_configs(config)[-1]  # the settings the final model was trained and evaluated with
  unknown = sorted(set(splits) - set(stage.eval.get("splits", {}).keys()))
  if unknown or not stage.eval.get("splits"):
    raise ValueError(f"--splits={list(splits)}: {unknown or 'none'} not in config.eval.splits "
                     f"({sorted(stage.eval.get('splits', {}).keys())})")
  if splits:
    stage.eval.splits = ml_collections.ConfigDict({name: stage.eval.splits[name].to_dict() for name in splits})
  stage.init_from = checkpoint_dir
  hf_folder = not checkpoint.is_checkpoint_dir(checkpoint_dir)
  if hf_folder and os.path.isfile(os.path.join(checkpoint_dir, "tokenizer_config.json")):
    stage.tokenizer = ""  # the export's own tokenizer
  hooks.prepare(stage, output_dir)  # a `build:` tokenizer, and the folder of a synthetic dataset
  mesh = sharding.make_mesh(stage.mesh)
  rules = sharding.logical_rules(dict(stage.mesh.rules) if stage.mesh.rules else None)
  model, params, tokenizer = loop.build_policy(stage, mesh, rules)
  with sharding.use_mesh(mesh, rules):
    metrics = hooks.data_hooks(stage).evaluate(stage, model, params, tokenizer, output_dir)
  return {f"eval/{k}": v for k, v in metrics.items()}


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  from r1jax import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  sharding.initialize()
  checkpoint_dir = os.path.abspath(_CHECKPOINT.value)
  output_dir = os.path.abspath(_OUTPUT_DIR.value or eval_output_dir(checkpoint_dir))
  metrics = evaluate_checkpoint(_CONFIG.value, checkpoint_dir, output_dir, tuple(_SPLITS.value))
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, "eval.json"), "w", encoding="utf-8") as f:
      json.dump({"checkpoint": checkpoint_dir, **metrics}, f, indent=2)
  columns = [tuple(c) for c in _CONFIG.value.eval.get("summary", ())]
  print(table_text(eval_table({os.path.basename(checkpoint_dir): metrics}, columns), columns))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
