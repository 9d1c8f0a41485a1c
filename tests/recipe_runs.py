"""The recipe tests run experiments/run.py and eval.py as a user does: a subprocess on one CPU device."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment(script: str, config: str, *flags: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
  """`python experiments/<script> --config=experiments/configs/<config> <flags>` (script: run.py or eval.py);
  the caller checks `returncode` (and reads stdout / stderr)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device, not the tests' 8 simulated ones
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script),
                         "--config=" + os.path.join(ROOT, "experiments", "configs", config), *flags],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


def read_jsonl(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]
