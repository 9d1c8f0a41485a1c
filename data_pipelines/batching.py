"""Batches of encoded examples padded to static bucket lengths, and the grain batching stage.

The batching stage runs in the trainer process after the worker processes. It drops the
`Skipped` markers (counting them, with their counts in the checkpointed state and in every
batch's 'data_stats'), gathers `batch_size` examples and pads them to the smallest configured
bucket length that fits, so the sampler and the train step see a handful of static shapes.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from data_pipelines import errors
from data_pipelines.transforms import EncodedExample
from r1jax.sampling.prompts import bucket_length

_MIN_BUCKET = 64


def default_buckets(max_length: int) -> tuple[int, ...]:
  """Powers of two from 64 below `max_length`, then `max_length` itself."""
  buckets = []
  length = _MIN_BUCKET
  while length < max_length:
    buckets.append(length)
    length *= 2
  return tuple(buckets) + (max_length,)


def check_buckets(buckets: Sequence[int], max_length: int, key: str) -> tuple[int, ...]:
  """Validates configured buckets: increasing, positive, the largest >= `max_length`."""
  buckets = tuple(int(b) for b in buckets) or default_buckets(max_length)
  if any(b <= 0 for b in buckets) or list(buckets) != sorted(set(buckets)):
    raise ValueError(f"config.data.length_buckets must be increasing positive ints, got "
                     f"{buckets}")
  if buckets[-1] < max_length:
    raise ValueError(f"config.data.length_buckets' largest bucket {buckets[-1]} is below "
                     f"config.data.{key}={max_length}")
  return buckets


def _vision_inputs(examples: Sequence[EncodedExample], patch_dim: int) -> dict[str, np.ndarray]:
  """Concatenates the examples' vision inputs in row order (the order of their placeholders)."""

  def cat(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate([np.zeros(shape, dtype)] + [getattr(e, name) for e in examples])

  return {
      "pixel_values": cat("pixel_values", (0, patch_dim), np.float32),
      "image_grid_thw": cat("image_grid_thw", (0, 3), np.int32),
      "image_counts": np.asarray([len(e.image_grid_thw) for e in examples], np.int32),
      "pixel_values_videos": cat("pixel_values_videos", (0, patch_dim), np.float32),
      "video_grid_thw": cat("video_grid_thw", (0, 3), np.int32),
      "second_per_grid_ts": cat("second_per_grid_ts", (0,), np.float32),
      "video_counts": np.asarray([len(e.video_grid_thw) for e in examples], np.int32),
  }


def _python_fields(examples: Sequence[EncodedExample]) -> dict[str, list[Any]]:
  return {
      "example_id": [e.example_id for e in examples],
      "messages": [e.messages for e in examples],
      "ground_truth": [e.ground_truth for e in examples],
      "reward_context": [e.reward_context for e in examples],
  }


@dataclasses.dataclass(frozen=True)
class PromptCollator:
  """RL prompt batches: input_ids LEFT-padded to a bucket (generation starts at the right).

  Attributes:
    pad_id: the tokenizer's pad token id.
    buckets: allowed padded lengths, increasing.
    patch_dim: the processor's flattened patch length (for empty vision arrays).
  """
  pad_id: int
  buckets: tuple[int, ...]
  patch_dim: int

  def __call__(self, examples: Sequence[EncodedExample]) -> dict[str, Any]:
    lengths = np.asarray([len(e.input_ids) for e in examples], np.int32)
    length = bucket_length(int(lengths.max()), self.buckets, what="sequence")
    input_ids = np.full((len(examples), length), self.pad_id, np.int32)
    attention_mask = np.zeros((len(examples), length), np.int32)
    for row, example in enumerate(examples):
      input_ids[row, length - lengths[row]:] = example.input_ids
      attention_mask[row, length - lengths[row]:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "prompt_lengths": lengths,
            **_vision_inputs(examples, self.patch_dim), **_python_fields(examples)}


@dataclasses.dataclass(frozen=True)
class SftCollator:
  """SFT batches: input_ids RIGHT-padded to a bucket, loss_mask 1 on response tokens."""
  pad_id: int
  buckets: tuple[int, ...]
  patch_dim: int

  def __call__(self, examples: Sequence[EncodedExample]) -> dict[str, Any]:
    lengths = np.asarray([len(e.input_ids) for e in examples], np.int32)
    length = bucket_length(int(lengths.max()), self.buckets, what="sequence")
    input_ids = np.full((len(examples), length), self.pad_id, np.int32)
    attention_mask = np.zeros((len(examples), length), np.int32)
    loss_mask = np.zeros((len(examples), length), np.int32)
    for row, example in enumerate(examples):
      input_ids[row, :lengths[row]] = example.input_ids
      attention_mask[row, :lengths[row]] = 1
      loss_mask[row, :lengths[row]] = example.loss_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask,
            "sequence_lengths": lengths, **_vision_inputs(examples, self.patch_dim),
            **_python_fields(examples)}


class _BatchExamplesIterator(grain.DatasetIterator):
  """Drops and counts Skipped markers, collates `batch_size` examples per batch."""

  def __init__(self, parent: grain.DatasetIterator, batch_size: int,
               collate: Callable[[Sequence[EncodedExample]], dict[str, Any]],
               max_consecutive_skips: int | None):
    super().__init__(parent)
    self._batch_size = batch_size
    self._collate = collate
    self._max_consecutive_skips = max_consecutive_skips
    self._skips = errors.SkipCounter()
    self._examples = 0

  def __next__(self) -> dict[str, Any]:
    examples = []
    consecutive_skips = 0
    while len(examples) < self._batch_size:
      element = next(self._parent)  # StopIteration ends the data: a partial batch is dropped
      if isinstance(element, errors.Skipped):
        self._skips.add(element)
        consecutive_skips += 1
        if self._max_consecutive_skips and consecutive_skips >= self._max_consecutive_skips:
          # A repeated dataset with no usable record would otherwise loop forever.
          raise ValueError(f"{consecutive_skips} records in a row were skipped (a full pass "
                           f"over this host's shard), last: {element.where}: "
                           f"{element.message}; skip counts: {self._skips.counts}")
      else:
        examples.append(element)
        consecutive_skips = 0
    self._examples += len(examples)
    batch = self._collate(examples)
    batch["data_stats"] = self.stats()
    return batch

  def stats(self) -> dict[str, int]:
    """Cumulative counts on this host: examples batched and records skipped, by reason."""
    return {"examples": self._examples,
            **{f"skipped_{reason}": n for reason, n in self._skips.counts.items()}}

  def get_state(self) -> dict[str, Any]:
    return {"parent": copy.deepcopy(self._parent.get_state()), "examples": self._examples,
            "skipped": dict(self._skips.counts)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._examples = int(state["examples"])
    self._skips = errors.SkipCounter(state["skipped"])

  def __str__(self) -> str:
    return f"BatchExamplesIterator(batch_size={self._batch_size})"


class BatchExamplesIterDataset(grain.IterDataset):
  """An IterDataset of collated batches of `EncodedExample`s (Skipped markers dropped)."""

  def __init__(self, parent: grain.IterDataset, batch_size: int,
               collate: Callable[[Sequence[EncodedExample]], dict[str, Any]],
               max_consecutive_skips: int | None = None):
    """See `_BatchExamplesIterator`; `max_consecutive_skips` (e.g. the shard size) raises
    when that many records in a row are skipped."""
    super().__init__(parent)
    if batch_size < 1:
      raise ValueError(f"batch size must be >= 1, got {batch_size}")
    self._batch_size = batch_size
    self._collate = collate
    self._max_consecutive_skips = max_consecutive_skips

  def __iter__(self) -> _BatchExamplesIterator:
    return _BatchExamplesIterator(self._parent.__iter__(), self._batch_size, self._collate,
                                  self._max_consecutive_skips)

  def __str__(self) -> str:
    return f"BatchExamplesIterDataset(batch_size={self._batch_size})"
