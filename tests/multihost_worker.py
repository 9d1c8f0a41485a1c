"""One process of the two-process run in tests/test_multihost.py (not a test module itself).

Launched with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID and 4 CPU devices,
it joins the 8-device global mesh, loads the checkpoint sharded (reading only its own slices),
takes only its own rows of the batch, runs the sharded forward and saves the gathered logits.

Usage: python tests/multihost_worker.py CHECKPOINT_DIR OUT_FILE.npz
"""
import sys

import numpy as np

from r1jax import sharding

# fsdp spans the two processes (each holds half of every embed-sharded weight); tensor stays inside one.
MESH_SHAPE = {"fsdp": 4, "tensor": 2}


def text_batch(vocab: int) -> dict[str, np.ndarray]:
  """The global batch [8, 12] with left padding; every process can build it, each keeps its rows."""
  ids = np.random.default_rng(0).integers(0, vocab, (8, 12)).astype(np.int32)
  mask = np.ones((8, 12), bool)
  for row, pad in enumerate([0, 3, 0, 5, 1, 0, 11, 2]):
    mask[row, :pad] = False
  return {"input_ids": ids, "attention_mask": mask}


def main(checkpoint: str, out_file: str) -> None:
  if not sharding.initialize():  # before anything touches the JAX backend
    raise RuntimeError("expected a multi-process launch (JAX_COORDINATOR_ADDRESS etc.)")
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from r1jax import models  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh(MESH_SHAPE)
  model, params = models.load_pretrained(checkpoint, mesh=mesh)
  index, count = sharding.process_shard_info(mesh)
  rows = {key: np.split(value, count)[index] for key, value in text_batch(model.config.text.vocab_size).items()}
  batch = sharding.shard_batch(rows, mesh)

  def forward(params, batch):
    return model.apply(params, batch["input_ids"], attention_mask=batch["attention_mask"])[0]

  with sharding.use_mesh(mesh):
    logits = jax.jit(forward, in_shardings=(sharding.param_shardings(model, mesh), sharding.batch_sharding(mesh)),
                     out_shardings=sharding.logical_sharding(mesh, ("act_batch", "act_length", "act_vocab")))(
                         params, batch)
  embedding = params["params"]["embed_tokens"]["embedding"]
  np.savez(out_file, logits=multihost_utils.process_allgather(logits, tiled=True), shard_index=index,
           shard_count=count, process_count=jax.process_count(), local_devices=jax.local_device_count(),
           local_rows=rows["input_ids"].shape[0],
           embedding_local_bytes=sum(s.data.nbytes for s in embedding.addressable_shards if s.replica_id == 0),
           embedding_bytes=embedding.nbytes)


if __name__ == "__main__":
  main(*sys.argv[1:])
