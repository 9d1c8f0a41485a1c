"""Two processes on localhost (4 CPU devices each) run the sharded forward on one 8-device mesh.

Each process loads the checkpoint sharded and feeds only its own batch rows
(tests/multihost_worker.py); their gathered logits must equal a single-process run.
"""
import os
import socket
import subprocess
import sys

import numpy as np

from r1jax import models
from tests.models.hf_fixtures import tiny_qwen2
from tests.multihost_worker import text_batch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 180


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker_env(process_id: int, port: int) -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=4"]), JAX_PLATFORMS="cpu",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
             PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")])))
  return env


def test_two_processes_agree_with_a_single_process_run(tmp_path):
  checkpoint = str(tmp_path / "ckpt")
  tiny_qwen2(checkpoint, hidden=64, heads=8, kv_heads=4, layers=2, inter=128, vocab=256)
  port = _free_port()
  outs = [str(tmp_path / f"out{i}.npz") for i in range(2)]
  workers = [subprocess.Popen([sys.executable, os.path.join(_ROOT, "tests", "multihost_worker.py"), checkpoint,
                               outs[i]], env=_worker_env(i, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
  try:
    logs = [w.communicate(timeout=_TIMEOUT_S)[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  for i, w in enumerate(workers):
    assert w.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"

  model, params = models.load_pretrained(checkpoint)
  batch = text_batch(model.config.text.vocab_size)
  reference = np.asarray(models.forward_logits(model, params, batch["input_ids"], batch["attention_mask"]))
  for i, out in enumerate(outs):
    result = np.load(out)
    assert int(result["process_count"]) == 2 and int(result["local_devices"]) == 4
    # Each process fed only its own half of the rows and holds half of the embedding table.
    assert (int(result["shard_index"]), int(result["shard_count"])) == (i, 2)
    assert int(result["local_rows"]) == 4
    assert 2 * int(result["embedding_local_bytes"]) == int(result["embedding_bytes"])
    np.testing.assert_allclose(result["logits"], reference, atol=1e-5, rtol=0)
