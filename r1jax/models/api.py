"""Model construction, parameter shapes/axes and the public parity surface `forward_logits`."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.llm import CausalLM

Params = Any  # {"params": pytree of arrays}


def build_model(config: ModelConfig) -> nn.Module:
  """CausalLM for Qwen2.5, the vision-language model for Qwen2.5-VL."""
  if config.is_multimodal:
    from r1jax.models.vlm import VisionLanguageModel  # pylint: disable=g-import-not-at-top
    return VisionLanguageModel(config)
  return CausalLM(config)


def _dummy_inputs(model: nn.Module) -> dict[str, Any]:
  """Inputs that touch every parameter once (vision models define their own)."""
  if hasattr(model, "dummy_inputs"):
    return model.dummy_inputs()
  return {"input_ids": jnp.zeros((1, 1), jnp.int32)}


def abstract_params(model: nn.Module) -> Params:
  """Shapes/dtypes of the parameters, boxed with their logical axis names; allocates nothing."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **_dummy_inputs(model)))


def logical_axes(model: nn.Module) -> Params:
  """PartitionSpec of logical axis names for every parameter (same tree as the params)."""
  return nn.get_partition_spec(abstract_params(model))


def init_params(model: nn.Module, rng: jax.Array) -> Params:
  """Random parameters, unboxed (see `r1jax.sharding` for initialising straight into shards)."""
  return nn.unbox(model.init(rng, **_dummy_inputs(model)))


def forward_logits(model: nn.Module, params: Params, input_ids, attention_mask=None, position_ids=None,
                   **vision_kwargs) -> jax.Array:
  """fp32 logits [batch, length, vocab] with transformers' argument names and semantics.

  Args:
    input_ids: [batch, length] token ids.
    attention_mask: [batch, length], 1 for real tokens (left padding supported).
    position_ids: optional [batch, length] (or [3, batch, length] for M-RoPE). As in
      transformers, text models default to 0..length-1 for every row; Qwen2.5-VL computes 3D
      M-RoPE ids from the vision grids and the attention mask (`get_rope_index`).
    **vision_kwargs: for Qwen2.5-VL, `pixel_values`, `image_grid_thw`, `pixel_values_videos`,
      `video_grid_thw`, `second_per_grid_ts` (transformers' meaning).
  """
  input_ids = jnp.asarray(input_ids, jnp.int32)
  mask = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
  if isinstance(model, CausalLM):
    if vision_kwargs:
      raise ValueError(f"text-only model got vision inputs {sorted(vision_kwargs)}")
    return _jitted_text_forward(model)(params, input_ids, mask, position_ids)
  return model.forward_logits(params, input_ids, attention_mask=mask, position_ids=position_ids, **vision_kwargs)


@functools.lru_cache(maxsize=16)
def _jitted_text_forward(model: CausalLM):
  def forward(params, input_ids, mask, positions):
    return model.apply(params, input_ids, attention_mask=mask, positions=positions)[0]

  return jax.jit(forward)
