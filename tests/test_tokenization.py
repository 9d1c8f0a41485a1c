"""Tests of r1jax.tokenization: a locally built Qwen2.5-VL tokenizer, loaded by transformers."""
import json
import os

import pytest
import tokenizers
import transformers

from r1jax import tokenization

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is shown? <think>A red square on a blue field.</think><answer>square</answer>",
    "Solve 12 + 30. <think>12 plus 30 equals 42.</think><answer>42</answer>",
    "Locate the cat and give its box as [x1, y1, x2, y2].",
    "Uniçode text, 中文, émoji 🙂 and tabs\tand\nnew lines.",
] * 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tok")), CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
  return tokenization.load_tokenizer(tokenizer_dir)


def test_build_is_deterministic_and_depends_on_corpus(tmp_path, tokenizer_dir):
  again = tokenization.build_tokenizer(str(tmp_path / "again"), CORPUS, vocab_size=400)
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    with open(os.path.join(tokenizer_dir, name), "rb") as first:
      with open(os.path.join(again, name), "rb") as second:
        assert first.read() == second.read(), name
  other = tokenization.build_tokenizer(str(tmp_path / "other"), CORPUS[::-1][:2], vocab_size=400)
  vocab = lambda d: tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json")).get_vocab()
  assert vocab(other) != vocab(tokenizer_dir)


def test_auto_tokenizer_matches_saved_tokenizer_and_round_trips(tokenizer, tokenizer_dir):
  assert isinstance(tokenizer, transformers.PreTrainedTokenizerBase)
  raw = tokenizers.Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
  text = ("<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>"
          "Where's the fox?  It's 中文🙂\n\n<think>jumps</think><|im_end|>")
  ids = tokenizer.encode(text, add_special_tokens=False)
  assert ids == raw.encode(text).ids
  assert tokenizer.decode(ids) == text
  # Unseen characters still encode through the byte alphabet.
  unseen = "Zebra ß ∑ 😀"
  assert tokenizer.decode(tokenizer.encode(unseen, add_special_tokens=False)) == unseen


def test_special_tokens_are_single_consecutive_ids_and_tags_are_plain(tokenizer):
  special = [tokenizer.convert_tokens_to_ids(t) for t in tokenization.SPECIAL_TOKENS]
  assert special == list(range(special[0], special[0] + len(special)))  # Qwen's order.
  for token, token_id in zip(tokenization.SPECIAL_TOKENS, special):
    assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
  assert len(tokenizer) == special[-1] + 1 + len(tokenization.REASONING_TAGS)
  text = "<think>x</think> <answer>y</answer>"
  ids = tokenizer.encode(text, add_special_tokens=False)
  for tag in tokenization.REASONING_TAGS:
    assert tokenizer.convert_tokens_to_ids(tag) in ids
  # Tags are not special: they survive the decoding that reward functions read.
  assert tokenizer.decode(ids + [special[2]], skip_special_tokens=True) == text
  assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
  assert tokenizer.bos_token is None


def test_chat_template_places_vision_placeholders(tokenizer):
  messages = [{"role": "user", "content": [
      {"type": "image"}, {"type": "text", "text": "Compare with"},
      {"type": "video"}, {"type": "text", "text": "."}]}]
  assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Compare with"
      "<|vision_start|><|video_pad|><|vision_end|>.<|im_end|>\n<|im_start|>assistant\n")
  with_system = [{"role": "system", "content": "Think first."},
                 {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
  assert tokenizer.apply_chat_template(with_system, tokenize=False) == (
      "<|im_start|>system\nThink first.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello<|im_end|>\n")


def test_special_token_ids(tokenizer):
  ids = tokenization.special_token_ids(tokenizer)
  convert = tokenizer.convert_tokens_to_ids
  assert ids.image_pad == convert("<|image_pad|>") and ids.video_pad == convert("<|video_pad|>")
  assert ids.vision_start == convert("<|vision_start|>")
  assert ids.vision_end == convert("<|vision_end|>")
  assert ids.im_start == convert("<|im_start|>")
  assert ids.eos == ids.im_end == convert("<|im_end|>")
  assert ids.pad == convert("<|endoftext|>")
  assert len(set(ids.vision_ids)) == 5 and ids.im_end not in ids.vision_ids

  bare = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
  bare.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  no_vision = transformers.PreTrainedTokenizerFast(tokenizer_object=bare, eos_token="a",
                                                   pad_token="a")
  with pytest.raises(ValueError, match=r"<\|image_pad\|>"):
    tokenization.special_token_ids(no_vision)


def test_load_tokenizer_errors_name_the_path(tmp_path):
  missing = str(tmp_path / "no_such_tokenizer")
  with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
    tokenization.load_tokenizer(missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(json.dumps({}))
  with pytest.raises(FileNotFoundError, match=r"empty.*config\.json"):
    tokenization.load_tokenizer(str(empty))


def test_build_tokenizer_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="corpus"):
    tokenization.build_tokenizer(str(tmp_path), "a single string", vocab_size=300)
  with pytest.raises(ValueError, match="vocab_size=100"):
    tokenization.build_tokenizer(str(tmp_path), CORPUS, vocab_size=100)


def test_save_tokenizer_writes_no_loader_arguments_and_reloads_the_same(tokenizer, tmp_path):
  # `load_tokenizer` passes local_files_only=True; transformers would write it (and is_local) back.
  out = tokenization.save_tokenizer(tokenizer, str(tmp_path / "saved"))
  with open(os.path.join(out, "tokenizer_config.json")) as f:
    config = json.load(f)
  assert not {"is_local", "local_files_only"} & set(config), sorted(config)
  assert config["eos_token"] == "<|im_end|>"  # the rest is kept
  again = tokenization.load_tokenizer(out)
  text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where?<think>x</think><|im_end|>"
  assert again.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
  assert again.chat_template == tokenizer.chat_template
