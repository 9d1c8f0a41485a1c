"""SATORI-R1's data: VQA-Verify records (ms-swift layout) → prompts + the reward's ground truth.

Source: justairr/SATORI-R1 (`readme.md`: `swift rlhf --rlhf_type grpo --dataset <DATA_PATH>
--system ./prompt.txt`; `plugin.py`: the reward functions, which ms-swift calls with the record's
extra columns as keyword arguments) and the VQA-Verify release (JSON / JSONL rows). One record:

    {"messages": [{"role": "user", "content": "<image>What is the man holding?"},
                  {"role": "assistant", "content": "<caption>…</caption><bbox>[[…]]</bbox><answer>…</answer>"}],
     "images": ["images/000001.jpg"],         # one image; relative paths resolve against image_dir
     "image_caption": "A man in a red shirt holds a kite on a beach.",
     "bboxs": [[112.0, 40.5, 260.0, 310.0]],  # [x1, y1, x2, y2] in ORIGINAL image pixels
     "width": 640, "height": 480,             # the original image's size
     "possible_answers": ["kite", "a kite"]}

The assistant turn is optional: it is the SFT target when present and is ignored by RL. A record
without a system turn gets SATORI's system prompt (prompt.txt, as `--system` adds it). Every
column other than `messages` and `images` reaches the reward as ground truth (r1jax/rewards/satori.py).

Checks (a failing record is skipped, counted and named, or raises with config.data.strict):
* MISSING_FIELD: no `messages`, `images`, `image_caption`, `bboxs`, `width`, `height` or
  `possible_answers`, or an empty one;
* BAD_RECORD: not exactly one image; `width` / `height` not positive integers; `possible_answers`
  not a string or a list of strings; `image_caption` not text; `bboxs` not a list of
  [x1, y1, x2, y2] numbers; the image file's size differs from (width, height) (its boxes would
  then be in another frame); a box with no area inside the image (see below);
* BAD_MEDIA: the image file is missing or its header cannot be read (the pipeline then decodes
  it fully and names it too if the pixels are corrupt).

Boxes outside the image: the released reward uses the ground-truth boxes as stored (shapely over
the raw coordinates, no clipping). r1jax clips each box to [0, width] x [0, height], so a box
that overhangs the border scores the part the model can point at, and rejects (BAD_RECORD, naming
`bboxs` and the box) a box whose clipped area is zero: one wholly outside the image, or with
x2 <= x1 or y2 <= y1, which no prediction could ever match. Predicted boxes are never clipped
(the reward scores them as the released one does).
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import PIL.Image

from data_pipelines import errors, records
from data_pipelines.images import media_name
from data_pipelines.records import Example, LayoutOptions
from data_pipelines.sources import RawRecord

# prompt.txt of justairr/SATORI-R1, character for character.
SYSTEM_PROMPT = (
    "Given an image and a question, follow these steps: First, generate a brief image caption describing the "
    "overall scene. Provide the caption inside <caption> </caption>. Next, determine the relevant reasoning "
    "process for answering the question by identifying the most relevant image regions. Enclose these "
    "coordinates in <bbox>[[x1,y1,x2,y2], ...]</bbox>. Finally, provide the final answer to the question "
    "inside <answer> </answer> tags.")
# A model trained from scratch (the embedded default) reads the same task in a few tokens.
SHORT_SYSTEM_PROMPT = "Caption, boxes, answer."
PROMPT_STYLES = ("released", "short")
# plugin.py's smart_resize limits: the model sees the image at 200,704 - 401,408 pixels and boxes
# are predicted in that resized frame.
MIN_PIXELS = 200704
MAX_PIXELS = 401408
REQUIRED = ("messages", "images", "image_caption", "bboxs", "width", "height", "possible_answers")


def _size(fields: dict[str, Any], key: str, where: str) -> int:
  value = fields[key]
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise errors.field_error(errors.BAD_RECORD, where, key, f"expected a positive integer (pixels), got {value!r}")
  return value


def clip_boxes(boxes: Any, width: int, height: int, where: str) -> list[list[float]]:
  """Ground-truth boxes clipped to the image; raises BAD_RECORD naming a malformed or empty box."""
  if not isinstance(boxes, (list, tuple)) or not boxes:
    raise errors.field_error(errors.BAD_RECORD, where, "bboxs",
                             f"expected a non-empty list of [x1, y1, x2, y2], got {str(boxes)[:80]}")
  clipped = []
  for box in boxes:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(errors.is_finite_number(v) for v in box)):
      raise errors.field_error(errors.BAD_RECORD, where, "bboxs",
                               f"box {str(box)[:60]} is not 4 numbers [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (float(v) for v in box)
    inside = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
      raise errors.field_error(
          errors.BAD_RECORD, where, "bboxs", f"box {list(box)} has no area inside the {width}x{height} "
          "image (outside it, or x2 <= x1 / y2 <= y1)")
    clipped.append(inside)
  return clipped


def _accepted(value: Any, where: str) -> list[str]:
  accepted = [value] if isinstance(value, str) else value
  if not (isinstance(accepted, (list, tuple)) and accepted and all(isinstance(a, str) for a in accepted)):
    raise errors.field_error(errors.BAD_RECORD, where, "possible_answers",
                             f"expected a string or a list of strings, got "
                             f"{str(value)[:80]}")
  return list(accepted)


def _image_size(ref: records.MediaRef, where: str) -> tuple[int, int]:
  """(width, height) from the image header (EXIF orientation applied, as the decoder does)."""
  name = media_name(ref)
  try:
    with PIL.Image.open(ref if isinstance(ref, str) else io.BytesIO(ref)) as image:
      orientation = image.getexif().get(0x0112, 1)
      width, height = image.size
  except FileNotFoundError as e:
    raise errors.field_error(errors.BAD_MEDIA, where, "images", f"image file {name} does not exist") from e
  except errors.MEDIA_ERRORS as e:
    raise errors.field_error(errors.BAD_MEDIA, where, "images", f"{name}: {type(e).__name__}: {e}") from e
  return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def to_example(raw: RawRecord, *, image_dir: str = "", prompt_style: str = "released") -> Example:
  """One VQA-Verify record → an Example (see the module docstring for the checks).

  Returns:
    Example with messages [system, user (image, question)], one image, response = the assistant
    turn (or None), ground_truth = the record's columns with `bboxs` clipped and `answer` =
    possible_answers[0].

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD / BAD_MEDIA naming the record and the field.
  """
  if prompt_style not in PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={prompt_style!r} must be one of {PROMPT_STYLES}")
  where = raw.where
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, where, raw.error or "unreadable row")
  fields = raw.fields
  for key in REQUIRED:
    value = fields.get(key)
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
      raise errors.field_error(errors.MISSING_FIELD, where, key, f"missing or empty (columns: {sorted(fields)})")
  if not isinstance(fields["messages"], list):
    raise errors.field_error(errors.BAD_RECORD, where, "messages", f"expected a list of {{role, content}}, got "
                             f"{type(fields['messages']).__name__}")
  images = fields["images"] if isinstance(fields["images"], (list, tuple)) else [fields["images"]]
  if len(images) != 1:
    raise errors.field_error(errors.BAD_RECORD, where, "images", f"expected one image, got {len(images)}")
  if not isinstance(fields["image_caption"], str) or not fields["image_caption"].strip():
    raise errors.field_error(errors.BAD_RECORD, where, "image_caption", "expected non-empty text")
  width, height = _size(fields, "width", where), _size(fields, "height", where)
  accepted = _accepted(fields["possible_answers"], where)
  boxes = clip_boxes(fields["bboxs"], width, height, where)

  system = SYSTEM_PROMPT if prompt_style == "released" else SHORT_SYSTEM_PROMPT
  example = records.to_example(raw, LayoutOptions(layout="swift", image_key="images", system_prompt=system,
                                                  media_root=image_dir))
  actual = _image_size(example.images[0], where)
  if actual != (width, height):
    raise errors.field_error(errors.BAD_RECORD, where, "width/height",
                             f"the record says {width}x{height} but the image is "
                             f"{actual[0]}x{actual[1]}")
  ground_truth = dict(example.ground_truth,
                      bboxs=boxes,
                      width=width,
                      height=height,
                      possible_answers=accepted,
                      answer=accepted[0])
  return dataclasses.replace(example, ground_truth=ground_truth, data_type="image")
