"""Model configurations, their translation from/to HF `config.json`, and presets.

A `ModelConfig` holds the architecture (`text`, optional `vision`, special token ids) and the
runtime options that change how the same weights are computed (`dtype`, `param_dtype`,
`scan_layers`, `remat`). HF configs of both the transformers v4 layout (text fields at the top
level, `rope_scaling`) and the v5 layout (`text_config`, `rope_parameters`) are accepted.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

QWEN2_ARCH = "Qwen2ForCausalLM"
QWEN2_5_VL_ARCH = "Qwen2_5_VLForConditionalGeneration"
REMAT_POLICIES = ("none", "full", "dots_saveable")
# "xla": r1jax's einsum attention (the CPU reference; any mask). "jax_xla" / "cudnn":
# `jax.nn.dot_product_attention`'s XLA / cuDNN flash implementation over padded rows
# (`layers.padded_causal_attention`). "auto": cuDNN on a GPU with bf16/fp16 compute, else "xla".
ATTENTION_IMPLS = ("auto", "xla", "jax_xla", "cudnn")
# How the decoder's attention splits over a mesh `sequence` axis > 1 (`sequence_parallel.py`).
SEQUENCE_ATTENTIONS = ("all_gather", "ring")


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """The Qwen2 decoder. `mrope_section` (in rotary frequency pairs) turns on Qwen2.5-VL M-RoPE."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1_000_000.0
  max_position_embeddings: int = 32768
  tie_word_embeddings: bool = False
  mrope_section: tuple[int, ...] | None = None

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_heads}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_attention_heads={self.num_heads} is not divisible by num_key_value_heads={self.num_kv_heads}")
    if self.mrope_section is not None and 2 * sum(self.mrope_section) != self.head_dim:
      raise ValueError(f"rope mrope_section={list(self.mrope_section)} must sum to head_dim/2={self.head_dim // 2}")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The Qwen2.5-VL vision tower (ViT with window attention and a 2x2 patch merger)."""

  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  out_hidden_size: int = 3584
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: int = 2  # an int in transformers (its config class rejects floats)
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Width of one row of `pixel_values`: channels * temporal_patch * patch * patch."""
    return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture plus runtime options.

  Attributes:
    dtype: computation dtype ("float32" or "bfloat16"); attention softmax and norms stay fp32.
    param_dtype: storage dtype of the parameters.
    scan_layers: stack decoder layers under `nn.scan` (one compiled layer; faster compiles).
    remat: rematerialisation per decoder layer: "none", "full" or "dots_saveable".
    attention_impl: the decoder's attention over a whole sequence (learner, prefill), one of
      ATTENTION_IMPLS. Decode steps and shared-prompt attention keep their own kernels.
    sequence_attention: with the "xla" attention under a mesh whose `sequence` axis is > 1, how
      query rows split over it: "all_gather" (each device gathers all K/V) or "ring" (K/V blocks
      passed around, flash-style combination); one of SEQUENCE_ATTENTIONS. Unused otherwise.
  """

  text: TextConfig
  vision: VisionConfig | None = None
  image_token_id: int | None = None
  video_token_id: int | None = None
  vision_start_token_id: int | None = None
  vision_end_token_id: int | None = None
  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"
  attention_impl: str = "auto"
  sequence_attention: str = "all_gather"

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r} is not one of {REMAT_POLICIES}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    if self.sequence_attention not in SEQUENCE_ATTENTIONS:
      raise ValueError(f"sequence_attention={self.sequence_attention!r} is not one of {SEQUENCE_ATTENTIONS}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}={getattr(self, field)!r} must be float32, bfloat16 or float16")
    if self.vision is not None and self.text.mrope_section is None:
      raise ValueError("a vision-language config needs text.mrope_section (M-RoPE)")

  @property
  def is_multimodal(self) -> bool:
    return self.vision is not None

  @property
  def vision_token_ids(self) -> tuple[int, ...]:
    """The vision special tokens (image / video pad, vision start / end), sorted; none for a text model.
    Only the processor places them: a policy must never generate them."""
    ids = (self.image_token_id, self.video_token_id, self.vision_start_token_id, self.vision_end_token_id)
    return tuple(sorted({i for i in ids if i is not None}))

  @property
  def architecture(self) -> str:
    return QWEN2_5_VL_ARCH if self.is_multimodal else QWEN2_ARCH

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- HF config.json

# Fields HF writes that do not change the computation (training-only, generation, bookkeeping).
_IGNORED_HF_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "initializer_range", "attention_dropout", "bos_token_id", "layer_types", "max_window_layers",
    "sliding_window", "_name_or_path", "output_attentions", "output_hidden_states", "return_dict",
    "is_encoder_decoder", "tie_encoder_decoder", "chunk_size_feed_forward", "id2label", "label2id",
    "problem_type", "tokenizer_class", "task_specific_params", "pruned_heads", "torchscript",
    "use_bfloat16", "add_cross_attention", "cross_attention_hidden_size", "finetuning_task",
    "prefix", "sep_token_id", "decoder_start_token_id", "tf_legacy_loss", "is_decoder",
    "vocab_size_multiple", "_attn_implementation_autoset", "hidden_act", "use_sliding_window",
    "rope_parameters", "rope_scaling", "rope_theta", "text_config", "vision_config",
    "vision_token_id", "eos_token_id", "pad_token_id", "image_token_id", "video_token_id",
    "vision_start_token_id", "vision_end_token_id", "tie_word_embeddings",
    "embd_pdrop", "resid_pdrop", "attention_bias", "mlp_bias", "head_dim", "quantization_config",
})
_TEXT_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads", "rms_norm_eps": "rms_norm_eps",
    "max_position_embeddings": "max_position_embeddings",
}
# Required, although transformers has defaults for them: its defaults describe a 7B-sized model
# (hidden 4096, 32 layers), which a folder that lacks the field almost certainly is not.
_REQUIRED_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_ARCH_BY_MODEL_TYPE = {"qwen2": QWEN2_ARCH, "qwen2_5_vl": QWEN2_5_VL_ARCH}
_VISION_KEYS = {
    "depth": "depth", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
    "num_heads": "num_heads", "out_hidden_size": "out_hidden_size", "in_channels": "in_channels",
    "in_chans": "in_channels", "patch_size": "patch_size", "temporal_patch_size": "temporal_patch_size",
    "spatial_merge_size": "spatial_merge_size", "window_size": "window_size",
    "fullatt_block_indexes": "fullatt_block_indexes", "tokens_per_second": "tokens_per_second",
}
_IGNORED_VISION_KEYS = frozenset({
    "model_type", "initializer_range", "hidden_act", "rope_parameters", "spatial_patch_size",
    "dtype", "torch_dtype", "transformers_version", "embed_dim", "mlp_ratio",
})


def _check_keys(section: Mapping[str, Any], known, ignored, where: str) -> None:
  unknown = sorted(set(section) - set(known) - set(ignored))
  if unknown:
    raise ValueError(f"unsupported field(s) {unknown} in {where}; r1jax implements Qwen2 / Qwen2.5-VL only")


def _rope(section: Mapping[str, Any], where: str) -> tuple[float, tuple[int, ...] | None]:
  """Returns (rope_theta, mrope_section) from either the v5 `rope_parameters` or v4 `rope_scaling`."""
  params = dict(section.get("rope_parameters") or {})
  legacy = section.get("rope_scaling") or {}
  rope_type = params.get("rope_type", legacy.get("rope_type", legacy.get("type", "default")))
  if rope_type not in ("default", "mrope"):
    raise ValueError(f"unsupported rope type {rope_type!r} in {where} (field rope_parameters.rope_type); "
                     "only default RoPE and Qwen2.5-VL M-RoPE are implemented")
  for key in ("factor", "original_max_position_embeddings"):
    if key in params or key in legacy:
      raise ValueError(f"unsupported rope scaling field {key!r} in {where}")
  theta = params.get("rope_theta", section.get("rope_theta", 10000.0))
  mrope = params.get("mrope_section", legacy.get("mrope_section"))
  return float(theta), (tuple(int(m) for m in mrope) if mrope is not None else None)


def _as_tuple(ids) -> tuple[int, ...]:
  if ids is None:
    return ()
  return tuple(ids) if isinstance(ids, (list, tuple)) else (int(ids),)


def _architecture(hf: Mapping[str, Any]) -> str:
  """The architecture `config.json` names, or that its model_type implies (as transformers' Auto classes read it)."""
  archs = hf.get("architectures")
  if not archs:
    model_type = hf.get("model_type")
    if model_type not in _ARCH_BY_MODEL_TYPE:
      raise ValueError(f"config.json has no 'architectures' field and its model_type={model_type!r} is not one of "
                       f"{sorted(_ARCH_BY_MODEL_TYPE)}; expected architectures=[{QWEN2_ARCH!r}] or "
                       f"[{QWEN2_5_VL_ARCH!r}]")
    return _ARCH_BY_MODEL_TYPE[model_type]
  if archs[0] not in _ARCH_BY_MODEL_TYPE.values():
    raise ValueError(f"unsupported architectures={archs} in config.json; expected {QWEN2_ARCH} or {QWEN2_5_VL_ARCH}")
  return archs[0]


def config_from_hf(hf: Mapping[str, Any], **runtime) -> ModelConfig:
  """Builds a `ModelConfig` from a parsed HF `config.json`; `runtime` sets dtype/scan/remat.

  Raises ValueError naming the field for anything r1jax does not implement (sliding window,
  rope scaling, other activations, unknown architectures or fields).
  """
  arch = _architecture(hf)
  is_vl = arch == QWEN2_5_VL_ARCH
  in_section = is_vl and bool(hf.get("text_config"))  # transformers v5 layout; v4 has the text fields on top
  text = dict(hf["text_config"]) if in_section else dict(hf)
  where = "config.json text_config" if in_section else "config.json"
  _check_keys(text, _TEXT_KEYS, _IGNORED_HF_KEYS, where)
  missing = [("text_config." if in_section else "") + k for k in _REQUIRED_TEXT_KEYS if text.get(k) is None]
  if missing:
    raise ValueError(f"config.json is missing required field(s) {missing}")
  if text.get("use_sliding_window") or hf.get("use_sliding_window"):
    raise ValueError(f"use_sliding_window=true in {where} is not supported (Qwen2.5 checkpoints use full attention)")
  if text.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act={text['hidden_act']!r} in {where} is not supported; Qwen2 uses 'silu'")
  if "head_dim" in text and text["head_dim"] != text["hidden_size"] // text["num_attention_heads"]:
    raise ValueError(f"head_dim={text['head_dim']} in {where} differs from hidden_size/num_attention_heads")
  theta, mrope = _rope(text, where)
  if is_vl and mrope is None:
    mrope = (16, 24, 24)
  text_kwargs = {ours: text[theirs] for theirs, ours in _TEXT_KEYS.items() if text.get(theirs) is not None}
  text_kwargs.setdefault("num_kv_heads", text_kwargs["num_heads"])
  tie = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
  text_cfg = TextConfig(**text_kwargs, rope_theta=theta, tie_word_embeddings=bool(tie),
                        mrope_section=mrope if is_vl else None)

  vision_cfg = None
  if is_vl:
    vision = dict(hf.get("vision_config") or {})
    _check_keys(vision, _VISION_KEYS, _IGNORED_VISION_KEYS, "config.json vision_config")
    if vision.get("hidden_act", "silu") != "silu":
      raise ValueError(f"vision_config.hidden_act={vision['hidden_act']!r} is not supported; expected 'silu'")
    kwargs = {ours: vision[theirs] for theirs, ours in _VISION_KEYS.items() if theirs in vision}
    vision_rope = vision.get("rope_parameters") or {}
    if vision_rope.get("rope_type", "axial") not in ("axial", "default"):
      raise ValueError(f"vision_config.rope_parameters.rope_type={vision_rope['rope_type']!r} is not supported; "
                       "Qwen2.5-VL uses 'axial' 2D RoPE")
    kwargs["rope_theta"] = float(vision_rope.get("rope_theta", 10000.0))
    if "fullatt_block_indexes" in kwargs:
      kwargs["fullatt_block_indexes"] = tuple(kwargs["fullatt_block_indexes"])
    vision_cfg = VisionConfig(**kwargs)

  def token(name):
    return hf.get(name, text.get(name))

  return ModelConfig(
      text=text_cfg, vision=vision_cfg,
      image_token_id=token("image_token_id"), video_token_id=token("video_token_id"),
      vision_start_token_id=token("vision_start_token_id"), vision_end_token_id=token("vision_end_token_id"),
      eos_token_id=_as_tuple(token("eos_token_id")), pad_token_id=token("pad_token_id"), **runtime)


_HF_DEFAULT_BOS = 151643  # Qwen2Config's bos_token_id when config.json gives none


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """The v5-layout `config.json` dict that transformers loads back into the same architecture."""
  t = config.text
  rope = {"rope_type": "default", "rope_theta": t.rope_theta}
  text = {
      "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
      "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
      "num_key_value_heads": t.num_kv_heads, "rms_norm_eps": t.rms_norm_eps, "hidden_act": "silu",
      "max_position_embeddings": t.max_position_embeddings, "use_sliding_window": False,
      "rope_parameters": rope, "tie_word_embeddings": t.tie_word_embeddings,
      "pad_token_id": config.pad_token_id,
      # transformers' default bos id (Qwen's <|endoftext|>) lies outside a small built vocabulary.
      "bos_token_id": _HF_DEFAULT_BOS if t.vocab_size > _HF_DEFAULT_BOS else None,
      "eos_token_id": _eos_to_hf(config),
  }
  if not config.is_multimodal:
    return {"architectures": [QWEN2_ARCH], "model_type": "qwen2", **text, "dtype": config.param_dtype}
  rope["mrope_section"] = list(t.mrope_section)
  v = config.vision
  vision = {
      "depth": v.depth, "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
      "num_heads": v.num_heads, "out_hidden_size": v.out_hidden_size, "in_channels": v.in_channels,
      "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
      "spatial_merge_size": v.spatial_merge_size, "window_size": v.window_size,
      "fullatt_block_indexes": list(v.fullatt_block_indexes), "tokens_per_second": v.tokens_per_second,
      "hidden_act": "silu", "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
  }
  return {
      "architectures": [QWEN2_5_VL_ARCH], "model_type": "qwen2_5_vl",
      "text_config": {"model_type": "qwen2_5_vl_text", **text}, "vision_config": vision,
      "tie_word_embeddings": t.tie_word_embeddings,
      "image_token_id": config.image_token_id, "video_token_id": config.video_token_id,
      "vision_start_token_id": config.vision_start_token_id, "vision_end_token_id": config.vision_end_token_id,
      "dtype": config.param_dtype,
  }


def _eos_to_hf(config: ModelConfig) -> int | list[int] | None:
  ids = config.eos_token_id
  return (list(ids) if len(ids) != 1 else ids[0]) if ids else None


def generation_config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """`generation_config.json` with r1jax's sampling rules: stop at eos, never emit a vision special token.

  With it, transformers' plain `generate` decodes greedily as r1jax's sampler does.
  """
  generation = {"eos_token_id": _eos_to_hf(config), "pad_token_id": config.pad_token_id,
                "suppress_tokens": list(config.vision_token_ids) or None}
  return {k: v for k, v in generation.items() if v is not None}


def load_hf_config(path: str, **runtime) -> ModelConfig:
  """Reads `<path>/config.json` of a local HF folder."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint folder {path!r} does not exist")
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file!r} is missing: a checkpoint folder needs config.json (HF layout)")
  try:
    with open(file, encoding="utf-8") as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{file!r} is not valid JSON ({e}): the file is empty, truncated or corrupt") from None
  if not isinstance(hf, dict):
    raise ValueError(f"{file!r} holds a JSON {type(hf).__name__}, not the {{field: value}} object of a config")
  return config_from_hf(hf, **runtime)


# --------------------------------------------------------------------------- presets

_QWEN2_5_IDS = dict(eos_token_id=(151645, 151643), pad_token_id=151643)
_QWEN2_5_VL_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                       vision_end_token_id=151653, eos_token_id=(151645,), pad_token_id=151643)


def _text(hidden, inter, layers, heads, kv, vocab, tied, mrope=None):
  return TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_layers=layers,
                    num_heads=heads, num_kv_heads=kv, rope_theta=1_000_000.0, tie_word_embeddings=tied,
                    mrope_section=mrope, max_position_embeddings=32768 if mrope is None else 128000)


# Presets are real checkpoints' shapes, run on accelerators: bf16 compute over fp32 parameters (norms,
# softmax and logits stay fp32), and scanned layers from 1.5B up (one compiled layer: compile time
# independent of depth). Tiny test configs and the fp32 parity tests build their own configs.
_ACCELERATOR = dict(dtype="bfloat16", param_dtype="float32")
_SCANNED = dict(_ACCELERATOR, scan_layers=True)

PRESETS: dict[str, ModelConfig] = {
    "qwen2.5-0.5b": ModelConfig(_text(896, 4864, 24, 14, 2, 151936, True), **_QWEN2_5_IDS, **_ACCELERATOR),
    "qwen2.5-1.5b": ModelConfig(_text(1536, 8960, 28, 12, 2, 151936, True), **_QWEN2_5_IDS, **_SCANNED),
    "qwen2.5-3b": ModelConfig(_text(2048, 11008, 36, 16, 2, 151936, True), **_QWEN2_5_IDS, **_SCANNED),
    "qwen2.5-7b": ModelConfig(_text(3584, 18944, 28, 28, 4, 152064, False), **_QWEN2_5_IDS, **_SCANNED),
    "qwen2.5-vl-3b": ModelConfig(_text(2048, 11008, 36, 16, 2, 151936, True, (16, 24, 24)),
                                 VisionConfig(out_hidden_size=2048), **_QWEN2_5_VL_IDS, **_SCANNED),
    "qwen2.5-vl-7b": ModelConfig(_text(3584, 18944, 28, 28, 4, 152064, False, (16, 24, 24)),
                                 VisionConfig(out_hidden_size=3584), **_QWEN2_5_VL_IDS, **_SCANNED),
}


def preset(name: str, **runtime) -> ModelConfig:
  """A preset with the real dimensions and accelerator defaults; `runtime` overrides
  dtype/param_dtype/scan_layers/remat/attention_impl (e.g. dtype="float32" for a CPU parity run)."""
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; available: {sorted(PRESETS)}")
  return PRESETS[name].replace(**runtime)
