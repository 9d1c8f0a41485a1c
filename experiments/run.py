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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, plots and exports go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  from r1jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize()
  from experiments import hooks  # pylint: disable=g-import-not-at-top
  from r1jax import train  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = os.path.abspath(_WORKDIR.value)
  with config.unlocked():
    hooks.prepare(config, workdir)
  results = train.run(config, workdir, hooks.data_hooks(config))
  print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
