"""An observation as tokens: a delta against the chat template, tokenised once.

After the model's action the template closes the assistant turn, opens a user turn with the
observation, and opens the next assistant turn. That text is rendered from the tokenizer's own
chat template (the difference between a conversation with and without the extra user turn), so
it is exactly what a full re-tokenised conversation would hold there, and it is tokenised once:
the model's sampled tokens are never decoded and re-encoded (that would change them and break the
ratio between sampler and learner).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from r1jax import processing
from r1jax.envs.base import Observation
from r1jax.sampling import Prompt

_ACTION = "\u2063ACTION\u2063"  # an unlikely string standing for the sampled action


class ObservationEncoder:
  """Encodes observations as the tokens that follow an action in the chat template.

  Args:
    tokenizer: a transformers tokenizer with a chat template.
    vision: the processor settings for observation images / videos (None for a text model).
  """

  def __init__(self, tokenizer, vision: processing.VisionProcessorConfig | None = None):
    self.tokenizer = tokenizer
    self.vision = vision or processing.VisionProcessorConfig()
    self._before = self._render([{"role": "user", "content": "q"}, {"role": "assistant", "content": _ACTION}])
    turn_end = self._before[self._before.index(_ACTION) + len(_ACTION):]
    self._turn_end = tokenizer.encode(turn_end, add_special_tokens=False)
    self._delta_text([{"type": "text", "text": "probe"}])  # fails now, not mid-run, for a template that cannot

  def _render(self, messages, **kwargs) -> str:
    return self.tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)

  def _delta_text(self, content) -> str:
    """The template text between the action and the next assistant turn's first token."""
    after = self._render([{"role": "user", "content": "q"}, {"role": "assistant", "content": _ACTION},
                          {"role": "user", "content": list(content)}], add_generation_prompt=True)
    if not after.startswith(self._before):
      raise ValueError("the tokenizer's chat template does not render a user turn after an assistant turn as "
                       "an append-only suffix; multi-turn episodes need one that does")
    return self._before[self._before.index(_ACTION) + len(_ACTION):] + after[len(self._before):]

  def encode(self, observation: Observation, last_action_token: int) -> Prompt:
    """The observation's tokens (placeholders expanded) and vision inputs.

    The assistant turn's end token is left out when the action already ended with it (the
    sampled stop token, kept as sampled); after a truncated action it is part of the observation.
    """
    text = self._delta_text(observation.content)
    cfg = self.vision if observation.max_pixels is None else dataclasses.replace(
        self.vision, max_pixels=int(observation.max_pixels), min_pixels=min(self.vision.min_pixels,
                                                                            int(observation.max_pixels)))
    encoded = processing.encode_text(self.tokenizer, text, images=list(observation.images),
                                     videos=list(observation.videos),
                                     video_fps=list(observation.video_fps) or processing.DEFAULT_VIDEO_FPS, cfg=cfg)
    ids = encoded.input_ids
    if self._turn_end and last_action_token == self._turn_end[0] and len(ids) and ids[0] == self._turn_end[0]:
      ids = ids[1:]
    return Prompt(input_ids=np.asarray(ids, np.int32), **_vision_fields(encoded))


def _vision_fields(encoded: processing.EncodedPrompt) -> dict[str, Any]:
  fields = {}
  if len(encoded.image_grid_thw):
    fields.update(pixel_values=encoded.pixel_values, image_grid_thw=encoded.image_grid_thw)
  if len(encoded.video_grid_thw):
    fields.update(pixel_values_videos=encoded.pixel_values_videos, video_grid_thw=encoded.video_grid_thw,
                  second_per_grid_ts=encoded.second_per_grid_ts)
  return fields
