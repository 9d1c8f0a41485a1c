"""Omni-R1's environment: one batched detail call per rollout, its answers in the reward context, failures as
judge statuses, and a missing detail model stopping the run at start-up."""
import json
import threading

import pytest

from data_pipelines.tasks import omni_r1 as data, omni_r1_synthetic as synthetic
from r1jax import envs
from r1jax.envs import omni_r1 as env_lib
from r1jax.envs.base import Episode
from r1jax.rewards import omni_r1 as reward


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  out = synthetic.write_split(str(tmp_path_factory.mktemp("omni")), "test", 3)
  source = data.ExpressionSource(out["dir"])
  return [data.to_example(source[i], max_frames=16, detail_max_pixels=56 * 56, detail_min_pixels=28 * 28)
          for i in range(len(source))], out["items"]


def _episodes(examples, actions):
  episodes = []
  for example, action in zip(examples, actions):
    episode = Episode(context=dict(example.context, ground_truth=example.ground_truth))
    episode.state = env_lib.OmniR1(None, None).reset(episode.context, example.ground_truth)
    episode.actions.append(action)
    episodes.append(episode)
  return episodes


def test_one_detail_call_per_rollout_and_answers_reach_the_reward(examples):
  examples, items = examples
  actions, truth = [], {}
  for example, item in zip(examples, items):
    target = item.shapes[item.target]  # the perfect teacher's keyframes: the target's 4 frames
    actions.append(data.answer_text([(target.first_frame / 2, (target.first_frame + 3) / 2, target.description)]))
    for f in range(target.first_frame, target.first_frame + 4):
      image = env_lib.keyframe_image(example.context, f)
      box = [v / 2 for v in example.ground_truth["bboxs"][0][f]]  # 112 px frames, 56 px detail input
      truth[(image.tobytes(), target.description)] = box
  calls = []

  def request(messages, image, max_pixels):
    assert image.shape == (56, 56, 3) and max_pixels == 56 * 56  # the detail bounds, not the policy's
    text = messages[0]["content"][1]["text"]
    assert messages[0]["content"][0] == {"type": "image"} and text.startswith("Given the expression: '")
    return image.tobytes(), text.split("'")[1]

  def generate(requests):
    calls.append(requests)
    return [json.dumps({"bbox_2d": truth[r]}) for r in requests]

  env = env_lib.OmniR1(generate, request)
  episodes = _episodes(examples + examples, actions + actions)  # two episodes of each prompt, same answers
  results = env.step_batch(episodes, 0)
  # Every distinct keyframe request of the batch, in one call: the second episode of a prompt asks nothing new.
  assert len(calls) == 1 and len(calls[0]) == 4 * len(examples)
  assert all(r.done for r in results)
  for episode, example in zip(episodes, examples + examples):
    (sample,) = env.samples(episode)
    assert sample.context["detail_status"] == "ok" and len(sample.context["detail_answers"]) == 4
    components = reward.omni_r1(sample.completion, example.ground_truth,
                                **dict(example.context, **sample.context)).components
    assert components["avg_iou"] == pytest.approx(1.0) and components["keyframe_hit"] == 1.0
    assert components["detail_failed"] == 0.0 and components["grounded_frames"] == 4.0


@pytest.mark.parametrize("behaviour, status", [("raise", "error"), ("hang", "timeout"), ("short", "invalid")])
def test_detail_failure_is_a_judge_status_not_an_episode_failure(examples, behaviour, status):
  examples, items = examples
  release = threading.Event()

  def generate(requests):
    if behaviour == "raise":
      raise RuntimeError("device out of memory")
    if behaviour == "hang":
      release.wait(30)
    return ["{}"]  # one answer for several requests

  env = env_lib.OmniR1(generate, lambda messages, image, max_pixels: None, detail_timeout_s=0.3)
  actions = [data.answer_text([(0.0, 0.5, "red circle")])] * len(examples)
  episodes = _episodes(examples, actions)
  try:
    results = env.step_batch(episodes, 0)
  finally:
    release.set()
  assert all(r.done and r.info["detail_status"] == status for r in results)
  for episode, example in zip(episodes, examples):
    (sample,) = env.samples(episode)
    components = reward.omni_r1(sample.completion, example.ground_truth,
                                **dict(example.context, **sample.context)).components
    assert components["detail_failed"] == 1.0 and components["avg_iou"] == 0.0


def test_no_keyframe_no_detail_call(examples):
  examples, _ = examples
  calls = []
  env = env_lib.OmniR1(lambda requests: calls.append(requests) or [], lambda *a: None)
  episodes = _episodes(examples, ["<think></think><answer>none</answer>"] * len(examples))
  assert all(r.done for r in env.step_batch(episodes, 0)) and not calls
  assert env.samples(episodes[0])[0].context["detail_answers"] == {}


def test_keyframe_outside_the_frames_is_named(examples):
  examples, _ = examples
  with pytest.raises(ValueError, match="keyframe 16 is not among the prompt's 16 frame files"):
    env_lib.keyframe_image(examples[0].context, 16)


def test_missing_detail_model_fails_at_start_up():
  from experiments.configs import omni_r1 as recipe  # pylint: disable=g-import-not-at-top
  from r1jax import frozen  # pylint: disable=g-import-not-at-top
  from r1jax.train import loop, stage_configs  # pylint: disable=g-import-not-at-top
  config = recipe.get_config("real,model=/m,data=/d")  # no detail_model
  _, stage = stage_configs(config)[-1]
  with pytest.raises(frozen.MissingFrozenModelError, match="config.frozen.detail.init_from"):
    loop.check_frozen_models(stage)
  del stage.frozen["detail"]
  with pytest.raises(frozen.MissingFrozenModelError, match="environment 'omni_r1' needs the frozen model 'detail'"):
    envs.build(stage, None, {})
