"""Two processes on localhost (4 CPU devices each) on one 8-device mesh agree with one process.

Each process feeds only its own batch rows (tests/multihost_worker.py): a sharded forward, and a
whole VL GRPO step (sampling, learner batch, gradient, update) with each process's own images.
"""
import os
import socket
import subprocess
import sys

import numpy as np

from r1jax import models, sharding
from tests.models.hf_fixtures import tiny_qwen2
from tests.multihost_worker import GRPO_MESH_SHAPE, NUM_PROMPTS, grpo_step, text_batch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 180


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker_env(process_id: int, port: int) -> dict[str, str]:
  env = dict(os.environ)
  # Each process compiles for itself, as in a real launch: no compilation cache shared between the two
  # (tests/conftest.py sets one for the session).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=4"]), JAX_PLATFORMS="cpu",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
             PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")])))
  return env


def _start_workers(*args: str) -> list[subprocess.Popen]:
  """The two processes of tests/multihost_worker.py with `args` (process i's output file gets i)."""
  port = _free_port()
  return [subprocess.Popen([sys.executable, os.path.join(_ROOT, "tests", "multihost_worker.py"),
                            *(a.format(i) for a in args)], env=_worker_env(i, port), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _wait(workers: list[subprocess.Popen]) -> None:
  try:
    logs = [w.communicate(timeout=_TIMEOUT_S)[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  failed = [f"process {i} (exit {w.returncode}):\n{logs[i][-3000:]}" for i, w in enumerate(workers) if w.returncode]
  assert not failed, "\n\n".join(failed)  # both logs: one process's error often shows as the other's death


def test_two_processes_agree_with_a_single_process_run(tmp_path):
  checkpoint = str(tmp_path / "ckpt")
  tiny_qwen2(checkpoint, hidden=64, heads=8, kv_heads=4, layers=2, inter=128, vocab=256)
  _wait(_start_workers("forward", checkpoint, str(tmp_path / "out{}.npz")))

  model, params = models.load_pretrained(checkpoint)
  batch = text_batch(model.config.text.vocab_size)
  reference = np.asarray(models.forward_logits(model, params, batch["input_ids"], batch["attention_mask"]))
  for i in range(2):
    result = np.load(tmp_path / f"out{i}.npz")
    assert int(result["process_count"]) == 2 and int(result["local_devices"]) == 4
    # Each process fed only its own half of the rows and holds half of the embedding table.
    assert (int(result["shard_index"]), int(result["shard_count"])) == (i, 2)
    assert int(result["local_rows"]) == 4
    assert 2 * int(result["embedding_local_bytes"]) == int(result["embedding_bytes"])
    np.testing.assert_allclose(result["logits"], reference, atol=1e-5, rtol=0)


def test_vl_grpo_step_on_two_processes_equals_one_process_on_eight_devices(tmp_path):
  workers = _start_workers("grpo", str(tmp_path / "out{}.npz"))
  try:  # the same step in this process (8 devices, tests/conftest.py) on all 4 prompts, while they run
    reference = grpo_step(sharding.make_mesh(GRPO_MESH_SHAPE), np.arange(NUM_PROMPTS))
  finally:
    _wait(workers)
  results = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]

  assert not reference["skipped"] and reference["grad_norm"] > 0
  rows = len(reference["tokens"]) // 2
  for i, result in enumerate(results):
    assert int(result["process_count"]) == 2 and int(result["local_devices"]) == 4
    # Process i sampled its own 2 prompts (with its own images) and got back its own 4 rows.
    np.testing.assert_array_equal(result["prompts"], np.arange(2 * i, 2 * i + 2))
    np.testing.assert_array_equal(result["tokens"], reference["tokens"][i * rows:(i + 1) * rows])
    np.testing.assert_allclose(result["sampler_logprobs"], reference["sampler_logprobs"][i * rows:(i + 1) * rows],
                               atol=1e-5, rtol=0)
    assert not result["skipped"]
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result["grad_norm"], reference["grad_norm"], rtol=1e-5)
