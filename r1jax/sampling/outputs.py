"""What the sampler returns, and the learner's no-cache input built from it.

Conventions (shared by the sampler and the learner, so their log-probs agree):
- Rows are prompt-major: row `prompt * num_samples + g` is sample g of prompt `prompt`.
- Completion token t of a row sits at cache slot P + t (P = padded prompt length) and gets
  position P + t + decode_deltas[prompt] on every M-RoPE axis: one past the last prompt token,
  as transformers' generate. For text prompts that is n + t (n = real prompt tokens), i.e.
  cumsum(attention_mask) - 1 over prompt + completion.
- Log-probs are log softmax(logits / temperature) over the FULL vocabulary (no top-k / top-p /
  forbidden truncation): what the learner recomputes from `learner_inputs` with a forward pass.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.sampling.prompts import PromptBatch


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Completions of B prompts x G samples (rows prompt-major).

  Attributes:
    tokens: int32 [B*G, max_new]: the completion, the stop token included, then `pad_id`.
    logprobs: float32 [B*G, max_new]: log p(token) under softmax(logits / temperature) over the
      full vocabulary (greedy rows too); 0 after the end.
    lengths: int32 [B*G]: completion tokens, the stop token included.
    finished: bool [B*G]: the row emitted a stop token (or did not decode this turn: after
      `Sampler.extend`, rows whose episode ended have length 0 and count as finished).
    truncated: bool [B*G]: the row hit max_new_tokens without a stop token (= ~finished).
    entropy: float32 [B*G, max_new] entropy of softmax(logits / temperature), 0 after the end;
      None unless requested.
    prompts: the left-padded prompt batch (host NumPy) the completions continue.
    num_samples: G.
    pad_id: the id written after the end of each completion (and left of each prompt).
    temperature: the temperature of `logprobs`.
    continuation: with `decode(..., keep_cache=True)`, the `sampler.Continuation` that lets the
      rows continue after an observation; else None.
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  finished: jax.Array
  truncated: jax.Array
  entropy: jax.Array | None
  prompts: PromptBatch
  num_samples: int
  pad_id: int
  temperature: float
  continuation: Any = None

  @property
  def completion_mask(self) -> jax.Array:
    """bool [B*G, max_new]: the tokens counted in `lengths`."""
    return jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]


@dataclasses.dataclass(frozen=True)
class LearnerBatch:
  """Prompt + completion as one no-cache forward input, [B*G, P + max_new] (prompt-major rows).

  The logits at index i predict the token at i + 1, so the log-prob of completion token t is
  read from the logits at P - 1 + t; `completion_mask[:, P + t]` says whether it counts.

  Attributes:
    input_ids: int32 [B*G, P + max_new].
    attention_mask: bool [B*G, P + max_new]: real prompt tokens and the completion up to its length.
    positions: int32 [B*G, P + max_new] (text) or [3, B*G, P + max_new] (M-RoPE).
    completion_mask: bool [B*G, P + max_new]: True on completion tokens counted in the length.
    prompt_length: P.
    vision: for Qwen2.5-VL, `forward_logits` keyword arguments (pixel_values, image_grid_thw,
      pixel_values_videos, video_grid_thw, second_per_grid_ts) with each prompt's items
      repeated G times in row order; empty for text.
  """

  input_ids: jax.Array
  attention_mask: jax.Array
  positions: jax.Array
  completion_mask: jax.Array
  prompt_length: int
  vision: dict


def _repeat_items(values: np.ndarray | None, counts: np.ndarray, repeats: int) -> np.ndarray | None:
  """Repeats each prompt's block of `counts[prompt]` items (or item rows) `repeats` times, in order."""
  if values is None:
    return None
  blocks = np.split(values, np.cumsum(counts)[:-1])
  return np.concatenate([block for block in blocks for _ in range(repeats)])


def _repeat_vision(prompts: PromptBatch, repeats: int) -> dict:
  if prompts.image_counts is None:
    return {}
  vision = {}
  for prefix, pixels, grid, counts in (("", prompts.pixel_values, prompts.image_grid_thw, prompts.image_counts),
                                       ("_videos", prompts.pixel_values_videos, prompts.video_grid_thw,
                                        prompts.video_counts)):
    if grid is None:
      continue
    kind = "image" if not prefix else "video"
    patches_per_prompt = np.array([int(np.prod(g, axis=1).sum()) for g in np.split(grid, np.cumsum(counts)[:-1])])
    vision[f"pixel_values{prefix}"] = _repeat_items(pixels, patches_per_prompt, repeats)
    vision[f"{kind}_grid_thw"] = _repeat_items(grid, counts, repeats)
  if prompts.second_per_grid_ts is not None:
    vision["second_per_grid_ts"] = _repeat_items(prompts.second_per_grid_ts, prompts.video_counts, repeats)
  return vision


def learner_inputs(output: SampleOutput) -> LearnerBatch:
  """Assembles prompt (left-padded) + completion for the learner's no-cache forward.

  Forwarding it (e.g. `r1jax.models.forward_logits(model, params, batch.input_ids,
  batch.attention_mask, batch.positions, **batch.vision)`) reproduces the sampler's log-probs.
  """
  prompts, repeats = output.prompts, output.num_samples
  length, max_new = prompts.length, output.tokens.shape[1]
  repeat = lambda x, axis=0: jnp.repeat(jnp.asarray(x), repeats, axis=axis)
  completion_mask = output.completion_mask
  input_ids = jnp.concatenate([repeat(prompts.input_ids), output.tokens.astype(jnp.int32)], axis=1)
  attention_mask = jnp.concatenate([repeat(prompts.attention_mask), completion_mask], axis=1)
  slots = length + jnp.arange(max_new, dtype=jnp.int32)
  completion_positions = slots[None, :] + repeat(prompts.decode_deltas)[:, None]  # [B*G, max_new]
  prompt_positions = jnp.asarray(prompts.positions)
  if prompt_positions.ndim == 3:
    completion_positions = jnp.broadcast_to(completion_positions[None], (3,) + completion_positions.shape)
    positions = jnp.concatenate([repeat(prompt_positions, axis=1), completion_positions], axis=2)
  else:
    positions = jnp.concatenate([repeat(prompt_positions), completion_positions], axis=1)
  return LearnerBatch(
      input_ids=input_ids, attention_mask=attention_mask, positions=positions.astype(jnp.int32),
      completion_mask=jnp.concatenate([jnp.zeros((completion_mask.shape[0], length), bool), completion_mask], axis=1),
      prompt_length=length, vision=_repeat_vision(prompts, repeats))
