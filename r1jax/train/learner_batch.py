"""A learner batch on the mesh, and its completion log-probs computed in pieces: shared by the
policy's old log-probs (`loop._Updater`) and a frozen model's (`r1jax.frozen`, the GRPO reference)."""
from __future__ import annotations

from typing import Any

import numpy as np

from r1jax import models, sharding
from r1jax.train import learner, rows
from r1jax.train.sequences import SequenceBuilder

# Learner batch fields with one entry per row (split over the batch mesh axes), and those the
# device never sees.
PER_ROW = ("input_ids", "attention_mask", "positions", "completion_mask", "advantages", "old_logprobs",
           "ref_logprobs", "sampler_logprobs", "loss_mask")
HOST_ONLY = ("completion_ids", "prompt_lengths", "sequence_lengths", "image_counts", "video_counts", "turn_index",
             "episode_failed")


def place(model, batch: dict[str, Any], mesh, rules) -> dict[str, Any]:
  """A learner batch on the mesh: per-row arrays split over the batch mesh axes; vision inputs,
  every process's, replicated (as VisionGrids, `SequenceBuilder.device_vision`). Each row's vision
  pad tokens are checked against its grids first: the jitted scatter of features cannot check them."""
  if model.config.is_multimodal:
    models.vlm.check_row_feature_counts(model.config, batch["input_ids"], batch.get("image_grid_thw"),
                                        batch.get("video_grid_thw"), batch.get("image_counts"),
                                        batch.get("video_counts"))
  builder = SequenceBuilder(model)
  batch = builder.shared_vision(batch)
  arrays = builder.device_vision({k: v for k, v in batch.items() if isinstance(v, np.ndarray) and k not in HOST_ONLY},
                                 mesh, rules)
  axes = {k: (1 if k == "positions" and np.ndim(v) == 3 else 0 if k in PER_ROW else None) for k, v in arrays.items()}
  return sharding.shard_batch(arrays, mesh, rules, batch_axis=axes)


def completion_logprobs(model, params, batch: dict[str, Any], *, mesh, rules, temperature: float, pieces: int = 1,
                        logits_chunk: int = 0) -> np.ndarray:
  """[rows, completion_len] log-probs of `batch`'s completions under `params`, computed `rows / pieces`
  rows at a time (so the pass needs no more memory than an update of that many rows). On several
  hosts: this process's rows."""
  n = rows.num_rows(batch)
  if n % pieces:
    raise ValueError(f"{n} rows do not split into {pieces} log-prob passes (config.rl.mini_batches x "
                     "config.optim.micro_batches)")
  return np.concatenate([
      sharding.process_rows(learner.completion_logprobs(model, params, place(
          model, rows.take_rows(batch, np.arange(i * n // pieces, (i + 1) * n // pieces)), mesh, rules),
                                                        temperature, logits_chunk), mesh, rules)
      for i in range(pieces)])
