"""The detail system's share of an Omni-R1 GRPO step: seconds of the batched detail call / seconds of the step.

    python benchmarks/omni_r1_detail.py --sft=/tmp/omni_r1/sft/hf --steps=8 [--config_arg=''] [--out=/tmp/omni_detail]

Runs the recipe's GRPO stage (embedded default unless --config_arg says otherwise) for --steps steps from the
SFT export (the policy, and the frozen detail system, as in the recipe) through the real loop, and times
every `OmniR1.step_batch` call (keyframe rendering + prompt encoding + the one greedy generate call of the
frozen detail model for the whole rollout) against the loop's own `perf/step_s`. The first step (compiles)
is reported apart. Prints one JSON line: steps, detail_s and step_s per step (mean over steps after the
first), the share, and the first step's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sft", required=True, help="the SFT stage's HF export (policy and detail system)")
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--config_arg", default="")
  parser.add_argument("--out", default="")
  args = parser.parse_args()

  from experiments import hooks  # pylint: disable=g-import-not-at-top
  from experiments.configs import omni_r1 as recipe  # pylint: disable=g-import-not-at-top
  from r1jax import train  # pylint: disable=g-import-not-at-top
  from r1jax.envs import omni_r1 as env_lib  # pylint: disable=g-import-not-at-top
  from r1jax.train import stage_configs  # pylint: disable=g-import-not-at-top

  detail_seconds: list[float] = []
  step_batch = env_lib.OmniR1.step_batch

  def timed(self, episodes, turn):
    started = time.perf_counter()
    try:
      return step_batch(self, episodes, turn)
    finally:
      detail_seconds.append(time.perf_counter() - started)

  env_lib.OmniR1.step_batch = timed
  workdir = args.out or tempfile.mkdtemp(prefix="omni_detail_")
  config = recipe.get_config(args.config_arg)
  _, grpo = stage_configs(config)[-1]
  grpo.init_from, grpo.tokenizer = args.sft, ""  # the export's own tokenizer
  grpo.frozen.detail.init_from = args.sft
  grpo.train.steps = args.steps
  grpo.train.log_every = 1
  grpo.train.progress_bar = False
  grpo.eval.splits = {}
  hooks.prepare(grpo, workdir)
  started = time.perf_counter()
  train.run(grpo, workdir, hooks.data_hooks(grpo))
  wall = time.perf_counter() - started
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    steps = [json.loads(line)["perf/step_s"] for line in f if "perf/step_s" in line]
  if len(steps) != len(detail_seconds) or len(steps) < 2:
    raise RuntimeError(f"{len(steps)} logged steps and {len(detail_seconds)} detail calls: expected {args.steps} "
                       "of each (>= 2)")
  later_detail, later_step = detail_seconds[1:], steps[1:]
  print(json.dumps({
      "steps": len(steps), "detail_s": round(sum(later_detail) / len(later_detail), 4),
      "step_s": round(sum(later_step) / len(later_step), 4),
      "share": round(sum(later_detail) / sum(later_step), 4),
      "first_step": {"detail_s": round(detail_seconds[0], 3), "step_s": round(steps[0], 3)},
      "wall_s": round(wall, 1), "load_average": os.getloadavg()}))


if __name__ == "__main__":
  main()
