"""InfiGUI-R1's data: AndroidControl episodes (one example per step) and ScreenSpot grounding records.

AndroidControl (google-research/android_control README): GZIP-compressed TFRecord files
`android_control-000NN-of-00020` of `tf.train.Example`s, one per episode, with the features

    episode_id           int64      the episode's id (splits.json lists them per split)
    goal                 bytes      the high-level goal
    screenshots          bytes[]    PNG bytes, one per observation (len(actions) + 1)
    accessibility_trees  bytes[]    AndroidAccessibilityForest protos, one per observation
    screenshot_widths    int64[]    per observation
    screenshot_heights   int64[]
    actions              bytes[]    JSON: {"action_type": "click", "x": 540, "y": 1200}, long_press (x, y),
                                    scroll (direction), open_app (app_name), input_text (text),
                                    navigate_back, navigate_home, wait
    step_instructions    bytes[]    the low-level instruction of each action

`read_tfrecord` / `parse_example` decode them without TensorFlow (the TFRecord framing and the
Example proto's wire format are small; the length header's CRC32C is checked, the payload's is
not: a corrupt payload fails the proto parse instead, and the episode is skipped and named). The
same fields in a JSON / JSONL row (screenshots as PNG paths, relative to the file, or bytes;
accessibility trees as a JSON list of elements with `bounds`) read the same way: the synthetic
world (infigui_r1_synthetic.py) writes that, with `teacher_responses` (the SFT targets).

One example per step i: the user turn is screenshot i + the goal + step instruction i (the two
levels of instruction), and the ground truth is action i in r1jax/rewards/infigui.py's terms:

    click / long_press   action, coordinate [x, y], candidate_bbox (the clickable elements of
                         JSON accessibility trees whose bounds contain the point; none from protos)
    input_text           action "type", text
    open_app             action "open", text = app_name
    scroll               action "swipe", direction (AndroidControl's scroll direction, as stored)
    navigate_back / home action "system_button", button "Back" / "Home"
    wait                 action "wait"

plus width / height (the screenshot's), task_type "action", episode_id, step, goal and instruction
(what the sub-goal judge is shown). Choice: the swipe
direction is AndroidControl's scroll direction as stored (the direction the content is scrolled
towards); a model answering with coordinate / coordinate2 is scored on the finger's direction,
so the prompt asks for `direction` (see the config's follow-ups).

ScreenSpot (SeeClick's release): `screenspot_{mobile,desktop,web}.json`, each an array of
{"img_filename": "mobile_....png", "bbox": [left, top, width, height] (pixels), "instruction",
"data_type": "text" | "icon", "data_source"}, with the images in `screenspot_imgs/` next to the JSON
files. One point-grounding example per row: the reward's "point" task, a hit inside the box.

Checks (a failing record is skipped, counted and named; config.data.strict raises):
* MISSING_FIELD: no `goal`, `actions`, `screenshots` (AndroidControl), or `img_filename`, `bbox`,
  `instruction` (ScreenSpot);
* BAD_RECORD: an action that is not JSON or has no known `action_type` (naming `actions[i]`),
  fewer screenshots or sizes than actions, a step instruction missing, a bad bbox;
* BAD_MEDIA: a missing screenshot (an empty PNG string or a file that does not exist, named with
  its step) or an unreadable image.
"""
from __future__ import annotations

import gzip
import json
import os
import struct
from typing import Any, Iterator

from data_pipelines import errors
from data_pipelines.records import Example
from data_pipelines.sources import RawRecord

# r1jax's rendering of InfiGUI-R1's instruction (the `mobile_use` tool of Qwen2.5-VL, reasoning in
# <think> with the sub-goal stated in <step>); not the released prompt character for character.
SYSTEM_PROMPT = (
    "You are a GUI agent on an Android phone. Given the screenshot, the user's goal and the current step "
    "instruction, first reason inside <think> </think> and state the sub-goal of this step inside <step> </step>, "
    "then call the tool once: <tool_call>{\"name\": \"mobile_use\", \"arguments\": {\"action\": ...}}</tool_call>. "
    "Actions: click / long_press (coordinate [x, y] in pixels of the screenshot), type (text), swipe (direction: "
    "up, down, left or right), open (text: the app), system_button (button: Back, Home, Menu or Enter), wait, "
    "terminate (status).")
SHORT_SYSTEM_PROMPT = "GUI agent: step, then tool call."
PROMPT_STYLES = ("released", "short")
ACTION_TYPES = ("click", "long_press", "scroll", "open_app", "input_text", "navigate_back", "navigate_home", "wait")
SCREENSPOT_FILES = ("screenspot_mobile.json", "screenspot_desktop.json", "screenspot_web.json")
SCREENSPOT_IMAGES = "screenspot_imgs"
SFT_TARGETS = ("teacher", "ground_truth")


def tool_call(action: dict[str, Any]) -> str:
  """InfiGUI-R1's `mobile_use` tool call for an AndroidControl action."""
  kind = action["action_type"]
  if kind in ("click", "long_press"):
    arguments = {"action": kind, "coordinate": [action["x"], action["y"]]}
  elif kind == "input_text":
    arguments = {"action": "type", "text": action["text"]}
  elif kind == "open_app":
    arguments = {"action": "open", "text": action["app_name"]}
  elif kind == "scroll":
    arguments = {"action": "swipe", "direction": action["direction"]}
  elif kind in ("navigate_back", "navigate_home"):
    arguments = {"action": "system_button", "button": "Back" if kind == "navigate_back" else "Home"}
  else:
    arguments = {"action": kind}
  return "<tool_call>" + json.dumps({"name": "mobile_use", "arguments": arguments}) + "</tool_call>"


def target(subgoal: str, action: dict[str, Any]) -> str:
  """An SFT target in InfiGUI-R1's output format: the sub-goal in <think><step>, then the tool call."""
  return f"<think><step>{subgoal}</step></think>{tool_call(action)}"


def user_text(goal: str, instruction: str, prompt_style: str) -> str:
  """The two levels of instruction, after the screenshot."""
  if prompt_style == "short":
    return f"Goal: {goal}\nStep: {instruction}"
  return f"The user's goal: {goal}\nCurrent step instruction: {instruction}"


def _system(prompt_style: str) -> str:
  if prompt_style not in PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={prompt_style!r} must be one of {PROMPT_STYLES}")
  return SYSTEM_PROMPT if prompt_style == "released" else SHORT_SYSTEM_PROMPT


def _text(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def _list(fields: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
  value = fields.get(key)
  if value is None or (isinstance(value, (list, tuple)) and not value and required):
    if required:
      raise errors.field_error(errors.MISSING_FIELD, where, key, f"missing or empty (fields: {sorted(fields)})")
    return []
  if not isinstance(value, (list, tuple)):
    raise errors.field_error(errors.BAD_RECORD, where, key, f"expected a list, got {type(value).__name__}")
  return list(value)


def parse_action(value: Any, where: str, index: int) -> dict[str, Any]:
  """Action `index` of an episode (a JSON string or dict) with a known `action_type`."""
  field = f"actions[{index}]"
  try:
    action = json.loads(_text(value)) if isinstance(value, (str, bytes, bytearray)) else value
  except ValueError as e:
    raise errors.field_error(errors.BAD_RECORD, where, field, f"not JSON: {e}") from None
  if not isinstance(action, dict) or action.get("action_type") not in ACTION_TYPES:
    raise errors.field_error(errors.BAD_RECORD, where, field,
                             f"expected an action_type in {ACTION_TYPES}, got {str(value)[:80]}")
  return action


def step_count(fields: dict[str, Any] | None) -> int:
  """Steps of an episode record (0 when it has no readable action list)."""
  actions = (fields or {}).get("actions")
  return len(actions) if isinstance(actions, (list, tuple)) else 0


def _candidate_boxes(tree: Any, point: tuple[float, float]) -> list[list[float]]:
  """Bounds of the clickable elements of a JSON accessibility tree that contain `point`; [] for a
  proto tree (not decoded here) or anything unreadable."""
  try:
    nodes = json.loads(_text(tree)) if isinstance(tree, (str, bytes, bytearray)) else tree
  except ValueError:
    return []
  boxes = []
  for node in nodes if isinstance(nodes, list) else []:
    bounds = node.get("bounds") if isinstance(node, dict) else None
    if node and node.get("clickable") and isinstance(bounds, list) and len(bounds) == 4 and \
        bounds[0] <= point[0] <= bounds[2] and bounds[1] <= point[1] <= bounds[3]:
      boxes.append([float(v) for v in bounds])
  return boxes


def action_truth(action: dict[str, Any], tree: Any, where: str, index: int) -> dict[str, Any]:
  """The reward's ground truth for one AndroidControl action (see the module docstring)."""
  kind = action["action_type"]
  field = f"actions[{index}]"
  if kind in ("click", "long_press"):
    x, y = action.get("x"), action.get("y")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
      raise errors.field_error(errors.BAD_RECORD, where, field, f"a {kind} needs numbers x and y, got {action}")
    truth = {"action": kind, "coordinate": [x, y]}
    boxes = _candidate_boxes(tree, (x, y))
    return {**truth, "candidate_bbox": boxes} if boxes else truth
  needs = {"input_text": ("text", "type"), "open_app": ("app_name", "open"), "scroll": ("direction", "swipe")}
  if kind in needs:
    key, name = needs[kind]
    value = action.get(key)
    if not isinstance(value, str) or not value.strip():
      raise errors.field_error(errors.BAD_RECORD, where, field, f"a {kind} needs a non-empty {key!r}, got {action}")
    return {"action": name, ("direction" if kind == "scroll" else "text"): value}
  if kind in ("navigate_back", "navigate_home"):
    return {"action": "system_button", "button": "Back" if kind == "navigate_back" else "Home"}
  return {"action": "wait"}


def _screenshot(entry: Any, base_dir: str, where: str, index: int) -> str | bytes:
  field = f"screenshots[{index}]"
  if isinstance(entry, (bytes, bytearray)):
    if not entry:
      raise errors.field_error(errors.BAD_MEDIA, where, field, "missing screenshot (empty PNG bytes)")
    return bytes(entry)
  if not isinstance(entry, str) or not entry:
    raise errors.field_error(errors.BAD_MEDIA, where, field, "missing screenshot (no path or bytes)")
  path = entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base_dir, entry))
  if not os.path.isfile(path):
    raise errors.field_error(errors.BAD_MEDIA, where, field, f"missing screenshot: file {path} does not exist")
  return path


def _size(values: list[Any], index: int, key: str, where: str) -> int:
  value = values[index] if index < len(values) else None
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise errors.field_error(errors.BAD_RECORD, where, f"{key}[{index}]", f"expected a positive integer, got {value!r}")
  return value


def step_example(raw: RawRecord, step: int, *, prompt_style: str = "released", media_root: str = "",
                 sft_targets: str = "teacher") -> Example:
  """Step `step` of an AndroidControl episode record → an Example (see the module docstring).

  The SFT response is the record's `teacher_responses[step]` (sft_targets 'teacher', None without
  one), or built from the ground truth (sft_targets 'ground_truth': the step instruction as the
  sub-goal, then the action's tool call; for AndroidControl, whose episodes carry no reasoning)."""
  if sft_targets not in SFT_TARGETS:
    raise ValueError(f"config.data.sft_targets={sft_targets!r} must be one of {SFT_TARGETS}")
  system = _system(prompt_style)
  where = f"{raw.where} step {step}"
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, raw.where, raw.error or "unreadable row")
  fields = raw.fields
  goal = _text(fields.get("goal"))
  if not isinstance(goal, str) or not goal.strip():
    raise errors.field_error(errors.MISSING_FIELD, where, "goal", f"missing or empty (fields: {sorted(fields)})")
  actions = _list(fields, "actions", where)
  screenshots = _list(fields, "screenshots", where)
  instructions = _list(fields, "step_instructions", where)
  trees = _list(fields, "accessibility_trees", where, required=False)
  if not 0 <= step < len(actions):
    raise errors.field_error(errors.BAD_RECORD, where, "actions",
                             f"step {step} of an episode of {len(actions)} actions")
  if len(screenshots) < len(actions) or len(instructions) < len(actions):
    raise errors.field_error(
        errors.BAD_RECORD, where, "screenshots/step_instructions",
        f"{len(screenshots)} screenshots and {len(instructions)} step instructions for {len(actions)} actions")
  action = parse_action(actions[step], where, step)
  instruction = _text(instructions[step])
  if not isinstance(instruction, str) or not instruction.strip():
    raise errors.field_error(errors.MISSING_FIELD, where, f"step_instructions[{step}]", "missing or empty")
  image = _screenshot(screenshots[step], media_root or raw.base_dir, where, step)
  width = _size(_list(fields, "screenshot_widths", where), step, "screenshot_widths", where)
  height = _size(_list(fields, "screenshot_heights", where), step, "screenshot_heights", where)
  truth = action_truth(action, trees[step] if step < len(trees) else None, where, step)
  truth.update(width=width, height=height, task_type="action", answer=json.dumps(action),
               episode_id=fields.get("episode_id"), step=step, goal=goal.strip(), instruction=instruction.strip())
  responses = fields.get("teacher_responses")
  response = responses[step] if isinstance(responses, list) and step < len(responses) else None
  if sft_targets == "ground_truth":
    response = target(instruction.strip(), action)
  messages = [{"role": "system", "content": system},
              {"role": "user", "content": [{"type": "image"},
                                           {"type": "text", "text": user_text(goal.strip(), instruction.strip(),
                                                                              prompt_style)}]}]
  return Example(id=f"{fields.get('episode_id', raw.where)}/{step}", where=where, messages=messages, images=[image],
                 ground_truth=truth, data_type="image", response=response)


def screenspot_example(raw: RawRecord, *, prompt_style: str = "released", media_root: str = "") -> Example:
  """One ScreenSpot row → a point-grounding Example (ground truth bbox [x1, y1, x2, y2], size)."""
  import PIL.Image  # pylint: disable=g-import-not-at-top
  system = _system(prompt_style)
  where = raw.where
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, where, raw.error or "unreadable row")
  fields = raw.fields
  for key in ("img_filename", "bbox", "instruction"):
    if not fields.get(key):
      raise errors.field_error(errors.MISSING_FIELD, where, key, f"missing or empty (fields: {sorted(fields)})")
  bbox = fields["bbox"]
  if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox) and
          bbox[2] > 0 and bbox[3] > 0):
    raise errors.field_error(errors.BAD_RECORD, where, "bbox",
                             f"expected [left, top, width, height] with a positive size, got {bbox}")
  root = media_root or os.path.join(raw.base_dir, SCREENSPOT_IMAGES)
  path = os.path.join(root, fields["img_filename"])
  try:
    with PIL.Image.open(path) as image:
      width, height = image.size
  except FileNotFoundError:
    raise errors.field_error(errors.BAD_MEDIA, where, "img_filename",
                             f"missing screenshot: file {path} does not exist") from None
  except errors.MEDIA_ERRORS as e:
    raise errors.field_error(errors.BAD_MEDIA, where, "img_filename", f"{path}: {type(e).__name__}: {e}") from None
  x, y, w, h = bbox
  truth = {
      "task_type": "point",
      "bbox": [x, y, x + w, y + h],
      "width": width,
      "height": height,
      "answer": fields["instruction"],
      "data_type": fields.get("data_type", ""),
      "data_source": fields.get("data_source", "")
  }
  messages = [{"role": "system", "content": system},
              {"role": "user", "content": [{"type": "image"},
                                           {"type": "text", "text": f"Click on: {fields['instruction']}"}]}]
  return Example(id=str(fields.get("id", where)), where=where, messages=messages, images=[path], ground_truth=truth,
                 data_type="image")


# --- TFRecord without TensorFlow ---------------------------------------------------------------

def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC32C."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecord(path: str) -> Iterator[bytes]:
  """The records of a TFRecord file (GZIP-compressed when it starts with gzip's magic bytes).

  Raises:
    ValueError naming the file and the record when the framing is broken.
  """
  with open(path, "rb") as probe:
    compressed = probe.read(2) == b"\x1f\x8b"
  with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
    index = 0
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: record {index + 1}: truncated header")
      length, crc = struct.unpack("<QI", header)
      if masked_crc(header[:8]) != crc:
        raise ValueError(f"{path}: record {index + 1}: the length's CRC does not match (not a TFRecord file?)")
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        raise ValueError(f"{path}: record {index + 1}: truncated payload")
      yield data
      index += 1


def _varint(data: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(data):
      raise ValueError("truncated varint")
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
  """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
  pos = 0
  while pos < len(data):
    key, pos = _varint(data, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(data, pos)
    elif wire == 2:
      length, pos = _varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
      if pos > len(data):
        raise ValueError("truncated field")
    elif wire == 5:
      value, pos = data[pos:pos + 4], pos + 4
    elif wire == 1:
      value, pos = data[pos:pos + 8], pos + 8
    else:
      raise ValueError(f"unsupported wire type {wire}")
    yield number, wire, value


def _feature(data: bytes) -> list[Any]:
  """A tf.train.Feature's values: bytes (bytes_list), floats (float_list) or ints (int64_list)."""
  for number, _, inner in _fields(data):
    values = []
    for _, wire, value in _fields(inner):
      if number == 1:
        values.append(value)
      elif number == 2:
        values += list(struct.unpack(f"<{len(value) // 4}f", value)) if wire == 2 else [struct.unpack("<f", value)[0]]
      elif number == 3:
        if wire == 2:
          pos = 0
          while pos < len(value):
            item, pos = _varint(value, pos)
            values.append(item - (1 << 64) if item >= 1 << 63 else item)
        else:
          values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values
  return []


def parse_example(data: bytes) -> dict[str, list[Any]]:
  """A serialized tf.train.Example → {feature name: list of values}."""
  out = {}
  for number, _, features in _fields(data):
    if number != 1:
      continue
    for entry_number, _, entry in _fields(features):
      if entry_number != 1:
        continue
      key, value = "", b""
      for field, _, item in _fields(entry):
        key, value = (item.decode("utf-8"), value) if field == 1 else (key, item if field == 2 else value)
      out[key] = _feature(value)
  return out


def episode_fields(example: dict[str, list[Any]]) -> dict[str, Any]:
  """AndroidControl's Example features → the episode fields `step_example` reads."""
  scalar = lambda key: example[key][0] if example.get(key) else None
  return {"episode_id": scalar("episode_id"), "goal": _text(scalar("goal")),
          "screenshots": list(example.get("screenshots", [])),
          "accessibility_trees": list(example.get("accessibility_trees", [])),
          "screenshot_widths": list(example.get("screenshot_widths", [])),
          "screenshot_heights": list(example.get("screenshot_heights", [])),
          "actions": [_text(a) for a in example.get("actions", [])],
          "step_instructions": [_text(s) for s in example.get("step_instructions", [])]}


def _bytes_feature(values: list[bytes]) -> bytes:
  inner = b"".join(_field_bytes(1, v) for v in values)
  return _field_bytes(1, inner)


def _int_feature(values: list[int]) -> bytes:
  packed = b"".join(_varint_bytes(v) for v in values)
  return _field_bytes(3, _field_bytes(1, packed))


def _varint_bytes(value: int) -> bytes:
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
  return _varint_bytes(number << 3 | 2) + _varint_bytes(len(payload)) + payload


def encode_episode(fields: dict[str, Any]) -> bytes:
  """An episode (screenshots as PNG bytes, trees as bytes) as a serialized tf.train.Example, in
  AndroidControl's features; what `parse_example` + `episode_fields` read back (for fixtures)."""
  as_bytes = lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8")
  features = {"episode_id": _int_feature([fields["episode_id"]]), "goal": _bytes_feature([as_bytes(fields["goal"])]),
              "screenshots": _bytes_feature([as_bytes(s) for s in fields["screenshots"]]),
              "accessibility_trees": _bytes_feature([as_bytes(t) for t in fields.get("accessibility_trees", [])]),
              "screenshot_widths": _int_feature(fields["screenshot_widths"]),
              "screenshot_heights": _int_feature(fields["screenshot_heights"]),
              "actions": _bytes_feature([as_bytes(a) for a in fields["actions"]]),
              "step_instructions": _bytes_feature([as_bytes(s) for s in fields["step_instructions"]])}
  entries = b"".join(_field_bytes(1, _field_bytes(1, key.encode()) + _field_bytes(2, value))
                     for key, value in features.items())
  return _field_bytes(1, entries)


def write_tfrecord(path: str, records: list[bytes]) -> None:
  """A GZIP-compressed TFRecord file of `records`, as AndroidControl ships them."""
  with gzip.open(path, "wb") as f:
    for data in records:
      header = struct.pack("<Q", len(data))
      f.write(header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data)))
