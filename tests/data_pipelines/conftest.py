"""Shared fixtures: a tiny local Qwen2.5-VL-style tokenizer."""
import pytest

from r1jax import tokenization

_CORPUS = ["What is shown in the image? <think>reasoning</think><answer>42</answer>",
           "How many chairs are in the room? The answer is 3.",
           "Subset zoom-in video clip [2, 6]: what happens next?"] * 4


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
  path = tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tokenizer")), _CORPUS,
                                      vocab_size=300)
  return tokenization.load_tokenizer(path)
