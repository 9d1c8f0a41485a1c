"""Device mesh, logical-axis rules, sharded init/loading, and sharded forward + train step.

Runs on the 8 simulated CPU devices of tests/conftest.py.
"""
import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax import models, sharding
from r1jax.models import api, hf, vision, vlm
from r1jax.models.safetensors_io import SafetensorsFolder
from tests.models.hf_fixtures import tiny_qwen2, tiny_qwen2_5_vl
from tests.multihost_worker import text_batch

LAYOUTS = {
    "fsdp8": {"fsdp": 8},
    "tensor8": {"tensor": 8},
    "fsdp4_tensor2": {"fsdp": 4, "tensor": 2},
    "data2_fsdp4": {"data": 2, "fsdp": 4},
}

# 8 heads / 4 kv heads: under tensor=8 the kv heads cannot split and must stay replicated.
TINY = models.ModelConfig(models.TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                                            num_heads=8, num_kv_heads=4, rope_theta=10000.0))
# Compiling init (threefry) and gradients dominates test time: those tests use one layer.
ONE_LAYER = TINY.replace(text=dataclasses.replace(TINY.text, num_layers=1))
TINY_VL = models.ModelConfig(
    models.TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                      num_kv_heads=2, rope_theta=10000.0, mrope_section=(2, 3, 3)),
    models.VisionConfig(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                        window_size=56, fullatt_block_indexes=(1,)),
    image_token_id=125, video_token_id=126, vision_start_token_id=123, vision_end_token_id=124)


# --------------------------------------------------------------------------- mesh


def test_make_mesh_fills_minus_one_and_accepts_config_forms():
  mesh = sharding.make_mesh(sharding.default_mesh_config())
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1, "sequence": 1}
  assert dict(sharding.make_mesh({"data": 2, "tensor": -1}).shape) == {"data": 2, "fsdp": 1, "tensor": 4,
                                                                       "sequence": 1}
  assert dict(sharding.make_mesh((1, 2, 2, 2)).shape) == {"data": 1, "fsdp": 2, "tensor": 2, "sequence": 2}
  config = ml_collections.ConfigDict({"shape": {"fsdp": 2, "tensor": 2}})
  mesh = sharding.make_mesh(config, devices=jax.devices()[:4])
  assert mesh.devices.size == 4 and dict(mesh.shape)["tensor"] == 2
  assert sorted(d.id for d in mesh.devices.flat) == [0, 1, 2, 3]


@pytest.mark.parametrize("shape, message", [
    ({"fsdp": 3, "tensor": -1}, r"multiple of 3 devices, but there are 8"),
    ({"fsdp": 2, "tensor": 2}, r"uses 4 devices, but there are 8"),
    ({"fsdp": -1, "tensor": -1}, r"at most one -1"),
    ({"model": 8}, r"unknown axis \['model'\]"),
    ((8, 1), r"must give 4 sizes"),
])
def test_mesh_shape_errors_name_the_problem(shape, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(shape)


def test_unknown_mesh_config_key_is_named():
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['axes'\] in config.mesh"):
    sharding.make_mesh({"shape": {"fsdp": -1}, "axes": ("fsdp",)})


# --------------------------------------------------------------------------- parameter specs

# Expected mesh axes per parameter role and layout, written out by hand from the intended
# placement (embed -> fsdp; heads / kv_heads / mlp / vocab -> tensor) and each model's sizes.
_FSDP = {"embedding": (None, "fsdp"), "q_kernel": ("fsdp", None, None), "kv_kernel": ("fsdp", None, None),
         "q_bias": (None, None), "kv_bias": (None, None), "o_kernel": (None, None, "fsdp"),
         "up_kernel": ("fsdp", None), "down_kernel": (None, "fsdp"), "scale": (None,), "lm_head": ("fsdp", None)}
_TENSOR = {"embedding": ("tensor", None), "q_kernel": (None, "tensor", None), "kv_kernel": (None, None, None),
           "q_bias": ("tensor", None), "kv_bias": (None, None), "o_kernel": ("tensor", None, None),
           "up_kernel": (None, "tensor"), "down_kernel": ("tensor", None), "scale": (None,),
           "lm_head": (None, "tensor")}
_FSDP_TENSOR = {"embedding": ("tensor", "fsdp"), "q_kernel": ("fsdp", "tensor", None),
                "kv_kernel": ("fsdp", "tensor", None), "q_bias": ("tensor", None), "kv_bias": ("tensor", None),
                "o_kernel": ("tensor", None, "fsdp"), "up_kernel": ("fsdp", "tensor"),
                "down_kernel": ("tensor", "fsdp"), "scale": (None,), "lm_head": ("fsdp", "tensor")}
EXPECTED_TINY = {"fsdp8": _FSDP, "tensor8": _TENSOR, "fsdp4_tensor2": _FSDP_TENSOR, "data2_fsdp4": _FSDP}
# Qwen2.5-VL-7B language model: 28 heads do not split 8 ways either, so under tensor=8 its
# attention stays replicated; so does the vision MLP (3420 wide).
EXPECTED_7B_TEXT = dict(EXPECTED_TINY, tensor8=dict(_TENSOR, q_kernel=(None, None, None), q_bias=(None, None),
                                                    o_kernel=(None, None, None)))
_VISION_FSDP = {"patch": (None, "fsdp"), "qkv_kernel": ("fsdp", None, None, None), "qkv_bias": (None, None, None),
                "proj_kernel": (None, None, "fsdp"), "embed_bias": ("fsdp",), "up_kernel": ("fsdp", None),
                "mlp_bias": (None,), "down_kernel": (None, "fsdp"), "scale": (None,),
                "merger_0": ("fsdp", None), "merger_0_bias": (None,), "merger_2": (None, "fsdp"),
                "out_bias": ("fsdp",)}
EXPECTED_7B_VISION = {
    "fsdp8": _VISION_FSDP, "data2_fsdp4": _VISION_FSDP,
    "tensor8": {"patch": (None, None), "qkv_kernel": (None, None, "tensor", None), "qkv_bias": (None, "tensor", None),
                "proj_kernel": ("tensor", None, None), "embed_bias": (None,), "up_kernel": (None, None),
                "mlp_bias": (None,), "down_kernel": (None, None), "scale": (None,), "merger_0": (None, "tensor"),
                "merger_0_bias": ("tensor",),
                "merger_2": ("tensor", None), "out_bias": (None,)},
    "fsdp4_tensor2": {"patch": (None, "fsdp"), "qkv_kernel": ("fsdp", None, "tensor", None),
                      "qkv_bias": (None, "tensor", None), "proj_kernel": ("tensor", None, "fsdp"),
                      "embed_bias": ("fsdp",), "up_kernel": ("fsdp", "tensor"), "mlp_bias": ("tensor",),
                      "down_kernel": ("tensor", "fsdp"), "scale": (None,), "merger_0": ("fsdp", "tensor"),
                      "merger_0_bias": ("tensor",),
                      "merger_2": ("tensor", "fsdp"), "out_bias": ("fsdp",)},
}
_VISION_ROLES = [(r"patch_embed/kernel$", "patch"), (r"qkv/kernel$", "qkv_kernel"), (r"qkv/bias$", "qkv_bias"),
                 (r"attn/proj/kernel$", "proj_kernel"), (r"(attn/proj|down_proj)/bias$", "embed_bias"),
                 (r"(gate|up)_proj/kernel$", "up_kernel"), (r"(gate|up)_proj/bias$", "mlp_bias"),
                 (r"mlp_0/bias$", "merger_0_bias"), (r"down_proj/kernel$", "down_kernel"),
                 (r"(norm1|norm2|ln_q)/scale$", "scale"), (r"mlp_0/kernel$", "merger_0"),
                 (r"mlp_2/kernel$", "merger_2"), (r"mlp_2/bias$", "out_bias")]
_TEXT_ROLES = [(r"embed_tokens/embedding$", "embedding"), (r"lm_head/kernel$", "lm_head"),
               (r"q_proj/kernel$", "q_kernel"), (r"(k|v)_proj/kernel$", "kv_kernel"), (r"q_proj/bias$", "q_bias"),
               (r"(k|v)_proj/bias$", "kv_bias"), (r"o_proj/kernel$", "o_kernel"),
               (r"(gate|up)_proj/kernel$", "up_kernel"), (r"down_proj/kernel$", "down_kernel"),
               (r"norm/scale$", "scale")]


def _role(path: str, roles) -> str:
  for pattern, role in roles:
    if re.search(pattern, path):
      return role
  raise AssertionError(f"no expectation for parameter {path}")


def _flat_specs(specs) -> dict[str, P]:
  leaves = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, P))
  return {jax.tree_util.keystr(path, simple=True, separator="/"): spec for path, spec in leaves}


@pytest.fixture(scope="module")
def abstract_vl_7b():
  """Boxed shapes of the Qwen2.5-VL-7B preset in bf16 (`jax.eval_shape`: nothing is allocated)."""
  config = models.preset("qwen2.5-vl-7b", param_dtype="bfloat16", scan_layers=False)
  return api.abstract_params(models.build_model(config))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_parameter_gets_the_expected_spec(layout, abstract_vl_7b):
  mesh = sharding.make_mesh(LAYOUTS[layout])
  specs = _flat_specs(sharding.param_specs(models.build_model(TINY), mesh))
  assert len(specs) == 3 + 12 * TINY.text.num_layers  # embeddings, final norm, lm_head + 12 per layer
  for path, spec in specs.items():
    assert spec == P(*EXPECTED_TINY[layout][_role(path, _TEXT_ROLES)]), path

  specs = _flat_specs(sharding.param_specs(abstract_vl_7b, mesh))
  preset = models.preset("qwen2.5-vl-7b")
  assert len(specs) == (3 + 12 * preset.text.num_layers) + (1 + 12 * preset.vision.depth + 5)
  for path, spec in specs.items():
    if path.startswith("params/language_model/"):
      assert spec == P(*EXPECTED_7B_TEXT[layout][_role(path, _TEXT_ROLES)]), path
    else:
      assert path.startswith("params/visual/"), path
      assert spec == P(*EXPECTED_7B_VISION[layout][_role(path, _VISION_ROLES)]), path


def test_scanned_layers_keep_the_layer_axis_replicated():
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  specs = _flat_specs(sharding.param_specs(models.build_model(TINY.replace(scan_layers=True)), mesh))
  assert specs["params/layers/self_attn/q_proj/kernel"] == P(None, "fsdp", "tensor", None)
  assert specs["params/layers/mlp/down_proj/kernel"] == P(None, "tensor", "fsdp")


def test_7b_bytes_per_device_under_fsdp8_is_an_eighth(abstract_vl_7b):
  mesh = sharding.make_mesh(LAYOUTS["fsdp8"])
  abstract = abstract_vl_7b
  shardings = sharding.param_shardings(abstract, mesh)
  shapes = jax.tree_util.tree_leaves(nn.unbox(abstract))
  total = sum(x.size * x.dtype.itemsize for x in shapes)
  per_device = sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
                   for x, s in zip(shapes, jax.tree_util.tree_leaves(shardings)))
  assert total > 16e9  # really the 8.3B-parameter VL model in bf16
  # Only norms and some biases (~0.01% of the weights) stay replicated.
  assert abs(per_device - total / 8) / (total / 8) < 1e-3


def test_rules_are_overridable_from_config():
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  config = ml_collections.ConfigDict({"shape": {"fsdp": 4, "tensor": 2}, "rules": {"vocab": None,
                                                                                   "mlp": ["fsdp", "tensor"]}})
  rules = sharding.logical_rules(config.rules)
  specs = _flat_specs(sharding.param_specs(models.build_model(TINY), mesh, rules))
  assert specs["params/embed_tokens/embedding"] == P(None, "fsdp")
  # mlp takes (fsdp, tensor) first; embed then finds fsdp taken: first dimension wins a mesh axis.
  assert specs["params/layers_0/mlp/down_proj/kernel"] == P(("fsdp", "tensor"), None)
  assert specs["params/layers_0/mlp/up_proj/kernel"] == P("fsdp", "tensor")
  with pytest.raises(ValueError, match=r"mesh.rules.heads='model' names unknown mesh axis \['model'\]"):
    sharding.logical_rules({"heads": "model"})


def test_missing_rule_names_the_parameter_and_the_axis():
  mesh = sharding.make_mesh(LAYOUTS["fsdp8"])
  rules = tuple((name, axes) for name, axes in sharding.DEFAULT_RULES if name != "kv_heads")
  with pytest.raises(ValueError, match=r"parameter params/layers_0/self_attn/k_proj/(bias|kernel) has logical "
                                       r"axis 'kv_heads' with no sharding rule"):
    sharding.param_specs(models.build_model(TINY), mesh, rules)


# --------------------------------------------------------------------------- sharded init and loading


def test_init_sharded_equals_single_device_init():
  model = models.build_model(ONE_LAYER)
  # Jitted like init_sharded: eager op-by-op init rounds differently in the last bit.
  reference = jax.jit(functools.partial(api.init_params, model))(jax.random.PRNGKey(0))
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  sharded = sharding.init_sharded(model, jax.random.PRNGKey(0), mesh)
  wanted = sharding.param_shardings(model, mesh)
  for got, ref, want in zip(jax.tree_util.tree_leaves(sharded), jax.tree_util.tree_leaves(reference),
                            jax.tree_util.tree_leaves(wanted)):
    assert got.sharding == want
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_train_state_moments_are_sharded_like_their_parameters():
  from r1jax.train import config as train_config, loop, optim  # pylint: disable=g-import-not-at-top
  model = models.build_model(ONE_LAYER)
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  params = sharding.init_sharded(model, jax.random.PRNGKey(0), mesh)
  optim_config = train_config.default_config().optim
  optim_config.freeze = ("embed_tokens/.*",)  # frozen leaves have no moments
  state = loop.init_state(params, optim.make_optimizer(optim_config, 10), 0, mesh,
                         optim.frozen_paths(params, optim_config.freeze))
  wanted = {jax.tree_util.keystr(path): leaf.sharding for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  moments = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    match = [key for key in wanted if jax.tree_util.keystr(path).endswith(key)]
    if match and leaf.ndim:
      moments += 1
      assert leaf.sharding.is_equivalent_to(wanted[match[0]], leaf.ndim), jax.tree_util.keystr(path)
    else:
      assert leaf.sharding.is_fully_replicated, jax.tree_util.keystr(path)
  assert moments >= 2 * (len(wanted) - 1)  # mu and nu of every trained parameter
  assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(state.opt_state))
  for got, want in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(params)):
    assert got.sharding == want.sharding


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen2_sharding")
  tiny_qwen2(path, hidden=64, heads=8, kv_heads=4, layers=2, inter=128, vocab=256)
  return str(path)


@pytest.fixture(scope="module")
def hf_vl_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen2_5_vl_sharding")
  tiny_qwen2_5_vl(path, hidden=64, heads=4, kv_heads=2, vision_hidden=32, vision_heads=2, vision_inter=48)
  return str(path)


def _assert_loaded_like(loaded, reference, wanted):
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(reference)
  for got, ref, want in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(reference),
                            jax.tree_util.tree_leaves(wanted)):
    assert got.sharding == want
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


@pytest.mark.parametrize("layout, scan", [("fsdp4_tensor2", False), ("fsdp4_tensor2", True), ("tensor8", True),
                                          ("data2_fsdp4", False)])
def test_sharded_loading_equals_unsharded_loading(hf_dir, layout, scan):
  mesh = sharding.make_mesh(LAYOUTS[layout])
  model, reference = models.load_pretrained(hf_dir, scan_layers=scan)
  _, loaded = models.load_pretrained(hf_dir, mesh=mesh, scan_layers=scan)
  _assert_loaded_like(loaded, reference, sharding.param_shardings(model, mesh))


def test_sharded_loading_of_a_bf16_checkpoint_converts_like_unsharded(hf_dir, tmp_path):
  model, params = models.load_pretrained(hf_dir)
  bf16_dir = str(tmp_path / "bf16")
  models.save_pretrained(model, params, bf16_dir, dtype=jnp.bfloat16)
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  _, reference = models.load_pretrained(bf16_dir)
  _, loaded = models.load_pretrained(bf16_dir, mesh=mesh)
  _assert_loaded_like(loaded, reference, sharding.param_shardings(model, mesh))
  assert jax.tree_util.tree_leaves(loaded)[0].dtype == jnp.float32


def test_sharded_vl_loading_equals_unsharded_loading(hf_vl_dir):
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  model, reference = models.load_pretrained(hf_vl_dir, scan_layers=True)
  _, loaded = models.load_pretrained(hf_vl_dir, mesh=mesh, scan_layers=True)
  _assert_loaded_like(loaded, reference, sharding.param_shardings(model, mesh))


def test_layout_transforms_read_slices_of_the_memory_map(hf_dir, hf_vl_dir):
  """Sharded loading reads only owned slices because every HF->ours transform is a view."""
  for path in (hf_dir, hf_vl_dir):
    folder = SafetensorsFolder(path)
    for rule in hf.conversion_rules(models.load_hf_config(path), folder.names()):
      mapped = folder.get(rule.hf[0])
      assert np.shares_memory(rule.to_ours(mapped), mapped), rule.ours


# --------------------------------------------------------------------------- sharded forward + train step

TX = optax.adamw(1e-3, eps=1e-6)  # eps >> fp32 gradient noise, so Adam's g/|g| cannot amplify it


def _loss(model, params, batch):
  logits = model.apply(params, batch["input_ids"], attention_mask=batch["attention_mask"])[0]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch["input_ids"][:, 1:])
  weights = batch["attention_mask"][:, 1:].astype(jnp.float32)
  return (losses * weights).sum() / weights.sum(), logits


def _step(model, params, opt_state, batch):
  (_, logits), grads = jax.value_and_grad(functools.partial(_loss, model), has_aux=True)(params, batch)
  updates, opt_state = TX.update(grads, opt_state, params)
  return logits, optax.apply_updates(params, updates), opt_state


@pytest.fixture(scope="module")
def text_reference():
  model = models.build_model(TINY)
  params = _random_params(model, 0)
  batch = text_batch(TINY.text.vocab_size)
  logits = jax.jit(lambda p, b: _loss(model, p, b)[1])(params, batch)
  return model, params, batch, np.asarray(logits)


def _sharded_inputs(model, params, batch, mesh):
  param_shardings = sharding.param_shardings(model, mesh)
  return param_shardings, sharding.shard_params(params, mesh, model=model), sharding.shard_batch(batch, mesh)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_text_forward_matches_single_device(text_reference, layout):
  model, params, batch, ref_logits = text_reference
  mesh = sharding.make_mesh(LAYOUTS[layout])
  param_shardings, params, batch = _sharded_inputs(model, params, batch, mesh)
  logits_sharding = sharding.logical_sharding(mesh, ("act_batch", "act_length", "act_vocab"))
  with sharding.use_mesh(mesh):
    forward = jax.jit(lambda p, b: _loss(model, p, b)[1], in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                      out_shardings=logits_sharding)
    logits = forward(params, batch)
  assert logits.sharding == logits_sharding
  np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=0)


def test_sharded_optimizer_step_matches_single_device():
  model = models.build_model(ONE_LAYER)
  params, batch = _random_params(model, 1), text_batch(ONE_LAYER.text.vocab_size)
  _, ref_params, _ = jax.jit(functools.partial(_step, model))(params, TX.init(params), batch)
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  param_shardings, sharded, batch = _sharded_inputs(model, params, batch, mesh)
  opt_shardings = sharding.opt_state_shardings(TX, model, mesh)
  opt_state = jax.jit(TX.init, out_shardings=opt_shardings)(sharded)
  logits_sharding = sharding.logical_sharding(mesh, ("act_batch", "act_length", "act_vocab"))
  with sharding.use_mesh(mesh):
    step = jax.jit(functools.partial(_step, model),
                   in_shardings=(param_shardings, opt_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(logits_sharding, param_shardings, opt_shardings))
    _, new_params, new_opt_state = step(sharded, opt_state, batch)
  for got, ref, want in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(ref_params),
                            jax.tree_util.tree_leaves(param_shardings)):
    assert got.sharding == want
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=0)
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(jax.tree_util.tree_leaves(new_params),
                                                                       jax.tree_util.tree_leaves(params))]
  assert min(moved) > 1e-4  # every parameter really took a step
  mu = new_opt_state[0].mu["params"]["layers_0"]["mlp"]["up_proj"]["kernel"]
  assert mu.sharding == param_shardings["params"]["layers_0"]["mlp"]["up_proj"]["kernel"]


def _random_params(model, seed: int):
  """Host-made random parameters with O(1) activations (no init compile)."""
  rng = np.random.default_rng(seed)

  def make(path, x):
    if jax.tree_util.keystr(path, simple=True, separator="/").endswith("scale"):
      return (1 + 0.1 * rng.standard_normal(x.shape)).astype(x.dtype)
    return (rng.standard_normal(x.shape) * (x.shape[0] ** -0.5 if x.ndim > 1 else 0.1)).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(make, nn.unbox(api.abstract_params(model)))


def _vl_batch():
  """8 rows: an image (6 merged tokens) in row 0, a 2-frame video (12) in row 2, left padding in row 5."""
  cfg, rng = TINY_VL, np.random.default_rng(1)
  image_grid, video_grid = np.array([[1, 6, 4]]), np.array([[2, 4, 6]])
  ids = rng.integers(0, 120, (8, 20))
  ids[0, 2:10] = [cfg.vision_start_token_id] + [cfg.image_token_id] * 6 + [cfg.vision_end_token_id]
  ids[2, 4:18] = [cfg.vision_start_token_id] + [cfg.video_token_id] * 12 + [cfg.vision_end_token_id]
  mask = np.ones(ids.shape, bool)
  mask[5, :7] = False
  positions, _ = vlm.get_rope_index(cfg, ids, image_grid, video_grid, None, mask)
  return {"input_ids": ids.astype(np.int32), "attention_mask": mask, "positions": positions,
          "pixel_values": rng.standard_normal((24, cfg.vision.patch_dim)).astype(np.float32),
          "image_grid": vision.vision_grid(cfg.vision, image_grid),
          "pixel_values_videos": rng.standard_normal((48, cfg.vision.patch_dim)).astype(np.float32),
          "video_grid": vision.vision_grid(cfg.vision, video_grid)}


def _vl_logits(model, params, batch):
  return model.apply(params, batch["input_ids"], attention_mask=batch["attention_mask"],
                     positions=batch["positions"], pixel_values=batch["pixel_values"],
                     image_grid_thw=batch["image_grid"], pixel_values_videos=batch["pixel_values_videos"],
                     video_grid_thw=batch["video_grid"])[0]


@pytest.fixture(scope="module")
def vl_reference():
  model = models.build_model(TINY_VL)
  params, batch = _random_params(model, 0), _vl_batch()
  return model, params, batch, np.asarray(jax.jit(functools.partial(_vl_logits, model))(params, batch))


# Rows lie on axis 1 of the M-RoPE ids; vision inputs are packed patches, the same on every process.
_VL_BATCH_AXES = {"positions": 1, "pixel_values": None, "image_grid": None, "pixel_values_videos": None,
                  "video_grid": None}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_vl_forward_with_image_and_video_matches_single_device(vl_reference, layout):
  model, params, batch, ref_logits = vl_reference
  mesh = sharding.make_mesh(LAYOUTS[layout])
  param_shardings = sharding.param_shardings(model, mesh)
  params = sharding.shard_params(params, mesh, model=model)
  batch = sharding.shard_batch(batch, mesh, batch_axis=_VL_BATCH_AXES)
  logits_sharding = sharding.logical_sharding(mesh, ("act_batch", "act_length", "act_vocab"))
  with sharding.use_mesh(mesh):
    forward = jax.jit(functools.partial(_vl_logits, model),
                      in_shardings=(param_shardings, jax.tree_util.tree_map(lambda x: x.sharding, batch)),
                      out_shardings=logits_sharding)
    logits = forward(params, batch)
  assert batch["positions"].sharding.spec == P(None, sharding.batch_sharding(mesh).spec[0])
  np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=0)


def test_activation_constraints_take_effect_inside_use_mesh():
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])

  def hidden(x):
    return nn.with_logical_constraint(x * 2, ("act_batch", "act_length", "act_mlp"))

  x = jnp.ones((8, 4, 16))
  with sharding.use_mesh(mesh):
    inside = jax.jit(hidden).lower(x).as_text()
  outside = jax.jit(hidden).lower(x).as_text()
  assert re.search(r'sharding_constraint.*\[\{"data", "fsdp"\}, \{"sequence"\}, \{"tensor"\}\]', inside), inside
  assert "sharding_constraint" not in outside


# --------------------------------------------------------------------------- batches and processes


def test_shard_batch_splits_rows_over_data_and_fsdp():
  mesh = sharding.make_mesh(LAYOUTS["data2_fsdp4"])
  batch = {"input_ids": np.arange(8 * 3).reshape(8, 3), "positions": np.arange(3 * 8 * 3).reshape(3, 8, 3),
           "scale": np.float32([2.0])}
  out = sharding.shard_batch(batch, mesh, batch_axis={"positions": 1, "scale": None})
  assert out["input_ids"].sharding.spec == P(("data", "fsdp"))
  assert out["positions"].sharding.spec == P(None, ("data", "fsdp"))
  assert out["scale"].sharding.is_fully_replicated
  assert [s.data.shape for s in out["input_ids"].addressable_shards] == [(1, 3)] * 8
  for key in batch:
    np.testing.assert_array_equal(np.asarray(out[key]), batch[key])
  with pytest.raises(ValueError, match=r"batch leaf 'input_ids' has 6 rows on this process, not divisible by the 8"):
    sharding.shard_batch({"input_ids": np.zeros((6, 3))}, mesh)


def test_shard_batch_replicates_uneven_rows_when_asked():
  mesh = sharding.make_mesh(LAYOUTS["data2_fsdp4"])
  rows = np.arange(6 * 3).reshape(6, 3)
  positions = np.arange(3 * 6 * 3).reshape(3, 6, 3)
  out = sharding.shard_batch({"input_ids": rows, "positions": positions}, mesh, batch_axis={"positions": 1},
                             uneven_rows="replicate")
  for key, value in (("input_ids", rows), ("positions", positions)):
    assert out[key].sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(out[key]), value)
    np.testing.assert_array_equal(sharding.process_rows(out[key], mesh, axis=0 if key == "input_ids" else 1), value)
  with pytest.raises(ValueError, match="uneven_rows='pad' must be 'error' or 'replicate'"):
    sharding.shard_batch({"input_ids": rows}, mesh, uneven_rows="pad")


def test_process_shard_info_single_process():
  assert sharding.process_shard_info() == (0, 1)
  assert sharding.process_shard_info(sharding.make_mesh(LAYOUTS["data2_fsdp4"])) == (0, 1)


_LAUNCH_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "JAX_COORDINATOR_ADDRESS")


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
  for var in _LAUNCH_VARS:
    monkeypatch.delenv(var, raising=False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *args: calls.append(args))
  assert sharding.initialize() is False
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert sharding.initialize() is False
  assert not calls


@pytest.mark.parametrize("env, args", [
    ({"SLURM_NTASKS": "4"}, (None, None, None, None)),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     (None, 2, 1, None)),
])
def test_initialize_calls_jax_distributed_when_launched_on_several_processes(monkeypatch, env, args):
  for var in _LAUNCH_VARS:
    monkeypatch.delenv(var, raising=False)
  for var, value in env.items():
    monkeypatch.setenv(var, value)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a: calls.append(a))
  assert sharding.initialize() is True
  assert calls == [args]


def test_logits_sharding_helper_matches_logical_names():
  mesh = sharding.make_mesh(LAYOUTS["fsdp4_tensor2"])
  assert sharding.logical_sharding(mesh, ("act_batch", "act_length", "act_vocab")) == NamedSharding(
      mesh, P("fsdp", None, "tensor"))
  assert sharding.batch_sharding(mesh) == NamedSharding(mesh, P("fsdp"))
