"""On-device sampling with a KV cache: one jitted prefill, one jitted decode loop.

Prefill (per call, B prompts): the vision tower once over all the prompts' images and videos,
then one forward of the B left-padded prompts, writing their keys/values into a cache of P
slots. That cache is shared, not copied, by the G samples of each prompt (rows prompt-major):
no prompt is prefilled G times, and decode attention reads each prompt's keys/values once per
step for all its G rows (`llm.shared_prefix_decode_attention`). Each row also gets its own
cache for its completion.

Decode (`lax.while_loop`s, static shapes): each step feeds the B*G last tokens at their own
cache slot t, writes only that slot of every layer's own cache (per-layer, carried by the loop,
so XLA updates it in place), chooses the next tokens and stops when every row has emitted a
stop token or after max_new_tokens. A long completion budget is decoded in a few
phases, each a loop over a cache with room for the tokens up to the phase's end only: decode
attention reads every slot of the cache, so this cuts its reads (and those slots' masked
softmax terms) by up to half; the cache is padded once between phases.

Compiled executables are cached by everything that changes a shape or a static choice (prompt
bucket, batch, G, max_new_tokens, greedy / top-k / top-p / entropy, vision patch buckets, input
shardings); each new one is logged with its compile time.

Several processes (a mesh spanning hosts): every process calls the sampler at once with its own
prompts, the same number on each. They agree on the padded prompt length and the stop-id width;
each row's arrays are split over the batch mesh axes (or, when a process's rows do not split
evenly over its devices, gathered from every process and replicated); every process's packed
pixel values are gathered, in global row order, so that the vision inputs really are
replicated. The outputs are this process's rows, fetched from the global arrays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from r1jax import sharding
from r1jax.models import vlm
from r1jax.models.layers import constrain
from r1jax.models.llm import init_cache, with_shared_prefix
from r1jax.models.vision import check_prompt_fits, pad_vision_patches, vision_grid
from r1jax.sampling import selection
from r1jax.sampling.controls import SamplingControls, StaticControls
from r1jax.sampling.outputs import SampleOutput
from r1jax.sampling.prompts import Prompt, PromptBatch, as_prompt, batch_prompts, bucket_length

Array = jax.Array
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CompileEvent:
  """One compilation: which function, for which key, and how long it took."""

  function: str
  key: tuple
  seconds: float


@dataclasses.dataclass(frozen=True)
class Prefilled:
  """The prompts' KV cache, shared by G samples each; consumed by one `decode` (which donates it
  when it decodes in one phase).

  Attributes:
    prompts: the left-padded batch (B prompts, bucket length P).
    num_samples: G.
    max_new_tokens: the completion budget the cache was prefilled for.
    cache: `llm.with_shared_prefix`: the prompts' keys/values "prefix_k" / "prefix_v" per layer
      [B, kv_heads, P, head_dim] with "prefix_mask" [B, P], and the rows' own empty slots "k" /
      "v" per layer [B*G, S, kv_heads, head_dim] (stacked over layers for scanned models), rows
      prompt-major; S = the first decode phase's slots (`decode_phases`).
    state: logits [B*G, vocab] of the first completion token, start_positions [B*G] (position
      of completion token 0), own_mask bool [B*G, slot_base]: the own slots before this turn
      that hold a row's tokens (none on a first turn; `extend` sets them), finished bool [B*G]:
      rows that do not decode this turn (they emit only padding).
    slot_base: the own slot of completion token 0 (0 on a first turn).
  """

  prompts: PromptBatch
  num_samples: int
  max_new_tokens: int
  cache: Any
  state: dict
  slot_base: int = 0


@dataclasses.dataclass(frozen=True)
class Continuation:
  """A decoded turn whose rows can continue after an observation (`Sampler.extend`).

  Attributes:
    prompts, num_samples: as `Prefilled` (the shared prompt prefix stays in the cache).
    cache: the shared prefix and the rows' own slots [B*G, slots, kv_heads, head_dim] per layer.
    own_mask: bool [B*G, slots]: own slots that hold a token of the row (earlier turns, their
      observations, this turn's fed tokens); padding and slots after a row's end are False.
    last_tokens: int32 [B*G]: each row's last sampled token, not yet in the cache (the decode
      loop never feeds the token it chose last); pad for rows that did not decode this turn.
    next_positions: int32 [B*G]: the position that last token gets (all M-RoPE axes).
    decoded: bool [B*G]: rows that sampled at least one token this turn.
  """

  prompts: PromptBatch
  num_samples: int
  cache: Any
  own_mask: np.ndarray
  last_tokens: np.ndarray
  next_positions: np.ndarray
  decoded: np.ndarray


def _language_model(module: nn.Module) -> nn.Module:
  """The decoder of a bound model: the model itself (Qwen2.5) or its `language_model` (Qwen2.5-VL)."""
  return getattr(module, "language_model", module)


def _sharding_key(sharding) -> Any:
  """A hashable sharding under which equivalent NamedShardings (P() and P(None, None)) are equal."""
  if isinstance(sharding, NamedSharding):
    spec = list(sharding.spec)
    while spec and spec[-1] is None:
      spec.pop()
    return (sharding.mesh, tuple(spec), sharding.memory_kind)
  return sharding


def _signature(tree) -> tuple:
  """Hashable shapes, dtypes and shardings of a pytree's leaves (part of the compile-cache key)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return (treedef,) + tuple((np.shape(x), str(getattr(x, "dtype", type(x))), _sharding_key(getattr(x, "sharding", None)))
                            for x in leaves)


# A decode phase shorter than this saves fewer attention reads than its loop costs to compile.
MIN_PHASE_TOKENS = 64


def decode_phases(max_new_tokens: int, max_phases: int) -> tuple[int, ...]:
  """Ends of the decode phases: the completion slots the cache holds in each, ascending.

  Up to `max_phases` near-equal phases of at least MIN_PHASE_TOKENS tokens (rounded up to
  multiples of 16); the last ends at max_new_tokens. E.g. (256, 4) -> (64, 128, 192, 256).
  """
  phases = max(1, min(max_phases, max_new_tokens // MIN_PHASE_TOKENS))
  ends = {min(max_new_tokens, 16 * math.ceil(max_new_tokens * i / phases / 16)) for i in range(1, phases + 1)}
  return tuple(sorted(ends))


def _grow(cache: dict, slots: int) -> dict:
  """Appends `slots` empty slots to every row's own cache ("k", "v" [..., rows, S, kv_heads, head_dim])."""
  def pad(layer_cache):
    padding = [(0, 0)] * layer_cache.ndim
    padding[-3] = (0, slots)
    return constrain(jnp.pad(layer_cache, padding),
                     (None,) * (layer_cache.ndim - 4) + ("act_batch", None, "act_kv_heads", None))

  return {**cache, "k": jax.tree.map(pad, cache["k"]), "v": jax.tree.map(pad, cache["v"])}


class Sampler:
  """Samples completions of prompts on device. See `__call__`.

  Example:
    sampler = Sampler(model)
    out = sampler(params, [prompt_ids_a, prompt_ids_b], num_samples=8, key=jax.random.key(0),
                  controls=SamplingControls(max_new_tokens=256, temperature=1.0, top_p=0.95))
    out.tokens  # [2 * 8, 256]; rows 0..7 continue prompt a.

  Args:
    model: a `CausalLM` (Qwen2.5) or `VisionLanguageModel` (Qwen2.5-VL). Non-scanned layers
      (`scan_layers=False`) decode fastest: their per-layer cache is updated in place; a
      scanned model's stacked cache is copied once per step.
    buckets: allowed padded prompt lengths; default powers of two from 16.
    decode_phases: the most phases a decode loop is split into (`decode_phases()`); each phase's
      attention reads only the rows' own cache slots up to its end. 1 gives one loop over
      max_new_tokens own slots; more phases read less and compile more loop bodies.
    pad_id: left padding of prompts and padding after the end of completions; default the
      model config's `pad_token_id`, else 0.
    mesh / rules: a `jax.sharding.Mesh` and logical-axis rules (`r1jax.sharding`): the rows are
      split over the batch mesh axes (data, fsdp) and heads over `tensor`. The params must
      already be placed (e.g. `r1jax.sharding.shard_params`). A mesh may span processes (see
      the module docstring).
    max_prompt_length: optional limit on each prompt's tokens (vision placeholders expanded); a
      longer prompt fails on the host, before any device work, naming its frames, tokens per
      frame and the limit (`vision.check_prompt_fits`).
  """

  def __init__(self, model: nn.Module, *, buckets: Sequence[int] | None = None, pad_id: int | None = None,
               decode_phases: int = 4, mesh: jax.sharding.Mesh | None = None, rules=None,
               max_prompt_length: int | None = None):
    self.model = model
    self.config = model.config
    self.buckets = None if buckets is None else tuple(sorted(int(b) for b in buckets))
    if pad_id is None:
      pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
    if not 0 <= pad_id < self.config.text.vocab_size:
      raise ValueError(f"pad_id={pad_id} is outside the vocabulary [0, {self.config.text.vocab_size})")
    self.pad_id = int(pad_id)
    if decode_phases < 1:
      raise ValueError(f"decode_phases={decode_phases} must be >= 1")
    self.max_decode_phases = int(decode_phases)
    self.mesh = mesh
    self.rules = rules
    self.max_prompt_length = max_prompt_length
    self.spans_processes = sharding.spans_processes(mesh)
    self.compile_events: list[CompileEvent] = []
    self._executables: dict[tuple, Callable] = {}

  # ------------------------------------------------------------------ public

  def __call__(self, params, prompts: Sequence, *, key: Array, num_samples: int = 1,
               controls: SamplingControls = SamplingControls(),
               stop_token_ids: Sequence[Sequence[int]] | None = None) -> SampleOutput:
    """Samples `num_samples` completions of every prompt: `prefill`, then `decode`.

    Args:
      params: the model's parameters {"params": ...} (placed on the mesh when there is one).
      prompts: B prompts: token id sequences, `sampling.Prompt`s or `processing.EncodedPrompt`s
        (token ids with vision placeholders expanded, plus pixel values and grids).
      key: PRNG key; the same key, prompts and controls give the same completions.
      num_samples: G completions per prompt; rows are prompt-major (row = prompt * G + g).
      controls: temperature, top-k, top-p, greedy, stop / forbidden ids, max_new_tokens.
      stop_token_ids: optional per-prompt stop ids (B sequences), replacing
        `controls.stop_token_ids` for that prompt's rows.

    Returns:
      `SampleOutput`; its arrays stay on device, except with a mesh spanning processes: then they
      are this process's rows (host NumPy), the rows of its `prompts`.
    """
    prefilled = self.prefill(params, prompts, num_samples=num_samples, max_new_tokens=controls.max_new_tokens)
    return self.decode(params, prefilled, key=key, controls=controls, stop_token_ids=stop_token_ids)

  def prefill(self, params, prompts: Sequence | PromptBatch, *, num_samples: int, max_new_tokens: int) -> Prefilled:
    """Runs the vision tower and the prompts once; returns the KV cache for B*G rows (see `Prefilled`)."""
    if num_samples < 1:
      raise ValueError(f"num_samples={num_samples} must be >= 1")
    batch = prompts if isinstance(prompts, PromptBatch) else batch_prompts(
        prompts, self.config, pad_id=self.pad_id, buckets=self._prompt_buckets(prompts))
    self._check_batch(batch)
    args = self._prefill_args(batch)
    patches = [0 if x is None else len(x) for x in (batch.pixel_values, batch.pixel_values_videos)]
    first_phase = decode_phases(max_new_tokens, self.max_decode_phases)[0]
    prefill = self._executable(
        "prefill", functools.partial(self._prefill, num_samples=num_samples, first_phase=first_phase),
        (params, *args), key_extra=(num_samples, first_phase),
        description=f"prompts={batch.batch_size} prompt_bucket={batch.length} num_samples={num_samples} "
                    f"max_new_tokens={max_new_tokens} image_patches={patches[0]} video_patches={patches[1]}")
    cache, state = prefill(params, *args)
    return Prefilled(batch, num_samples, max_new_tokens, cache, state)

  def decode(self, params, prefilled: Prefilled, *, key: Array, controls: SamplingControls,
             stop_token_ids: Sequence[Sequence[int]] | None = None,
             keep_cache: bool = False) -> SampleOutput:
    """Runs the decode loop from a `prefill` or an `extend` (whose cache it consumes); arguments
    as `__call__`. `keep_cache`: the output's `continuation` lets the rows continue after an
    observation (`extend`)."""
    if controls.max_new_tokens != prefilled.max_new_tokens:
      raise ValueError(f"controls.max_new_tokens={controls.max_new_tokens} differs from the "
                       f"max_new_tokens={prefilled.max_new_tokens} the cache was prefilled for")
    batch, static = prefilled.prompts, controls.static()
    stop_ids = self._stop_id_rows(controls, stop_token_ids, batch.batch_size, prefilled.num_samples)
    args = (key, jnp.float32(controls.temperature), jnp.float32(controls.top_p), self._put(stop_ids, batch_axis=0),
            self._put(self._forbidden_mask(controls), batch_axis=None))
    phases = decode_phases(static.max_new_tokens, self.max_decode_phases)
    # One phase updates the prefilled cache in place; more grow it into new buffers.
    decode = self._executable(
        "decode", functools.partial(self._decode, static=static), (params, prefilled.cache, prefilled.state, *args),
        key_extra=(static, self.max_decode_phases), donate_argnums=(1,) if len(phases) == 1 else (),
        description=f"rows={stop_ids.shape[0]} cache_len={batch.length + static.max_new_tokens} phases={phases} "
                    f"{static}")
    outputs, cache = decode(params, prefilled.cache, prefilled.state, *args)
    if self.spans_processes:
      outputs = [None if x is None else sharding.process_rows(x, self.mesh, self.rules) for x in outputs]
    tokens, logprobs, lengths, finished, entropy = outputs
    continuation = self._continuation(prefilled, cache, tokens, lengths) if keep_cache else None
    return SampleOutput(tokens=tokens, logprobs=logprobs, lengths=lengths, finished=finished,
                        truncated=~finished, entropy=entropy, prompts=batch,
                        num_samples=prefilled.num_samples, pad_id=self.pad_id, temperature=controls.temperature,
                        continuation=continuation)

  def extend(self, params, continuation: Continuation, observations: Sequence[Any | None], *,
             max_new_tokens: int) -> Prefilled:
    """Appends an observation to each continuing row's cache, ready for the next `decode`.

    A chunked prefill of the deltas: row r's last sampled token then `observations[r]` (a
    `Prompt`: token ids, with the vision inputs of the placeholders they hold, e.g. a video
    clip), right-aligned in new own slots so that every row's next token sits in the same
    slot. Positions continue the row's own (after its gap of unused slots): text tokens one by
    one, vision runs by `vlm.get_rope_index` (M-RoPE), so a row's positions are those of one
    no-cache forward over its whole trajectory. The shared prompt prefix is read, not copied.

    Args:
      continuation: `decode(..., keep_cache=True).continuation`.
      observations: one per row (B*G, prompt-major): a `Prompt` (or token ids) for a row that
        continues, None for a row whose episode has ended (it decodes nothing).
      max_new_tokens: the next turn's completion budget.
    """
    if self.spans_processes:
      raise NotImplementedError("Sampler.extend does not support a mesh spanning processes yet: continue "
                                "episodes on a single-process mesh")
    rows = len(continuation.last_tokens)
    if len(observations) != rows:
      raise ValueError(f"extend got {len(observations)} observations for {rows} rows (one per row, None to stop)")
    deltas, positions, active = [], [], np.zeros(rows, bool)
    for row, observation in enumerate(observations):
      if observation is None:
        deltas.append(None)
        positions.append(None)
        continue
      if not continuation.decoded[row]:
        raise ValueError(f"row {row} gets an observation but sampled no token in the last turn (its episode ended)")
      observation = as_prompt(observation)
      ids = np.concatenate([[continuation.last_tokens[row]], observation.input_ids]).astype(np.int32)
      deltas.append(dataclasses.replace(observation, input_ids=ids))
      positions.append(self._delta_positions(deltas[-1], int(continuation.next_positions[row])))
      active[row] = True
    if not active.any():
      raise ValueError("extend got no observation: every row's episode has ended")
    width = bucket_length(max(len(d.input_ids) for d in deltas if d is not None), self.buckets, "observation")
    ids = np.full((rows, width), self.pad_id, np.int32)
    mask = np.zeros((rows, width), bool)
    pos = np.zeros((3 if self.config.is_multimodal else 1, rows, width), np.int32)
    for row, delta in enumerate(deltas):
      if delta is not None:
        n = len(delta.input_ids)
        ids[row, width - n:], mask[row, width - n:], pos[:, row, width - n:] = delta.input_ids, True, positions[row]
    start = np.where(active, pos.max(axis=(0, 2)) + 1, 0).astype(np.int32)
    vision = self._delta_vision([d for d in deltas if d is not None], ids[active]) if self.config.is_multimodal else ()
    first_phase = decode_phases(max_new_tokens, self.max_decode_phases)[0]
    args = (self._put(ids, 0), self._put(mask, 0), self._put(pos if self.config.is_multimodal else pos[0], 1 if
                                                             self.config.is_multimodal else 0),
            self._put(continuation.own_mask, 0), self._put(start, 0), self._put(~active, 0), *vision)
    extend = self._executable(
        "extend", functools.partial(self._extend, first_phase=first_phase), (params, continuation.cache, *args),
        key_extra=(first_phase,),
        description=f"rows={rows} slots={continuation.own_mask.shape[1]} observation_bucket={width} "
                    f"max_new_tokens={max_new_tokens}")
    cache, state = extend(params, continuation.cache, *args)
    return Prefilled(continuation.prompts, continuation.num_samples, max_new_tokens, cache, state,
                     slot_base=continuation.own_mask.shape[1] + width)

  # ------------------------------------------------------------------ continuation (host side)

  def _continuation(self, prefilled: Prefilled, cache, tokens, lengths) -> Continuation:
    """The state `extend` needs after a decode: which own slots hold tokens, each row's last token."""
    lengths = np.asarray(lengths)
    tokens = np.asarray(tokens)
    max_new = tokens.shape[1]
    fed = np.arange(max_new)[None, :] < (lengths - 1)[:, None]  # the loop feeds all but the last chosen token
    own_mask = np.concatenate([np.asarray(prefilled.state["own_mask"]), fed], axis=1)
    last = np.where(lengths > 0, tokens[np.arange(len(tokens)), np.maximum(lengths - 1, 0)], self.pad_id)
    start = np.asarray(prefilled.state["start_positions"])
    return Continuation(prefilled.prompts, prefilled.num_samples, cache, own_mask, last.astype(np.int32),
                        (start + np.maximum(lengths - 1, 0)).astype(np.int32), lengths > 0)

  def _delta_positions(self, delta: Prompt, first: int) -> np.ndarray:
    """int [axes, n]: positions of a delta's tokens starting at `first` (M-RoPE for vision runs).

    get_rope_index positions a sequence from 0 and every later token relative to the ones
    before, so the delta's positions in the whole trajectory are its own shifted by `first`.
    """
    n = len(delta.input_ids)
    if not self.config.is_multimodal:
      return (first + np.arange(n))[None]
    positions, _ = vlm.get_rope_index(self.config, delta.input_ids[None], delta.image_grid_thw, delta.video_grid_thw,
                                      delta.second_per_grid_ts)
    return positions[:, 0] + first

  def _delta_vision(self, deltas: list, ids: np.ndarray) -> tuple:
    """The packed vision inputs of the continuing rows' deltas, in row order, placed on the mesh."""
    vision = []
    for pixels_name, grid_name in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
      grids = [getattr(d, grid_name) for d in deltas]
      counts = [0 if g is None else len(g) for g in grids]
      if not sum(counts):
        vision += [None, None]
        continue
      pixels = np.concatenate([getattr(d, pixels_name) for d in deltas if getattr(d, grid_name) is not None])
      grid = np.concatenate([g for g in grids if g is not None])
      # How many rows continue, and their clips' sizes, vary from call to call.
      pixels, grid = pad_vision_patches(self.config.vision, pixels, grid)
      vision += [self._put(pixels.astype(np.float32), None),
                 jax.tree.map(lambda x: self._put(x, None), vision_grid(self.config.vision, grid))]
    image_grids = [d.image_grid_thw for d in deltas]
    video_grids = [d.video_grid_thw for d in deltas]
    vlm.check_row_feature_counts(
        self.config, ids, *(np.concatenate([g for g in grids if g is not None]) if any(g is not None for g in grids)
                            else None for grids in (image_grids, video_grids)),
        np.array([0 if g is None else len(g) for g in image_grids]),
        np.array([0 if g is None else len(g) for g in video_grids]))
    return tuple(vision)

  # ------------------------------------------------------------------ host-side inputs

  def _stop_id_rows(self, controls: SamplingControls, per_prompt, num_prompts: int, num_samples: int) -> np.ndarray:
    """int32 [B*G, S]: each row's stop ids, padded with -1 (matches no token)."""
    if per_prompt is None:
      per_prompt = [controls.resolved_stop_ids(self.config)] * num_prompts
    elif len(per_prompt) != num_prompts:
      raise ValueError(f"stop_token_ids has {len(per_prompt)} entries for {num_prompts} prompts")
    width = max(1, max(len(ids) for ids in per_prompt))
    if self.spans_processes:  # the rows of all processes form one array
      width = int(sharding.process_values([width]).max())
    table = np.full((num_prompts, width), -1, np.int32)
    for row, ids in enumerate(per_prompt):
      self._check_ids(ids, "stop_token_ids")
      table[row, :len(ids)] = ids
    return np.repeat(table, num_samples, axis=0)

  def _forbidden_mask(self, controls: SamplingControls) -> np.ndarray:
    """bool [vocab]: True for the tokens that must never be sampled."""
    vocab = self.config.text.vocab_size
    ids = controls.resolved_forbidden_ids(self.config)
    self._check_ids(ids, "forbidden_token_ids")
    mask = np.zeros(vocab, bool)
    mask[list(ids)] = True
    if mask.all():
      raise ValueError(f"forbidden_token_ids forbid the whole vocabulary of {vocab} tokens")
    return mask

  def _check_ids(self, ids, what: str) -> None:
    vocab = self.config.text.vocab_size
    bad = [int(i) for i in ids if not 0 <= int(i) < vocab]
    if bad:
      raise ValueError(f"{what} {bad} are outside the vocabulary [0, {vocab})")

  def _put(self, array: np.ndarray, batch_axis: int | None) -> Array:
    """Places a host array on the mesh (`sharding.shard_batch`): this process's rows along
    `batch_axis`, split over the batch mesh axes when they divide evenly over its devices, else
    gathered from every process and replicated; batch_axis None: the same value on every process,
    replicated. Without a mesh: the default device."""
    if self.mesh is None:
      return jnp.asarray(array)
    return sharding.shard_batch(np.asarray(array), self.mesh, self.rules, batch_axis=batch_axis,
                                uneven_rows="replicate")

  def _prompt_buckets(self, prompts: Sequence) -> Sequence[int] | None:
    """The prompt buckets for `batch_prompts`: the configured ones, or with several processes the
    one bucket that fits the longest prompt of any process, so that their rows share a length."""
    if not self.spans_processes:
      return self.buckets
    longest = max((as_prompt(p).input_ids.size for p in prompts), default=0)
    return (bucket_length(int(sharding.process_values([longest]).max()), self.buckets),)

  def _check_batch(self, batch: PromptBatch) -> None:
    """Host checks the jitted prefill cannot make: each row's vision pad tokens against its grids
    (`vlm.check_row_feature_counts`), each prompt's length against `max_prompt_length`, and with
    several processes, equal batch shapes on all."""
    if self.max_prompt_length is not None:
      grids = np.zeros((0, 3), np.int64) if batch.video_grid_thw is None else np.asarray(batch.video_grid_thw)
      counts = batch.video_counts if batch.video_counts is not None else np.zeros(batch.batch_size, np.int64)
      ends = np.cumsum(counts)
      for row, tokens in enumerate(np.asarray(batch.lengths).tolist()):
        if self.config.vision is None:
          if tokens > self.max_prompt_length:
            raise ValueError(f"prompt {row} has {tokens} tokens, more than max_prompt_length={self.max_prompt_length}")
          continue
        check_prompt_fits(self.config.vision, int(tokens), self.max_prompt_length,
                          grids[ends[row] - counts[row]:ends[row]], what=f"prompt {row}")
    if self.config.is_multimodal:
      vlm.check_row_feature_counts(self.config, batch.input_ids, batch.image_grid_thw, batch.video_grid_thw,
                                   batch.image_counts, batch.video_counts)
    if self.spans_processes:
      shapes = sharding.process_values(batch.input_ids.shape)
      if (shapes != shapes[0]).any():
        raise ValueError(f"processes passed prompt batches of different shapes {shapes.tolist()} ([prompts, "
                         "padded length] per process); every process must sample the same number of prompts")

  def _prefill_args(self, batch: PromptBatch) -> tuple:
    """Device inputs of the prefill: ids, mask, positions, decode deltas, vision inputs."""
    positions_axis = 1 if batch.positions.ndim == 3 else 0
    args = (self._put(batch.input_ids, 0), self._put(batch.attention_mask, 0),
            self._put(batch.positions, positions_axis), self._put(batch.decode_deltas, 0))
    if not self.config.is_multimodal:
      return args
    vision = []
    for pixels, grid in ((batch.pixel_values, batch.image_grid_thw),
                         (batch.pixel_values_videos, batch.video_grid_thw)):
      if self.spans_processes:
        pixels, grid = self._gather_vision(pixels, grid)
      if pixels is None:
        vision += [None, None]
      else:
        # Bucketed patch count: prompts' images of new sizes reuse a compiled prefill.
        pixels, grid = pad_vision_patches(self.config.vision, pixels, grid)
        layout = vision_grid(self.config.vision, grid)
        vision += [self._put(pixels, None), jax.tree.map(lambda x: self._put(x, None), layout)]
    # Where each pad token's feature row is, computed here per token (a sequence-split prefill
    # then needs no global cumsum); with several processes the global rows are not all on this host.
    indices = [None, None]
    if not self.spans_processes:
      for i, token_id in enumerate((self.config.image_token_id, self.config.video_token_id)):
        if vision[2 * i] is not None:
          indices[i] = self._put(vlm.feature_index(batch.input_ids == token_id), 0)
    return args + tuple(vision) + tuple(indices)

  def _gather_vision(self, pixels: np.ndarray | None, grid: np.ndarray | None) -> tuple:
    """Every process's packed pixel values [patches, patch_dim] and grids [items, 3] of one kind,
    in global row order (None, None when no process has any): the prefill scatters the features
    over the global rows in row-major order, so each device needs them all."""
    patch_dim = self.config.vision.patch_dim
    pixels = np.zeros((0, patch_dim), np.float32) if pixels is None else np.asarray(pixels, np.float32)
    grid = np.zeros((0, 3), np.int32) if grid is None else np.asarray(grid, np.int32)  # jax gathers int32
    pixels, grid = (np.concatenate(sharding.gather_process_rows(x, self.mesh, self.rules)) for x in (pixels, grid))
    return (pixels, grid) if len(grid) else (None, None)

  # ------------------------------------------------------------------ compilation cache

  def _tracing_context(self):
    """The mesh and logical-axis rules, so that the model's activation constraints take effect."""
    return contextlib.nullcontext() if self.mesh is None else sharding.use_mesh(self.mesh, self.rules)

  def _executable(self, name: str, function: Callable, args: tuple, key_extra: tuple, description: str,
                  donate_argnums: tuple[int, ...] = ()) -> Callable:
    """The compiled `function` for these argument shapes/shardings; compiles (and logs) when new."""
    key = (name, key_extra, _signature(args))
    if key not in self._executables:
      start = time.perf_counter()
      with self._tracing_context():
        self._executables[key] = jax.jit(function, donate_argnums=donate_argnums).lower(*args).compile()
      self.compile_events.append(CompileEvent(name, key, time.perf_counter() - start))
      _log.info("sampling: compiled %s #%d for %s in %.2f s", name,
                sum(e.function == name for e in self.compile_events), description, self.compile_events[-1].seconds)
    return self._executables[key]

  # ------------------------------------------------------------------ jitted bodies

  def _prefill(self, params, input_ids, attention_mask, positions, decode_deltas, pixel_values=None,
               image_grid=None, pixel_values_videos=None, video_grid=None, image_index=None, video_index=None, *,
               num_samples: int, first_phase: int):
    """Prompts [B, P] -> (decode cache, decode state), as `Prefilled.cache` / `Prefilled.state`."""
    batch, length = input_ids.shape
    cache = init_cache(self.config, batch, length, per_layer=not self.config.scan_layers)

    def forward(module, input_ids, attention_mask, positions, cache):
      if pixel_values is None and pixel_values_videos is None:
        hidden, cache = _language_model(module)(input_ids, positions=positions, attention_mask=attention_mask,
                                                cache=cache, return_hidden=True)
      else:
        image_embeds = None if pixel_values is None else module.encode_vision(pixel_values, image_grid)
        video_embeds = (None if pixel_values_videos is None
                        else module.encode_vision(pixel_values_videos, video_grid))
        hidden, cache = module(input_ids, attention_mask=attention_mask, positions=positions, image_embeds=image_embeds,
                               video_embeds=video_embeds, cache=cache, return_hidden=True,
                               image_feature_index=image_index, video_feature_index=video_index)
      # Only the last slot's logits are needed: every row's last prompt token is there (left padding).
      return _language_model(module).logits(hidden[:, -1:])[:, 0], cache

    logits, prefix = self.model.apply(params, input_ids, attention_mask, positions, cache, method=forward)
    own = _grow(init_cache(self.config, batch * num_samples, 0, per_layer=not self.config.scan_layers), first_phase)
    cache = with_shared_prefix(own, prefix, attention_mask)
    repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
    state = {"logits": constrain(repeat(logits), ("act_batch", "act_vocab")),
             "start_positions": constrain(repeat(length + decode_deltas).astype(jnp.int32), ("act_batch",)),
             "own_mask": jnp.zeros((batch * num_samples, 0), bool),
             "finished": jnp.zeros((batch * num_samples,), bool)}
    return cache, state

  def _extend(self, params, cache, input_ids, delta_mask, positions, own_mask, start_positions, finished,
              pixel_values=None, image_grid=None, pixel_values_videos=None, video_grid=None, *, first_phase: int):
    """Observation deltas [rows, D] -> (decode cache, decode state) continuing every row (see `extend`)."""
    rows, width = input_ids.shape
    slots = own_mask.shape[1]
    cache = _grow(cache, width + first_phase)
    attention_mask = jnp.concatenate([own_mask, delta_mask, jnp.zeros((rows, first_phase), bool)], axis=1)

    def forward(module):
      if pixel_values is None and pixel_values_videos is None:
        hidden, new_cache = _language_model(module)(input_ids, positions=positions, attention_mask=attention_mask,
                                                    cache=cache, cache_index=slots, return_hidden=True)
      else:
        image_embeds = None if pixel_values is None else module.encode_vision(pixel_values, image_grid)
        video_embeds = None if pixel_values_videos is None else module.encode_vision(pixel_values_videos, video_grid)
        hidden, new_cache = module(input_ids, attention_mask=attention_mask, positions=positions,
                                   image_embeds=image_embeds, video_embeds=video_embeds, cache=cache,
                                   cache_index=slots, return_hidden=True)
      return _language_model(module).logits(hidden[:, -1:])[:, 0], new_cache

    logits, cache = self.model.apply(params, method=forward)
    state = {"logits": constrain(logits, ("act_batch", "act_vocab")), "start_positions": start_positions,
             "own_mask": jnp.concatenate([own_mask, delta_mask], axis=1), "finished": finished}
    return cache, state

  def _decode(self, params, cache, state, key, temperature, top_p, stop_ids, forbidden, *, static: StaticControls):
    """The decode loops, one per phase. Returns ((tokens, logprobs, lengths, finished, entropy), final cache).

    Loop invariant: `t` completion tokens have been chosen; step t feeds token t - 1 at own
    cache slot t - 1 and chooses token t from the logits it returns.
    """
    logits, start, base_mask = state["logits"], state["start_positions"], state["own_mask"]
    rows, max_new, slot_base = logits.shape[0], static.max_new_tokens, state["own_mask"].shape[1]

    def choose(t, logits, outputs):
      tokens, logprobs, entropy, lengths, finished = outputs
      token = selection.choose_tokens(logits, jax.random.fold_in(key, t), greedy=static.greedy, top_k=static.top_k,
                                      use_top_p=static.use_top_p, temperature=temperature, top_p=top_p,
                                      forbidden=forbidden)
      logprob, token_entropy = selection.token_logprob_and_entropy(logits, token, temperature, static.return_entropy)
      active = ~finished  # Rows that already stopped get padding.
      token = jnp.where(active, token, self.pad_id)
      write = lambda buffer, column: jax.lax.dynamic_update_slice(buffer, column[:, None].astype(buffer.dtype), (0, t))
      tokens, logprobs = write(tokens, token), write(logprobs, jnp.where(active, logprob, 0.0))
      if static.return_entropy:
        entropy = write(entropy, jnp.where(active, token_entropy, 0.0))
      stopped = active & jnp.any(token[:, None] == stop_ids, axis=-1)
      return tokens, logprobs, entropy, lengths + active.astype(jnp.int32), finished | stopped

    outputs = (jnp.full((rows, max_new), self.pad_id, jnp.int32), jnp.zeros((rows, max_new), jnp.float32),
               jnp.zeros((rows, max_new), jnp.float32) if static.return_entropy else None,
               jnp.zeros((rows,), jnp.int32), state["finished"])
    outputs = choose(0, logits, outputs)

    # Materialised once per call, outside the loop (see `CausalLM.logits`).
    output_kernel = constrain(self.model.apply(params, method=lambda module: _language_model(module).output_kernel()),
                              ("act_embed", "act_vocab"))

    def step(loop):
      t, cache, outputs = loop
      previous = jax.lax.dynamic_slice(outputs[0], (0, t - 1), (rows, 1))
      positions = (start + t - 1)[:, None]
      # This turn's slots are all real tokens (causality hides the rest); earlier turns' by base_mask.
      own_slots = jnp.concatenate(
          [base_mask, jnp.ones((rows, cache["k"][0].shape[-3] - slot_base), bool)], axis=1)
      logits, cache = self.model.apply(
          params, previous, positions, own_slots, cache, slot_base + t - 1, output_kernel, method=decode_step)
      return t + 1, cache, choose(t, logits, outputs)

    def decode_step(module, previous, positions, mask, cache, cache_index, output_kernel):
      decoder = _language_model(module)
      hidden, cache = decoder(previous, positions=positions, attention_mask=mask, cache=cache, cache_index=cache_index,
                              return_hidden=True)
      return decoder.logits(hidden, output_kernel)[:, 0], cache

    # The loop of the phase ending at `end` runs the steps that write own cache slots up to
    # end - 1 (steps t <= end); the cache then grows to the next phase's end.
    ends = decode_phases(max_new, self.max_decode_phases)
    loop = (jnp.int32(1), cache, outputs)
    for phase, end in enumerate(ends):
      if phase:
        loop = (loop[0], _grow(loop[1], end - ends[phase - 1]), loop[2])
      last_step = min(end, max_new - 1)
      loop = jax.lax.while_loop(lambda loop, last_step=last_step: (loop[0] <= last_step) & ~jnp.all(loop[2][4]),
                                step, loop)
    _, cache, (tokens, logprobs, entropy, lengths, finished) = loop
    return (tokens, logprobs, lengths, finished, entropy), cache
