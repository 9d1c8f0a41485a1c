"""Row operations on host batches whose vision inputs are packed across rows.

A batch holds per-row arrays ([rows, ...]) and packed vision arrays: `pixel_values` rows belong to
images in `image_grid_thw` order, and `image_counts[r]` images belong to row r (videos likewise
with `pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`, `video_counts`). These
helpers select, repeat and concatenate rows while keeping the packing consistent. Python-object
lists (ground truth, reward context) are treated as per-row too.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

PACKED = {
    "image": ("image_counts", "image_grid_thw", ("pixel_values",), ("image_item_ids",)),
    "video": ("video_counts", "video_grid_thw", ("pixel_values_videos",), ("second_per_grid_ts", "video_item_ids")),
}
_PACKED_KEYS = {k for counts, grid, patches, per_item in PACKED.values() for k in (counts, grid, *patches, *per_item)}


def num_rows(batch: dict[str, Any]) -> int:
  return len(batch["input_ids"])


def take_rows(batch: dict[str, Any], rows: Sequence[int]) -> dict[str, Any]:
  """The sub-batch of `rows` (in that order; repeats allowed)."""
  rows = np.asarray(rows, np.int64)
  out = {}
  for key, value in batch.items():
    if key in _PACKED_KEYS:
      continue
    if key == "positions" and value.ndim == 3:  # M-RoPE ids [3, rows, length]
      out[key] = value[:, rows]
    elif isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == num_rows(batch):
      out[key] = value[rows]
    elif isinstance(value, list) and len(value) == num_rows(batch):
      out[key] = [value[r] for r in rows]
    else:
      out[key] = value  # per-batch values (stats, scalars)
  for counts_key, grid_key, patch_keys, item_keys in PACKED.values():
    if counts_key not in batch:
      continue
    counts = np.asarray(batch[counts_key])
    grid = np.asarray(batch[grid_key]).reshape(-1, 3)
    first_item = np.concatenate([[0], np.cumsum(counts)])
    patches_per_item = grid.prod(axis=1)
    first_patch = np.concatenate([[0], np.cumsum(patches_per_item)])
    items = np.concatenate([np.arange(first_item[r], first_item[r + 1]) for r in rows]).astype(np.int64) \
        if len(rows) else np.zeros((0,), np.int64)
    out[counts_key] = counts[rows]
    out[grid_key] = grid[items]
    for key in item_keys:
      if key in batch:
        out[key] = np.asarray(batch[key])[items]
    patch_rows = np.concatenate([np.arange(first_patch[i], first_patch[i + 1]) for i in items]).astype(np.int64) \
        if len(items) else np.zeros((0,), np.int64)
    for key in patch_keys:
      if key in batch:
        out[key] = np.asarray(batch[key])[patch_rows]
  return out


def repeat_rows(batch: dict[str, Any], times: int) -> dict[str, Any]:
  """Each row `times` times in a row (prompt-major: row r becomes rows r*times .. r*times+times-1)."""
  return take_rows(batch, np.repeat(np.arange(num_rows(batch)), times))


def left_pad_to(batch: dict[str, Any], length: int, pad_id: int) -> dict[str, Any]:
  """Left-pads input_ids / attention_mask / positions to `length` columns."""
  extra = length - batch["input_ids"].shape[1]
  if extra <= 0:
    return batch
  out = dict(batch)
  out["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (extra, 0)), constant_values=pad_id)
  out["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (extra, 0)))
  if "positions" in batch:
    pad = ((0, 0),) * (batch["positions"].ndim - 1) + ((extra, 0),)
    out["positions"] = np.pad(batch["positions"], pad)
  return out


# Arrays [rows, completion_len] over the last completion_len columns of a learner row, and the
# value of their padding columns.
COMPLETION_PADDING = {"completion_mask": 0, "completion_ids": None, "sampler_logprobs": 0.0, "old_logprobs": 0.0,
                      "ref_logprobs": 0.0, "advantages": 0.0, "turn_index": -1}


def right_pad_completion(batch: dict[str, Any], width: int, pad_id: int) -> dict[str, Any]:
  """Adds padding columns after every row's completion up to `width` completion columns.

  input_ids get `pad_id` (as `completion_ids`), attention_mask False, positions continue one by
  one after each row's last (causal attention: no real token sees them); the
  completion arrays get `COMPLETION_PADDING` (per-token `advantages` [rows, completion_len]
  only; per-row ones stay).
  """
  if "completion_mask" not in batch:
    return batch
  extra = width - batch["completion_mask"].shape[1]
  if extra <= 0:
    return batch
  out = dict(batch)
  pad_columns = lambda x, value: np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)], constant_values=value)
  for key, value in COMPLETION_PADDING.items():
    if key in batch and np.ndim(batch[key]) == 2:
      out[key] = pad_columns(np.asarray(batch[key]), pad_id if value is None else value)
  out["input_ids"] = pad_columns(batch["input_ids"], pad_id)
  out["attention_mask"] = pad_columns(batch["attention_mask"], 0)
  if "positions" in batch:
    positions = np.asarray(batch["positions"])
    out["positions"] = np.concatenate([positions, positions[..., -1:] + 1 + np.arange(extra)], axis=-1)
  return out


def concat_rows(batches: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
  """Rows of all `batches` in order; sequences are left-padded to the longest prompt first, and
  completions right-padded to the widest (`right_pad_completion`)."""
  if "completion_mask" in batches[0]:
    width = max(b["completion_mask"].shape[1] for b in batches)
    batches = [right_pad_completion(b, width, pad_id) for b in batches]
  length = max(b["input_ids"].shape[1] for b in batches)
  batches = [left_pad_to(b, length, pad_id) for b in batches]
  out = {}
  for key, value in batches[0].items():
    values = [b[key] for b in batches]
    if key == "positions" and value.ndim == 3:
      out[key] = np.concatenate(values, axis=1)
    elif isinstance(value, np.ndarray) and (value.ndim >= 1):
      out[key] = np.concatenate(values, axis=0)
    elif isinstance(value, list):
      out[key] = [x for v in values for x in v]
    else:
      out[key] = values[-1]
  return out
