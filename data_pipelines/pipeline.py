"""The grain pipelines the trainers consume: `make_prompt_iterator` (RL) and `make_sft_iterator`.

    source (registered dataset) ─ host shard [i::n] ─ seeded shuffle (new order each epoch)
      ─ repeat ─ map EncodeRecord (decode media, tokenize; bad records → Skipped markers)
      ─ to_iter_dataset (reader threads) ─ mp_prefetch (worker processes, if num_workers > 0)
      ─ BatchExamples (drop + count markers, pad to buckets) ─ thread prefetch of batches

Every source index yields exactly one element up to the batching stage, so the batches depend
only on (data, seed, host shard, batch size): not on worker or thread counts, nor on timing.
"""
from __future__ import annotations

import atexit
import weakref
from typing import Any

import grain
from absl import flags

from data_pipelines import registry
from data_pipelines.batching import (BatchExamplesIterDataset, PromptCollator, SftCollator,
                                     check_buckets)
from data_pipelines.config import DataConfig
from data_pipelines.transforms import EncodeRecord
from r1jax import processing


def host_shard(shard_index: int | None = None, shard_count: int | None = None
               ) -> tuple[int, int]:
  """(index, count) of this host's shard: the arguments, else JAX's process index/count."""
  if shard_index is None and shard_count is None:
    options = grain.sharding.ShardByJaxProcess()
    return options.shard_index, options.shard_count
  if shard_index is None or shard_count is None or not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                     f"shard_count={shard_count}")
  return shard_index, shard_count


def _data_section(config) -> Any:
  """Accepts a full config (uses .data), a data section, or a DataConfig."""
  if isinstance(config, DataConfig):
    return config
  if "data" in config:
    return config["data"]
  return config


def _make_iterator(config, tokenizer, vision_cfg, shard_index, shard_count, sft: bool):
  cfg, spec = registry.build(_data_section(config))
  index, count = host_shard(shard_index, shard_count)
  if cfg.batch_size % count:
    raise ValueError(f"config.data.batch_size={cfg.batch_size} is not divisible by the "
                     f"{count} hosts")
  if tokenizer.pad_token_id is None:
    raise ValueError("the tokenizer has no pad_token_id (needed to pad batches)")
  key = "max_seq_length" if sft else "max_prompt_length"
  buckets = check_buckets(cfg.length_buckets, getattr(cfg, key), key)
  collate = (SftCollator if sft else PromptCollator)(
      pad_id=tokenizer.pad_token_id, buckets=buckets, patch_dim=vision_cfg.patch_dim)

  if len(spec.source) < count:
    raise ValueError(f"dataset {cfg.name!r} at {cfg.path!r} has {len(spec.source)} records, "
                     f"fewer than the {count} host shards")
  ds = grain.MapDataset.source(spec.source)[index::count]
  shard_size = len(ds)
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs)
  ds = ds.map(EncodeRecord(spec.to_example, cfg, tokenizer, vision_cfg, sft=sft))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                            prefetch_buffer_size=cfg.read_buffer_size))
  if cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain's worker processes read absl flags; outside an absl app (tests, notebooks) they
      # would raise UnparsedFlagAccessError. The defaults are what we want.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size))
  it = BatchExamplesIterDataset(it, cfg.batch_size // count, collate,
                                max_consecutive_skips=shard_size)
  if cfg.prefetch_batches > 0:
    it = grain.experimental.ThreadPrefetchIterDataset(
        it, prefetch_buffer_size=cfg.prefetch_batches)
  return _PipelineIterator(iter(it))


class _PipelineIterator(grain.DatasetIterator):
  """The pipeline's outermost iterator: forwards to grain's, and lets go of them when closed.

  grain's iterators close themselves in `__del__`, which fails with an `AttributeError` ("Exception
  ignored in ... DatasetIterator.__del__") when they are collected during interpreter shutdown,
  after the globals of grain's modules are gone. So `close()` drops the grain iterators (collected
  then, while their modules exist), and the iterators still open when the interpreter exits are
  closed by an atexit hook, before that teardown.
  """

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    _OPEN_ITERATORS.add(self)

  def __next__(self):
    self._assert_not_closed()
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    self._assert_not_closed()
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._assert_not_closed()
    self._parent.set_state(state)

  def close(self) -> None:
    """Stops the pipeline's threads and worker processes; idempotent."""
    if self._closed:
      return
    super().close()  # closes the grain iterators below
    self._parents = ()
    _OPEN_ITERATORS.discard(self)


_OPEN_ITERATORS: weakref.WeakSet[_PipelineIterator] = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
  for iterator in list(_OPEN_ITERATORS):
    iterator.close()


def make_prompt_iterator(config, tokenizer,
                         vision_cfg: processing.VisionProcessorConfig | None = None, *,
                         shard_index: int | None = None,
                         shard_count: int | None = None) -> grain.DatasetIterator:
  """A checkpointable iterator of RL prompt batches for this host (see the package docstring).

  Args:
    config: the run config (its `.data` section is used), a data section or a DataConfig.
    tokenizer: transformers tokenizer with Qwen2.5-VL's chat template and special tokens.
    vision_cfg: the model's processor settings (default: Qwen2.5-VL's).
    shard_index, shard_count: this host's shard; default jax.process_index()/process_count().

  Returns:
    A grain DatasetIterator: `next(it)` gives a batch dict, `it.get_state()` /
    `it.set_state(state)` save and restore the position (JSON-serialisable), `it.close()`
    stops worker processes.
  """
  return _make_iterator(config, tokenizer, vision_cfg or processing.VisionProcessorConfig(),
                        shard_index, shard_count, sft=False)


def make_sft_iterator(config, tokenizer,
                      vision_cfg: processing.VisionProcessorConfig | None = None, *,
                      shard_index: int | None = None,
                      shard_count: int | None = None) -> grain.DatasetIterator:
  """Like `make_prompt_iterator`, but batches prompt + response, right-padded, with loss_mask."""
  return _make_iterator(config, tokenizer, vision_cfg or processing.VisionProcessorConfig(),
                        shard_index, shard_count, sft=True)
