"""Config validation and stage chaining."""
import ml_collections
import pytest

from r1jax.train import config as config_lib


def test_default_config_validates():
  config_lib.validate(config_lib.default_config())


@pytest.mark.parametrize("section,key,message", [
    (None, "learning_rate", "unknown config key 'learning_rate'"),
    ("optim", "learnig_rate", "unknown config key 'optim.learnig_rate'; did you mean 'optim.learning_rate'"),
    ("rl", "epsilon_hi", "'rl.epsilon_hi'; did you mean 'rl.epsilon_high'"),
])
def test_misspelled_key_is_named(section, key, message):
  config = config_lib.default_config()
  target = config if section is None else config[section]
  with target.unlocked() if hasattr(target, "unlocked") else _null():
    target[key] = 1.0
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *args):
    return False


def test_stage_overrides_are_validated_and_applied():
  config = config_lib.default_config()
  config.stages = ml_collections.ConfigDict({"sft": {"stage": "sft", "optim": {"learning_rate": 1e-3}},
                                             "grpo": {"stage": "grpo"}})
  config.stage_order = ("grpo",)
  with pytest.raises(ValueError, match="stage_order"):
    config_lib.validate(config)
  config.stage_order = ("sft", "grpo")
  config_lib.validate(config)
  stages = config_lib.stage_configs(config)
  assert [name for name, _ in stages] == ["sft", "grpo"]
  assert stages[0][1].stage == "sft" and stages[0][1].optim.learning_rate == 1e-3
  assert stages[1][1].optim.learning_rate == config.optim.learning_rate
  config.stages.grpo.optim = {"warmup": 3}
  with pytest.raises(ValueError, match="'stages.grpo.optim.warmup'"):
    config_lib.validate(config)


def test_unset_model_options_take_the_preset_s_defaults_and_set_ones_override_them():
  from r1jax import models  # pylint: disable=g-import-not-at-top
  from r1jax.train import loop  # pylint: disable=g-import-not-at-top
  model = config_lib.default_config().model
  unset = models.preset("qwen2.5-1.5b", **loop.runtime_options(model))
  assert (unset.dtype, unset.param_dtype, unset.scan_layers) == ("bfloat16", "float32", True)
  assert models.preset("qwen2.5-0.5b", **loop.runtime_options(model)).scan_layers is False
  model.dtype, model.scan_layers, model.attention_impl = "float32", False, "jax_xla"
  chosen = models.preset("qwen2.5-1.5b", **loop.runtime_options(model))
  assert (chosen.dtype, chosen.scan_layers, chosen.attention_impl) == ("float32", False, "jax_xla")
  hf = models.config_from_hf(models.config_to_hf(models.preset("qwen2.5-0.5b")),
                             **loop.runtime_options(config_lib.default_config().model))
  assert (hf.dtype, hf.scan_layers) == ("float32", False)  # an hf_config: ModelConfig's defaults


def test_sequence_attention_reaches_a_preset_model_and_one_loaded_from_an_hf_folder(tmp_path):
  from r1jax import models  # pylint: disable=g-import-not-at-top
  from r1jax.train import loop  # pylint: disable=g-import-not-at-top
  from tests.models.hf_fixtures import tiny_qwen2  # pylint: disable=g-import-not-at-top
  model = config_lib.default_config().model
  assert models.preset("qwen2.5-0.5b", **loop.runtime_options(model)).sequence_attention == "all_gather"
  model.sequence_attention = "ring"
  assert models.preset("qwen2.5-0.5b", **loop.runtime_options(model)).sequence_attention == "ring"
  tiny_qwen2(tmp_path)
  loaded, _ = models.load_pretrained(str(tmp_path), sequence_attention="ring")
  assert loaded.config.sequence_attention == "ring"
