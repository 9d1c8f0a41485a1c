"""The embedded STAR-R1 default, timed end to end: held-out TAcc after SFT vs after SFT + GRPO.

    python benchmarks/star_r1_default.py --workdir=/tmp/r1jax_star_bench [--seeds=0,1] [--overrides=...]

Runs `experiments/run.py --config=experiments/configs/star_r1.py` once per seed (`config.seed` and
`config.data.seed`; the held-out splits are fixed) in a fresh `<workdir>/seed<N>`, as a user would (a new
process: imports, tokenizer build, every compilation included), and prints a Markdown table:
format rate, TAcc, NDiff and mean reward after each stage, per held-out split, the GRPO - SFT TAcc gain in
points, and the wall time. Targets (the issue): format >= 95% after SFT, TAcc gain >= 10 points, wall time
<= 10 minutes on 2 CPU cores. Writes `<workdir>/results.json`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/r1jax_star_bench", "runs go to <workdir>/seed<N> (replaced)")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "config.seed / config.data.seed of each run")
_OVERRIDES = flags.DEFINE_list("overrides", [], "extra --config.<key>=<value> flags, without the dashes")


def run_default(workdir: str, seed: int, overrides=()) -> dict:
  """One full run of the default recipe; returns its summary.json plus the measured wall time."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, os.path.join(ROOT, "experiments", "run.py"),
             "--config=" + os.path.join(ROOT, "experiments", "configs", "star_r1.py"), f"--workdir={workdir}",
             f"--config.seed={seed}", f"--config.data.seed={seed}", *(f"--{o}" for o in overrides)]
  started = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  wall_s = time.perf_counter() - started
  if result.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-5000:]}")
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  return dict(summary, seed=seed, process_wall_s=round(wall_s, 1))


def table(runs: list[dict]) -> str:
  lines = ["| seed | split | format SFT | TAcc SFT | TAcc GRPO | gain (points) | NDiff SFT / GRPO | "
           "reward SFT / GRPO | wall time |", "|---|---|---|---|---|---|---|---|---|"]
  for run in runs:
    sft, grpo = run["eval"]["sft"], run["eval"]["grpo"]
    for split in sft:
      a, b = sft[split], grpo[split]
      lines.append(f"| {run['seed']} | {split} | {100 * a['format']:.0f}% | {100 * a['TAcc']:.1f}% | "
                   f"{100 * b['TAcc']:.1f}% | {100 * (b['TAcc'] - a['TAcc']):+.1f} | {a['NDiff']:.2f} / "
                   f"{b['NDiff']:.2f} | {a['reward']:.2f} / {b['reward']:.2f} | {run['process_wall_s'] / 60:.1f} min |")
  return "\n".join(lines)


def main(argv):
  del argv
  runs = [run_default(os.path.join(_WORKDIR.value, f"seed{seed}"), int(seed), _OVERRIDES.value)
          for seed in _SEEDS.value]
  with open(os.path.join(_WORKDIR.value, "results.json"), "w", encoding="utf-8") as f:
    json.dump(runs, f, indent=2)
  print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
  print(table(runs))
  print("curves:", " ".join(c for run in runs for c in run["curves"]))


if __name__ == "__main__":
  app.run(main)
