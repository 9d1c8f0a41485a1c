"""Sentence embeddings from a BERT encoder in Flax: sentence-transformers folders without PyTorch.

`SentenceEncoder.load(path)` reads a sentence-transformers model saved in the HF layout (e.g.
all-MiniLM-L6-v2): config.json (a BERT config), *.safetensors (memory-mapped with
`r1jax.models.safetensors_io`), its BERT WordPiece tokenizer (tokenizer.json, or vocab.txt and
tokenizer_config.json, read by transformers' fast tokenizer), and optionally
sentence_bert_config.json (max_seq_length, do_lower_case) and 1_Pooling/config.json. It computes
what the folder's Transformer -> Pooling(mean) -> Normalize pipeline computes: the encoder's token
states, their mean over real tokens, scaled to unit L2 norm.

The forward pass is one jitted function of (config, params, ids, mask). Texts are sorted by
length and padded to power-of-two buckets of batch size (1 .. batch_size) and length (16 ..
max_seq_length), so a run of calls compiles a handful of programs (at most 6 x 5 for MiniLM's
batch 32 and 256 tokens) instead of one per batch shape.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers

from r1jax.models.layers import dot_product_attention
from r1jax.models.safetensors_io import SafetensorsFolder

# HF activation names -> functions ("gelu" is the exact erf form, as transformers' GELUActivation).
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
# Shortest length bucket: shorter sentences share one program instead of compiling 1, 2, 4, 8.
_MIN_LENGTH_BUCKET = 16
# sentence-transformers' Pooling clamps the token count and Normalize the norm with these floors.
_MIN_TOKEN_COUNT = 1e-9
_MIN_NORM = 1e-12


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a transformers BERT config.json that the encoder uses (hashable: a jit static)."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float
  hidden_act: str

  @classmethod
  def from_hf(cls, hf: dict[str, Any], file: str) -> "BertConfig":
    """From config.json's dict; `file` names it in errors (unsupported fields are refused, not ignored)."""
    if hf.get("model_type") != "bert":
      raise ValueError(f"{file}: model_type is {hf.get('model_type')!r}; the sentence encoder supports 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"{file}: position_embedding_type {hf['position_embedding_type']!r} is not supported "
                       "(only 'absolute')")
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
      raise ValueError(f"{file}: hidden_act {hf['hidden_act']!r} is not one of {sorted(_ACTIVATIONS)}")
    if hf["hidden_size"] % hf["num_attention_heads"]:
      raise ValueError(f"{file}: hidden_size {hf['hidden_size']} is not a multiple of "
                       f"num_attention_heads {hf['num_attention_heads']}")
    return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
               num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
               max_positions=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
               layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_act=hf.get("hidden_act", "gelu"))


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # Two-pass variance: E[x^2] - E[x]^2 loses digits that the 1e-4 parity with torch needs.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


class BertLayer(nn.Module):
  """One post-norm BERT block: x: [batch, length, hidden], mask: bool [batch, length] -> same shape."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    batch, length, _ = x.shape
    head_dim = c.hidden_size // c.num_heads

    def heads(name: str) -> jax.Array:  # [batch, length, heads, head_dim]
      return nn.Dense(c.hidden_size, name=name)(x).reshape(batch, length, c.num_heads, head_dim)

    # Only keys are masked: padded query rows compute garbage that pooling never reads.
    attended = dot_product_attention(heads("query"), heads("key"), heads("value"), mask[:, None, :])
    attended = nn.Dense(c.hidden_size, name="attention_out")(attended.reshape(batch, length, c.hidden_size))
    x = _layer_norm(c, "attention_norm")(attended + x)
    hidden = _ACTIVATIONS[c.hidden_act](nn.Dense(c.intermediate_size, name="mlp_in")(x))
    return _layer_norm(c, "mlp_norm")(nn.Dense(c.hidden_size, name="mlp_out")(hidden) + x)


class BertEncoder(nn.Module):
  """BERT token states (no pooler): ids: int [batch, length], mask: bool [batch, length] -> [batch, length, hidden].

  Single-segment input (token type 0), absolute positions 0..length-1, as sentence-transformers feeds it.
  """

  config: BertConfig

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    length = ids.shape[1]
    # Summed in transformers' order (word + type + position) so fp32 rounding matches it.
    x = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(ids)
    x = x + nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")(jnp.zeros_like(ids))
    x = x + nn.Embed(c.max_positions, c.hidden_size, name="position_embeddings")(jnp.arange(length))[None]
    x = _layer_norm(c, "embeddings_norm")(x)
    for i in range(c.num_layers):
      x = BertLayer(c, name=f"layer_{i}")(x, mask)
    return x


def mean_pool_normalize(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `states` [batch, length, hidden] over `mask` (bool [batch, length]), at unit L2 norm: [batch, hidden].

  An all-padding row gives a zero vector, not NaN.
  """
  weights = mask.astype(states.dtype)[..., None]
  mean = (states * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), _MIN_TOKEN_COUNT)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), _MIN_NORM)


@functools.partial(jax.jit, static_argnums=0)
def encode(config: BertConfig, params: dict, ids: jax.Array, mask: jax.Array) -> jax.Array:
  """Unit-norm sentence embeddings: ids int32 [batch, length], mask bool [batch, length] -> fp32 [batch, hidden].

  `params` is the `{"params": ...}` tree of `BertEncoder(config)` (see `load_params`).
  """
  return mean_pool_normalize(BertEncoder(config).apply(params, ids, mask), mask)


def _hf_rules(config: BertConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
  """HF tensor name (no "bert." prefix) -> (our param path, whether a torch Linear weight to transpose)."""
  rules = {
      "embeddings.word_embeddings.weight": (("word_embeddings", "embedding"), False),
      "embeddings.token_type_embeddings.weight": (("token_type_embeddings", "embedding"), False),
      "embeddings.position_embeddings.weight": (("position_embeddings", "embedding"), False),
      "embeddings.LayerNorm.weight": (("embeddings_norm", "scale"), False),
      "embeddings.LayerNorm.bias": (("embeddings_norm", "bias"), False),
  }
  linears = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
             "attention.output.dense": "attention_out", "intermediate.dense": "mlp_in", "output.dense": "mlp_out"}
  norms = {"attention.output.LayerNorm": "attention_norm", "output.LayerNorm": "mlp_norm"}
  for i in range(config.num_layers):
    for hf, ours in linears.items():
      rules[f"encoder.layer.{i}.{hf}.weight"] = ((f"layer_{i}", ours, "kernel"), True)
      rules[f"encoder.layer.{i}.{hf}.bias"] = ((f"layer_{i}", ours, "bias"), False)
    for hf, ours in norms.items():
      rules[f"encoder.layer.{i}.{hf}.weight"] = ((f"layer_{i}", ours, "scale"), False)
      rules[f"encoder.layer.{i}.{hf}.bias"] = ((f"layer_{i}", ours, "bias"), False)
  return rules


def load_params(path: str, config: BertConfig) -> dict:
  """The `{"params": ...}` tree of `BertEncoder(config)` from the folder's safetensors, as fp32 NumPy.

  Accepts BertModel names and the "bert."-prefixed names of BertFor* heads; tensors the encoder
  does not use (pooler, heads, position_ids buffer) are ignored.

  Raises:
    ValueError naming the folder and the missing tensors, or a tensor whose shape is wrong.
  """
  folder = SafetensorsFolder(path)
  prefix = "bert." if "bert.embeddings.word_embeddings.weight" in folder else ""
  rules = _hf_rules(config)
  missing = sorted(prefix + name for name in rules if prefix + name not in folder)
  if missing:
    raise ValueError(f"safetensors in {path!r} lack {len(missing)} BERT tensors for {config}: {missing[:10]}")
  abstract = jax.eval_shape(BertEncoder(config).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                            jnp.ones((1, 1), bool))["params"]
  params: dict = {}
  for name, (ours, transpose) in rules.items():
    tensor = folder.get(prefix + name)
    tensor = tensor.T if transpose else tensor
    expected = abstract
    for key in ours:
      expected = expected[key]
    if tuple(tensor.shape) != tuple(expected.shape):
      raise ValueError(f"tensor {prefix + name!r} in {path!r} has shape {folder.shape(prefix + name)}; "
                       f"config.json implies {tuple(expected.shape)} for {'/'.join(ours)}"
                       f"{' (transposed)' if transpose else ''}")
    node = params
    for key in ours[:-1]:
      node = node.setdefault(key, {})
    node[ours[-1]] = np.asarray(tensor, np.float32)
  return {"params": params}


def _read_json(file: str) -> dict | None:
  if not os.path.isfile(file):
    return None
  with open(file, encoding="utf-8") as f:
    return json.load(f)


def check_model_folder(path: str) -> None:
  """Raises FileNotFoundError naming `path` and what is missing unless it holds a loadable model."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"sentence-embedding model folder {path!r} does not exist")
  names = os.listdir(path)
  missing = [what for what, present in (
      ("config.json", "config.json" in names),
      ("*.safetensors", any(n.endswith(".safetensors") for n in names)),
      ("tokenizer.json or vocab.txt", "tokenizer.json" in names or "vocab.txt" in names),
  ) if not present]
  if missing:
    raise FileNotFoundError(f"sentence-embedding model folder {path!r} lacks {', '.join(missing)} "
                            "(expected a sentence-transformers model in the HF layout)")


def _check_pooling(path: str) -> None:
  pooling_file = os.path.join(path, "1_Pooling", "config.json")
  pooling = _read_json(pooling_file)
  if pooling is None:
    return
  modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
  if modes != ["pooling_mode_mean_tokens"]:
    raise ValueError(f"{pooling_file}: pooling modes {modes}; the sentence encoder implements mean pooling only")


def _round_up_pow2(n: int, low: int, high: int) -> int:
  """The smallest power of two >= max(n, low), capped at `high`."""
  return min(high, 1 << (max(n, low) - 1).bit_length())


class SentenceEncoder:
  """A loaded sentence-transformers BERT model; `embed` is safe to call from several threads.

  Attributes:
    path: the model folder.
    config: its `BertConfig`.
    max_length: tokens per text after truncation (special tokens included).
    dim: embedding size (hidden_size).
  """

  def __init__(self, path: str, config: BertConfig, params: dict, tokenizer: Any, max_length: int,
               lower_case: bool, device: jax.Device, batch_size: int):
    self.path, self.config, self.max_length, self.dim = path, config, max_length, config.hidden_size
    self._params = jax.device_put(params, device)
    self._tokenizer = tokenizer
    self._lower_case = lower_case
    self._device = device
    self._batch_size = batch_size

  @classmethod
  def load(cls, path: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32) -> "SentenceEncoder":
    """Loads the folder at `path` (never fetched from a hub).

    Args:
      path: sentence-transformers folder in the HF layout (see the module docstring).
      device: JAX platform to run on. The default CPU keeps the reward's model off the
        accelerator that trains the policy.
      batch_size: most texts per forward pass; a smaller batch pads to the next power of two.

    Raises:
      FileNotFoundError naming the folder and the missing files; ValueError for a config,
      pooling or checkpoint the encoder does not support.
    """
    path = os.fspath(path)
    check_model_folder(path)
    _check_pooling(path)
    config = BertConfig.from_hf(_read_json(os.path.join(path, "config.json")), os.path.join(path, "config.json"))
    params = load_params(path, config)
    # The BERT class, not AutoTokenizer: Auto* reads config.json through transformers' config
    # code, which imports torch whenever it is installed.
    fast = transformers.BertTokenizerFast.from_pretrained(path, local_files_only=True)
    st_config = _read_json(os.path.join(path, "sentence_bert_config.json")) or {}
    max_length = min(int(st_config.get("max_seq_length") or fast.model_max_length), config.max_positions)
    # The Rust tokenizer is configured once here (tokenizer.json may carry its own padding and
    # truncation): setting them per call mutates it, which fails ("Already borrowed") when reward
    # worker threads embed at the same time.
    tokenizer = fast.backend_tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return cls(path, config, params, tokenizer, max_length, bool(st_config.get("do_lower_case", False)),
               jax.local_devices(backend=device)[0], batch_size)

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with [CLS] / [SEP], truncated to `max_length`."""
    texts = [t.lower() for t in texts] if self._lower_case else list(texts)
    return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    """Unit-norm embeddings of `texts` as fp32 [len(texts), dim], in input order."""
    token_ids = self.tokenize(texts)
    out = np.zeros((len(token_ids), self.dim), np.float32)
    # Longest first, as sentence-transformers does: each batch pads to a similar length.
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    for start in range(0, len(order), self._batch_size):
      rows = order[start:start + self._batch_size]
      batch = _round_up_pow2(len(rows), 1, self._batch_size)
      length = _round_up_pow2(len(token_ids[rows[0]]), _MIN_LENGTH_BUCKET, self.max_length)
      ids = np.zeros((batch, length), np.int32)
      mask = np.zeros((batch, length), bool)
      for row, i in enumerate(rows):
        ids[row, :len(token_ids[i])] = token_ids[i]
        mask[row, :len(token_ids[i])] = True
      embeddings = encode(self.config, self._params, jax.device_put(ids, self._device),
                          jax.device_put(mask, self._device))
      out[rows] = np.asarray(embeddings)[:len(rows)]
    return out
