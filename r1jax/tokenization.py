"""Local Qwen2.5-VL tokenizers: build a small one from a corpus, load one from a folder.

`build_tokenizer` trains a tiny byte-level BPE with the exact Qwen2 normalizer, pre-tokenizer
and decoder, adds the Qwen2.5-VL special tokens in Qwen's order and writes a folder that
`transformers.AutoTokenizer.from_pretrained` loads offline. Tests and the embedded default
recipe use it so that nothing is ever downloaded from the hub.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

# Same order as Qwen2.5-VL (ids 151643..151656 there), so the relative layout matches.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# R1-style format tags. Added as ordinary (non-special) tokens: they survive
# `decode(skip_special_tokens=True)`, which the reward parsers read, and a tiny model sees each
# tag as one token instead of three BPE pieces.
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# Copied from transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX.
_QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

# The chat template shipped with Qwen/Qwen2.5-VL-*-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_EOS_TOKEN = "<|im_end|>"
_PAD_TOKEN = "<|endoftext|>"
_MODEL_MAX_LENGTH = 131072


def _qwen2_pipeline(tokenizer: tokenizers.Tokenizer) -> None:
  """Sets Qwen2's normalizer, pre-tokenizer and decoder (as in transformers' Qwen2Tokenizer)."""
  tokenizer.normalizer = normalizers.NFC()
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated",
                           invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tokenizer.decoder = decoders.ByteLevel()


def build_tokenizer(out_dir: str, corpus: Sequence[str], vocab_size: int = 1024) -> str:
  """Trains a byte-level BPE on `corpus` and writes a Qwen2.5-VL-style tokenizer folder.

  Args:
    out_dir: folder to write (created if needed): tokenizer.json, tokenizer_config.json (with
      the Qwen2.5-VL chat template), special_tokens_map.json.
    corpus: training texts. The same corpus always gives the same ids.
    vocab_size: BPE vocabulary size including the 256 byte symbols; special tokens and the
      reasoning tags come on top of it. A small corpus may yield fewer merges.

  Returns:
    `out_dir`, loadable with `load_tokenizer` or `transformers.AutoTokenizer.from_pretrained`.
  """
  if isinstance(corpus, str) or not corpus:
    raise ValueError(f"corpus must be a non-empty list of strings, got {type(corpus).__name__}")
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  if vocab_size < len(alphabet):
    raise ValueError(f"vocab_size={vocab_size} must be at least the {len(alphabet)} byte symbols")
  tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
  _qwen2_pipeline(tokenizer)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                initial_alphabet=sorted(alphabet), special_tokens=[])
  tokenizer.train_from_iterator(list(corpus), trainer=trainer)
  tokenizer.add_special_tokens(
      [tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
  tokenizer.add_tokens(
      [tokenizers.AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])

  os.makedirs(out_dir, exist_ok=True)
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  added_tokens_decoder = {
      str(tokenizer.token_to_id(t)): {
          "content": t, "lstrip": False, "normalized": False, "rstrip": False,
          "single_word": False, "special": t in SPECIAL_TOKENS}
      for t in SPECIAL_TOKENS + REASONING_TAGS}
  additional_special_tokens = [t for t in SPECIAL_TOKENS if t not in (_EOS_TOKEN, _PAD_TOKEN)]
  config = {
      "tokenizer_class": "Qwen2Tokenizer",
      "added_tokens_decoder": added_tokens_decoder,
      "additional_special_tokens": additional_special_tokens,
      "bos_token": None,
      "eos_token": _EOS_TOKEN,
      "pad_token": _PAD_TOKEN,
      "unk_token": None,
      "chat_template": QWEN2_5_VL_CHAT_TEMPLATE,
      "clean_up_tokenization_spaces": False,
      "errors": "replace",
      "model_max_length": _MODEL_MAX_LENGTH,
      "split_special_tokens": False,
  }
  special_tokens_map = {
      "additional_special_tokens": additional_special_tokens,
      "eos_token": _EOS_TOKEN,
      "pad_token": _PAD_TOKEN,
  }
  for name, content in (("tokenizer_config.json", config),
                        ("special_tokens_map.json", special_tokens_map)):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)
  return out_dir


def load_tokenizer(path: str):
  """Loads a tokenizer from a local folder (never from the hub).

  Raises:
    FileNotFoundError: naming `path` when it is not a folder holding tokenizer files.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"tokenizer folder {path!r} does not exist; r1jax loads tokenizers from local folders "
        "only (no hub downloads): pass a folder with tokenizer.json or vocab.json + merges.txt")
  if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json")):
    raise FileNotFoundError(
        f"tokenizer folder {path!r} holds neither tokenizer.json nor vocab.json "
        f"(found: {sorted(os.listdir(path))})")
  import transformers  # Deferred: importing transformers costs seconds.
  return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


# `from_pretrained` arguments that transformers keeps in the tokenizer's init kwargs and writes back
# into tokenizer_config.json. They describe how one folder was loaded, not the tokenizer.
_LOADER_ONLY_KEYS = ("is_local", "local_files_only", "cache_dir", "force_download", "proxies", "revision",
                     "subfolder", "token", "trust_remote_code", "_commit_hash")


def save_tokenizer(tokenizer, folder: str) -> str:
  """`tokenizer.save_pretrained(folder)` with a clean tokenizer_config.json (no loader-only arguments).

  Returns:
    `folder`, loadable with `load_tokenizer` or `transformers.AutoTokenizer.from_pretrained`.
  """
  tokenizer.save_pretrained(folder)
  file = os.path.join(folder, "tokenizer_config.json")
  with open(file, encoding="utf-8") as f:
    config = json.load(f)
  with open(file, "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in config.items() if k not in _LOADER_ONLY_KEYS}, f, indent=2, ensure_ascii=False)
  return folder


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
  """Ids the model config and the sampler need."""
  image_pad: int
  video_pad: int
  vision_start: int
  vision_end: int
  vision_pad: int
  im_start: int
  im_end: int
  eos: int
  pad: int

  @property
  def vision_ids(self) -> tuple[int, ...]:
    """Tokens only the processor may place; a policy must never generate them."""
    return (self.vision_start, self.vision_end, self.vision_pad, self.image_pad, self.video_pad)


def special_token_ids(tokenizer) -> SpecialTokenIds:
  """Reads the Qwen2.5-VL special token ids of a transformers tokenizer.

  Raises:
    ValueError: naming the token a tokenizer lacks.
  """
  def token_id(token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != token:
      raise ValueError(f"tokenizer has no single token for {token!r} (encodes to {ids})")
    return ids[0]

  for attribute in ("eos_token_id", "pad_token_id"):
    if getattr(tokenizer, attribute, None) is None:
      raise ValueError(f"tokenizer has no {attribute}")
  return SpecialTokenIds(
      image_pad=token_id("<|image_pad|>"),
      video_pad=token_id("<|video_pad|>"),
      vision_start=token_id("<|vision_start|>"),
      vision_end=token_id("<|vision_end|>"),
      vision_pad=token_id("<|vision_pad|>"),
      im_start=token_id("<|im_start|>"),
      im_end=token_id("<|im_end|>"),
      eos=tokenizer.eos_token_id,
      pad=tokenizer.pad_token_id,
  )
