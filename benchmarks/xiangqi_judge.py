"""Xiangqi judges side by side: Fairy-Stockfish vs the built-in searcher, and the reward's share of a GRPO step.

    python benchmarks/xiangqi_judge.py [--positions=200] [--workers=1,2] [--engine_depth=8] [--builtin_depth=2]
        [--run_dir=/tmp/xiangqi_r1]

Judge throughput: `--positions` distinct positions (half sparse endgames, half random playouts, as the
recipe's data), each judged as the reward judges one answer: `evaluate_move(fen, move)` for a random
legal move (a root search plus, unless it is the best move, a `searchmoves` search). Each judge runs in
N worker processes (each with its own judge, no cache shared), positions split between them; every
judge and worker count in the same run, so the figures compare on the same machine and load.

Reward share: with `--run_dir` (a finished `experiments/run.py` workdir of the xiangqi_r1 config), the
mean `perf/reward_s` over the mean `perf/step_s` of its GRPO steps (first step, which compiles, left out).
Prints a Markdown table and the load average.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines.tasks import xiangqi_r1  # noqa: E402
from r1jax.rewards import xiangqi_board as xb  # noqa: E402
from r1jax.rewards import xiangqi_engine as xe  # noqa: E402

_POSITIONS = flags.DEFINE_integer("positions", 200, "distinct positions judged per configuration")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "worker process counts")
_ENGINE_DEPTH = flags.DEFINE_integer("engine_depth", 8, "Fairy-Stockfish depth (the recipe's default judge)")
_BUILTIN_DEPTH = flags.DEFINE_integer("builtin_depth", 2, "built-in searcher depth (the fallback's)")
_RUN_DIR = flags.DEFINE_string("run_dir", "", "a finished xiangqi_r1 workdir, for the reward's share of a step")

_judge = None


def _init_worker(kind: str, depth: int, engine: str | None) -> None:
  global _judge
  _judge = xe.fairy_stockfish_judge(engine, depth=depth, timeout_s=60.0) if kind == "engine" else \
      xe.BuiltinJudge(depth=depth)


def _judge_all(jobs: list[tuple[str, str]]) -> int:
  for fen, move in jobs:
    _judge.evaluate_move(fen, move)
  return len(jobs)


def positions(count: int, seed: int = 0) -> list[tuple[str, str]]:
  """(fen, a random legal move) for `count` distinct positions: half sparse, half playouts."""
  rng = np.random.default_rng(seed)
  fens: list[str] = []
  while len(fens) < count:
    fen = xiangqi_r1.sparse_position(rng, 1, 3) if len(fens) % 2 else xiangqi_r1.random_playout(rng, 4, 60)[-1]
    if fen and fen not in fens:
      fens.append(fen)
  jobs = []
  for fen in fens:
    moves = xb.Board.from_fen(fen).legal_moves()
    jobs.append((fen, xb.move_to_iccs(moves[rng.integers(len(moves))])))
  return jobs


def throughput(kind: str, depth: int, workers: int, jobs: list[tuple[str, str]], engine: str | None) -> float:
  """Positions per second judged by `workers` processes, each with its own judge."""
  chunks = [jobs[i::workers] for i in range(workers)]
  with concurrent.futures.ProcessPoolExecutor(workers, initializer=_init_worker,
                                              initargs=(kind, depth, engine)) as pool:
    list(pool.map(_judge_all, [[jobs[0]]] * workers))  # start every worker (and its engine) first
    started = time.perf_counter()
    done = sum(pool.map(_judge_all, chunks))
    return done / (time.perf_counter() - started)


def reward_share(run_dir: str) -> tuple[float, float, int]:
  """(mean reward seconds, mean step seconds, steps) of a run's GRPO steps after the first."""
  with open(os.path.join(run_dir, "grpo", "metrics.jsonl"), encoding="utf-8") as f:
    steps = [r for r in map(json.loads, f) if "perf/reward_s" in r and r.get("step", 0) > 1]
  if not steps:
    raise ValueError(f"{run_dir}/grpo/metrics.jsonl has no GRPO step after the first")
  return (float(np.mean([r["perf/reward_s"] for r in steps])), float(np.mean([r["perf/step_s"] for r in steps])),
          len(steps))


def main(argv):
  del argv
  engine = xe.find_fairy_stockfish()
  jobs = positions(_POSITIONS.value)
  rows = []
  for workers in map(int, _WORKERS.value):
    if engine:
      rows.append((f"Fairy-Stockfish depth {_ENGINE_DEPTH.value}", workers,
                   throughput("engine", _ENGINE_DEPTH.value, workers, jobs, engine)))
    rows.append((f"built-in searcher depth {_BUILTIN_DEPTH.value}", workers,
                 throughput("builtin", _BUILTIN_DEPTH.value, workers, jobs, None)))
  print(f"{len(jobs)} positions, one evaluate_move each; load average {os.getloadavg()[0]:.2f} "
        f"(1 min), {os.cpu_count()} CPUs; engine: {engine or 'not installed'}")
  print("| judge | worker processes | positions/s |\n|---|---|---|")
  for name, workers, rate in rows:
    print(f"| {name} | {workers} | {rate:.1f} |")
  if _RUN_DIR.value:
    reward_s, step_s, count = reward_share(_RUN_DIR.value)
    print(f"GRPO reward share ({_RUN_DIR.value}, {count} steps): {reward_s:.3f} s of {step_s:.3f} s per step "
          f"= {100 * reward_s / step_s:.1f}%")


if __name__ == "__main__":
  app.run(main)
