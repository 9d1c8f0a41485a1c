"""Shared pieces of the sampler tests: transformers' generate as the reference, call counting."""
from __future__ import annotations

import jax
import numpy as np
import torch
from scipy.special import log_softmax

from r1jax.models.llm import CausalLM
from r1jax.models.vlm import VisionLanguageModel

# (function, input shape) of every execution of the counting models below, appended at run time.
CALLS: list[tuple[str, tuple[int, ...]]] = []


def _record(name: str, shape) -> None:
  shape = tuple(shape)
  jax.debug.callback(lambda: CALLS.append((name, shape)))


class CountingCausalLM(CausalLM):
  """CausalLM that records the shape of every token batch it embeds, each time it runs."""

  def embed(self, input_ids):
    _record("embed", input_ids.shape)
    return super().embed(input_ids)


class CountingVisionLanguageModel(VisionLanguageModel):
  """Qwen2.5-VL that records every vision-tower run and every full multimodal forward."""

  def encode_vision(self, pixel_values, grid_thw):
    _record("encode_vision", pixel_values.shape)
    return super().encode_vision(pixel_values, grid_thw)

  def __call__(self, input_ids, **kwargs):
    _record("multimodal_forward", input_ids.shape)
    return super().__call__(input_ids, **kwargs)


def left_pad(prompts, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Token id sequences -> (ids, mask) int64 [batch, longest], left-padded (transformers' layout)."""
  length = max(len(p) for p in prompts)
  ids = np.full((len(prompts), length), pad_id, np.int64)
  mask = np.zeros((len(prompts), length), np.int64)
  for row, prompt in enumerate(prompts):
    ids[row, length - len(prompt):] = prompt
    mask[row, length - len(prompt):] = 1
  return ids, mask


def hf_greedy(model, prompts, max_new_tokens: int, eos_token_id=None, suppress_tokens=None, pad_id: int = 0,
              **vision) -> tuple[np.ndarray, np.ndarray]:
  """transformers' `generate(do_sample=False)` of left-padded prompts.

  Returns:
    (completion tokens int [batch, max_new_tokens] padded with pad_id, log_softmax of the raw
    logits at every step float [batch, max_new_tokens, vocab]).
  """
  ids, mask = left_pad(prompts, pad_id)
  vision = {k: torch.as_tensor(np.asarray(v)) for k, v in vision.items()}
  with torch.no_grad():
    out = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=eos_token_id,
                         pad_token_id=pad_id, suppress_tokens=suppress_tokens, output_logits=True,
                         return_dict_in_generate=True, **vision)
  tokens = out.sequences[:, ids.shape[1]:].numpy()
  tokens = np.pad(tokens, ((0, 0), (0, max_new_tokens - tokens.shape[1])), constant_values=pad_id)
  log_probs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1).numpy()
  return tokens, log_probs


def completion_log_probs(logits, prompt_length: int, tokens, temperature: float = 1.0) -> np.ndarray:
  """log softmax(logits / T) of a no-cache forward over prompt + completion, at the completion tokens."""
  log_probs = log_softmax(np.asarray(logits, np.float64)[:, prompt_length - 1:-1] / temperature, axis=-1)
  return np.take_along_axis(log_probs, np.asarray(tokens)[..., None], axis=-1)[..., 0]
