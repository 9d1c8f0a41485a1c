"""Qwen2.5 presets: real dimensions, parameter counts equal transformers built on the meta device."""
import pytest
import torch
import transformers

from r1jax import models
from r1jax.models.llm import param_count

EXPECTED_BILLIONS = {"qwen2.5-0.5b": 0.49, "qwen2.5-1.5b": 1.54, "qwen2.5-3b": 3.09, "qwen2.5-7b": 7.62}


@pytest.mark.parametrize("name", sorted(EXPECTED_BILLIONS))
def test_text_preset_parameter_count_matches_transformers(name):
  config = models.preset(name)
  with torch.device("meta"):
    reference = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**models.config_to_hf(config)))
  expected = sum(p.numel() for p in reference.parameters())  # tied weights are counted once
  ours = param_count(models.abstract_params(models.build_model(config)))
  assert ours == expected
  assert abs(ours / 1e9 - EXPECTED_BILLIONS[name]) < 0.01


def test_scan_layers_keeps_the_count():
  a = param_count(models.abstract_params(models.build_model(models.preset("qwen2.5-0.5b"))))
  b = param_count(models.abstract_params(models.build_model(models.preset("qwen2.5-0.5b", scan_layers=True))))
  assert a == b


def test_unknown_preset_is_named():
  with pytest.raises(KeyError, match="qwen9"):
    models.preset("qwen9")


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_presets_default_to_bf16_compute_over_fp32_params_and_scan_from_1_5b(name):
  config = models.preset(name)
  assert (config.dtype, config.param_dtype) == ("bfloat16", "float32")
  billions = param_count(models.abstract_params(models.build_model(config))) / 1e9
  assert config.scan_layers == (billions >= 1.5)
  assert models.preset(name, dtype="float32", scan_layers=False).dtype == "float32"  # a CPU parity run
