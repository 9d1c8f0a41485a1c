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
from r1jax.models.vision import ladder_bucket, pad_vision_patches, vision_grid
from r1jax.envs.runner import Trajectory, completion_columns
from r1jax.sampling import Prompt, PromptBatch, SampleOutput
from r1jax.train import rows


def _split(values, counts):
  if values is None or counts is None:
    return [None] * (0 if counts is None else len(counts))
  return np.split(np.asarray(values), np.cumsum(counts)[:-1])


def _runs(starts, lengths) -> np.ndarray:
  """int32 [sum(lengths)]: start, start + 1, ... for each (start, length) pair, concatenated."""
  return np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lengths)] or [np.zeros(0, np.int64)]
                        ).astype(np.int32)


def _item_pixels(pixels, grid: np.ndarray, items) -> np.ndarray:
  """The packed pixel values [their patches, patch_dim] of `items` (indices into `grid`'s rows, the
  packed items' [items, 3] patch grids), in that order; none gives [0, patch_dim]."""
  pixels = np.asarray(pixels)
  first_patch = np.concatenate([[0], np.cumsum(grid.prod(axis=1))])
  return np.concatenate([pixels[first_patch[i]:first_patch[i + 1]] for i in items] or [pixels[:0]])


class SequenceBuilder:

  def __init__(self, model):
    self.model = model
    self.config = model.config
    self.pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
    self._prompts_seen = 0  # the next `prompt_id`: ids never repeat across calls (sampling rounds)
    self._items_seen = 0  # the next vision item id (`trajectory_batch`)

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
    """The learner rows of single-turn samples: each row's completion is its one action.

    The completion columns are the longest completion's, bucketed (`runner.completion_columns`,
    at most max_new_tokens).
    """
    tokens, logprobs, lengths = (np.asarray(x) for x in (output.tokens, output.logprobs, output.lengths))
    trajectories = [Trajectory(actions=[(tokens[r, :lengths[r]], logprobs[r, :lengths[r]])])
                    for r in range(len(tokens))]
    return self.trajectory_batch(batch, output.prompts, trajectories, num_samples,
                                 completion_columns(trajectories, tokens.shape[1]))

  def trajectory_batch(self, batch: dict[str, Any], prompts: PromptBatch, trajectories: list[Trajectory],
                       num_samples: int, width: int) -> dict[str, Any]:
    """Rows prompt-major (row = prompt * G + g): the prompt, then the row's actions and
    observations in order, right-padded to `width` completion columns.

    Returns host arrays:
      input_ids / attention_mask [rows, P + width]; positions [rows, P + width] or [3, rows,
      P + width]: an action token continues one past the token before it, an observation's
      tokens are positioned as `vlm.get_rope_index` positions them after what came before (so
      these are the sampler's positions, and those of a no-cache forward over the trajectory);
      completion_ids / completion_mask / sampler_logprobs [rows, width]: completion_mask is the
      action mask (observation tokens and padding 0), sampler log-probs 0 off actions;
      the packed vision inputs of each row, its prompt's items then its observations' items,
      with `image_item_ids` / `video_item_ids` [items] (equal ids: identical items, e.g. a
      prompt's video in its G rows, so `shared_vision` encodes it once); `prompt_id` [rows],
      unique over every call of this builder (rows of different sampling rounds never share
      one); each prompt's ground truth / reward context / example id repeated G times.
    """
    rows, length = len(trajectories), prompts.length
    repeat = np.repeat(np.arange(prompts.batch_size), num_samples)
    ids = np.full((rows, width), self.pad_id, np.int32)
    real = np.zeros((rows, width), bool)
    action = np.zeros((rows, width), bool)
    logprobs = np.zeros((rows, width), np.float32)
    multimodal = prompts.positions.ndim == 3
    positions = np.zeros((3 if multimodal else 1, rows, width), np.int32)
    starts = length + np.asarray(prompts.decode_deltas)[repeat]
    for row, trajectory in enumerate(trajectories):
      column, position = 0, int(starts[row])
      for kind, tokens, token_logprobs, observation in trajectory.segments():
        n = len(tokens)
        if column + n > width:
          raise ValueError(f"row {row}'s trajectory needs more than the {width} completion columns")
        ids[row, column:column + n], real[row, column:column + n] = tokens, True
        if kind == "action":
          action[row, column:column + n], logprobs[row, column:column + n] = True, token_logprobs
          positions[:, row, column:column + n] = position + np.arange(n)
          position += n
        else:
          positions[:, row, column:column + n] = self._observation_positions(observation, multimodal) + position
          position = int(positions[:, row, column:column + n].max()) + 1
        column += n
      positions[:, row, column:] = position + np.arange(width - column)  # padding: slots after the end
    prompt_positions = prompts.positions[:, repeat] if multimodal else prompts.positions[repeat][None]
    all_positions = np.concatenate([prompt_positions, positions], axis=2)
    out = {
        "input_ids": np.concatenate([prompts.input_ids[repeat], ids], axis=1),
        "attention_mask": np.concatenate([prompts.attention_mask[repeat], real], axis=1),
        "positions": all_positions if multimodal else all_positions[0],
        "completion_mask": action,
        "completion_ids": ids,
        "sampler_logprobs": logprobs,
        "prompt_id": self._prompts_seen + repeat,
    }
    self._prompts_seen += prompts.batch_size
    if self.config.is_multimodal:
      out.update(self._trajectory_vision(prompts, trajectories, repeat))
    for key in ("ground_truth", "reward_context", "example_id"):
      if key in batch:
        out[key] = [batch[key][r] for r in repeat]
    return out

  def _observation_positions(self, observation: Prompt, multimodal: bool) -> np.ndarray:
    """[axes, n] positions of an observation's tokens from 0 (M-RoPE runs for its vision items)."""
    n = len(observation.input_ids)
    if not multimodal:
      return np.arange(n)[None]
    positions, _ = vlm.get_rope_index(self.config, np.asarray(observation.input_ids)[None],
                                      observation.image_grid_thw, observation.video_grid_thw,
                                      observation.second_per_grid_ts)
    return positions[:, 0]

  def _trajectory_vision(self, prompts: PromptBatch, trajectories: list[Trajectory], repeat) -> dict[str, Any]:
    """Each row's vision items packed in row order: its prompt's, then its observations'."""
    out = {}
    for kind, (counts_key, grid_key, (pixels_key,), _) in rows.PACKED.items():
      if getattr(prompts, grid_key) is None:
        prompt_grids = [np.zeros((0, 3), np.int64)] * prompts.batch_size
        prompt_pixels, prompt_seconds = [None] * prompts.batch_size, [None] * prompts.batch_size
      else:
        prompt_grids = _split(getattr(prompts, grid_key), getattr(prompts, counts_key))
        prompt_pixels = self._split_pixels(getattr(prompts, pixels_key), prompt_grids)
        prompt_seconds = _split(prompts.second_per_grid_ts, prompts.video_counts) if kind == "video" else []
      prompt_ids = [self._items_seen + np.arange(len(g)) + sum(len(x) for x in prompt_grids[:p])
                    for p, g in enumerate(prompt_grids)]
      self._items_seen += sum(len(g) for g in prompt_grids)
      grids, pixels, seconds, item_ids, counts = [], [], [], [], []
      for row, trajectory in enumerate(trajectories):
        p = repeat[row]
        row_grids = [prompt_grids[p]] if prompt_grids and len(prompt_grids[p]) else []
        row_pixels = [prompt_pixels[p]] if row_grids else []
        row_seconds = [prompt_seconds[p]] if row_grids and kind == "video" else []
        row_ids = [prompt_ids[p]] if row_grids else []
        for observation in trajectory.observations:
          grid = getattr(observation, grid_key)
          if grid is None or not len(grid):
            continue
          row_grids.append(np.asarray(grid).reshape(-1, 3))
          row_pixels.append(np.asarray(getattr(observation, pixels_key), np.float32))
          if kind == "video":
            row_seconds.append(np.ones(len(grid), np.float32) if observation.second_per_grid_ts is None
                               else np.asarray(observation.second_per_grid_ts, np.float32))
          row_ids.append(self._items_seen + np.arange(len(grid)))
          self._items_seen += len(grid)
        counts.append(sum(len(g) for g in row_grids))
        grids += row_grids
        pixels += row_pixels
        seconds += row_seconds
        item_ids += row_ids
      if not sum(counts):
        continue
      out[counts_key] = np.asarray(counts, np.int64)
      out[grid_key] = np.concatenate(grids).astype(np.int64)
      out[pixels_key] = np.concatenate(pixels).astype(np.float32)
      out[f"{kind}_item_ids"] = np.concatenate(item_ids).astype(np.int64)
      if kind == "video":
        out["second_per_grid_ts"] = np.concatenate(seconds).astype(np.float32)
    return out

  def shared_vision(self, batch: dict[str, Any], cached: dict[str, dict[int, int]] | None = None) -> dict[str, Any]:
    """Packs every distinct vision item once: a prompt's video once for its G rows.

    Items with equal `image_item_ids` / `video_item_ids` (`trajectory_batch`) carry identical
    pixel values; without item ids, rows with equal `prompt_id` share all their items. The
    result keeps the first copy of each item only and adds `image_embed_index` /
    `video_embed_index`, int32 [sum of the rows' vision tokens]: where each row's merged vision
    tokens are in the features of the kept pixel values (see `learner.hidden_states`).

    With `cached` ({kind: {item id: its first merged token in a step's `VisionCache`}}, every
    item of the batch included), the kept items' pixel values and grids are replaced by
    `image_hidden_index` / `video_hidden_index`, int32 [kept items' merged tokens]: the rows of
    the cached pre-merger hidden states that the learner merges into those features.
    """
    if "prompt_id" not in batch:
      if cached is not None:
        raise ValueError("cached vision features need the batch's prompt_id (trajectory_batch) to find its items")
      return batch
    item_keys = ("prompt_id", "image_item_ids", "video_item_ids")
    out = {k: v for k, v in batch.items() if k not in item_keys}
    if not self.config.is_multimodal:
      return out
    merge = self.config.vision.spatial_merge_size ** 2
    for kind, (counts_key, grid_key, (pixels_key,), per_item_keys) in rows.PACKED.items():
      if batch.get(pixels_key) is None or counts_key not in batch:
        continue
      grid = np.asarray(batch[grid_key]).reshape(-1, 3)
      ids, kept = self._unique_items(batch, kind)
      tokens = grid.prod(axis=1) // merge
      feature_start = dict(zip(ids[kept].tolist(), np.concatenate([[0], np.cumsum(tokens[kept])[:-1]]).tolist()))
      out[f"{kind}_embed_index"] = _runs([feature_start[int(i)] for i in ids], tokens)
      if cached is not None:
        missing = [int(i) for i in ids[kept] if int(i) not in cached.get(kind, {})]
        if missing:
          raise ValueError(f"{kind} items {missing[:5]} of the learner batch are not in the step's vision cache")
        if len(kept):
          out[f"{kind}_hidden_index"] = _runs([cached[kind][int(i)] for i in ids[kept]], tokens[kept])
        for key in (pixels_key, grid_key) + tuple(per_item_keys):
          out.pop(key, None)
        continue
      out[pixels_key] = _item_pixels(batch[pixels_key], grid, kept)
      out[grid_key] = grid[kept]
      for key in per_item_keys:
        if key in batch and key not in item_keys:
          out[key] = np.asarray(batch[key])[kept]
    return out

  def unique_vision(self, batch: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{kind: (item ids int64 [unique items], pixel values [their patches, patch_dim], grid_thw
    [unique items, 3])}: each distinct item of `batch` (a `trajectory_batch`) once, in order of
    first appearance, as `shared_vision` keeps them. Kinds without items are left out."""
    out = {}
    for kind, (counts_key, grid_key, (pixels_key,), _) in rows.PACKED.items():
      if batch.get(pixels_key) is None or counts_key not in batch or not len(batch[grid_key]):
        continue
      ids, kept = self._unique_items(batch, kind)
      grid = np.asarray(batch[grid_key]).reshape(-1, 3)
      out[kind] = (ids[kept], _item_pixels(batch[pixels_key], grid, kept), grid[kept])
    return out

  @staticmethod
  def _unique_items(batch: dict[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [items] of the batch's packed `kind` items, indices of each id's first item, ascending)."""
    counts_key = rows.PACKED[kind][0]
    ids = batch.get(f"{kind}_item_ids")
    if ids is None:  # the k-th item of every row of a prompt is the same item
      prompt_id = np.asarray(batch["prompt_id"])
      ids = np.concatenate([prompt_id[r] * (1 << 20) + np.arange(c) for r, c in enumerate(batch[counts_key])] or [[]])
    ids = np.asarray(ids, np.int64)
    _, first = np.unique(ids, return_index=True)
    return ids, np.sort(first)

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
    """The vision inputs as the jitted learner takes them, with shapes from a few buckets only.

    grid_thw arrays become `VisionGrid`s (host-computed window/segment layout) of pixel values
    padded to a patch bucket (`vision.pad_vision_patches`), and `image_embed_index` /
    `video_embed_index` (`shared_vision`; without it, the identity) are padded with index 0 to a
    `vision.ladder_bucket` of the rows' vision tokens: the learner places the first n features
    of the index at the n pad tokens of its rows, so the padding is never read, and images of
    new sizes or counts reuse the compiled learner. `second_per_grid_ts` goes (positions are
    precomputed). Cached features' `*_hidden_index` are padded with index 0 to a ladder bucket
    likewise (their merged padding rows are never placed).

    With a `mesh` spanning processes, each holding its own rows, every process's packed vision
    inputs are first gathered in global row order (`global_vision`): the learner declares them
    replicated, so they must be the same on every process.
    """
    out = dict(batch)
    if sharding.spans_processes(mesh):
      if any(f"{kind}_hidden_index" in out for kind in rows.PACKED):
        raise ValueError("cached vision features (`*_hidden_index`) are single-process only: the step's "
                         "VisionCache holds this process's items")
      out.update(self.global_vision(out, mesh, rules))
    for kind, (_, grid_key, (pixels_key,), _) in rows.PACKED.items():
      hidden_index = out.get(f"{kind}_hidden_index")
      if hidden_index is not None:  # cached pre-merger features (`shared_vision(cached=...)`) instead of pixels
        for key in (f"{kind}_embed_index", f"{kind}_hidden_index"):
          out[key] = np.pad(np.asarray(out[key], np.int32), (0, ladder_bucket(len(out[key])) - len(out[key])))
        continue
      grid = out.get(grid_key)
      if grid is None or not len(grid):
        out.pop(grid_key, None)
        out.pop(pixels_key, None)
        continue
      grid = np.asarray(grid).reshape(-1, 3)
      index = out.get(f"{kind}_embed_index")
      if index is None:
        index = np.arange(int(grid.prod(axis=1).sum()) // self.config.vision.spatial_merge_size ** 2)
      out[f"{kind}_embed_index"] = np.pad(np.asarray(index, np.int32), (0, ladder_bucket(len(index)) - len(index)))
      out[pixels_key], grid = pad_vision_patches(self.config.vision, out[pixels_key], grid)
      out[grid_key] = vision_grid(self.config.vision, grid)
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

