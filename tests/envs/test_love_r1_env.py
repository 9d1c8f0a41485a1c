"""LOVE-R1's environment: when a zoom shows a clip, how an episode ends, and which decoupled sample
gets which reward (turn 1 by turn 2's answer; a second zoom masks both)."""
import numpy as np
import pytest

from r1jax import rewards
from r1jax.envs import Episode, Status
from r1jax.envs.love_r1 import LoveR1
from r1jax.rewards import scorer

ZOOM, ANSWER = "I need to zoom in on the video.\n\n", "I get the answer.\n\n"
TRUTH = {"answer": "B", "solution": "<answer>B</answer>", "tgt": None, "duration": 120.0,
         "clue_intervals": [[40, 60]]}
CLIPS = []


def _clip(context, t1, t2):
  CLIPS.append((context["video"], t1, t2))
  return np.zeros((4, 56, 56, 3), np.uint8), 0.2, 56 * 56


def _episode(*actions, context=None):
  env = LoveR1(_clip, max_observation_tokens=64)
  context = context or {"video": "v.mp4", "zoomin_intervals": []}
  episode = Episode(context=context, state=env.reset(context, TRUTH))
  episode.actions.extend(actions)
  return env, episode


def _score(env, episode):
  samples = env.samples(episode)
  scores = scorer.score_batch(rewards.get("love_r1"), [s.completion for s in samples], [TRUTH] * len(samples),
                              [dict(s.context) for s in samples])
  assert scores.num_errors == 0, scores.errors
  return samples, scores


def test_a_valid_zoom_shows_the_clip_with_its_caption():
  env, episode = _episode(ZOOM + "the square shows at 40 s \\boxed{[40, 60]}")
  CLIPS.clear()
  result = env.step(episode, 0)
  assert not result.done and CLIPS == [("v.mp4", 40, 60)]
  assert result.observation.content == [{"type": "text", "text": "Subset zoom-in video clip [40, 60]:"},
                                        {"type": "video"}]
  assert result.observation.videos[0].shape == (4, 56, 56, 3) and result.observation.video_fps == [0.2]
  assert result.observation.max_pixels == 56 * 56
  assert env.episode_metrics(Episode(context={}, infos=[result.info], state=episode.state)) == {"zoom_iou": 1.0}


@pytest.mark.parametrize("action", [
    ANSWER + "\\boxed{B}",  # an answer ends the episode
    ZOOM + "\\boxed{[40, 40]}",  # an empty interval is not a valid zoom
    ZOOM + "\\boxed{[0, 90]}",  # longer than min(duration / 2, 60)
    ZOOM + "\\boxed{40 to 60}",  # unparseable
    "no prefix at all",
])
def test_answers_and_bad_zooms_end_the_episode_without_a_clip(action):
  env, episode = _episode(action)
  CLIPS.clear()
  assert env.step(episode, 0).done and not CLIPS


def test_a_second_zoom_does_not_end_the_episode_so_the_runner_marks_max_turns():
  env, episode = _episode(ZOOM + "\\boxed{[40, 60]}", ZOOM + "\\boxed{[60, 80]}")
  assert not env.step(episode, 1).done  # the runner ends it with MAX_TURNS (no third turn)
  assert env.max_turns == 2 and Status.MAX_TURNS.value == "max_turns"


def test_decoupled_samples_credit_the_zoom_with_the_second_turn_s_answer():
  env, episode = _episode(ZOOM + "\\boxed{[40, 60]}", ANSWER + "it is green \\boxed{B}")
  samples, scores = _score(env, episode)
  assert [(s.turns, s.group) for s in samples] == [((0,), "step1"), ((1,), "step2")]
  np.testing.assert_allclose(scores.totals, [2.0, 2.0])  # format 1 + accuracy 1, each
  env, episode = _episode(ZOOM + "\\boxed{[40, 60]}", ANSWER + "\\boxed{C}")
  _, scores = _score(env, episode)
  np.testing.assert_allclose(scores.totals, [1.0, 1.0])  # a valid zoom and a formatted but wrong answer


def test_a_direct_answer_is_one_sample_scored_by_itself():
  env, episode = _episode(ANSWER + "\\boxed{B}")
  samples, scores = _score(env, episode)
  assert [(s.turns, s.group) for s in samples] == [((0,), "step1")]
  np.testing.assert_allclose(scores.totals, [2.0])


def test_a_second_zoom_masks_both_samples():
  env, episode = _episode(ZOOM + "\\boxed{[40, 60]}", ZOOM + "\\boxed{[60, 80]}")
  _, scores = _score(env, episode)
  np.testing.assert_array_equal(scores.components["mask"], [1.0, 1.0])


def test_earlier_zooms_of_the_record_constrain_the_new_one():
  context = {"video": "v.mp4", "zoomin_intervals": [[40, 60]]}
  env, episode = _episode(ZOOM + "\\boxed{[41, 60]}", context=context)  # IoU 0.95 with an earlier zoom
  assert env.step(episode, 0).done
  env, episode = _episode(ZOOM + "\\boxed{[60, 80]}", ANSWER + "\\boxed{B}", context=context)
  samples = env.samples(episode)
  assert samples[0].context["earlier_zooms"] == [[40.0, 60.0]]
  assert samples[1].context["earlier_zooms"] == [[40.0, 60.0], [60, 80]]
