"""Continuing sampled rows after an observation (`decode(keep_cache=True)` then `Sampler.extend`).

Parity: the tokens and log-probs of a two-turn episode, sampled with the cache continued, equal
those of one no-cache forward over each row's whole trajectory (prompt, action 1, observation,
action 2), for text and for an observation that carries a video clip (M-RoPE positions).
"""
import jax
import numpy as np
import pytest

from r1jax import models
from r1jax.models import vlm
from r1jax.sampling import Prompt, SamplingControls
from tests.sampling.helpers import completion_log_probs

GROUP = 2
TURN1, TURN2 = 12, 8
# A tenth of the tiny vocabulary stops a row, so rows end at different lengths (gaps in the cache).
STOP_IDS = tuple(range(3, 13))


def _trajectory_log_probs(model, params, trajectories, vision=None):
  """log p(ids[i + 1] | ids[:i + 1]) of each trajectory ([len - 1] each) from one no-cache forward
  over all of them, left-padded; `vision`: their packed video inputs in trajectory order."""
  length = max(len(t) for t in trajectories)
  ids = np.zeros((len(trajectories), length), np.int32)
  mask = np.zeros((len(trajectories), length), bool)
  for row, trajectory in enumerate(trajectories):
    ids[row, length - len(trajectory):], mask[row, length - len(trajectory):] = trajectory, True
  if vision:
    logits = models.forward_logits(model, params, ids, attention_mask=mask, **vision)
  else:
    logits = models.forward_logits(model, params, ids, attention_mask=mask,
                                   position_ids=np.maximum(np.cumsum(mask, axis=1) - 1, 0))
  log_probs = completion_log_probs(logits, 1, ids[:, 1:])
  return [log_probs[row, length - len(t):] for row, t in enumerate(trajectories)]


def _two_turns(env, prompts, observe, keep_going):
  """Samples turn 1, continues the rows in `keep_going` with `observe(row)`, samples turn 2."""
  controls1 = SamplingControls(max_new_tokens=TURN1, stop_token_ids=STOP_IDS)
  controls2 = SamplingControls(max_new_tokens=TURN2, stop_token_ids=STOP_IDS)
  prefilled = env.sampler.prefill(env.params, prompts, num_samples=GROUP, max_new_tokens=TURN1)
  first = env.sampler.decode(env.params, prefilled, key=jax.random.key(1), controls=controls1, keep_cache=True)
  observations = [observe(row) if keep_going(row) else None for row in range(len(prompts) * GROUP)]
  extended = env.sampler.extend(env.params, first.continuation, observations, max_new_tokens=TURN2)
  second = env.sampler.decode(env.params, extended, key=jax.random.key(2), controls=controls2)
  return first, observations, second


def _check_rows(model, params, rows, prompts, first, second, observations, vision=None):
  """Every row's two actions against one no-cache forward over the rows' trajectories."""
  actions = {row: [(np.asarray(out.tokens[row, :int(out.lengths[row])]), np.asarray(out.logprobs[row]))
                   for out in (first, second)] for row in rows}
  trajectories = [np.concatenate([prompts[row], actions[row][0][0], observations[row], actions[row][1][0]])
                  for row in rows]
  for row, expected in zip(rows, _trajectory_log_probs(model, params, trajectories, vision)):
    (a1, lp1), (a2, lp2) = actions[row]
    p = len(prompts[row])
    np.testing.assert_allclose(lp1[:len(a1)], expected[p - 1:p - 1 + len(a1)], atol=1e-4, rtol=0)
    start = p + len(a1) + len(observations[row])
    np.testing.assert_allclose(lp2[:len(a2)], expected[start - 1:start - 1 + len(a2)], atol=1e-4, rtol=0)


def test_text_continuation_matches_a_no_cache_forward_over_the_trajectory(text):
  rng = np.random.default_rng(3)
  vocab = text.model.config.text.vocab_size
  observation_ids = {row: rng.integers(20, vocab, 2 + row).astype(np.int32) for row in range(8)}
  first, observations, second = _two_turns(text, text.prompts, lambda row: observation_ids[row],
                                           keep_going=lambda row: row != 3)
  lengths = np.asarray(first.lengths)
  assert len(set(lengths.tolist())) > 1, "rows should end at different lengths to exercise the cache's gaps"
  assert int(second.lengths[3]) == 0 and bool(second.finished[3])  # an ended episode decodes nothing
  assert np.all(np.asarray(second.tokens[3]) == text.sampler.pad_id)
  rows = [row for row in range(len(text.prompts) * GROUP) if row != 3]
  assert all(int(second.lengths[row]) > 0 for row in rows)
  _check_rows(text.model, text.params, rows, {row: text.prompts[row // GROUP] for row in rows}, first, second,
              observation_ids)


def _video_prompt(config, rng, grid, before, after, seconds):
  merge = config.vision.spatial_merge_size
  ids = np.concatenate([rng.integers(20, 90, before), [config.vision_start_token_id],
                        [config.video_token_id] * (int(np.prod(grid)) // merge**2), [config.vision_end_token_id],
                        rng.integers(20, 90, after)]).astype(np.int32)
  pixels = rng.normal(size=(int(np.prod(grid)), config.vision.patch_dim)).astype(np.float32)
  return Prompt(ids, pixel_values_videos=pixels, video_grid_thw=np.array([grid]),
                second_per_grid_ts=np.array([seconds], np.float32))


def test_an_observed_video_clip_continues_with_mrope_positions_of_the_whole_trajectory(vl):
  config = vl.model.config
  rng = np.random.default_rng(4)
  prompts = [_video_prompt(config, rng, (2, 4, 4), 3, 2, 2.0), _video_prompt(config, rng, (4, 4, 4), 1, 3, 0.5)]
  # Each continuing row gets its own clip (different grids), captioned before and prompted after.
  clips = {row: _video_prompt(config, rng, (2, 4, 4) if row % 2 else (2, 4, 8), 2, 3, 1.0) for row in range(4)}
  first, observations, second = _two_turns(vl, prompts, lambda row: clips[row], keep_going=lambda row: row != 2)
  assert observations[2] is None and int(second.lengths[2]) == 0
  rows = (0, 1, 3)
  items = [item for row in rows for item in (prompts[row // GROUP], clips[row])]  # each row: its video, its clip
  vision = {name: np.concatenate([getattr(item, name) for item in items])
            for name in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")}
  _check_rows(vl.model, vl.params, rows, {row: prompts[row // GROUP].input_ids for row in rows}, first, second,
              {row: clips[row].input_ids for row in rows}, vision)


def test_extend_rejects_a_row_whose_episode_ended(text):
  controls = SamplingControls(max_new_tokens=4, stop_token_ids=STOP_IDS)
  prefilled = text.sampler.prefill(text.params, text.prompts[:1], num_samples=2, max_new_tokens=4)
  first = text.sampler.decode(text.params, prefilled, key=jax.random.key(0), controls=controls, keep_cache=True)
  ended = text.sampler.extend(text.params, first.continuation, [[30, 31], None], max_new_tokens=4)
  second = text.sampler.decode(text.params, ended, key=jax.random.key(1), controls=controls, keep_cache=True)
  with pytest.raises(ValueError, match="row 1 gets an observation but sampled no token"):
    text.sampler.extend(text.params, second.continuation, [[30], [31]], max_new_tokens=4)
  with pytest.raises(ValueError, match="extend got 1 observations for 2 rows"):
    text.sampler.extend(text.params, second.continuation, [[30]], max_new_tokens=4)


def test_a_learner_row_of_the_episode_gives_the_sampler_s_log_probs_with_each_item_encoded_once(vl):
  """The two-turn VL episode as one learner row per episode (`trajectory_batch`): the prompt's
  video is packed once for its G rows, each clip once, and the learner's log-probs of the action
  tokens equal the sampler's."""
  from r1jax.envs.runner import Trajectory  # pylint: disable=g-import-not-at-top
  from r1jax.train import learner  # pylint: disable=g-import-not-at-top
  from r1jax.train.sequences import SequenceBuilder  # pylint: disable=g-import-not-at-top
  config = vl.model.config
  rng = np.random.default_rng(5)
  prompts = [_video_prompt(config, rng, (2, 4, 4), 3, 2, 2.0), _video_prompt(config, rng, (2, 4, 8), 1, 3, 1.0)]
  clips = {row: _video_prompt(config, rng, (2, 4, 4), 2, 3, 1.0) for row in range(4)}
  first, _, second = _two_turns(vl, prompts, lambda row: clips[row], keep_going=lambda row: row != 2)
  trajectories = []
  for row in range(4):
    trajectory = Trajectory(actions=[(np.asarray(out.tokens[row, :int(out.lengths[row])]),
                                      np.asarray(out.logprobs[row, :int(out.lengths[row])]))
                                     for out in (first, second) if int(out.lengths[row])])
    if row != 2:
      trajectory.observations.append(clips[row])
    trajectories.append(trajectory)
  builder = SequenceBuilder(vl.model)
  batch = builder.trajectory_batch({}, first.prompts, trajectories, GROUP, TURN1 + TURN2 + 32)
  np.testing.assert_array_equal(batch["video_counts"], [2, 2, 1, 2])
  shared = builder.shared_vision({k: v for k, v in batch.items() if k != "completion_ids"})
  assert len(shared["video_grid_thw"]) == 2 + 3  # two prompt videos, three clips
  device = builder.device_vision({k: v for k, v in shared.items() if k not in ("video_counts", "sampler_logprobs")})
  logprobs = np.asarray(learner.completion_logprobs(vl.model, vl.params, device, 1.0))
  mask = batch["completion_mask"]
  np.testing.assert_allclose(logprobs[mask], batch["sampler_logprobs"][mask], atol=1e-4, rtol=0)


def test_a_varying_number_of_clips_does_not_recompile_the_extend(vl):
  """3 and then 4 continuing rows, with clips of other sizes: the clips' patches are padded to a
  bucket (`vision.pad_vision_patches`), 24 merged tokens for their 20 and then 24, so the second call
  reuses the first's executable."""
  config = vl.model.config
  rng = np.random.default_rng(6)
  prompts = [_video_prompt(config, rng, (2, 4, 4), 3, 2, 1.0), _video_prompt(config, rng, (2, 4, 4), 3, 2, 1.0)]
  large, small = _video_prompt(config, rng, (2, 4, 4), 2, 3, 1.0), _video_prompt(config, rng, (2, 2, 4), 2, 3, 1.0)
  controls = SamplingControls(max_new_tokens=4, stop_token_ids=())
  counts = []
  for clips in ({0: large, 1: small, 3: large}, {0: large, 1: large, 2: small, 3: small}):  # 20, then 24 tokens
    prefilled = vl.sampler.prefill(vl.params, prompts, num_samples=GROUP, max_new_tokens=4)
    first = vl.sampler.decode(vl.params, prefilled, key=jax.random.key(0), controls=controls, keep_cache=True)
    vl.sampler.extend(vl.params, first.continuation, [clips.get(r) for r in range(4)], max_new_tokens=4)
    counts.append(sum(e.function == "extend" for e in vl.sampler.compile_events))
  assert counts[1] == counts[0]
