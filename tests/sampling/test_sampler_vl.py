"""Sampler on a tiny Qwen2.5-VL with image and video prompts vs transformers' generate (fp32)."""
import dataclasses

import jax
import numpy as np
import pytest

from r1jax import models
from r1jax.models import vlm
from r1jax.sampling import Prompt, SamplingControls, learner_inputs
from r1jax.sampling.prompts import batch_prompts
from tests.models.hf_fixtures import mm_token_type_ids
from tests.sampling.helpers import CALLS, completion_log_probs, hf_greedy

MAX_NEW = 8
GROUP = 2
GREEDY = SamplingControls(max_new_tokens=MAX_NEW, greedy=True, stop_token_ids=())


def _vision_prompt(config, rng, kind: str, grid, before: int, after: int, seconds: float = 1.0) -> Prompt:
  """Text, <|vision_start|>, the image / video pad tokens, <|vision_end|>, text."""
  merge = config.vision.spatial_merge_size
  pad = config.image_token_id if kind == "image" else config.video_token_id
  ids = np.concatenate([rng.integers(2, 90, before), [config.vision_start_token_id],
                        [pad] * (int(np.prod(grid)) // merge**2), [config.vision_end_token_id],
                        rng.integers(2, 90, after)]).astype(np.int32)
  pixels = rng.normal(size=(int(np.prod(grid)), config.vision.patch_dim)).astype(np.float32)
  if kind == "image":
    return Prompt(ids, pixel_values=pixels, image_grid_thw=np.array([grid]))
  return Prompt(ids, pixel_values_videos=pixels, video_grid_thw=np.array([grid]), second_per_grid_ts=[seconds])


def _hf_vision_kwargs(reference, prompts):
  """transformers' generate inputs for the prompts' packed vision inputs."""
  kwargs = {}
  for name in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
    parts = [getattr(p, name) for p in prompts if getattr(p, name) is not None]
    if parts:
      kwargs[name] = np.concatenate([np.asarray(p) for p in parts])
  ids = np.stack([np.pad(p.input_ids, (max(len(q.input_ids) for q in prompts) - len(p.input_ids), 0))
                  for p in prompts])
  kwargs["mm_token_type_ids"] = mm_token_type_ids(reference, ids)
  return kwargs


def _sample_and_compare(vl, prompts):
  """Greedy G=2 samples; checks them against transformers and returns (output, recorded calls)."""
  CALLS.clear()
  out = vl.sampler(vl.params, prompts, key=jax.random.key(0), num_samples=GROUP, controls=GREEDY)
  jax.block_until_ready(out.tokens)
  jax.effects_barrier()
  calls = list(CALLS)
  config = vl.model.config
  hf_tokens, hf_log_probs = hf_greedy(vl.reference, [p.input_ids for p in prompts], MAX_NEW,
                                      suppress_tokens=list(SamplingControls().resolved_forbidden_ids(config)),
                                      **_hf_vision_kwargs(vl.reference, prompts))
  tokens = np.asarray(out.tokens).reshape(len(prompts), GROUP, MAX_NEW)
  logprobs = np.asarray(out.logprobs).reshape(len(prompts), GROUP, MAX_NEW)
  for g in range(GROUP):
    np.testing.assert_array_equal(tokens[:, g], hf_tokens)
    np.testing.assert_allclose(logprobs[:, g], np.take_along_axis(hf_log_probs, hf_tokens[..., None], -1)[..., 0],
                               atol=1e-4, rtol=0)
  return out, calls


def test_image_prompts_match_transformers_and_encode_once_per_prompt(vl):
  config = vl.model.config
  assert SamplingControls().resolved_forbidden_ids(config) == tuple(sorted(
      [config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id]))
  rng = np.random.default_rng(0)
  prompts = [_vision_prompt(config, rng, "image", (1, 4, 4), 3, 4), _vision_prompt(config, rng, "image", (1, 4, 6), 1, 2)]
  out, calls = _sample_and_compare(vl, prompts)
  # One tower run over both prompts' patches (40, padded to the 48-patch bucket) and one multimodal prefill
  # of the 2 prompts, not of the 4 rows; the decode steps never touch the tower.
  assert sorted(calls) == [("encode_vision", (48, config.vision.patch_dim)),
                           ("multimodal_forward", (2, out.prompts.length))]

  batch = learner_inputs(out)
  logits = models.forward_logits(vl.model, vl.params, batch.input_ids, batch.attention_mask, batch.positions,
                                 **batch.vision)
  np.testing.assert_allclose(out.logprobs, completion_log_probs(logits, batch.prompt_length, out.tokens),
                             atol=1e-4, rtol=0)
  # The decode positions are what get_rope_index gives prompt + completion.
  mask = np.asarray(batch.attention_mask)
  full_positions, _ = vlm.get_rope_index(config, np.asarray(batch.input_ids), batch.vision["image_grid_thw"],
                                         attention_mask=mask)
  np.testing.assert_array_equal(np.asarray(batch.positions)[:, mask], full_positions[:, mask])
  assert batch.vision["pixel_values"].shape[0] == GROUP * (16 + 24)


def test_video_prompt_matches_transformers(vl):
  config = vl.model.config
  rng = np.random.default_rng(1)
  prompts = [_vision_prompt(config, rng, "video", (2, 4, 4), 2, 3, seconds=2.0),
             _vision_prompt(config, rng, "image", (1, 4, 4), 4, 1)]
  out, calls = _sample_and_compare(vl, prompts)
  assert sorted(calls) == [("encode_vision", (16, config.vision.patch_dim)),
                           ("encode_vision", (32, config.vision.patch_dim)),
                           ("multimodal_forward", (2, out.prompts.length))]
  # The video's time axis really moved the positions: they jump by tokens_per_second * 2 s per frame.
  positions = out.prompts.positions[0, 0][out.prompts.attention_mask[0]]
  assert np.diff(positions).max() == int(config.vision.tokens_per_second * 2.0)


def test_mismatched_vision_inputs_name_the_counts(vl):
  config = vl.model.config
  rng = np.random.default_rng(2)
  prompt = _vision_prompt(config, rng, "image", (1, 4, 4), 1, 1)
  short = Prompt(prompt.input_ids[:-3], pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw)
  with pytest.raises(ValueError, match="prompt 0: image features and image tokens do not match"):
    vl.sampler(vl.params, [short], key=jax.random.key(0))
  wrong = Prompt(prompt.input_ids, pixel_values=prompt.pixel_values[:8], image_grid_thw=prompt.image_grid_thw)
  with pytest.raises(ValueError, match="image pixel values have 8 patches but image_grid_thw describes 16"):
    vl.sampler(vl.params, [wrong], key=jax.random.key(0))


def test_prefill_names_the_row_whose_image_tokens_disagree_with_its_grid(vl):
  # A prompt batch built elsewhere (not by `batch_prompts`, which checks each prompt): one image
  # pad token moved from row 1 to row 0 keeps the batch's totals, so only a per-row check sees it.
  # The jitted prefill would clip the scatter index and run on the wrong features without a word.
  config = vl.model.config
  rng = np.random.default_rng(3)
  prompts = [_vision_prompt(config, rng, "image", (1, 4, 4), 3, 4), _vision_prompt(config, rng, "image", (1, 4, 6), 2, 3)]
  batch = batch_prompts(prompts, config, pad_id=vl.sampler.pad_id)
  ids = batch.input_ids.copy()
  ids[0, -1] = config.image_token_id  # was text
  ids[1, np.flatnonzero(ids[1] == config.image_token_id)[0]] = 5
  moved = dataclasses.replace(batch, input_ids=ids)
  with pytest.raises(ValueError, match=r"row 0: image features and image tokens do not match: input_ids hold 5 "
                                       r"<\|image_pad\|> tokens .* but the image inputs give 4 features"):
    vl.sampler(vl.params, moved, key=jax.random.key(0), num_samples=GROUP, controls=GREEDY)
