"""benchmarks/peers.py at a tiny size: present peers are timed and agree on the first step; absent ones skipped."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNIX_PYTHON = "/work/venvs/tunix/bin/python"
TINY = ["--model", "tiny", "--prompts", "2", "--samples", "2", "--prompt-len", "16", "--new-tokens", "8",
        "--repeats", "2", "--batch", "2", "--learner-prompt-len", "8", "--completion-len", "8", "--steps", "2"]


def run_peers(*extra: str) -> str:
  env = {k: v for k, v in os.environ.items() if k != "R1JAX_TUNIX_PYTHON"}
  result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "peers.py"), *TINY, *extra], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


def table_rows(output: str, part: str) -> dict[str, str]:
  """{system: its row} of the table under the `[part]` heading."""
  section = output.split(f"[{part}]", 1)[1].split("\n\n", 1)[0]
  return {m.group(1): m.group(0) for m in re.finditer(r"^  (r1jax|transformers|tunix) +\d.*$", section, re.M)}


def first_steps(output: str) -> dict[str, tuple[float, float]]:
  return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in re.finditer(
      r"first step  (\w+) +loss ([-+.\d]+)  grad_norm ([.\d]+)", output)}


def check_systems(output: str, systems: set[str], parts=("sampling", "GRPO learner step")) -> None:
  for part in parts:
    rows = table_rows(output, part)
    assert set(rows) == systems, (part, output)
    for name, row in rows.items():
      best, median = (float(x) for x in row.split()[1:3])
      assert best >= median > 0, row
      if name != "r1jax":  # the ratio columns: r1jax's tokens/s over this peer's (best, median)
        assert re.search(r"\d+\.\d\dx +\d+\.\d\dx", row), row
  first = first_steps(output)
  assert set(first) == systems, output
  loss, grad_norm = first["r1jax"]
  assert grad_norm > 0
  for name, (other_loss, other_norm) in first.items():
    assert other_loss == pytest.approx(loss, rel=1e-5), (name, output)
    assert other_norm == pytest.approx(grad_norm, rel=1e-4), (name, output)
  assert output.count("load average") == 2


def test_peers_without_tunix_skips_it_and_says_how_to_get_it():
  output = run_peers()
  skip = next(line for line in output.splitlines() if line.strip().startswith("tunix:"))
  assert "skipped" in skip and "pip install google-tunix" in skip and "--tunix-python" in skip, skip
  check_systems(output, {"r1jax", "transformers"})


def test_peers_with_a_missing_tunix_python_skips_it():
  output = run_peers("--tunix-python", "/nonexistent/bin/python", "--parts", "learner")
  skip = next(line for line in output.splitlines() if line.strip().startswith("tunix:"))
  assert "skipped" in skip and "/nonexistent/bin/python does not exist" in skip and "google-tunix" in skip, skip
  assert "[sampling]" not in output
  check_systems(output, {"r1jax", "transformers"}, parts=("GRPO learner step",))


@pytest.mark.skipif(not os.path.exists(TUNIX_PYTHON), reason=f"no Tunix venv at {TUNIX_PYTHON} (benchmarks/peers.py)")
def test_peers_with_tunix_times_all_three_on_the_same_first_step():
  output = run_peers("--tunix-python", TUNIX_PYTHON)
  assert "google-tunix" in output
  check_systems(output, {"r1jax", "transformers", "tunix"})
