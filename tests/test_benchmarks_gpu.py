"""benchmarks/gpu.py: a tiny VL GRPO step (rollout + learner) on 2 simulated CPU devices, and its peak table."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("device_kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5p", 459.0),
    ("TPU v6 lite", 918.0), ("cpu", None)])
def test_peak_by_device_kind(device_kind, peak):
  assert gpu.peak_tflops(device_kind) == peak


def test_tiny_grpo_step_reports_throughput_step_times_and_mfu():
  # ~40 s of CPU time (compilation, mostly); longer in wall time when the cores are shared.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # --devices sets the device count
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), "--model", "tiny", "--devices", "2",
       "--prompts", "2", "--samples", "2", "--steps", "1", "--remat", "none", "--peak-tflops", "0.5"],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout + result.stderr[-5000:]
  out = result.stdout
  for field in ("[GRPO step] tiny", "2 x cpu", "step ", "rollout ", "learner ", "tokens/s per device", "MFU"):
    assert field in out, (field, out)
  summary = json.loads(next(line for line in out.splitlines() if line.startswith("result "))[len("result "):])
  assert summary["devices"] == 2 and summary["rows"] == 4 and summary["peak_tflops"] == 0.5
  assert summary["step_s"] >= summary["rollout_s"] + summary["learner_s"] > 0
  real_tokens = summary["tokens_per_s_per_device"] * summary["step_s"] * 2
  assert real_tokens == pytest.approx(summary["learner_tokens_per_s_per_device"] * summary["learner_s"] * 2)
  assert summary["rollout_tokens_per_s_per_device"] * summary["rollout_s"] * 2 == pytest.approx(4 * 16)  # rows x new
  assert summary["learner_tflop"] > summary["rollout_tflop"] > 0  # forward + backward over every row's tokens
  flops = (summary["learner_tflop"] + summary["rollout_tflop"]) * 1e12
  assert summary["mfu"] == pytest.approx(flops / summary["step_s"] / (0.5e12 * 2))
  assert summary["learner_mfu"] == pytest.approx(summary["learner_tflop"] * 1e12 / summary["learner_s"] / 1e12)
  assert summary["grad_norm"] > 0
