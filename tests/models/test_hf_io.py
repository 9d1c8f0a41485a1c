"""HF checkpoint I/O: round trips, transformers loading our export, and named errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from r1jax import models
from r1jax.models.safetensors_io import SafetensorsFolder, write_safetensors
from tests.models.hf_fixtures import tiny_qwen2, torch_logits


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen2")
  tiny_qwen2(path, layers=2)
  return str(path)


@pytest.mark.parametrize("scan", [False, True])
def test_round_trip_gives_identical_tensors(hf_dir, tmp_path, scan):
  model, params = models.load_pretrained(hf_dir, scan_layers=scan)
  out = str(tmp_path / "export")
  models.save_pretrained(model, params, out, max_shard_bytes=10_000)  # forces several files + index
  assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
  original, exported = SafetensorsFolder(hf_dir), SafetensorsFolder(out)
  assert set(exported.names()) == set(original.names())
  for name in original.names():
    np.testing.assert_array_equal(exported.get(name), original.get(name), err_msg=name)


def test_transformers_loads_our_export(hf_dir, tmp_path):
  model, params = models.load_pretrained(hf_dir)
  params = jax.tree_util.tree_map(lambda x: x * 1.5, params)  # not just the file we read
  out = str(tmp_path / "export")
  models.save_pretrained(model, params, out)
  reloaded = transformers.Qwen2ForCausalLM.from_pretrained(out).eval()
  ids = np.random.default_rng(0).integers(0, 96, (2, 6))
  np.testing.assert_allclose(np.asarray(models.forward_logits(model, params, ids)), torch_logits(reloaded, ids),
                             atol=1e-4, rtol=0)


def test_bf16_checkpoint_loads(hf_dir, tmp_path):
  ref = transformers.Qwen2ForCausalLM.from_pretrained(hf_dir, dtype="bfloat16")
  ref.save_pretrained(tmp_path)
  _, params = models.load_pretrained(str(tmp_path), dtype=jnp.bfloat16)
  leaf = params["params"]["embed_tokens"]["embedding"]
  assert leaf.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(leaf.astype(jnp.float32)),
                                ref.model.embed_tokens.weight.float().detach().numpy())


def test_missing_folder_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    models.load_pretrained(str(tmp_path / "nope"))
  (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 8,
                                                    "hidden_size": 8, "intermediate_size": 8,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2}))
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    models.load_pretrained(str(tmp_path))
  os.remove(tmp_path / "config.json")
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.load_pretrained(str(tmp_path))


def _copy_with(src, dst, edit):
  folder = SafetensorsFolder(src)
  tensors = {name: np.array(folder.get(name)) for name in folder.names()}
  edit(tensors)
  os.makedirs(dst, exist_ok=True)
  write_safetensors(os.path.join(dst, "model.safetensors"), tensors)
  with open(os.path.join(src, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
    g.write(f.read())
  return dst


def test_missing_and_unexpected_tensors_are_listed(hf_dir, tmp_path):
  def edit(t):
    del t["model.layers.1.mlp.up_proj.weight"]
    t["model.layers.9.extra.weight"] = np.zeros(3, np.float32)

  bad = _copy_with(hf_dir, str(tmp_path / "bad"), edit)
  with pytest.raises(ValueError, match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\].*"
                                       r"unexpected tensors \['model.layers.9.extra.weight'\]"):
    models.load_pretrained(bad)


def test_shape_mismatch_names_tensor_expected_and_got(hf_dir, tmp_path):
  def edit(t):
    t["model.layers.0.mlp.down_proj.weight"] = np.zeros((32, 40), np.float32)

  bad = _copy_with(hf_dir, str(tmp_path / "bad"), edit)
  with pytest.raises(ValueError, match=r"model.layers.0.mlp.down_proj.weight.*\(32, 40\).*expected \(48, 32\)"):
    models.load_pretrained(bad)


@pytest.mark.parametrize("field,value,message", [
    ("architectures", ["LlamaForCausalLM"], "unsupported architectures"),
    ("use_sliding_window", True, "use_sliding_window"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, "unsupported rope type 'yarn'"),
    ("hidden_act", "gelu", "hidden_act='gelu'"),
    ("fancy_new_field", 1, "fancy_new_field"),
])
def test_unsupported_config_fields_are_named(hf_dir, field, value, message):
  with open(os.path.join(hf_dir, "config.json")) as f:
    config = json.load(f)
  config[field] = value
  with pytest.raises(ValueError, match=message):
    models.config_from_hf(config)


def _corrupt_copy(src, dst, mutate):
  """A copy of checkpoint folder `src` whose model.safetensors bytes are `mutate(bytes)`."""
  os.makedirs(dst)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f:
      data = f.read()
    with open(os.path.join(dst, name), "wb") as f:
      f.write(mutate(data) if name == "model.safetensors" else data)
  return dst


def _header_len(data: bytes) -> int:
  return int.from_bytes(data[:8], "little")


@pytest.mark.parametrize("mutate,message", [
    (lambda d: b"", r"model.safetensors' has 0 bytes, .* empty or truncated"),
    (lambda d: d[:5], r"model.safetensors' has 5 bytes"),
    (lambda d: d[:8 + _header_len(d) // 2], r"header length says \d+ bytes but the file has \d+ bytes"),
    (lambda d: d[:8] + b"{" * _header_len(d) + d[8 + _header_len(d):], r"header is not valid JSON"),
    # Cut in the tensor data: the error names the last tensor and the bytes it needs vs holds.
    (lambda d: d[:-100], r"model.safetensors' is truncated: tensor '[\w.]+' \(F32 \[[\d, ]+\]\) needs data "
                         r"bytes \[\d+, \d+\) but the file holds \d+ bytes"),
], ids=["empty", "shorter_than_length", "truncated_header", "header_not_json", "truncated_data"])
def test_corrupt_safetensors_errors_name_the_file_and_what_was_expected(hf_dir, tmp_path, mutate, message):
  bad = _corrupt_copy(hf_dir, str(tmp_path / "bad"), mutate)
  with pytest.raises(ValueError, match=message):
    models.load_pretrained(bad)


def test_header_whose_offsets_disagree_with_the_shape_names_the_tensor(tmp_path):
  file = str(tmp_path / "model.safetensors")
  write_safetensors(file, {"a": np.zeros((2, 3), np.float32)})
  with open(file, "rb") as f:
    data = f.read()
  header = data[8:8 + _header_len(data)].replace(b"[2,3]", b"[3,3]")
  with open(file, "wb") as f:
    f.write(data[:8] + header + data[8 + len(header):])
  with pytest.raises(ValueError, match=r"tensor 'a' \(F32 \[3, 3\]\) needs 36 bytes but its data_offsets "
                                       r"\[0, 24\] span 24"):
    SafetensorsFolder(str(tmp_path))


def test_corrupt_index_and_config_name_the_file(hf_dir, tmp_path):
  bad = _corrupt_copy(hf_dir, str(tmp_path / "bad"), lambda d: d)
  with open(os.path.join(bad, "model.safetensors.index.json"), "w") as f:
    f.write('{"weight_map": ')
  with pytest.raises(ValueError, match=r"model.safetensors.index.json' is not valid JSON"):
    SafetensorsFolder(bad)
  with open(os.path.join(bad, "config.json"), "w") as f:
    f.write("")
  with pytest.raises(ValueError, match=r"config.json' is not valid JSON .*empty, truncated or corrupt"):
    models.load_pretrained(bad)


def test_missing_fields_are_named_with_their_section():
  vl = models.config_to_hf(models.preset("qwen2.5-vl-3b"))
  del vl["text_config"]["hidden_size"]
  with pytest.raises(ValueError, match=r"missing required field\(s\) \['text_config.hidden_size'\]"):
    models.config_from_hf(vl)
  text = models.config_to_hf(models.preset("qwen2.5-0.5b"))
  del text["num_attention_heads"]
  with pytest.raises(ValueError, match=r"missing required field\(s\) \['num_attention_heads'\]"):
    models.config_from_hf(text)


def test_missing_architectures_is_named_or_read_from_model_type():
  hf = models.config_to_hf(models.preset("qwen2.5-vl-3b"))
  del hf["architectures"]
  # model_type says it, as for transformers (a checkpoint's config has no runtime options: fp32, unscanned)
  assert models.config_from_hf(hf) == models.preset("qwen2.5-vl-3b", dtype="float32", scan_layers=False)
  del hf["model_type"]
  with pytest.raises(ValueError, match=r"config.json has no 'architectures' field and its model_type=None"):
    models.config_from_hf(hf)
