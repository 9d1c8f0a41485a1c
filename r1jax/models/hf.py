"""HF checkpoint I/O: local folders in the transformers layout (config.json + safetensors).

Conversion is a list of `TensorRule`s, one per parameter of ours: which HF tensor(s) it comes
from and how to transform between layouts (torch Linear [out, in] vs our [in, ...]). With
`scan_layers` one parameter stacks the same tensor of every layer. Loading streams rule by
rule, so at most one parameter (a layer stack with scan) is on the host beyond the memory map.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models import api
from r1jax.models.config import ModelConfig, config_to_hf, generation_config_to_hf, load_hf_config
from r1jax.models.safetensors_io import SafetensorsFolder, write_safetensors

Transform = Callable[[np.ndarray], np.ndarray]
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorRule:
  """How one of our parameters maps onto HF tensors.

  Attributes:
    ours: path in our params tree (below "params").
    hf: HF tensor names; several when our parameter stacks layers (scan), stacked on axis 0.
    to_ours / to_hf: per-tensor layout transforms (inverse of each other).
  """

  ours: tuple[str, ...]
  hf: tuple[str, ...]
  to_ours: Transform
  to_hf: Transform
  stacked: bool = False


def _identity(x):
  return x


def linear(*out_shape: int) -> tuple[Transform, Transform]:
  """torch Linear weight [prod(out_shape), in] <-> our kernel [in, *out_shape]."""
  return (lambda w: w.T.reshape(w.shape[1], *out_shape), lambda k: k.reshape(k.shape[0], -1).T)


def linear_in(*in_shape: int) -> tuple[Transform, Transform]:
  """torch Linear weight [out, prod(in_shape)] <-> our kernel [*in_shape, out]."""
  return (lambda w: w.T.reshape(*in_shape, w.shape[0]), lambda k: k.reshape(-1, k.shape[-1]).T)


def reshape(*shape: int) -> tuple[Transform, Transform]:
  return (lambda b: b.reshape(shape), lambda b: b.reshape(-1))


IDENTITY = (_identity, _identity)


def layer_rules(ours_prefix: tuple[str, ...], hf_prefix: str, num_layers: int, scan: bool,
                per_layer: Sequence[tuple[tuple[str, ...], str, tuple[Transform, Transform]]],
                ours_layer_name: str = "layers", hf_layer_name: str = "layers") -> list[TensorRule]:
  """Rules for repeated blocks: `per_layer` is (our sub-path, HF sub-name, transforms)."""
  rules = []
  for sub, hf_sub, (to_ours, to_hf) in per_layer:
    names = tuple(f"{hf_prefix}{hf_layer_name}.{i}.{hf_sub}" for i in range(num_layers))
    if scan:
      rules.append(TensorRule(ours_prefix + (ours_layer_name,) + sub, names, to_ours, to_hf, stacked=True))
    else:
      rules.extend(TensorRule(ours_prefix + (f"{ours_layer_name}_{i}",) + sub, (name,), to_ours, to_hf)
                   for i, name in enumerate(names))
  return rules


def text_rules(config: ModelConfig, ours_prefix: tuple[str, ...], hf_prefix: str, lm_head: str) -> list[TensorRule]:
  t = config.text
  h, kv, d = t.num_heads, t.num_kv_heads, t.head_dim
  per_layer = [
      (("self_attn", "q_proj", "kernel"), "self_attn.q_proj.weight", linear(h, d)),
      (("self_attn", "q_proj", "bias"), "self_attn.q_proj.bias", reshape(h, d)),
      (("self_attn", "k_proj", "kernel"), "self_attn.k_proj.weight", linear(kv, d)),
      (("self_attn", "k_proj", "bias"), "self_attn.k_proj.bias", reshape(kv, d)),
      (("self_attn", "v_proj", "kernel"), "self_attn.v_proj.weight", linear(kv, d)),
      (("self_attn", "v_proj", "bias"), "self_attn.v_proj.bias", reshape(kv, d)),
      (("self_attn", "o_proj", "kernel"), "self_attn.o_proj.weight", linear_in(h, d)),
      (("mlp", "gate_proj", "kernel"), "mlp.gate_proj.weight", linear(t.intermediate_size)),
      (("mlp", "up_proj", "kernel"), "mlp.up_proj.weight", linear(t.intermediate_size)),
      (("mlp", "down_proj", "kernel"), "mlp.down_proj.weight", linear(t.hidden_size)),
      (("input_layernorm", "scale"), "input_layernorm.weight", IDENTITY),
      (("post_attention_layernorm", "scale"), "post_attention_layernorm.weight", IDENTITY),
  ]
  rules = [TensorRule(ours_prefix + ("embed_tokens", "embedding"), (f"{hf_prefix}embed_tokens.weight",), *IDENTITY),
           TensorRule(ours_prefix + ("norm", "scale"), (f"{hf_prefix}norm.weight",), *IDENTITY)]
  rules += layer_rules(ours_prefix, hf_prefix, t.num_layers, config.scan_layers, per_layer)
  if not t.tie_word_embeddings:
    rules.append(TensorRule(ours_prefix + ("lm_head", "kernel"), (lm_head,), *linear(t.vocab_size)))
  return rules


def conversion_rules(config: ModelConfig, hf_names: Sequence[str] = ()) -> list[TensorRule]:
  """All rules for `config`. For Qwen2.5-VL, `hf_names` picks the v4 (`model.layers`, `visual.`)
  or v5 (`model.language_model.`, `model.visual.`) naming; saving uses v5."""
  if not config.is_multimodal:
    return text_rules(config, (), "model.", "lm_head.weight")
  from r1jax.models.vlm import vision_rules  # pylint: disable=g-import-not-at-top
  legacy = "model.embed_tokens.weight" in hf_names
  lm_prefix, vis_prefix = ("model.", "visual.") if legacy else ("model.language_model.", "model.visual.")
  return (text_rules(config, ("language_model",), lm_prefix, "lm_head.weight")
          + vision_rules(config, ("visual",), vis_prefix))


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def load_pretrained(path: str, dtype=jnp.float32, mesh=None, *, compute_dtype=None, scan_layers: bool = False,
                    remat: str = "none", attention_impl: str = "auto", sequence_attention: str = "all_gather",
                    rules=None) -> tuple[Any, dict]:
  """Loads a local HF folder (config.json + one or many *.safetensors).

  Args:
    path: checkpoint folder in the transformers layout; never fetched from a hub.
    dtype: parameter dtype (and computation dtype unless `compute_dtype` is given).
    mesh: a `jax.sharding.Mesh`; each parameter is then placed straight into its sharding and
      every process reads only the slices its devices own (`rules`: logical-axis rules,
      defaulting to `r1jax.sharding`'s).
    scan_layers, remat, attention_impl, sequence_attention: runtime options of the returned model
      (`ModelConfig`).

  Returns:
    (model, params) with params = {"params": pytree}; `model.apply(params, ...)` runs it.

  Raises:
    FileNotFoundError for a missing folder/file; ValueError listing missing or unexpected tensor
    names, naming a tensor whose shape differs (expected vs got), a config field that is missing or
    unsupported, or a corrupt file (with the tensor and the bytes expected).
  """
  dtype_name = jnp.dtype(dtype).name
  config = load_hf_config(path, dtype=jnp.dtype(compute_dtype or dtype).name, param_dtype=dtype_name,
                          scan_layers=scan_layers, remat=remat, attention_impl=attention_impl,
                          sequence_attention=sequence_attention)
  model = api.build_model(config)
  folder = SafetensorsFolder(path)
  conversion = conversion_rules(config, folder.names())
  _check_names(conversion, folder, config, path)
  # Unboxed without a sharding constraint: under an ambient mesh (a stage loading a frozen model inside
  # `sharding.use_mesh`) flax's unbox would constrain these shape structs eagerly, which raises.
  abstract = jax.tree.map(lambda x: x.unbox(apply_constraint=False), api.abstract_params(model),
                          is_leaf=lambda x: isinstance(x, flax.linen.Partitioned))["params"]
  placement = None
  if mesh is not None:
    from r1jax import sharding  # pylint: disable=g-import-not-at-top
    placement = sharding.param_shardings(model, mesh, rules)["params"]

  params: dict = {}
  for rule in conversion:
    expected = _get(abstract, rule.ours).shape
    target = None if placement is None else _get(placement, rule.ours)
    array = _load_tensor(folder, rule, expected, np.dtype(dtype_name), target)
    _set(params, rule.ours, array)
  return model, {"params": params}


def _check_names(conversion: list[TensorRule], folder: SafetensorsFolder, config: ModelConfig, path: str) -> None:
  wanted = {name for rule in conversion for name in rule.hf}
  present = set(folder.names())
  missing = sorted(wanted - present)
  unexpected = sorted(n for n in present - wanted if not n.endswith(_IGNORED_SUFFIXES)
                      and not (config.text.tie_word_embeddings and n.endswith("lm_head.weight")))
  if missing or unexpected:
    raise ValueError(f"checkpoint {path!r} does not match {config.architecture}: "
                     f"missing tensors {missing[:20]}{' ...' if len(missing) > 20 else ''} "
                     f"({len(missing)}), unexpected tensors {unexpected[:20]}"
                     f"{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)})")


def _convert(folder: SafetensorsFolder, rule: TensorRule, name: str, expected: tuple[int, ...]) -> np.ndarray:
  array = rule.to_ours(folder.get(name))
  want = expected[1:] if rule.stacked else expected
  if tuple(array.shape) != tuple(want):
    raise ValueError(f"tensor {name!r} has shape {folder.shape(name)}, which converts to {tuple(array.shape)}; "
                     f"expected {tuple(want)} for parameter {'/'.join(rule.ours)}")
  return array


def _load_tensor(folder, rule: TensorRule, expected, dtype: np.dtype, sharding) -> jax.Array:
  if sharding is None:
    if rule.stacked:
      host = np.empty(expected, dtype)
      for i, name in enumerate(rule.hf):
        host[i] = _convert(folder, rule, name, expected)
    else:
      host = _convert(folder, rule, rule.hf[0], expected).astype(dtype)
    return jnp.asarray(host)

  # Each process builds only the shards of its own devices. The layout transforms (transpose,
  # reshape that splits an axis, slicing) give NumPy *views* of the memory map, so indexing one
  # copies -- and pages in -- only the shard's bytes: the layers it owns, and within a layer the
  # HF rows/columns it maps to (a column block of a row-major weight touches every row's pages,
  # read through the page cache but never held). A transform that had to copy would still be
  # correct, only reading the whole tensor per shard. A slice held by several local devices
  # (a partially replicated parameter) is read once.
  for name in rule.hf:  # validate shapes up front so errors name the tensor, not a callback
    _convert(folder, rule, name, expected)
  slices: dict[tuple, np.ndarray] = {}

  def owned(name: str, index: tuple[slice, ...]) -> np.ndarray:
    return np.array(rule.to_ours(folder.get(name))[index], dtype=dtype, copy=True)  # own memory, not the map

  def read_slice(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple(s.indices(size) for s, size in zip(index, expected))
    if key not in slices:
      if rule.stacked:
        layers = range(*index[0].indices(expected[0]))
        slices[key] = np.stack([owned(rule.hf[i], index[1:]) for i in layers])
      else:
        slices[key] = owned(rule.hf[0], index)
    return slices[key]

  return jax.make_array_from_callback(expected, sharding, read_slice)


def save_pretrained(model, params, path: str, dtype=None, max_shard_bytes: int = 4 << 30, *, tokenizer=None,
                    vision_processor=None) -> str:
  """Writes `params` as a transformers-loadable folder (config.json, generation_config.json, safetensors).

  Tensors are written in files of at most `max_shard_bytes` (with `model.safetensors.index.json`
  when there are several), so only one file's worth is on the host at a time. The folder is
  written to a temporary sibling and renamed into place: a crash never leaves a half-written
  export. Sharded / multi-host arrays are gathered tensor by tensor; only process 0 writes.

  Args:
    tokenizer: when given, saved too (chat template included, no loader-only arguments), and for
      Qwen2.5-VL `preprocessor_config.json`: `transformers.AutoProcessor.from_pretrained(path)` then
      builds the processor whose output (`mm_token_type_ids` included, which transformers needs for
      the M-RoPE positions) feeds `generate` as is.
    vision_processor: the `r1jax.processing.VisionProcessorConfig` the model was trained with
      (default: Qwen2.5-VL's); only for Qwen2.5-VL with a tokenizer.

  Raises:
    ValueError: `vision_processor`'s patch, temporal patch or merge size differs from the model's.
  """
  config: ModelConfig = model.config
  if dtype is not None:
    config = config.replace(param_dtype=jnp.dtype(dtype).name)
  if config.is_multimodal and tokenizer is not None:
    from r1jax import processing  # pylint: disable=g-import-not-at-top
    vision_processor = vision_processor or processing.VisionProcessorConfig()
    _check_vision_processor(vision_processor, config)
  tree = params["params"] if "params" in params else params
  writer = _ShardWriter(path, max_shard_bytes) if jax.process_index() == 0 else None
  for rule in conversion_rules(config):
    value = _fully_replicated_numpy(_get(tree, rule.ours))
    if dtype is not None:
      value = value.astype(jnp.dtype(dtype))
    parts = value if rule.stacked else [value]
    for name, part in zip(rule.hf, parts):
      if writer is not None:
        writer.add(name, np.ascontiguousarray(rule.to_hf(np.asarray(part))))
  if writer is not None:
    if tokenizer is not None:
      from r1jax.tokenization import save_tokenizer  # pylint: disable=g-import-not-at-top
      save_tokenizer(tokenizer, writer.staging)
      if config.is_multimodal:
        vision_processor.save_pretrained(writer.staging)
    writer.finish({"config.json": config_to_hf(config), "generation_config.json": generation_config_to_hf(config)})
  return path


def _check_vision_processor(processor, config: ModelConfig) -> None:
  """An image processor that patchifies differently from the vision tower would export a broken folder."""
  v = config.vision
  pairs = {"patch_size": (processor.patch_size, v.patch_size),
           "temporal_patch_size": (processor.temporal_patch_size, v.temporal_patch_size),
           "merge_size": (processor.merge_size, v.spatial_merge_size)}
  wrong = {k: pair for k, pair in pairs.items() if pair[0] != pair[1]}
  if wrong:
    raise ValueError("vision_processor does not match the model's vision config: "
                     + ", ".join(f"{k}={ours} (model: {theirs})" for k, (ours, theirs) in wrong.items()))


class _ShardWriter:
  """Accumulates tensors into safetensors files of bounded size inside a staging folder."""

  def __init__(self, path: str, max_shard_bytes: int):
    self.path, self.max_shard_bytes = path, max_shard_bytes
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # A plain mkdir, not mkdtemp: the folder is renamed into the export and must get the umask's
    # permissions like any other output, not mkdtemp's private 0700.
    self.staging = os.path.join(parent, f".tmp-export-{uuid.uuid4().hex}")
    os.mkdir(self.staging)
    self.pending: dict[str, np.ndarray] = {}
    self.files: list[list[str]] = []

  def add(self, name: str, tensor: np.ndarray) -> None:
    if self.pending and sum(t.nbytes for t in self.pending.values()) + tensor.nbytes > self.max_shard_bytes:
      self._flush()
    self.pending[name] = tensor

  def _flush(self) -> None:
    write_safetensors(os.path.join(self.staging, f"part-{len(self.files)}"), self.pending, {"format": "pt"})
    self.files.append(sorted(self.pending))
    self.pending = {}

  def finish(self, json_files: dict[str, dict]) -> None:
    """Writes the last tensors and `json_files` ({file name: content}), then renames the folder into place."""
    self._flush()
    count = len(self.files)
    names = ["model.safetensors"] if count == 1 else [
        f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    for i, name in enumerate(names):
      os.replace(os.path.join(self.staging, f"part-{i}"), os.path.join(self.staging, name))
    if count > 1:
      weight_map = {tensor: file for file, tensors in zip(names, self.files) for tensor in tensors}
      with open(os.path.join(self.staging, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    for name, content in json_files.items():
      with open(os.path.join(self.staging, name), "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)
    if os.path.exists(self.path):
      shutil.rmtree(self.path)
    os.replace(self.staging, self.path)


def _fully_replicated_numpy(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))
