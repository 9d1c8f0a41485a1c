"""Qwen2.5-VL presets: real dimensions, parameter counts equal transformers' (meta device, no memory)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from r1jax import models

# config.json of Qwen/Qwen2.5-VL-{3B,7B}-Instruct as published (transformers v4 layout).
_VISION = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
           "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
           "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2}
_COMMON = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
           "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
           "video_token_id": 151656, "hidden_act": "silu", "initializer_range": 0.02,
           "max_position_embeddings": 128000, "model_type": "qwen2_5_vl", "rms_norm_eps": 1e-06,
           "rope_theta": 1000000.0, "sliding_window": 32768, "torch_dtype": "bfloat16",
           "transformers_version": "4.41.2", "use_cache": True, "use_sliding_window": False,
           "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
HF_CONFIGS = {
    "qwen2.5-vl-3b": {**_COMMON, "hidden_size": 2048, "intermediate_size": 11008, "num_attention_heads": 16,
                      "num_hidden_layers": 36, "num_key_value_heads": 2, "max_window_layers": 70,
                      "tie_word_embeddings": True, "vocab_size": 151936,
                      "vision_config": {**_VISION, "out_hidden_size": 2048}},
    "qwen2.5-vl-7b": {**_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
                      "num_hidden_layers": 28, "num_key_value_heads": 4, "max_window_layers": 28,
                      "tie_word_embeddings": False, "vocab_size": 152064,
                      "vision_config": {**_VISION, "out_hidden_size": 3584}},
}


def _architecture(config):
  return (config.text, config.vision, config.image_token_id, config.video_token_id, config.vision_start_token_id,
          config.vision_end_token_id)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_preset_parameter_count_equals_transformers(name):
  # Scanned layers trace one block each: same parameters, a fraction of the tracing time.
  config = models.preset(name, scan_layers=True)
  ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(models.abstract_params(
      models.build_model(config)))))
  with torch.device("meta"):
    reference = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(**HF_CONFIGS[name]))
  assert ours == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_published_config_json_parses_to_the_preset(name):
  preset = models.preset(name)
  assert _architecture(models.config_from_hf(HF_CONFIGS[name])) == _architecture(preset)
  # ...and our config.json writer round-trips it.
  assert _architecture(models.config_from_hf(models.config_to_hf(preset))) == _architecture(preset)


def test_vision_config_errors_name_the_field():
  config = {**HF_CONFIGS["qwen2.5-vl-7b"]}
  config["vision_config"] = {**_VISION, "out_hidden_size": 3584, "rope_parameters": {"rope_type": "2d-yarn"}}
  with pytest.raises(ValueError, match="vision_config.rope_parameters.rope_type='2d-yarn'"):
    models.config_from_hf(config)
  config["vision_config"] = {**_VISION, "out_hidden_size": 3584, "hidden_act": "gelu"}
  with pytest.raises(ValueError, match="vision_config.hidden_act='gelu'"):
    models.config_from_hf(config)
