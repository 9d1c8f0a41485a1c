"""From data-pipeline batches to sampler prompts and learner sequences (host NumPy).

The data pipeline packs vision inputs across rows (`image_counts` / `video_counts`); the sampler
takes one `Prompt` per row; the learner takes prompt + completion rows with M-RoPE positions and,
for the jitted vision tower, `VisionGrid`s instead of `grid_thw` (their values set shapes).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from r1jax import sharding
from r1jax.models import vlm
from r1jax.models.vision import vision_grid
from r1jax.sampling import Prompt, SampleOutput, learner_inputs
from r1jax.train import rows


def _split(values, counts):
  if values is None or counts is None:
    return [None] * (0 if counts is None else len(counts))
  return np.split(np.asarray(values), np.cumsum(counts)[:-1])


class SequenceBuilder:

  def __init__(self, model):
    self.model = model
    self.config = model.config
    self.pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
    self._prompts_seen = 0  # the next `prompt_id`: ids never repeat across calls (sampling rounds)

  # ------------------------------------------------------------------ sampler side

  def prompts(self, batch: dict[str, Any]) -> list[Prompt]:
    """One `Prompt` per row of a data-pipeline prompt batch (padding removed)."""
    n = len(batch["input_ids"])
    image_grids = _split(batch.get("image_grid_thw"), batch.get("image_counts"))
    video_grids = _split(batch.get("video_grid_thw"), batch.get("video_counts"))
    image_pixels = self._split_pixels(batch.get("pixel_values"), image_grids)
    video_pixels = self._split_pixels(batch.get("pixel_values_videos"), video_grids)
    seconds = _split(batch.get("second_per_grid_ts"), batch.get("video_counts"))
    out = []
    for r in range(n):
      ids = np.asarray(batch["input_ids"][r])[np.asarray(batch["attention_mask"][r]).astype(bool)]
      out.append(Prompt(
          input_ids=ids,
          pixel_values=image_pixels[r] if image_pixels else None,
          image_grid_thw=image_grids[r] if image_grids and len(image_grids[r]) else None,
          pixel_values_videos=video_pixels[r] if video_pixels else None,
          video_grid_thw=video_grids[r] if video_grids and len(video_grids[r]) else None,
          second_per_grid_ts=seconds[r] if seconds and len(seconds[r]) else None))
    return out

  @staticmethod
  def _split_pixels(pixels, grids):
    if pixels is None or not grids:
      return []
    patches = [int(np.prod(g, axis=1).sum()) if len(g) else 0 for g in grids]
    return [p if len(p) else None for p in np.split(np.asarray(pixels), np.cumsum(patches)[:-1])]

  # ------------------------------------------------------------------ learner side

  def learner_batch(self, batch: dict[str, Any], output: SampleOutput, num_samples: int) -> dict[str, Any]:
    """Rows prompt-major (row = prompt * G + g): prompt + completion, masks, positions, vision,
    the sampler's log-probs, and each prompt's ground truth / reward context repeated G times.

    `prompt_id` [rows] names the prompt a row continues, unique over every call of this builder:
    rows of different sampling rounds (DAPO dynamic sampling) never share an id, so
    `shared_vision` never gives a row another prompt's pixels.
    """
    inputs = learner_inputs(output)
    completion_len = output.tokens.shape[1]
    out = {
        "input_ids": np.asarray(inputs.input_ids),
        "attention_mask": np.asarray(inputs.attention_mask),
        "positions": np.asarray(inputs.positions),
        "completion_mask": np.asarray(inputs.completion_mask)[:, -completion_len:],
        "completion_ids": np.asarray(output.tokens),
        "sampler_logprobs": np.asarray(output.logprobs, np.float32),
    }
    for key, value in inputs.vision.items():
      out[key] = np.asarray(value)
    repeat = np.repeat(np.arange(len(batch["input_ids"])), num_samples)
    out["prompt_id"] = self._prompts_seen + repeat
    self._prompts_seen += len(batch["input_ids"])
    for key in ("image_counts", "video_counts"):
      if key in batch and batch[key] is not None and out.get("pixel_values" if key == "image_counts"
                                                             else "pixel_values_videos") is not None:
        out[key] = np.asarray(batch[key])[repeat]
    for key in ("ground_truth", "reward_context", "example_id"):
      if key in batch:
        out[key] = [batch[key][r] for r in repeat]
    return out

  def shared_vision(self, batch: dict[str, Any]) -> dict[str, Any]:
    """Packs each prompt's vision inputs once for rows that continue the same prompt.

    Rows with equal `prompt_id` (the G samples of a prompt) carry identical pixel values; the
    result keeps those of the first such row only and adds `image_embed_index` /
    `video_embed_index`, int32 [sum of the rows' vision tokens]: where each row's merged vision
    tokens are in the features of the kept pixel values (see `learner.hidden_states`).
    """
    if "prompt_id" not in batch:
      return batch
    if not self.config.is_multimodal:
      return {k: v for k, v in batch.items() if k != "prompt_id"}
    prompt_id = np.asarray(batch["prompt_id"])
    _, first = np.unique(prompt_id, return_index=True)
    kept = np.sort(first)
    unique = rows.take_rows(batch, kept)
    source = {int(prompt_id[r]): position for position, r in enumerate(kept)}
    out = {k: v for k, v in batch.items() if k != "prompt_id"}
    merge = self.config.vision.spatial_merge_size ** 2
    for kind, (counts_key, grid_key, (pixels_key,), item_keys) in rows.PACKED.items():
      if batch.get(pixels_key) is None or counts_key not in batch:
        continue
      counts = np.asarray(unique[counts_key])
      tokens = np.asarray(unique[grid_key]).reshape(-1, 3).prod(axis=1) // merge
      per_row = np.array([t.sum() for t in np.split(tokens, np.cumsum(counts)[:-1])], np.int64)
      start = np.concatenate([[0], np.cumsum(per_row)])
      out[f"{kind}_embed_index"] = np.concatenate(
          [np.arange(start[u], start[u + 1]) for u in (source[int(p)] for p in prompt_id)]).astype(np.int32)
      for key in (grid_key, pixels_key, *item_keys):
        if key in unique:
          out[key] = unique[key]
      out[counts_key] = counts
    return out

  def with_positions(self, batch: dict[str, Any]) -> dict[str, Any]:
    """Adds `positions` to an SFT batch: 0..n-1 over real tokens, or M-RoPE ids for Qwen2.5-VL."""
    mask = np.asarray(batch["attention_mask"]).astype(bool)
    if self.config.is_multimodal:
      positions, _ = vlm.get_rope_index(self.config, batch["input_ids"], batch.get("image_grid_thw"),
                                        batch.get("video_grid_thw"), batch.get("second_per_grid_ts"), mask)
    else:
      positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return dict(batch, positions=np.asarray(positions, np.int32))

  def device_vision(self, batch: dict[str, Any], mesh=None, rules=None) -> dict[str, Any]:
    """The vision inputs as the jitted learner takes them: grid_thw arrays become `VisionGrid`s
    (host-computed window/segment layout), `second_per_grid_ts` goes (positions are precomputed).

    With a `mesh` spanning processes, each holding its own rows, every process's packed vision
    inputs are first gathered in global row order (`global_vision`): the learner declares them
    replicated, so they must be the same on every process.
    """
    out = dict(batch)
    if sharding.spans_processes(mesh):
      out.update(self.global_vision(out, mesh, rules))
    for key in ("image_grid_thw", "video_grid_thw"):
      grid = out.get(key)
      if grid is not None and len(grid):
        out[key] = vision_grid(self.config.vision, np.asarray(grid))
      else:
        out.pop(key, None)
        out.pop("pixel_values" if key == "image_grid_thw" else "pixel_values_videos", None)
    out.pop("second_per_grid_ts", None)  # only get_rope_index needs it; positions are precomputed
    return out

  def global_vision(self, batch: dict[str, Any], mesh, rules=None) -> dict[str, Any]:
    """Every process's packed vision inputs, in global row order (a collective).

    For each kind: `pixel_values[_videos]` [patches, patch_dim] and `*_grid_thw` [items, 3] of all
    the processes' rows, concatenated in the order `sharding.shard_batch` lays out their rows, and
    `*_embed_index` (`shared_vision`) shifted by the merged features of the processes before, so
    that it indexes the features of the gathered pixels. A kind no process has is left out.

    The simplest correct layout: each device holds all the step's pixels (the tower's compute
    still splits over `act_patches`); the features land on the global rows in row-major order.
    """
    merge = self.config.vision.spatial_merge_size ** 2
    # int32 grids: jax (without x64) would gather int64 as int32 anyway.
    empty = {"pixels": np.zeros((0, self.config.vision.patch_dim), np.float32), "grid": np.zeros((0, 3), np.int32),
             "index": np.zeros((0,), np.int32)}
    out = {}
    for kind, (_, grid_key, (pixels_key,), _) in rows.PACKED.items():
      keys = {"pixels": pixels_key, "grid": grid_key, "index": f"{kind}_embed_index"}
      parts = {name: sharding.gather_process_rows(
          empty[name] if batch.get(key) is None else np.asarray(batch[key], empty[name].dtype), mesh, rules)
               for name, key in keys.items()}
      features = [int(grid.prod(axis=1).sum()) // merge for grid in parts["grid"]]
      offsets = np.cumsum([0] + features[:-1])
      gathered = {"pixels": np.concatenate(parts["pixels"]), "grid": np.concatenate(parts["grid"]),
                  "index": np.concatenate([i + o for i, o in zip(parts["index"], offsets)]).astype(np.int32)}
      for name, key in keys.items():
        if len(gathered[name]):
          out[key] = gathered[name]
    return out

