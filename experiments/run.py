"""The one entry point: `python experiments/run.py --config=experiments/configs/<recipe>.py[:arg] --workdir=DIR`.

Run the same command on every host of a TPU pod slice (or every process of a GPU cluster):
`r1jax.sharding.initialize()` joins them, each host reads its own data shard, and process 0
writes metrics and exports. Re-running with the same --workdir resumes exactly.
Override any key with `--config.a.b=value`; unknown keys are errors naming the key.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments.cli import parse_flags  # noqa: E402
from experiments.summary import eval_table, table_text  # noqa: E402
from r1jax.errors import RunStoppedError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, plots and exports go.")
flags.mark_flags_as_required(["config", "workdir"])


class _NoMissingBackendFilter(logging.Filter):
  """Drops JAX's INFO line about backends it probed and did not find ('tpu' on every CPU run)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Unable to initialize backend")


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers:
    handler.addFilter(_NoMissingBackendFilter())
  from r1jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  checkpoint_lib.quiet_orbax_logs()
  from r1jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize()
  from experiments import hooks  # pylint: disable=g-import-not-at-top
  from r1jax import train  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = os.path.abspath(_WORKDIR.value)
  with config.unlocked():
    hooks.prepare(config, workdir)
  started = time.perf_counter()
  try:
    results = train.run(config, workdir, hooks.data_hooks(config))
  except RunStoppedError as e:  # its message says all; a traceback would bury it
    logging.error("%s: %s", type(e).__name__, e)
    sys.exit(1)
  summary = summarize(config, workdir, results, wall_s=time.perf_counter() - started)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
  if not summary["eval"]:
    print(json.dumps(results, indent=2, sort_keys=True))
    return
  print(table_text(summary["eval"], summary["columns"]))
  print(f"curves: {' '.join(summary['curves'])}\nexport: {summary['export']}\nwall time: {summary['wall_s']:.0f} s")


def summarize(config, workdir: str, results: dict[str, dict[str, float]], wall_s: float) -> dict:
  """Each stage's final evaluation ({stage: {split: {column: value}}}, columns from `config.eval.summary`),
  the stages' curve PNGs, the last stage's HF export and the wall time of this call."""
  from r1jax.train import stage_configs  # pylint: disable=g-import-not-at-top
  stages = [name for name, _ in stage_configs(config)]
  stage_dirs = [workdir if len(stages) == 1 else os.path.join(workdir, name) for name in stages]
  columns = [tuple(c) for c in config.eval.get("summary", ())]
  export = os.path.join(stage_dirs[-1], "hf")
  return {"eval": eval_table(results, columns), "columns": columns,
          "curves": [p for p in (os.path.join(d, "curves.png") for d in stage_dirs) if os.path.isfile(p)],
          "export": export if os.path.isdir(export) else None, "wall_s": round(wall_s, 1)}


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
