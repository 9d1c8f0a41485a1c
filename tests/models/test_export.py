"""The HF export with its tokenizer: transformers' Auto classes load it and decode as r1jax does."""
import importlib.util
import json
import os

import jax
import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from transformers import processing_utils
from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

from r1jax import models, processing, tokenization
from r1jax.sampling import Sampler, SamplingControls
from tests.models.hf_fixtures import tiny_qwen2_5_vl

MAX_NEW = 12
# Smaller than the default so that the image below is resized: the export must carry our bounds.
VISION = processing.VisionProcessorConfig(max_pixels=28 * 28 * 12)
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
CORPUS = ["What is in the picture? A red square on a blue field.", "<think>a square</think><answer>square</answer>"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  """(tokenizer, model, params) of a tiny random Qwen2.5-VL whose special ids are the tokenizer's."""
  root = tmp_path_factory.mktemp("export")
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(str(root / "tokenizer"), CORPUS, 300))
  ids = tokenization.special_token_ids(tokenizer)
  tiny_qwen2_5_vl(root / "base", vocab=-(-len(tokenizer) // 64) * 64, image_token_id=ids.image_pad,
                  video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                  vision_end_token_id=ids.vision_end)
  model, params = models.load_pretrained(str(root / "base"))
  params = jax.tree_util.tree_map(lambda x: x * 1.1, params)  # the export holds these, not the file read
  return tokenizer, model, params


@pytest.fixture
def auto_processor(monkeypatch):
  """`AutoProcessor.from_pretrained`. transformers builds Qwen2.5-VL's video processor only with
  torchvision, and without it even the processor's class check fails; where torchvision is missing
  (here: installing it breaks transformers) a base video processor stands in. Images only are tested."""
  if importlib.util.find_spec("torchvision"):
    return transformers.AutoProcessor.from_pretrained
  monkeypatch.setattr(processing_utils.transformers_module, "VideoProcessorMixin", VideoProcessorMixin, raising=False)
  return lambda folder: transformers.AutoProcessor.from_pretrained(folder, video_processor=BaseVideoProcessor())


def test_auto_classes_load_the_export_and_generate_r1jax_greedy_tokens(policy, auto_processor, tmp_path):
  tokenizer, model, params = policy
  export = models.save_pretrained(model, params, str(tmp_path / "hf"), tokenizer=tokenizer, vision_processor=VISION)
  processor = auto_processor(export)
  hf_model = transformers.AutoModelForImageTextToText.from_pretrained(export).eval()
  image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8))

  # The processor's own output, as a transformers user would build it.
  text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
  inputs = processor(text=[text], images=[image], return_tensors="pt")
  with torch.no_grad():
    hf_tokens = hf_model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW)[0, inputs["input_ids"].shape[1]:]

  prompt = processing.encode_prompt(tokenizer, MESSAGES, images=[image], cfg=VISION)
  np.testing.assert_array_equal(inputs["image_grid_thw"].numpy(), prompt.image_grid_thw)  # resized by our bounds
  np.testing.assert_array_equal(inputs["input_ids"][0].numpy(), prompt.input_ids)
  np.testing.assert_array_equal(inputs["pixel_values"].numpy(), prompt.pixel_values)
  out = Sampler(model)(params, [prompt], key=jax.random.key(0),
                       controls=SamplingControls(max_new_tokens=MAX_NEW, greedy=True))
  ours = np.asarray(out.tokens)[0, :int(out.lengths[0])]
  np.testing.assert_array_equal(hf_tokens.numpy(), ours)

  # What makes the plain call right: the processor's mm_token_type_ids (transformers' M-RoPE
  # positions come from them); without them the same weights give other logits.
  with torch.no_grad():
    logits = hf_model(**inputs).logits
    without = hf_model(**{k: v for k, v in inputs.items() if k != "mm_token_type_ids"}).logits
  assert not torch.allclose(logits, without, atol=1e-3)


def test_export_folder_follows_the_umask_and_has_a_clean_tokenizer_config(policy, tmp_path):
  tokenizer, model, params = policy
  previous = os.umask(0o027)
  try:
    export = models.save_pretrained(model, params, str(tmp_path / "hf"), tokenizer=tokenizer)
  finally:
    os.umask(previous)
  assert os.stat(export).st_mode & 0o777 == 0o750  # not mkdtemp's 0700
  with open(os.path.join(export, "tokenizer_config.json")) as f:
    assert not {"is_local", "local_files_only"} & set(json.load(f))
  with open(os.path.join(export, "generation_config.json")) as f:  # r1jax never samples a vision token
    assert json.load(f)["suppress_tokens"] == list(model.config.vision_token_ids)
  assert processing.VisionProcessorConfig.from_pretrained(export) == processing.VisionProcessorConfig()
  assert not [name for name in os.listdir(tmp_path) if name != "hf"]  # no staging folder left


def test_a_processor_that_patchifies_otherwise_than_the_tower_is_refused(policy, tmp_path):
  tokenizer, model, params = policy
  with pytest.raises(ValueError, match=r"merge_size=1 \(model: 2\)"):
    models.save_pretrained(model, params, str(tmp_path / "hf"), tokenizer=tokenizer,
                           vision_processor=processing.VisionProcessorConfig(merge_size=1))
  assert not os.listdir(tmp_path)
