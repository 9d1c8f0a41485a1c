"""Sampling controls: how the next token is chosen and when a row stops."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

from r1jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SamplingControls:
  """What to sample. The same names as transformers' `generate` / vLLM.

  The next-token distribution is softmax(logits / temperature) with forbidden tokens removed,
  then restricted to the `top_k` most likely tokens, then to the nucleus of mass `top_p`
  (transformers' order). The returned log-probs are NOT of that truncated distribution: they are
  log softmax(logits / temperature) over the full vocabulary, which is what the learner
  recomputes from a forward pass (see `SampleOutput`).

  Attributes:
    max_new_tokens: completion length budget; a row without a stop token by then is truncated.
    greedy: argmax of the (forbidden-masked) logits; temperature, top_k and top_p then only
      matter for the returned log-probs (temperature) or not at all.
    temperature: > 0; divides the logits.
    top_k: keep the k most likely tokens; 0 keeps all.
    top_p: nucleus mass in (0, 1]; 1 keeps all.
    stop_token_ids: a row finishes after emitting any of them (the stop token is kept and
      counted in its length); None means the model config's `eos_token_id`, () never stops.
    forbidden_token_ids: never emitted; None means the model's vision special tokens (image /
      video pad, vision start / end), the tokens only the processor may place.
    return_entropy: also return the per-token entropy of softmax(logits / temperature).
  """

  max_new_tokens: int = 256
  greedy: bool = False
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  stop_token_ids: tuple[int, ...] | None = None
  forbidden_token_ids: tuple[int, ...] | None = None
  return_entropy: bool = False

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
    if not self.temperature > 0:
      raise ValueError(f"temperature={self.temperature} must be > 0 (use greedy=True for argmax decoding)")
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables it)")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 disables it)")
    for name in ("stop_token_ids", "forbidden_token_ids"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(int(i) for i in value))

  def static(self) -> "StaticControls":
    """The part that changes the compiled decode loop (the rest are runtime arguments)."""
    return StaticControls(self.max_new_tokens, self.greedy, 0 if self.greedy else self.top_k,
                          not self.greedy and self.top_p < 1, self.return_entropy)

  def resolved_stop_ids(self, config: ModelConfig) -> tuple[int, ...]:
    return tuple(config.eos_token_id) if self.stop_token_ids is None else self.stop_token_ids

  def resolved_forbidden_ids(self, config: ModelConfig) -> tuple[int, ...]:
    if self.forbidden_token_ids is not None:
      return self.forbidden_token_ids
    return default_forbidden_ids(config)


class StaticControls(NamedTuple):
  """Compile-time controls of the decode loop."""

  max_new_tokens: int
  greedy: bool
  top_k: int
  use_top_p: bool
  return_entropy: bool


def default_forbidden_ids(config: ModelConfig) -> tuple[int, ...]:
  """The vision special tokens of a Qwen2.5-VL config (none for a text model)."""
  ids = (config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id)
  return tuple(sorted({i for i in ids if i is not None}))
