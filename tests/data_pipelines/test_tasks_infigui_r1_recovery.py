"""InfiGUI-R1 error-recovery construction on the synthetic world: a step the policy gets right 3 of 8
times becomes an Error Escape and a Back-on-Track sample; steps always or never right do not."""
import json
import os

import numpy as np
import PIL.Image

from data_pipelines.sources import RawRecord
from data_pipelines.tasks import infigui_r1, infigui_r1_recovery as recovery, infigui_r1_synthetic as world
from r1jax.rewards import infigui

TASK = world.GuiTask()


def _episode_with_a_page_step():
  """A 'page_toggle' episode whose step 1 (tap the page's item) is the prone one."""
  for index, episode in enumerate(world.split_episodes("test", 40)):
    if episode.template == "page_toggle":
      return index, episode
  raise AssertionError("no page_toggle episode among the first 40")


def test_a_step_right_3_of_8_times_becomes_an_escape_and_a_back_on_track_sample(tmp_path):
  index, episode = _episode_with_a_page_step()
  names = [f"s{i}.png" for i in range(len(episode.screens))]
  for name, screen in zip(names, episode.screens):
    PIL.Image.fromarray(screen).save(tmp_path / name)
  record = world.episode_record(episode, names, TASK, episode_id=index, responses=None)
  examples = [[infigui_r1.step_example(RawRecord(record, "ep", str(tmp_path)), s, prompt_style="short")
               for s in range(len(episode.steps))]]
  prone_step, never_step = 1, 2
  step = episode.steps[prone_step]
  right = world.response(step.subgoal, step.action)
  wrong = world.response(step.subgoal, step.distractor)
  assert infigui.infigui_reward(wrong, examples[0][prone_step].ground_truth).components["param"] == 0

  def policy(step_examples, k):
    assert k == 8 and len(step_examples) == len(episode.steps)
    out = []
    for s, example in enumerate(step_examples):
      target = world.response(episode.steps[s].subgoal, episode.steps[s].action)
      if s == prone_step:
        out.append([right] * 3 + [wrong] * 5)
      elif s == never_step:
        out.append(["<think>x</think>"] * 8)  # never right: rate 0 is not prone either
      else:
        out.append([target] * 8)
    return out

  summary = recovery.construct([episode], examples, policy, str(tmp_path / "out"), episode_ids=[index])
  assert summary["prone"] == 1 and summary["error_escape"] == 1 and summary["back_on_track"] == 1
  with open(tmp_path / "out" / "recovery_stats.jsonl") as f:
    stats = [json.loads(line) for line in f]
  assert [(row["step"], row["successes"], row["prone"]) for row in stats] == [
      (0, 8, False), (1, 3, True), (2, 0, False)][:len(stats)]
  assert stats[1]["rate"] == 3 / 8
  with open(tmp_path / "out" / "recovery.jsonl") as f:
    escape, back = [json.loads(line) for line in f]
  assert (escape["recovery"], back["recovery"]) == ("error_escape", "back_on_track")
  # Read back like any episode: the escape undoes the wrong tap, back-on-track redoes the original step.
  escape_example = infigui_r1.step_example(RawRecord(escape, "rec:1", str(tmp_path / "out")), 0)
  back_example = infigui_r1.step_example(RawRecord(back, "rec:2", str(tmp_path / "out")), 0)
  phone = episode.phones[prone_step]
  undo, _ = recovery.recovery_action(phone, step.distractor, TASK)
  assert json.loads(escape["actions"][0]) == undo
  assert back_example.ground_truth["coordinate"] == [step.action["x"], step.action["y"]]
  assert infigui.infigui_reward(escape["teacher_responses"][0], escape_example.ground_truth).total == 1.0
  after_wrong = np.asarray(PIL.Image.open(escape_example.images[0]).convert("RGB"))
  assert not np.array_equal(after_wrong, episode.screens[prone_step])  # the wrong tap changed the screen
  recovered = np.asarray(PIL.Image.open(back_example.images[0]).convert("RGB"))
  np.testing.assert_array_equal(recovered, episode.screens[prone_step])  # the recovery restored it


def test_wrong_actions_without_a_recovery_are_counted(tmp_path):
  index, episode = _episode_with_a_page_step()
  record = world.episode_record(episode, ["x.png"] * len(episode.screens), TASK, episode_id=index, responses=None)
  os.makedirs(tmp_path / "img")
  PIL.Image.fromarray(episode.screens[0]).save(tmp_path / "x.png")
  examples = [[infigui_r1.step_example(RawRecord(record, "ep", str(tmp_path)), s) for s in range(len(episode.steps))]]
  step = episode.steps[1]
  right = world.response(step.subgoal, step.action)
  nowhere = world.response(step.subgoal, {"action_type": "click", "x": 42, "y": 3})  # the title bar: nothing happens
  garbled = "<think>x</think><tool_call>{oops</tool_call>"

  def policy(step_examples, k):
    groups = [[world.response(s.subgoal, s.action)] * k for s in episode.steps]
    groups[1] = [right] * 4 + [nowhere] * 4
    groups[0] = [world.response(episode.steps[0].subgoal, episode.steps[0].action)] * 6 + [garbled] * 2
    return groups

  summary = recovery.construct([episode], examples, policy, str(tmp_path / "out"))
  assert summary["prone"] == 2 and summary["error_escape"] == 0
  assert summary["no_recovery"] == {"wrong action changed nothing": 1, "wrong completions do not parse": 1}
