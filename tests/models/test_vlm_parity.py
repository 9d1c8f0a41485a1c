"""Qwen2.5-VL port vs transformers' Qwen2_5_VLForConditionalGeneration, fed by r1jax's processor.

fp32 logits within 1e-4 and M-RoPE position ids / rope deltas equal to transformers'.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from r1jax import models, processing, tokenization
from r1jax.models import vision, vlm
from tests.models.hf_fixtures import mm_token_type_ids, tiny_qwen2_5_vl

PROC = processing.VisionProcessorConfig(max_pixels=28 * 28 * 16)
CORPUS = ["What is in the picture? Describe the video.", "A cat, a dog and two birds."] * 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tok = tokenization.load_tokenizer(
      tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tok")), CORPUS, vocab_size=300))
  ids = tokenization.special_token_ids(tok)
  path = str(tmp_path_factory.mktemp("tiny_vl"))
  ref = tiny_qwen2_5_vl(path, vocab=len(tok), vision_depth=2, fullatt_block_indexes=(1,),
                        image_token_id=ids.image_pad, video_token_id=ids.video_pad,
                        vision_start_token_id=ids.vision_start, vision_end_token_id=ids.vision_end)
  model, params = models.load_pretrained(path)
  return tok, ref, model, params


def _image(seed, height, width):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _video(seed, frames, height, width):
  return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def _prompt(tok, text, images=(), videos=(), fps=3.0):
  content = [{"type": "image"}] * len(images) + [{"type": "video"}] * len(videos) + [{"type": "text", "text": text}]
  return processing.encode_prompt(tok, [{"role": "user", "content": content}], images=images, videos=videos,
                                  video_fps=fps, cfg=PROC)


PROMPTS = {
    "text": lambda tok: _prompt(tok, "Describe a cat and a dog."),
    "image": lambda tok: _prompt(tok, "What is in the picture?", images=[_image(0, 84, 140)]),
    "two_images": lambda tok: _prompt(tok, "A cat?", images=[_image(1, 56, 56), _image(2, 112, 84)]),
    # 6 frames at 3 fps: 3 temporal patches of 2/3 s; positions 0, 1.33, 2.67 truncate to 0, 1, 2.
    "video": lambda tok: _prompt(tok, "Describe the video.", videos=[_video(3, 6, 56, 84)]),
    # 6 frames at 1/4 fps: 8 s per temporal patch, temporal ids 0, 16, 32 pass the text after them.
    "image_video": lambda tok: _prompt(tok, "Two birds?", images=[_image(4, 56, 112)], videos=[_video(5, 6, 56, 56)],
                                       fps=0.25),
}


def _batch(prompts, pad_id, left_pad: bool):
  """Stacks encoded prompts (left-padded when asked) with their vision inputs concatenated in order."""
  length = max(len(p.input_ids) for p in prompts)
  ids = np.full((len(prompts), length), pad_id, np.int64)
  mask = np.zeros((len(prompts), length), np.int64)
  for row, p in enumerate(prompts):
    ids[row, length - len(p.input_ids):] = p.input_ids
    mask[row, length - len(p.input_ids):] = 1
  cat = lambda field: np.concatenate([getattr(p, field) for p in prompts])
  vision_inputs = {"pixel_values": cat("pixel_values"), "image_grid_thw": cat("image_grid_thw"),
                   "pixel_values_videos": cat("pixel_values_videos"), "video_grid_thw": cat("video_grid_thw"),
                   "second_per_grid_ts": cat("second_per_grid_ts")}
  vision_inputs = {k: v for k, v in vision_inputs.items() if len(v)}  # transformers wants None, not empty
  if "pixel_values_videos" not in vision_inputs:
    vision_inputs.pop("second_per_grid_ts", None)
  return ids, (mask if left_pad else None), vision_inputs


def _torch_forward(ref, ids, mask, vision_inputs):
  kwargs = {k: torch.as_tensor(v) for k, v in vision_inputs.items()}
  with torch.no_grad():
    out = ref(input_ids=torch.as_tensor(ids), attention_mask=None if mask is None else torch.as_tensor(mask),
              mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ref, ids)), **kwargs)
  return out.logits.numpy()


def _torch_rope_index(ref, ids, mask, vision_inputs):
  get = lambda k: torch.as_tensor(vision_inputs[k]) if k in vision_inputs else None
  positions, deltas = ref.model.get_rope_index(
      torch.as_tensor(ids), torch.as_tensor(mm_token_type_ids(ref, ids)), image_grid_thw=get("image_grid_thw"),
      video_grid_thw=get("video_grid_thw"), second_per_grid_ts=get("second_per_grid_ts"),
      attention_mask=None if mask is None else torch.as_tensor(mask))
  return positions.numpy(), deltas.numpy()


@pytest.fixture(scope="module")
def mixed_batch(setup):
  """All PROMPTS as rows of one left-padded batch: prefilled through the KV cache, then one decode step.

  One batch keeps compilations few; attention never crosses rows, so each row is that case's
  parity check (with left padding on all but the longest).
  """
  tok, ref, model, params = setup
  cfg = model.config
  ids, mask, vision_inputs = _batch([make(tok) for make in PROMPTS.values()], tok.pad_token_id, left_pad=True)
  batch, length = ids.shape
  positions, rope_deltas = vlm.get_rope_index(cfg, ids, vision_inputs["image_grid_thw"],
                                              vision_inputs["video_grid_thw"], vision_inputs["second_per_grid_ts"],
                                              mask)
  cache_mask = jnp.asarray(np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1).astype(bool))
  step = jax.jit(lambda p, tokens, pos, cache, index, pixels, grid, videos, video_grid: model.apply(
      p, tokens, positions=pos, attention_mask=cache_mask, cache=cache, cache_index=index, pixel_values=pixels,
      image_grid_thw=grid, pixel_values_videos=videos, video_grid_thw=video_grid))
  layout = lambda key: vision.vision_grid(cfg.vision, vision_inputs[key])
  prefill, cache = step(params, ids, positions, models.init_cache(cfg, batch, length + 1), 0,
                        vision_inputs["pixel_values"], layout("image_grid_thw"), vision_inputs["pixel_values_videos"],
                        layout("video_grid_thw"))
  next_token = np.asarray(prefill)[:, -1].argmax(-1)[:, None]  # greedy, as the reference's generate below
  decode_deltas = vlm.decode_rope_deltas(positions, mask)
  decode_positions = np.broadcast_to((length + decode_deltas)[None], (3, batch, 1))
  decoded, _ = step(params, next_token, decode_positions, cache, length, None, None, None, None)
  with torch.no_grad():
    generated = ref.generate(
        input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
        mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ref, ids)),
        **{k: torch.as_tensor(v) for k, v in vision_inputs.items()}, max_new_tokens=2, do_sample=False,
        output_logits=True, return_dict_in_generate=True, eos_token_id=None, pad_token_id=tok.pad_token_id)
  return dict(ids=ids, mask=mask, vision_inputs=vision_inputs, positions=positions, rope_deltas=rope_deltas,
              prefill=np.asarray(prefill), reference=_torch_forward(ref, ids, mask, vision_inputs),
              next_token=next_token, decode_deltas=decode_deltas, decode_positions=decode_positions,
              decoded=np.asarray(decoded)[:, -1], generated=generated)


@pytest.mark.parametrize("row, case", list(enumerate(PROMPTS)))
def test_logits_and_rope_index_match_transformers(setup, mixed_batch, row, case):
  tok, ref, model, _ = setup
  np.testing.assert_allclose(mixed_batch["prefill"][row], mixed_batch["reference"][row], atol=1e-4, rtol=0)
  # The case alone (unpadded) gets the same position ids as transformers too.
  ids, mask, vision_inputs = _batch([PROMPTS[case](tok)], tok.pad_token_id, left_pad=False)
  positions, deltas = vlm.get_rope_index(model.config, ids, vision_inputs.get("image_grid_thw"),
                                         vision_inputs.get("video_grid_thw"), vision_inputs.get("second_per_grid_ts"))
  hf_positions, hf_deltas = _torch_rope_index(ref, ids, mask, vision_inputs)
  np.testing.assert_array_equal(positions, hf_positions)
  np.testing.assert_array_equal(deltas, hf_deltas)


def test_left_padded_rope_index_matches_transformers(setup, mixed_batch):
  _, ref, _, _ = setup
  hf_positions, hf_deltas = _torch_rope_index(ref, mixed_batch["ids"], mixed_batch["mask"],
                                              mixed_batch["vision_inputs"])
  np.testing.assert_array_equal(mixed_batch["positions"], hf_positions)
  np.testing.assert_array_equal(mixed_batch["rope_deltas"], hf_deltas)


def test_forward_logits_takes_the_processor_output_as_is(setup):
  """The public path (host checks, get_rope_index, jitted apply) on an unpadded two-image prompt,
  fed every field the processor returns, including the empty (zero-row) video ones, plus
  transformers' mm_token_type_ids."""
  tok, ref, model, params = setup
  prompt = _prompt(tok, "A cat?", images=[_image(8, 56, 84), _image(9, 84, 56)])
  assert prompt.pixel_values_videos.shape == (0, model.config.vision.patch_dim)
  ids = prompt.input_ids[None]
  ours = np.asarray(models.forward_logits(
      model, params, ids, pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw,
      pixel_values_videos=prompt.pixel_values_videos, video_grid_thw=prompt.video_grid_thw,
      second_per_grid_ts=prompt.second_per_grid_ts, mm_token_type_ids=mm_token_type_ids(ref, ids)))
  _, _, vision_inputs = _batch([prompt], tok.pad_token_id, left_pad=False)
  np.testing.assert_allclose(ours, _torch_forward(ref, ids, None, vision_inputs), atol=1e-4, rtol=0)


def test_video_positions_follow_seconds_per_grid(setup):
  tok, _, model, _ = setup
  prompt = PROMPTS["video"](tok)
  positions, _ = vlm.get_rope_index(model.config, prompt.input_ids[None], None, prompt.video_grid_thw,
                                    prompt.second_per_grid_ts)
  video = prompt.input_ids == model.config.video_token_id
  start = positions[0, 0, np.argmax(video)]
  # tokens_per_second=2, 2/3 s per temporal patch: 0, 1.33, 2.67 -> 0, 1, 2 (truncated, not rounded).
  assert sorted(set(positions[0, 0, video] - start)) == [0, 1, 2]
  assert prompt.second_per_grid_ts.tolist() == pytest.approx([2 / 3])


def test_decode_step_through_cache_matches_transformers_generate(setup, mixed_batch):
  """Cache slot s decodes at position s + decode_rope_deltas: transformers' generate convention,
  and what get_rope_index gives prompt + token (so sampler and learner agree)."""
  model = setup[2]
  ids, mask, vision_inputs = mixed_batch["ids"], mixed_batch["mask"], mixed_batch["vision_inputs"]
  generated = mixed_batch["generated"]
  np.testing.assert_array_equal(generated.sequences[:, ids.shape[1]].numpy(), mixed_batch["next_token"][:, 0])
  np.testing.assert_allclose(mixed_batch["decoded"], generated.logits[1].numpy(), atol=1e-4, rtol=0)

  full_ids = np.concatenate([ids, mixed_batch["next_token"]], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
  full, _ = vlm.get_rope_index(model.config, full_ids, vision_inputs["image_grid_thw"],
                               vision_inputs["video_grid_thw"], vision_inputs["second_per_grid_ts"], full_mask)
  np.testing.assert_array_equal(full[:, :, -1:], mixed_batch["decode_positions"])
  # Neither transformers' rope_deltas (max-based, counting real tokens) nor those minus the padding
  # give that slot offset here: the 1/4 fps video's temporal ids run past the text after it.
  pads = ids.shape[1] - mask.sum(1, keepdims=True)
  image_video = list(PROMPTS).index("image_video")
  assert mixed_batch["decode_deltas"][image_video] != mixed_batch["rope_deltas"][image_video] - pads[image_video]
  np.testing.assert_array_equal(np.delete(mixed_batch["decode_deltas"], image_video),
                                np.delete(mixed_batch["rope_deltas"] - pads, image_video))


def test_count_and_input_errors_name_the_problem(setup):
  tok, _, model, params = setup
  prompt = PROMPTS["image"](tok)
  ids = prompt.input_ids[None]
  pixels, grid = prompt.pixel_values, prompt.image_grid_thw
  one_less = np.delete(ids, np.flatnonzero(ids[0] == model.config.image_token_id)[0], axis=1)
  with pytest.raises(ValueError, match=r"input_ids hold 14 <\|image_pad\|> tokens .* give 15 features"):
    models.forward_logits(model, params, one_less, pixel_values=pixels, image_grid_thw=grid)
  with pytest.raises(ValueError, match="input_ids hold 15 <.image_pad.> tokens .* give 0 features"):
    models.forward_logits(model, params, ids)
  with pytest.raises(ValueError, match="pixel_values was given without image_grid_thw"):
    models.forward_logits(model, params, ids, pixel_values=pixels)
  with pytest.raises(ValueError, match=r"pixel_values must be \[num_patches, 1176\]"):
    models.forward_logits(model, params, ids, pixel_values=pixels[:, :-2], image_grid_thw=grid)
  with pytest.raises(ValueError, match="video_grid_thw was given without pixel_values_videos"):
    models.forward_logits(model, params, ids, pixel_values=pixels, image_grid_thw=grid, video_grid_thw=[[2, 4, 4]])
  with pytest.raises(ValueError, match="mm_token_type_ids disagree"):
    models.forward_logits(model, params, ids, pixel_values=pixels, image_grid_thw=grid,
                          mm_token_type_ids=np.zeros_like(ids))
  with pytest.raises(ValueError, match="M-RoPE positions"):
    model.apply(params, ids, pixel_values=pixels, image_grid_thw=grid)


def test_save_pretrained_writes_a_folder_transformers_loads(setup, tmp_path):
  _, ref, model, params = setup
  models.save_pretrained(model, params, str(tmp_path))
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
  expected = ref.state_dict()
  for name, tensor in reloaded.state_dict().items():
    torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
  # The v5 names we write (model.language_model., model.visual.) load back into the same params.
  _, again = models.load_pretrained(str(tmp_path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)
