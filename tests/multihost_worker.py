"""One process of the two-process runs in tests/test_multihost.py (not a test module itself).

Launched with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID and 4 CPU devices,
it joins the 8-device global mesh and runs one of:

  forward CHECKPOINT_DIR OUT.npz: loads the checkpoint sharded (reading only its own slices),
    takes only its own rows of the batch, runs the sharded forward and saves the gathered logits.
  grpo OUT.npz: one VL GRPO step (`grpo_step`) on its own prompts and images.

Usage: python tests/multihost_worker.py forward CHECKPOINT_DIR OUT_FILE.npz
       python tests/multihost_worker.py grpo OUT_FILE.npz
"""
import sys

import numpy as np

from r1jax import sharding

# fsdp spans the two processes (each holds half of every embed-sharded weight); tensor stays inside one.
MESH_SHAPE = {"fsdp": 4, "tensor": 2}
# The trainer's default layout: 2 prompts per process do not split over its 4 batch shards (the
# sampler gathers and replicates them), its 4 rows (G = 2) do.
GRPO_MESH_SHAPE = {"fsdp": 8}
NUM_PROMPTS, NUM_SAMPLES, MAX_NEW_TOKENS = 4, 2, 8
_VOCAB, _START, _END, _IMAGE, _VIDEO = 64, 60, 61, 62, 63
# Per global prompt: (text tokens before, image grid (t, h, w), text tokens after). Process 1's
# prompts are longer (bucket 32 against 16) and their images bigger than process 0's.
_PROMPTS = (((3, (1, 4, 4), 4), (2, (1, 4, 6), 2)), ((5, (1, 6, 4), 6), (4, (1, 6, 6), 3)))


def text_batch(vocab: int) -> dict[str, np.ndarray]:
  """The global batch [8, 12] with left padding; every process can build it, each keeps its rows."""
  ids = np.random.default_rng(0).integers(0, vocab, (8, 12)).astype(np.int32)
  mask = np.ones((8, 12), bool)
  for row, pad in enumerate([0, 3, 0, 5, 1, 0, 11, 2]):
    mask[row, :pad] = False
  return {"input_ids": ids, "attention_mask": mask}


def vl_model():
  """A tiny random Qwen2.5-VL (star_r1's from-scratch shape, 64-token vocabulary)."""
  from experiments.configs import star_r1  # pylint: disable=g-import-not-at-top
  from r1jax import models  # pylint: disable=g-import-not-at-top

  hf = star_r1.tiny_qwen2_5_vl().to_dict()
  hf.update(vocab_size=_VOCAB, image_token_id=_IMAGE, video_token_id=_VIDEO, vision_start_token_id=_START,
            vision_end_token_id=_END, eos_token_id=1, pad_token_id=0)
  hf["text_config"].update(vocab_size=_VOCAB, eos_token_id=1, pad_token_id=0)
  return models.build_model(models.config_from_hf(hf))


def host_params(model, mesh):
  """Random parameters made on the host (NumPy, seed 0: the same in every process) and placed on
  `mesh`: cheaper than compiling `sharding.init_sharded` for a test."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from r1jax.models import api  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)

  def value(path, box):
    shape = box.value.shape
    if jax.tree_util.keystr(path).endswith("['scale']"):  # norms near 1, the rest small
      return box.replace_boxed(1 + 0.1 * rng.standard_normal(shape, np.float32))
    return box.replace_boxed(0.1 * rng.standard_normal(shape, np.float32))

  boxed = jax.tree_util.tree_map_with_path(value, api.abstract_params(model),
                                           is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return sharding.shard_params(boxed, mesh)


def vl_prompt_batch(config, prompts) -> dict[str, np.ndarray]:
  """A data-pipeline prompt batch (left-padded, vision packed in row order) of global prompt indices.

  Prompt i has one image of random pixels seeded by i, so every process's images are its own.
  """
  specs = [spec for part in _PROMPTS for spec in part]
  merge = config.vision.spatial_merge_size
  ids, pixels, grids = [], [], []
  for i in prompts:
    before, grid, after = specs[i]
    rng = np.random.default_rng(100 + i)
    ids.append(np.concatenate([rng.integers(2, 50, before), [_START], [_IMAGE] * (int(np.prod(grid)) // merge**2),
                               [_END], rng.integers(2, 50, after)]).astype(np.int32))
    pixels.append(rng.normal(size=(int(np.prod(grid)), config.vision.patch_dim)).astype(np.float32))
    grids.append(grid)
  length = max(len(x) for x in ids)
  return {"input_ids": np.stack([np.pad(x, (length - len(x), 0)) for x in ids]),
          "attention_mask": np.stack([np.arange(length) >= length - len(x) for x in ids]).astype(np.int32),
          "pixel_values": np.concatenate(pixels), "image_grid_thw": np.array(grids, np.int32),
          "image_counts": np.ones(len(ids), np.int32)}


def grpo_step(mesh, prompts) -> dict[str, np.ndarray]:
  """One GRPO step as the trainer runs it, on this process's global prompt indices `prompts`.

  Samples G completions per prompt with a fixed key, builds the learner batch, gives each row a
  fixed advantage (by global row) and makes one update through the loop's `_Updater` with
  `learner.grpo_grads` / `apply_update`. Returns this process's rows' tokens and sampler
  log-probs, and the step's loss and gradient norm.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from r1jax.sampling import Sampler, SamplingControls  # pylint: disable=g-import-not-at-top
  from r1jax.train import config as config_lib, learner, loop  # pylint: disable=g-import-not-at-top

  model = vl_model()
  config = config_lib.default_config()
  params = host_params(model, mesh)
  tx = optax.sgd(1e-2)
  with sharding.use_mesh(mesh):
    updater = loop._Updater(config, model, mesh, None, tx)  # pylint: disable=protected-access
    batch = vl_prompt_batch(model.config, prompts)
    sampler = Sampler(model, pad_id=updater.builder.pad_id, mesh=mesh)
    output = sampler(params, updater.builder.prompts(batch), key=jax.random.key(0), num_samples=NUM_SAMPLES,
                     controls=SamplingControls(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0))
    rows = updater.builder.learner_batch(batch, output, NUM_SAMPLES)
    global_rows = np.repeat(np.asarray(prompts), NUM_SAMPLES) * NUM_SAMPLES + np.tile(np.arange(NUM_SAMPLES),
                                                                                       len(prompts))
    rows["advantages"] = (np.where(global_rows % 2, 1.0, -0.5) * (1 + global_rows / 8)).astype(np.float32)
    loss_config = loop.loss_config(config)
    grad_fn = lambda p, b, frozen: learner.grpo_grads(model, loss_config, 1.0, p, b, 0, frozen)
    _, metrics, skipped = updater.update(loop.init_state(params, tx, 0, mesh), rows, grad_fn)
  return {"tokens": np.asarray(output.tokens), "sampler_logprobs": rows["sampler_logprobs"],
          "loss": np.float64(metrics["loss"]), "grad_norm": np.float64(metrics["grad_norm"]), "skipped": skipped}


def _forward(checkpoint: str, out_file: str) -> None:
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


def _grpo(out_file: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py, for the reference run
  mesh = sharding.make_mesh(GRPO_MESH_SHAPE)
  index, count = sharding.process_shard_info(mesh)
  prompts = np.array_split(np.arange(NUM_PROMPTS), count)[index]
  result = grpo_step(mesh, prompts)
  np.savez(out_file, **result, prompts=prompts, process_count=jax.process_count(),
           local_devices=jax.local_device_count())


def main(mode: str, *args: str) -> None:
  if not sharding.initialize():  # before anything touches the JAX backend
    raise RuntimeError("expected a multi-process launch (JAX_COORDINATOR_ADDRESS etc.)")
  {"forward": _forward, "grpo": _grpo}[mode](*args)


if __name__ == "__main__":
  main(*sys.argv[1:])
