"""Tiny random Qwen2.5 / Qwen2.5-VL checkpoints and samplers shared by the sampler tests.

Session-scoped so that each compiled prefill / decode is built once for the whole directory.
"""
import types

import numpy as np
import pytest

from r1jax import models
from r1jax.sampling import Sampler
from tests.models.hf_fixtures import tiny_qwen2, tiny_qwen2_5_vl
from tests.sampling.helpers import CountingCausalLM, CountingVisionLanguageModel

# Left-padded batch of different lengths, all in the 16-token bucket.
TEXT_PROMPT_LENGTHS = (7, 4, 1, 5)


@pytest.fixture(scope="session")
def text(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_qwen2")
  reference = tiny_qwen2(path)
  model, params = models.load_pretrained(str(path))
  model = CountingCausalLM(model.config)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(1, model.config.text.vocab_size, n).astype(np.int32) for n in TEXT_PROMPT_LENGTHS]
  return types.SimpleNamespace(reference=reference, model=model, params=params, sampler=Sampler(model),
                               prompts=prompts, path=str(path))


@pytest.fixture(scope="session")
def vl(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_qwen2_5_vl")
  reference = tiny_qwen2_5_vl(path)
  model, params = models.load_pretrained(str(path))
  model = CountingVisionLanguageModel(model.config)
  return types.SimpleNamespace(reference=reference, model=model, params=params, sampler=Sampler(model))
