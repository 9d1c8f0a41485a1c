"""Parity of r1jax.processing with transformers' Qwen2VLImageProcessorPil and Qwen2_5_VLProcessor.

transformers' video processor needs torchvision (never installed here), so the video test runs the
reference's own `patchify` source, lifted from video_processing_qwen2_vl.py, on frames that went
through transformers' per-frame PIL resize/rescale/normalize.
"""
import ast
import json
import os
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import Qwen2_5_VLProcessor
from transformers import image_transforms
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_image

from r1jax import processing
from r1jax import tokenization

SMALL = processing.VisionProcessorConfig(max_pixels=28 * 28 * 64)


class _ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
  """HF's processor with no video processor: its class needs torchvision, absent here."""

  def check_argument_for_proper_class(self, argument_name, argument):
    if argument_name == "video_processor" and argument is None:
      return None
    return super().check_argument_for_proper_class(argument_name, argument)


def _hf_image_processor(cfg):
  return hf_image.Qwen2VLImageProcessorPil(
      min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, patch_size=cfg.patch_size,
      temporal_patch_size=cfg.temporal_patch_size, merge_size=cfg.merge_size)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  corpus = ["What is in these pictures? Describe the video.", "A cat, a dog and 42 birds."] * 3
  path = tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tok")), corpus, vocab_size=300)
  return tokenization.load_tokenizer(path)


@pytest.fixture(scope="module")
def hf_processor(tokenizer):
  return _ImageOnlyQwen2_5_VLProcessor(image_processor=_hf_image_processor(SMALL),
                                       tokenizer=tokenizer, video_processor=None,
                                       chat_template=tokenizer.chat_template)


def _random_image(rng, height, width, mode="RGB"):
  channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
  pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
  return PIL.Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode=mode)


def test_smart_resize_matches_transformers():
  rng = np.random.default_rng(0)
  for _ in range(300):
    height, width = (int(x) for x in rng.integers(1, 5000, 2))
    if max(height, width) / min(height, width) > 200:
      continue
    min_pixels = int(rng.choice([56 * 56, 28 * 28 * 4, 28 * 28 * 128]))
    max_pixels = int(rng.choice([28 * 28 * 16, 28 * 28 * 1280, 28 * 28 * 16384]))
    assert processing.smart_resize(height, width, 28, min_pixels, max_pixels) == \
        hf_image.smart_resize(height, width, 28, min_pixels, max_pixels), (height, width)
  for height, width in ((10, 2010), (3000, 14)):
    for resize in (processing.smart_resize, hf_image.smart_resize):
      with pytest.raises(ValueError, match="absolute aspect ratio must be smaller than 200"):
        resize(height, width)


@pytest.mark.parametrize("cfg, sizes", [
    (SMALL, [(1, 1), (3, 5), (113, 257), (30, 3000), (2000, 25), (600, 500)]),
    # Default bounds; 1200x1100 exceeds max_pixels (1280 tokens) and is scaled down.
    (processing.VisionProcessorConfig(), [(1200, 1100), (57, 85)]),
], ids=["small_max_pixels", "default"])
def test_process_images_matches_transformers_pil(cfg, sizes):
  rng = np.random.default_rng(1)
  modes = ["RGB", "RGBA", "L"]
  images = [_random_image(rng, h, w, modes[i % 3]) for i, (h, w) in enumerate(sizes)]
  # uint8 arrays are accepted too (HF cannot tell channels of tiny arrays apart, so only big ones).
  images.append(np.asarray(_random_image(rng, 61, 47)))
  ours = processing.process_images(images, cfg)
  reference = _hf_image_processor(cfg)(images, return_tensors="np")
  np.testing.assert_array_equal(ours.grid_thw, reference["image_grid_thw"])
  assert ours.pixel_values.dtype == np.float32 and ours.grid_thw.dtype == np.int32
  assert ours.pixel_values.shape == reference["pixel_values"].shape
  np.testing.assert_allclose(ours.pixel_values, reference["pixel_values"], rtol=0, atol=1e-5)
  resized_areas = ours.grid_thw[:len(sizes)].prod(axis=1) * cfg.patch_size**2
  assert (resized_areas < np.prod(sizes, axis=1)).any(), "no case was scaled down by max_pixels"
  for (height, width), grid in zip(sizes, ours.grid_thw):
    np.testing.assert_array_equal(processing.vision_grid_thw(height, width, 1, cfg), grid)


def test_no_images_give_empty_arrays():
  empty = processing.process_images([], SMALL)
  assert empty.pixel_values.shape == (0, SMALL.patch_dim) and empty.grid_thw.shape == (0, 3)


def _reference_video_patchify():
  """transformers' Qwen2VLVideoProcessor.patchify, compiled from its source file."""
  # Read, not imported: importing it needs torchvision.
  path = os.path.join(os.path.dirname(hf_image.__file__), "video_processing_qwen2_vl.py")
  with open(path, encoding="utf-8") as f:
    source = f.read()
  module = ast.parse(source)
  cls = next(n for n in module.body
             if isinstance(n, ast.ClassDef) and n.name == "Qwen2VLVideoProcessor")
  method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "patchify")
  namespace = {"torch": torch}
  exec(textwrap.dedent(ast.get_source_segment(source, method)), namespace)
  return namespace["patchify"]


def _reference_frame(frame, height, width, cfg):
  """Per-frame resize/rescale/normalize through transformers' PIL-backend transforms: [C, H, W]."""
  first = ChannelDimension.FIRST
  chw = np.moveaxis(frame, -1, 0)
  resized = image_transforms.resize(chw, (height, width), resample=PILImageResampling.BICUBIC,
                                    data_format=first, input_data_format=first)
  rescaled = image_transforms.rescale(resized, 1 / 255, data_format=first, input_data_format=first)
  return image_transforms.normalize(rescaled, cfg.image_mean, cfg.image_std, data_format=first,
                                    input_data_format=first)


@pytest.mark.parametrize("num_frames, height, width", [(5, 40, 70), (4, 90, 33), (1, 28, 28)])
def test_process_video_matches_reference_patchify(num_frames, height, width):
  cfg = SMALL
  min_pixels, max_pixels = 28 * 28 * 2, 28 * 28 * 6
  rng = np.random.default_rng(num_frames)
  frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
  ours = processing.process_video(frames, cfg, min_pixels=min_pixels, max_pixels=max_pixels)

  resized_h, resized_w = hf_image.smart_resize(height, width, cfg.factor, min_pixels, max_pixels)
  stacked = np.stack([_reference_frame(f, resized_h, resized_w, cfg) for f in frames])
  patches, grid_t, grid_h, grid_w = _reference_video_patchify()(
      None, torch.from_numpy(stacked[None]), cfg.patch_size, cfg.merge_size,
      cfg.temporal_patch_size)
  np.testing.assert_array_equal(ours.grid_thw, [[grid_t, grid_h, grid_w]])
  assert grid_t == -(-num_frames // cfg.temporal_patch_size)
  np.testing.assert_allclose(ours.pixel_values, patches[0].numpy(), rtol=0, atol=1e-5)


def test_encode_prompt_matches_hf_processor(tokenizer, hf_processor):
  rng = np.random.default_rng(2)
  images = [_random_image(rng, 50, 80, "RGBA"), np.asarray(_random_image(rng, 90, 33))]
  messages = [{"role": "user", "content": [
      {"type": "image"}, {"type": "text", "text": "What is in"},
      {"type": "image"}, {"type": "text", "text": " these pictures?"}]}]
  ours = processing.encode_prompt(tokenizer, messages, images=images, cfg=SMALL)
  text = hf_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  reference = hf_processor(text=[text], images=images, return_tensors="np")
  np.testing.assert_array_equal(ours.input_ids, reference["input_ids"][0])
  np.testing.assert_array_equal(ours.image_grid_thw, reference["image_grid_thw"])
  np.testing.assert_allclose(ours.pixel_values, reference["pixel_values"], rtol=0, atol=1e-5)
  num_image_tokens = hf_processor._get_num_multimodal_tokens(  # pylint: disable=protected-access
      image_sizes=[[50, 80], [90, 33]])["num_image_tokens"]
  assert ours.num_vision_tokens == sum(num_image_tokens)
  assert ours.num_vision_tokens == processing.num_vision_tokens(ours.image_grid_thw,
                                                                SMALL.merge_size)
  assert ours.pixel_values_videos.shape == (0, SMALL.patch_dim)
  assert ours.second_per_grid_ts.shape == (0,)


def test_encode_prompt_with_videos_and_image(tokenizer, hf_processor):
  rng = np.random.default_rng(3)
  image = _random_image(rng, 64, 64)
  videos = [rng.integers(0, 256, (3, 56, 84, 3), dtype=np.uint8),
            rng.integers(0, 256, (4, 30, 30, 3), dtype=np.uint8)]
  messages = [{"role": "user", "content": [
      {"type": "video"}, {"type": "image"}, {"type": "text", "text": "Describe the video"},
      {"type": "video"}]}]
  ours = processing.encode_prompt(tokenizer, messages, images=[image], videos=videos,
                                  video_fps=[2.0, 0.5], cfg=SMALL)
  video_grids = np.concatenate([processing.process_video(v, SMALL).grid_thw for v in videos])
  np.testing.assert_array_equal(ours.video_grid_thw, video_grids)
  np.testing.assert_allclose(ours.second_per_grid_ts, [SMALL.temporal_patch_size / 2.0,
                                                       SMALL.temporal_patch_size / 0.5])
  assert ours.pixel_values_videos.shape == (int(video_grids.prod(axis=1).sum()), SMALL.patch_dim)

  # Reference expansion: HF's own placeholder replacement, fed HF's per-item token counts.
  text = hf_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  image_inputs = hf_processor.image_processor([image], return_tensors="np")
  expanded, _ = hf_processor.get_text_with_replacements(
      [text],
      images_replacements=[hf_processor.replace_image_token(image_inputs, 0)],
      videos_replacements=["<|video_pad|>" * int(g.prod() // SMALL.merge_size**2)
                           for g in video_grids])
  np.testing.assert_array_equal(ours.input_ids, tokenizer(expanded[0])["input_ids"])
  ids = tokenization.special_token_ids(tokenizer)
  is_vision = np.isin(ours.input_ids, [ids.image_pad, ids.video_pad])
  assert ours.num_vision_tokens == int(is_vision.sum())


def test_prompt_too_long_counts_vision_tokens_and_never_truncates(tokenizer):
  image = _random_image(np.random.default_rng(4), 300, 300)  # 121 vision tokens.
  messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
  full = processing.encode_prompt(tokenizer, messages, images=[image])
  num_text = len(full.input_ids) - full.num_vision_tokens
  assert num_text < full.num_vision_tokens  # The limit below fits the text alone, not the vision.
  exact = processing.encode_prompt(tokenizer, messages, images=[image],
                                   max_prompt_tokens=len(full.input_ids))
  np.testing.assert_array_equal(exact.input_ids, full.input_ids)
  with pytest.raises(processing.PromptTooLongError) as error:
    processing.encode_prompt(tokenizer, messages, images=[image],
                             max_prompt_tokens=len(full.input_ids) - 1)
  assert isinstance(error.value, ValueError)
  assert (error.value.num_text_tokens, error.value.num_vision_tokens) == (num_text,
                                                                           full.num_vision_tokens)
  assert f"{num_text} text + {full.num_vision_tokens} vision" in str(error.value)


def test_placeholder_and_item_counts_must_agree(tokenizer):
  rng = np.random.default_rng(5)
  messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}]
  with pytest.raises(ValueError, match=r"2 <\|image_pad\|> placeholders but 1 images"):
    processing.encode_prompt(tokenizer, messages, images=[_random_image(rng, 30, 30)], cfg=SMALL)
  with pytest.raises(ValueError, match=r"0 <\|video_pad\|> placeholders but 1 videos"):
    processing.expand_vision_placeholders("no placeholders", video_grid_thw=[[1, 2, 2]])
  assert processing.expand_vision_placeholders(
      "a<|image_pad|>b<|image_pad|>", image_grid_thw=[[1, 2, 4], [1, 4, 4]]) == \
      "a" + "<|image_pad|>" * 2 + "b" + "<|image_pad|>" * 4
  with pytest.raises(ValueError, match="video_fps has 2 values for 1 videos"):
    processing.encode_text(tokenizer, "<|video_pad|>", cfg=SMALL, video_fps=[1.0, 2.0],
                           videos=[np.zeros((2, 28, 28, 3), np.uint8)])


def test_tokenizer_that_splits_placeholders_is_an_error(tokenizer):
  """A tokenizer whose output misses placeholder tokens must fail loudly, not misalign features."""

  class DropsLastToken:
    convert_tokens_to_ids = staticmethod(tokenizer.convert_tokens_to_ids)

    def encode(self, text, add_special_tokens):
      ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
      return ids[:-1]

  with pytest.raises(ValueError, match=r"has 3 <\|image_pad\|> tokens, the vision inputs need 4"):
    processing.encode_text(DropsLastToken(), "<|image_pad|>", cfg=SMALL,
                           images=[np.zeros((28, 28, 3), np.uint8)])


def test_bad_pixel_inputs_are_named():
  with pytest.raises(ValueError, match=r"image 1 .*float32 \[8, 8, 3\]"):
    processing.process_images([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
  with pytest.raises(ValueError, match=r"video frames .*uint8 \[8, 8, 3\]"):
    processing.process_video(np.zeros((8, 8, 3), np.uint8))


def test_config_round_trips_through_transformers(tmp_path):
  hf = hf_image.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 3, max_pixels=28 * 28 * 99,
                                          patch_size=16, merge_size=2)
  hf.save_pretrained(str(tmp_path / "hf"))
  cfg = processing.VisionProcessorConfig.from_pretrained(str(tmp_path / "hf"))
  assert (cfg.min_pixels, cfg.max_pixels, cfg.patch_size, cfg.merge_size) == \
      (28 * 28 * 3, 28 * 28 * 99, 16, 2)
  assert cfg.image_mean == tuple(hf.image_mean) and cfg.image_std == tuple(hf.image_std)

  ours = processing.VisionProcessorConfig(min_pixels=1000, max_pixels=20000, temporal_patch_size=2)
  ours.save_pretrained(str(tmp_path / "ours"))
  loaded = hf_image.Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path / "ours"))
  assert (loaded.size["shortest_edge"], loaded.size["longest_edge"]) == (1000, 20000)
  assert processing.VisionProcessorConfig.from_pretrained(str(tmp_path / "ours")) == ours

  with open(tmp_path / "ours" / "preprocessor_config.json", encoding="utf-8") as f:
    content = json.load(f)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "preprocessor_config.json").write_text(
      json.dumps({**content, "do_normalize": False}))
  with pytest.raises(ValueError, match="do_normalize=False"):
    processing.VisionProcessorConfig.from_pretrained(str(tmp_path / "bad"))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    processing.VisionProcessorConfig.from_pretrained(str(tmp_path / "nowhere"))
