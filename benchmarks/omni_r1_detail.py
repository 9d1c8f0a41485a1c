"""The detail system's share of an Omni-R1 GRPO step: seconds of the batched detail call / seconds of the step.

    python benchmarks/omni_r1_detail.py --sft=/tmp/omni_r1/sft/hf --steps=8 [--config_arg=''] [--out=/tmp/omni_detail]

Runs the recipe's GRPO stage (embedded default unless --config_arg says otherwise) for --steps steps from the
SFT export (the policy, and through `frozen.detail.init_from="policy"` the frozen detail system, as in the
recipe) through the real loop, and times
every `OmniR1.step_batch` call (keyframe rendering + prompt encoding + the one greedy generate call of the
frozen detail model for the whole rollout) against the loop's own `perf/step_s`. The first step (compiles)
is reported apart. Prints one JSON line: steps, detail_s and step_s per step (mean over steps after the
first), the share, the first step's, and the fractions of the detail time spent on the host reading and
resizing keyframes (keyframe_s) and encoding the chat prompts (encode_s: template, tokens, patches).
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

  from r1jax import frozen  # pylint: disable=g-import-not-at-top

  detail_seconds: list[float] = []
  parts = {"keyframe_s": 0.0, "encode_s": 0.0}  # host work inside the detail call, summed over all steps

  def timed(fn, into=None):
    def wrapper(*a, **k):
      started = time.perf_counter()
      try:
        return fn(*a, **k)
      finally:
        (detail_seconds.append if into is None else lambda s: parts.__setitem__(into, parts[into] + s))(
            time.perf_counter() - started)
    return wrapper

  env_lib.OmniR1.step_batch = timed(env_lib.OmniR1.step_batch)
  env_lib.keyframe_image = timed(env_lib.keyframe_image, "keyframe_s")
  frozen.FrozenModel.encode = timed(frozen.FrozenModel.encode, "encode_s")
  workdir = args.out or tempfile.mkdtemp(prefix="omni_detail_")
  config = recipe.get_config(args.config_arg)
  _, grpo = stage_configs(config)[-1]
  grpo.init_from, grpo.tokenizer = args.sft, ""  # the export's own tokenizer; the detail system stays the
  # recipe's frozen.detail ("policy": the stage's initial policy, i.e. this SFT export)
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
      "host_share_of_detail": {k: round(v / sum(detail_seconds), 3) for k, v in parts.items()},
      "wall_s": round(wall, 1), "load_average": os.getloadavg()}))


if __name__ == "__main__":
  main()
