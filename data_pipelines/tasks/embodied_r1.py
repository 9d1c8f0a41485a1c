"""Embodied-R1's released data format: Embodied-Points-200K Parquet rows → checked Examples.

Source: pickxiguapi/Embodied-R1, `verl/utils/dataset.py` (EasyR1's RLHFDataset: Parquet files read
with `datasets`, `prompt_key=problem`, `answer_key=answer`, `image_key=images`, the `<image>` tags
of `problem` split into chat items), `scripts/config_stage{1,2}.yaml` (the files of each stage) and
`verl/utils/reward_score/embodiedr1.py` (the ground truth). A row:

    problem    str   the question with one `<image>` tag, then the answer-format instruction
    answer     str   `<type>TYPE</type>` + the ground truth (r1jax.rewards.embodied_r1: QA text, a
                     JSON point list, {"bbox", "free_points"}, {"trajectory"}, {"segmentation"})
    images     list  HF `datasets` Image structs {"bytes": PNG/JPEG, "path": str | None}
    data_type  str   passed through (the released loader hands it on unchanged)

Coordinates are pixels of the image as stored, which is the model-input frame once the processor
has resized it (the released reward compares the predicted points with the ground truth as they
are); rows therefore carry no width / height and the reward rescales nothing.

Checks, each a skipped record counted by reason and named ('file:record N: field ...'), or an error
under `config.data.strict`:
  * no image (`images` empty or absent): missing_field;
  * an image that does not open (missing file, corrupt bytes): bad_media, naming the image;
  * an `answer` without a known `<type>` or whose ground truth does not parse for its type:
    bad_record, naming `answer`;
  * ground-truth coordinates outside the image: bad_record. The paper's rule for points outside
    the image is that they fall in no region (its evaluation counts a predicted point outside the
    image as a miss, `check_points_in_mask`), so a target outside the image can never be hit:
    such a record is rejected, never clipped. Predicted points are not clipped either: they score
    as misses (r1jax.rewards.embodied_r1 tests membership as given).
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import PIL.Image

from data_pipelines import errors, records
from data_pipelines.records import Example
from data_pipelines.sources import RawRecord
from r1jax.rewards import embodied_r1 as embodied_r1_reward


def _image_size(image: records.MediaRef, where: str) -> tuple[int, int]:
  """(width, height) read from the image header; BAD_MEDIA naming the image if it does not open."""
  name = image if isinstance(image, str) else f"{where}: images[0] ({len(image)} bytes)"
  try:
    with PIL.Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
      return opened.size
  except (*errors.MEDIA_ERRORS, ValueError) as e:  # PIL raises ValueError on some bad headers
    raise errors.media_error(name, e) from e


def _coordinates(kind: str, payload: Any) -> Iterable[tuple[float, float]]:
  """Every ground-truth point of a pointing task (box corners included)."""
  if kind == "qa":
    return []
  if kind == "free_point":
    (x1, y1, x2, y2), free = payload
    return [(x1, y1), (x2, y2), *free]
  return payload


def check_ground_truth(answer: Any, size: tuple[int, int], where: str) -> str:
  """The task type of a released `answer`; BAD_RECORD naming `answer` if it does not parse or
  lies outside the `size` = (width, height) image."""
  try:
    type_name, kind, payload = embodied_r1_reward.parse_answer(answer)
  except ValueError as e:
    raise errors.BadExampleError(errors.BAD_RECORD, where, f"field 'answer': {e}") from e
  width, height = size
  outside = [p for p in _coordinates(kind, payload) if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
  if outside:
    raise errors.BadExampleError(
        errors.BAD_RECORD, where, f"field 'answer': {len(outside)} ground-truth point(s) outside the "
        f"{width}x{height} image, e.g. {list(outside[0])} (type {type_name}; rejected, not clipped)")
  return type_name


def to_example(raw: RawRecord, *, layout: records.LayoutOptions) -> Example:
  """One Embodied-Points-200K row (or a synthetic one in its layout) → an Example.

  The Example is records.py's EasyR1 reading of the row (ground_truth: 'answer' plus the other
  columns), after the checks of the module docstring; context gets 'task_type'.

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD / BAD_MEDIA naming 'file:record N' and the field.
  """
  if raw.fields is not None and not raw.fields.get(layout.image_key):  # before the tag count check names it
    raise errors.BadExampleError(errors.MISSING_FIELD, raw.where, f"field {layout.image_key!r}: the row has no image")
  example = records.to_example(raw, layout)
  size = _image_size(example.images[0], example.where)
  task_type = check_ground_truth(example.ground_truth.get("answer"), size, example.where)
  return dataclasses.replace(example, context={**example.context, "task_type": task_type})
