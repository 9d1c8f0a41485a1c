"""Omni-R1's published data formats: ReVOS / MeViS referring video object segmentation → prompts.

Source: aim-uofa/Omni-R1, `src/omni_r1/load_datasets/revos.py` and `mevis.py` (record layout, prompt
texts, masks → per-frame boxes, the detail system's prompt) and `refavs.py` (RefAVS, audio-visual).

Layout (a ReVOS or MeViS split folder, `config.data.path`):
    <dir>/meta_expressions_train_.json   (ReVOS; MeViS: meta_expressions.json)
        {"videos": {"<video>": {"frames": ["00000", ...],
                                "expressions": {"<exp_id>": {"exp": "the dog running left",
                                                             "obj_id": [0], "anno_id": ["17"]}}}}}
    <dir>/mask_dict.json                 {"<anno_id>": [COCO RLE or null, one per frame]}
    <dir>/JPEGImages/<video>/<frame>.jpg (or <dir>/<video>/<frame>.jpg)
  A COCO RLE is {"size": [h, w], "counts": "<compressed string>"} (pycocotools) or an
  uncompressed {"size": [h, w], "counts": [run lengths]}; null is an empty mask.

One record per (video, expression) in sorted order (the released loader draws one expression of a
video at random per item; r1jax visits each once per epoch). A record's frames: F = min(#frames,
`max_frames`) picked with linspace over the video's frames (the released loader draws F in
[min_frames, max_frames]; r1jax fixes it so shapes stay static), shown as a 2 fps video.

Time labels (`time_labels`, an r1jax option for small models): the frames become one-second clips
(two frames each, one temporal patch), each followed by its start second as text ("0s", "1s",
...), so a frame's time is read from the prompt (after the clip, the label's own token can attend
to the clip just before it, and an answer can copy the label whose clip shows the target). Qwen2.5-VL and Qwen2.5-Omni carry absolute time
in their rotary positions (MRoPE / TMRoPE), which a tiny model trained for minutes does not learn to
read (as LOVE-R1's default draws a clock band for its stamped timestamps).

Ground truth (what r1jax.rewards.omni_r1 reads): `bboxs` [num_obj, F, 4] in original pixels, from
the masks of the expression's first `max_objects` anno_ids (the released `select_number`, default
1; it picks them at random), `[-1, -1, -1, -1]` where the object is absent; boxes are
[x1, y1, x2, y2] with x2, y2 the last mask column / row (the released `generate_bbox`).

Context (the environment's and the reward's): `frames` (the F frame files the policy saw, the
detail system renders the chosen ones at high resolution), `frame_hw` (original height, width),
`detail_min_pixels` / `detail_max_pixels` (the detail model's input bounds), `expression`.

Modes: 'rl' (the policy's prompt), 'sft' (the prompt + the record's `answer`, an r1jax extension
the synthetic task writes: the teacher's completion; with the dataset's `with_detail`, the split's
detail records too), 'detail' (the detail system's SFT examples: r1jax's own JSON list
`detail.json` of {"image", "description", "bbox"}, written by the synthetic task; the released
recipe's detail system is the pretrained reference model, which needs no such data).

RefAVS (a folder with `metadata.csv` and `media/<vid>/audio.wav`) and any record carrying audio
need Qwen2.5-Omni's audio tower, which r1jax does not have: the dataset refuses them, naming the
record and the missing capability.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import errors
from data_pipelines.records import Example, VideoRef
from data_pipelines.sources import RawRecord
from data_pipelines.video import FrameSequence, VideoSampling

FPS = 2.0  # r1jax.rewards.omni_r1.FPS: the policy's frames are shown at 2 fps
EXPRESSION_FILES = ("meta_expressions_train_.json", "meta_expressions.json", "meta_expressions_valid_.json")
MODES = ("rl", "sft", "detail")
PROMPT_STYLES = ("released", "short")

# --- The released texts (revos.py). ------------------------------------------------------------
GLOBAL_TEMPLATE = (
    "Given a [frames] seconds video and a reference instruction: [ref_prompt] that may involve temporal behavior, "
    "identify the exact object(s) [ref_prompt] in the video that matches the description. "
    "Select about 1-4 most relevant moments that contain the referred object(s) with the best view. "
    "Then, simplify the identified object into a short and clear visual grounding description that can be used "
    "for single-image reference at each moment. "
    "Avoid temporal phrases and comparison phrases like 'walking', 'moving', 'approaching', 'bigger' or "
    "'smaller', but instead describe visible visual cues like clothing, pose, position, or grouping. "
    "Try to select moments that are **temporally well-distributed across the video**, rather than clustered in "
    "the same part of the timeline. "
    "Avoid selecting multiple timestamps that are adjacent or overlapping; instead, prefer clearly distinct "
    "moments that each offer unique visual information. "
    "It's better to choose the most relevant and highly representative moments **spanning the entire video**, "
    "rather than picking all from the beginning. "
    "Explain your reasoning in <think>...</think> and output the final result in <answer>...</answer> in json "
    "format with 'mm:ss.ff' format for time depiction.")
# The tiny from-scratch policy of the embedded default reads the same task in a few tokens.
SHORT_TEMPLATE = "Find [ref_prompt] in the [frames] s video: keyframes and a description."


def global_prompt(expression: str, num_frames: int, style: str = "released") -> str:
  """The global system's instruction for `expression` over `num_frames` frames (2 fps)."""
  template = GLOBAL_TEMPLATE if style == "released" else SHORT_TEMPLATE
  return template.replace("[ref_prompt]", f"[{expression}]").replace("[frames]", str(num_frames / FPS))


def detail_messages(description: str) -> list[dict[str, Any]]:
  """The detail system's chat (r1jax.rewards.omni_r1.detail_messages: the keyframe, then the released
  grounding instruction). Imported on use: importing r1jax.rewards loads every recipe's reward."""
  from r1jax.rewards import omni_r1 as reward  # pylint: disable=g-import-not-at-top  (see the docstring)

  return reward.detail_messages(description)


def clip_label(seconds: float) -> str:
  """The text after a time-labelled clip: its start second ("3s")."""
  return f"{int(seconds)}s"


def time_labelled_clips(num_frames: int) -> list[tuple[int, int]]:
  """[start, stop) frame ranges of the one-second clips (2 frames at FPS; a last odd frame alone)."""
  step = int(FPS)
  return [(start, min(start + step, num_frames)) for start in range(0, num_frames, step)]


def time_text(seconds: float) -> str:
  """'mm:ss.ff' (the format the reward parses)."""
  minutes, rest = divmod(float(seconds), 60.0)
  return f"{int(minutes):02d}:{rest:05.2f}"


def answer_text(intervals: Sequence[tuple[float, float, str]], reasoning: str = "") -> str:
  """A global-system completion: `<think>reasoning</think><answer>` JSON objects `</answer>`."""
  objects = "".join(json.dumps({"start_time": time_text(start), "end_time": time_text(end), "description": text})
                    for start, end, text in intervals)
  return f"<think>{reasoning}</think><answer>{objects}</answer>"


def box_text(box: Sequence[float]) -> str:
  """A detail-system answer: `{"bbox_2d": [x1, y1, x2, y2]}` (Qwen2.5-VL's JSON)."""
  return json.dumps({"bbox_2d": [int(round(v)) for v in box]})


# --- Masks. --------------------------------------------------------------------------------------
def _decode_counts(counts: str) -> list[int]:
  """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString)."""
  runs, pos = [], 0
  while pos < len(counts):
    value, shift, more = 0, 0, True
    while more:
      char = ord(counts[pos]) - 48
      value |= (char & 0x1F) << (5 * shift)
      more = bool(char & 0x20)
      pos += 1
      shift += 1
      if not more and char & 0x10:
        value |= -1 << (5 * shift)
    if len(runs) > 2:
      value += runs[-2]
    runs.append(value)
  return runs


def rle_decode(rle: Mapping[str, Any] | None, hw: tuple[int, int] | None = None) -> np.ndarray:
  """bool [h, w] of a COCO RLE (compressed string or run-length list, column-major); None: empty `hw`.

  Raises:
    ValueError naming what is wrong with the RLE.
  """
  if rle is None:
    if hw is None:
      raise ValueError("an empty (null) mask needs the frame size")
    return np.zeros(hw, bool)
  if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
    raise ValueError(f"expected a COCO RLE {{'size': [h, w], 'counts': ...}}, got {str(rle)[:80]}")
  h, w = (int(v) for v in rle["size"])
  counts = rle["counts"]
  runs = _decode_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
  if sum(runs) != h * w or any(r < 0 for r in runs):
    raise ValueError(f"RLE runs cover {sum(runs)} pixels, the mask has {h}x{w}={h * w}")
  flat = np.zeros(h * w, bool)
  pos = 0
  for index, run in enumerate(runs):
    if index % 2:
      flat[pos:pos + run] = True
    pos += run
  return flat.reshape(w, h).T


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
  """The uncompressed COCO RLE of bool [h, w] (column-major runs, starting with zeros)."""
  flat = np.asarray(mask, bool).T.reshape(-1)
  changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
  bounds = np.concatenate([[0], changes, [flat.size]])
  runs = np.diff(bounds).tolist()
  if flat.size and flat[0]:
    runs = [0] + runs
  return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def mask_box(mask: np.ndarray) -> list[int]:
  """[x1, y1, x2, y2] of a mask's pixels (last column / row included), [-1] * 4 when empty."""
  ys, xs = np.nonzero(mask)
  if not len(xs):
    return [-1, -1, -1, -1]
  return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


# --- Reading the layout. -------------------------------------------------------------------------
def audio_capability_error(where: str) -> ValueError:
  return ValueError(f"{where}: an audio-visual record (RefAVS) needs an audio tower (Qwen2.5-Omni's audio "
                    "encoder), which r1jax does not have yet; use ReVOS / MeViS records (video only)")


def expression_file(folder: str, name: str = "") -> str:
  """The expressions JSON of a split folder (`name`, else the first of EXPRESSION_FILES present).

  Raises:
    ValueError naming the folder and the files looked for; for a RefAVS folder, the missing
    audio capability and its first record.
  """
  if not os.path.isdir(folder):
    raise ValueError(f"config.data.path={folder!r} is not a folder (a ReVOS / MeViS split: "
                     f"{' or '.join(EXPRESSION_FILES)}, mask_dict.json, JPEGImages/)")
  refavs = os.path.join(folder, "metadata.csv")
  if os.path.isfile(refavs) and not name:
    with open(refavs, encoding="utf-8") as f:
      header, first = f.readline().strip().split(","), f.readline().strip().split(",")
    uid = dict(zip(header, first)).get("uid", "?")
    raise audio_capability_error(f"{refavs}:row 1 (uid {uid})")
  for candidate in ([name] if name else EXPRESSION_FILES):
    path = candidate if os.path.isabs(candidate) else os.path.join(folder, candidate)
    if os.path.isfile(path):
      return path
  raise ValueError(f"{folder}: no expressions file ({', '.join([name] if name else EXPRESSION_FILES)})")


class ExpressionSource:
  """One RawRecord per (video, expression) of a ReVOS / MeViS split, sorted (a grain source).

  Fields: video, exp_id, exp, obj_id, anno_id, frames (the video's frame names, sorted) and any
  extra keys of the expression entry; `base_dir` is the split folder.
  """

  def __init__(self, folder: str, expressions: str = ""):
    self.folder = os.path.abspath(folder)
    self.path = expression_file(self.folder, expressions)
    with open(self.path, encoding="utf-8") as f:
      videos = json.load(f)
    if not isinstance(videos, dict) or not isinstance(videos.get("videos"), dict):
      raise ValueError(f"{self.path}: expected {{'videos': {{video: {{'frames': [...], 'expressions': {{...}}}}}}}}")
    self._rows: list[tuple[str, str, Any, Any]] = []
    for video in sorted(videos["videos"]):
      entry = videos["videos"][video]
      expressions_of = entry.get("expressions") if isinstance(entry, dict) else None
      if not isinstance(expressions_of, dict):
        self._rows.append((video, "", entry, None))  # skipped, named, by to_example
        continue
      for exp_id in sorted(expressions_of, key=lambda k: (len(k), k)):
        self._rows.append((video, exp_id, entry.get("frames"), expressions_of[exp_id]))

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> RawRecord:
    video, exp_id, frames, expression = self._rows[index]
    where = f"{self.path}:{video}/{exp_id}" if exp_id else f"{self.path}:{video}"
    if not isinstance(expression, dict):
      return RawRecord(None, where, self.folder, error="a video entry needs 'frames' and an 'expressions' object")
    return RawRecord({**expression, "video": video, "exp_id": exp_id, "frames": frames}, where, self.folder)


@functools.lru_cache(maxsize=4)
def _mask_dict(path: str) -> dict[str, Any]:
  """mask_dict.json, read once per process (the released loader holds it in memory too)."""
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _frame_dir(base_dir: str, video: str) -> str:
  images = os.path.join(base_dir, "JPEGImages", video)
  return images if os.path.isdir(images) else os.path.join(base_dir, video)


def frame_indices(num_video_frames: int, max_frames: int) -> list[int]:
  """The frames the policy sees: min(#frames, max_frames) of them, linspace over the video."""
  count = min(num_video_frames, max_frames)
  return np.linspace(0, num_video_frames - 1, count).astype(int).tolist()


def _boxes(fields: dict[str, Any], indices: list[int], hw: tuple[int, int], base_dir: str, where: str,
           max_objects: int) -> list[list[list[int]]]:
  anno_ids = fields.get("anno_id")
  if not isinstance(anno_ids, list) or not anno_ids:
    raise errors.field_error(errors.MISSING_FIELD, where, "anno_id", "no mask annotation ids")
  masks = _mask_dict(os.path.join(base_dir, "mask_dict.json"))
  boxes = []
  for anno in anno_ids[:max_objects]:
    per_frame = masks.get(str(anno))
    if not isinstance(per_frame, list) or len(per_frame) < max(indices) + 1:
      raise errors.field_error(errors.BAD_RECORD, where, "anno_id",
                               f"mask_dict.json has no {max(indices) + 1} frame masks "
                               f"for anno_id {anno!r}")
    try:
      boxes.append([mask_box(rle_decode(per_frame[i], hw)) for i in indices])
    except ValueError as e:
      raise errors.field_error(errors.BAD_RECORD, where, "anno_id", f"mask of anno_id {anno!r}: {e}") from e
  return boxes


def to_example(raw: RawRecord, *, mode: str = "rl", max_frames: int = 24, max_objects: int = 1,
               policy_max_pixels: int = 128 * 28 * 28, policy_min_pixels: int = 0,
               detail_max_pixels: int = 28 * 28 * 1280, detail_min_pixels: int = 56 * 56,
               prompt_style: str = "released", time_labels: bool = False) -> Example:
  """One (video, expression) record → the global system's Example (see the module docstring).

  With `time_labels`, the frames are one-second clips (two frames: one temporal patch of
  Qwen2.5-VL), each followed by its start time as text (`clip_label`), instead of one video.

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD / BAD_MEDIA naming the record and the field.
    ValueError: the record carries audio (RefAVS): r1jax has no audio tower.
  """
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, raw.where, raw.error or "unreadable record")
  fields, where = raw.fields, raw.where
  if fields.get("audio") or fields.get("audio_path"):
    raise audio_capability_error(where)
  expression = fields.get("exp")
  if not isinstance(expression, str) or not expression.strip():
    raise errors.field_error(errors.MISSING_FIELD, where, "exp", "no referring expression")
  names = fields.get("frames")
  if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
    raise errors.field_error(errors.MISSING_FIELD, where, "frames", "the video's entry lists no frame names")
  names = sorted(names)
  indices = frame_indices(len(names), max_frames)
  folder = _frame_dir(raw.base_dir, fields["video"])
  paths = tuple(os.path.join(folder, names[i] + ".jpg") for i in indices)
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise errors.field_error(errors.BAD_MEDIA, where, "frames",
                             f"{len(missing)} of {len(paths)} frame files missing, e.g. "
                             f"{missing[0]}")
  hw = _image_hw(paths[0])
  boxes = _boxes(fields, indices, hw, raw.base_dir, where, max_objects)
  response = None
  if mode == "sft":
    response = fields.get("answer")
    if not isinstance(response, str) or not response:
      raise errors.field_error(errors.MISSING_FIELD, where, "answer",
                               "SFT needs the expression's 'answer' (a teacher completion)")
  prompt = {"type": "text", "text": global_prompt(expression, len(paths), prompt_style)}
  clips = time_labelled_clips(len(paths)) if time_labels else [(0, len(paths))]
  content = []
  for start, stop in clips:  # the label after its clip: the label's token reads the clip just before it
    content.append({"type": "video"})
    content += [{"type": "text", "text": clip_label(start / FPS)}] if time_labels else []
  messages = [{"role": "user", "content": content + [prompt]}]
  min_pixels = min(policy_min_pixels or policy_max_pixels, policy_max_pixels)
  videos = [VideoRef(FrameSequence(paths[start:stop], FPS),
                     sampling=VideoSampling(num_frames=stop - start, fps=None, max_frames=stop - start,
                                            max_pixels=policy_max_pixels, min_pixels=min_pixels))
            for start, stop in clips]
  ground_truth = {"answer": response, "bboxs": boxes, "expression": expression}
  context = {"frames": list(paths), "frame_hw": list(hw), "detail_min_pixels": detail_min_pixels,
             "detail_max_pixels": detail_max_pixels, "expression": expression}
  return Example(id=f"{fields['video']}/{fields['exp_id']}", where=where, messages=messages,
                 videos=videos, ground_truth=ground_truth,
                 data_type="video", response=response, context=context)


def _image_hw(path: str) -> tuple[int, int]:
  import PIL.Image  # pylint: disable=g-import-not-at-top

  try:
    with PIL.Image.open(path) as image:
      return image.height, image.width
  except (OSError, SyntaxError) as e:
    raise errors.media_error(path, e) from e


def detail_example(raw: RawRecord, *, detail_max_pixels: int = 28 * 28 * 1280,
                   detail_min_pixels: int = 56 * 56) -> Example:
  """One detail-model SFT record {"image", "description", "bbox" (original pixels)} → an Example whose
  response is the box in the detail model's resized pixels (`box_text`)."""
  from r1jax.processing import smart_resize  # pylint: disable=g-import-not-at-top

  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, raw.where, raw.error or "unreadable record")
  fields, where = raw.fields, raw.where
  image, description, box = fields.get("image"), fields.get("description"), fields.get("bbox")
  if not isinstance(image, str) or not isinstance(description, str):
    raise errors.field_error(errors.MISSING_FIELD, where, "image", "a detail record needs 'image' and 'description'")
  if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
    raise errors.field_error(errors.BAD_RECORD, where, "bbox", f"expected [x1, y1, x2, y2], got {str(box)[:60]}")
  path = image if os.path.isabs(image) else os.path.join(raw.base_dir, image)
  h, w = _image_hw(path)
  rh, rw = smart_resize(h, w, min_pixels=detail_min_pixels, max_pixels=detail_max_pixels)
  scaled = [box[0] * rw / w, box[1] * rh / h, box[2] * rw / w, box[3] * rh / h]
  return Example(id=where, where=where, messages=detail_messages(description), images=[path],
                 ground_truth={"answer": box_text(scaled), "bbox": box}, data_type="image",
                 response=box_text(scaled), context={})


def either_example(raw: RawRecord, *, expression, detail) -> Example:
  """`detail(raw)` for a detail record (it has 'image'), else `expression(raw)`: the mixed SFT data of
  mode 'sft' with `with_detail` (one model learns both systems)."""
  return detail(raw) if raw.fields is not None and "image" in raw.fields else expression(raw)
