"""InfiGUI-R1 data: the synthetic GUI world (screens, state machine, episodes), the AndroidControl
and ScreenSpot readers on fixtures in the released layouts, and bad input skipped and counted."""
import json
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors
from data_pipelines.sources import RawRecord
from data_pipelines.tasks import infigui_r1, infigui_r1_dataset, infigui_r1_synthetic as world
from r1jax import rewards

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "infigui_r1")
ANDROID_CONTROL = os.path.join(FIXTURES, "android_control")
SCREENSPOT = os.path.join(FIXTURES, "screenspot")
TASK = world.GuiTask()


def _spec(config):
  return infigui_r1_dataset.build_infigui_r1(data_pipelines.from_config(config))


def _settings_phone(on: bool = False) -> world.Phone:
  home = [world.Widget("Settings", "button", "red", 0, target="app:Settings")]
  settings = world.Screen("Settings", [world.Widget("Wi-Fi", "toggle", "green", 2, on=on),
                                       world.Widget("Display", "button", "blue", 3, target="page:Display")])
  page = world.Screen("Display", [world.Widget("Brightness", "toggle", "yellow", 0)])
  return world.Phone(home, {"Settings": settings}, {"Display": page})


def test_screens_show_each_widget_in_its_colour_on_its_band_grey():
  phone = _settings_phone()
  phone.act({"action_type": "open_app", "app_name": "Settings"}, TASK)
  screen = world.render(phone, TASK)
  assert screen.shape == (168, 84, 3) and screen.dtype == np.uint8
  wifi = phone.widget("Wi-Fi")
  x1, y1, x2, y2 = wifi.box(TASK)
  assert tuple(screen[y1 + 1, x1 + 1]) == world.COLORS["green"]
  assert tuple(screen[y1 - 2, x1 + 1]) == (world.BAND_GREYS[2],) * 3  # the band's grey frames the widget
  assert tuple(screen[BAND_TOP(1) + 1, 40]) == (world.BAND_GREYS[0],) * 3  # an empty band
  knob = screen[y1 + 6, x2 - 10]
  assert tuple(knob) == (0, 0, 0)  # off
  phone.act({"action_type": "click", "x": 42, "y": (y1 + y2) // 2}, TASK)
  assert wifi.on and tuple(world.render(phone, TASK)[y1 + 6, x2 - 10]) == (255, 255, 255)


def BAND_TOP(band):  # pylint: disable=invalid-name
  return world.BAND * band


def test_state_machine_pages_back_home_and_misses():
  phone = _settings_phone()
  phone.act({"action_type": "click", "x": 42, "y": 42}, TASK)  # home: clicking an app row opens nothing
  assert phone.screen.title == "Home"
  phone.act({"action_type": "open_app", "app_name": "Settings"}, TASK)
  before = world.render(phone, TASK)
  phone.act({"action_type": "click", "x": 42, "y": 3}, TASK)  # the title bar: no widget, nothing happens
  np.testing.assert_array_equal(world.render(phone, TASK), before)
  phone.act({"action_type": "click", "x": 42, "y": world.BAND * 4 + 14}, TASK)  # Display (band 4 = slot 3)
  assert phone.screen.title == "Display"
  phone.act({"action_type": "navigate_back"}, TASK)
  assert phone.screen.title == "Settings"
  phone.act({"action_type": "navigate_home"}, TASK)
  assert phone.screen.title == "Home"


def test_episodes_reach_their_goal_in_androidcontrol_actions():
  episodes = world.split_episodes("test", 30)
  kinds = {step.action["action_type"] for e in episodes for step in e.steps}
  assert {"click", "open_app", "input_text"} <= kinds <= set(infigui_r1.ACTION_TYPES)
  assert {e.template for e in episodes} == set(world.TEMPLATES)
  for episode in episodes:
    assert len(episode.screens) == len(episode.steps) + 1 and 2 <= len(episode.steps) <= 6
    assert episode.steps[0].action["action_type"] == "open_app"
    for step in episode.steps:
      if step.action["action_type"] == "click":  # the instruction names the colour of the widget clicked
        assert step.instruction.split()[2] in world.COLORS and step.action["x"] == 42
    if episode.template == "toggle":
      final_label = episode.steps[-1].instruction.split()[3]
      state = "on" if f"Turn on {final_label}" in episode.goal else "off"
      toggles = {node["text"]: node for node in episode.trees[-1]}
      assert final_label in toggles  # the toggle is on the final screen
      assert state in ("on", "off")


def test_train_episodes_never_repeat_a_held_out_one_and_are_reproducible():
  held_out = {e.key for e in world.split_episodes("test", 40)}
  train = world.split_episodes("train", 60, seed=3, test_size=40)
  assert not held_out & {e.key for e in train}
  again = world.split_episodes("train", 60, seed=3, test_size=40)
  assert [e.goal for e in train] == [e.goal for e in again]
  assert [e.goal for e in world.split_episodes("test", 5)] == [e.goal for e in world.split_episodes("test", 5)]


def test_teacher_errs_on_clicks_and_types_only():
  rng = np.random.default_rng(0)
  episodes = world.split_episodes("test", 40)
  wrong = right = 0
  for episode in episodes:
    for step, target in zip(episode.steps, world.teacher_responses(episode, rng, 0.5)):
      if step.distractor is None:
        assert target == world.response(step.subgoal, step.action)
      elif target == world.response(step.subgoal, step.action):
        right += 1
      else:
        assert target == world.response(step.subgoal, step.distractor)
        wrong += 1
  assert 0.35 < wrong / (wrong + right) < 0.65


def test_written_split_reads_back_as_step_examples_scored_by_the_reward(tmp_path):
  out = world.write_split(str(tmp_path), "train", 6, teacher_error=0.0)
  with open(out["path"]) as f:
    record = json.loads(f.readline())
  assert {"episode_id", "goal", "screenshots", "screenshot_widths", "screenshot_heights", "actions",
          "step_instructions", "accessibility_trees", "teacher_responses"} <= set(record)
  assert len(record["screenshots"]) == len(record["actions"]) + 1
  spec = _spec((data_pipelines.default_config(
      name="infigui_r1", path=out["path"], prompt_style="short")))
  steps = sum(len(e.steps) for e in out["episodes"])
  assert len(spec.source) == steps
  reward = rewards.get("infigui")
  for index in range(steps):
    example = spec.to_example(spec.source[index])
    assert example.messages[1]["content"][1]["text"].startswith("Goal: ")
    truth = example.ground_truth
    assert truth["task_type"] == "action" and (truth["width"], truth["height"]) == (84, 168)
    if truth["action"] == "click":
      (box,) = truth["candidate_bbox"]  # from the accessibility tree: the widget under the point
      assert box[0] <= truth["coordinate"][0] <= box[2] and box[1] <= truth["coordinate"][1] <= box[3]
    # The (error-free) teacher's target scores full marks.
    assert reward(example.response, truth).total == pytest.approx(1.0), example.response
  clicks = _spec((data_pipelines.default_config(
      name="infigui_r1", path=out["path"], step_actions="click")))
  assert len(clicks.source) == sum(s.action["action_type"] == "click" for e in out["episodes"] for s in e.steps)


def test_reads_androidcontrol_tfrecords_with_splits():
  config = data_pipelines.default_config(name="infigui_r1", path=ANDROID_CONTROL, episode_split="train")
  spec = _spec((config))
  episodes = world.split_episodes("test", 3)
  assert len(spec.source) == len(episodes[0].steps) + len(episodes[2].steps)  # episodes 1000 and 1002
  first = spec.to_example(spec.source[0])
  assert first.ground_truth["action"] == "open" and first.ground_truth["text"] == "Clock"
  assert isinstance(first.images[0], bytes) and first.images[0][:4] == b"\x89PNG"
  assert "The user's goal: Turn on the 7:00 alarm" in first.messages[1]["content"][1]["text"]
  click = spec.to_example(spec.source[1]).ground_truth
  assert click["action"] == "click" and click["coordinate"] == [42, 154] and "candidate_bbox" not in click
  # Episode 1002's step 1 has an empty screenshot: skipped, naming the record, step and field.
  with pytest.raises(errors.BadExampleError, match=r"step 1: field 'screenshots\[1\]': missing screenshot") as e:
    spec.to_example(spec.source[3])
  assert e.value.reason == errors.BAD_MEDIA


def test_missing_screenshot_is_skipped_and_counted_by_the_pipeline(tokenizer):
  config = data_pipelines.default_config(name="infigui_r1", path=ANDROID_CONTROL, episode_split="train",
                                         batch_size=4, shuffle=False, num_epochs=1, max_prompt_length=2048,
                                         max_seq_length=2048, read_threads=1)
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  assert len(batch["ground_truth"]) == 4  # 5 steps, one skipped
  assert batch["data_stats"].get(f"skipped_{errors.BAD_MEDIA}") == 1


def test_reads_screenspot_rows_as_point_grounding():
  spec = _spec((data_pipelines.default_config(
      name="infigui_r1", source="screenspot", path=SCREENSPOT)))
  assert len(spec.source) == 3
  example = spec.to_example(spec.source[1])
  truth = example.ground_truth
  assert truth["task_type"] == "point" and truth["bbox"] == [6, 62, 78, 78] and (truth["width"], truth["height"]) == (84, 168)
  hit = '<think><step>x</step></think><tool_call>{"name": "mobile_use", "arguments": {"action": "click", "coordinate": [40, 70]}}</tool_call>'
  assert rewards.get("infigui")(hit, truth).components["accuracy"] == 1.0
  with pytest.raises(errors.BadExampleError, match="img_filename.*missing screenshot"):
    spec.to_example(spec.source[2])


def test_bad_episode_fields_are_named():
  base = {"goal": "g", "screenshots": [b"x", b"y"], "screenshot_widths": [10, 10], "screenshot_heights": [10, 10],
          "actions": ['{"action_type": "fly"}'], "step_instructions": ["s"]}
  with pytest.raises(errors.BadExampleError, match=r"'actions\[0\]': expected an action_type"):
    infigui_r1.step_example(RawRecord(base, "ep.jsonl:line 1", "/tmp"), 0)
  with pytest.raises(errors.BadExampleError, match="'goal': missing"):
    infigui_r1.step_example(RawRecord({**base, "goal": ""}, "ep.jsonl:line 2", "/tmp"), 0)
  no_size = {**base, "actions": ['{"action_type": "wait"}'], "screenshot_widths": [0, 10]}
  with pytest.raises(errors.BadExampleError, match=r"'screenshot_widths\[0\]'"):
    infigui_r1.step_example(RawRecord(no_size, "ep.jsonl:line 3", "/tmp"), 0)
  with pytest.raises(errors.BadExampleError, match="a click needs numbers x and y"):
    infigui_r1.step_example(RawRecord({**base, "actions": ['{"action_type": "click", "x": 1}']}, "w", "/tmp"), 0)


def test_tfrecord_framing_round_trips_and_a_corrupt_file_is_named(tmp_path):
  path = str(tmp_path / "android_control-00000-of-00001")
  fields = {"episode_id": 7, "goal": "g", "screenshots": [b"\x89PNG", b"\x89PNG"], "accessibility_trees": [b"", b""],
            "screenshot_widths": [1080, 1080], "screenshot_heights": [2400, 2400],
            "actions": ['{"action_type": "scroll", "direction": "down"}'], "step_instructions": ["scroll down"]}
  infigui_r1.write_tfrecord(path, [infigui_r1.encode_episode(fields)])
  (data,) = list(infigui_r1.read_tfrecord(path))
  assert infigui_r1.episode_fields(infigui_r1.parse_example(data)) == fields
  assert infigui_r1.masked_crc(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
  bad = tmp_path / "android_control-bad"
  bad.write_bytes(b"\x05" * 20)
  with pytest.raises(ValueError, match="android_control-bad: record 1: the length's CRC"):
    list(infigui_r1.read_tfrecord(str(bad)))
  with pytest.raises(ValueError, match="episode_split='dev' is not in"):
    infigui_r1_dataset.build_infigui_r1(data_pipelines.from_config(data_pipelines.default_config(
        name="infigui_r1", path=ANDROID_CONTROL, episode_split="dev")))
