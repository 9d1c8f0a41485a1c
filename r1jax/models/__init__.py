"""Qwen2.5 and Qwen2.5-VL in Flax linen, with HF checkpoint I/O.

Public surface: `load_pretrained`, `save_pretrained`, `forward_logits`, `build_model`,
`init_params`, configs and presets.
"""
from r1jax.models.api import abstract_params, build_model, forward_logits, init_params, logical_axes  # noqa: F401
from r1jax.models.config import (PRESETS, ModelConfig, TextConfig, VisionConfig, config_from_hf,  # noqa: F401
                                 config_to_hf, load_hf_config, preset)
from r1jax.models.hf import load_pretrained, save_pretrained  # noqa: F401
from r1jax.models.llm import CausalLM, init_cache  # noqa: F401
from r1jax.models.vision import VisionTransformer, vision_grid  # noqa: F401
from r1jax.models.vlm import VisionLanguageModel, decode_rope_deltas, get_rope_index  # noqa: F401
