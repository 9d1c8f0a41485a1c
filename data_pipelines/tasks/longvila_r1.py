"""LongVILA-R1's LongVideo-Reason records → GRPO prompts (or CoT-SFT examples) over `nframes` uniform frames.

Source: "Scaling RL to Long Videos" (LongVILA-R1, 2025) and its LongVideo-Reason data. A record
(one element of a JSON list, or one JSONL line):
    {"videos": ["longvila_videos/x.mp4"],   # one video; relative paths resolve against video_dir
     "problem": "Why does ...?\\nA. ...\\nB. ...\\nC. ...\\nD. ...",  # options inside the text
     "answer": "<answer>B</answer>",
     "reasoning": "...",                     # the CoT; read in mode 'sft' only
     "id": "..."}                            # optional; other keys are ignored
  `videos` may also be a bare path string (accepted as one video).

Prompt (one user turn, the video first):
    [{'type': 'video'}, {'type': 'text', 'text': problem + "\\n" + FORMAT_INSTRUCTION}]
The whole video is sampled uniformly: `nframes` frames, first and last frame included, every frame
resized to the run's fixed budget of `frame_pixels` pixels (smart_resize with min = max =
frame_pixels: sides multiples of 28, so a frame's token count does not depend on the video's
resolution, only on its aspect ratio). LongVILA-R1 fixes the frame count per run the same way.

Mode 'sft' (CoT-SFT) keeps the prompt and learns the response
    "<think>" + reasoning + "</think><answer>" + answer + "</answer>"
the think-then-answer form r1jax.rewards.longvila scores; a record without `reasoning` is skipped
(MISSING_FIELD). Mode 'rl' leaves the response unset.

Example (records.Example) fields:
  messages: the prompt above; videos: [VideoRef(path, sampling=the run's uniform sampling)];
  ground_truth: {'answer': the letter inside <answer></answer>, 'solution': the record's
  `answer` as written} — what r1jax.rewards.longvila reads; context: {'video': absolute path}.
"""
from __future__ import annotations

import os
import re
from typing import Any

from data_pipelines import errors, video
from data_pipelines.images import media_name
from data_pipelines.records import Example, VideoRef
from data_pipelines.sources import RawRecord

FORMAT_INSTRUCTION = ("Output the thinking process in <think> </think> and final answer in "
                      "<answer> </answer> tags.")

MODES = ("rl", "sft")
_ANSWER = re.compile(r"\s*(?:<answer>)?\s*(.*?)\s*(?:</answer>)?\s*", re.DOTALL)


def sampling(nframes: int, frame_pixels: int) -> video.VideoSampling:
  """`nframes` uniform frames of the whole video, each resized to ≈ `frame_pixels` pixels."""
  for name, value in (("nframes", nframes), ("frame_pixels", frame_pixels)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.data.{name}={value!r} must be an int >= 1")
  if frame_pixels < 28 * 28:
    raise ValueError(f"config.data.frame_pixels={frame_pixels} must be >= 784 (one 28 x 28 patch)")
  return video.VideoSampling(num_frames=nframes, fps=None, max_frames=nframes,
                             min_pixels=frame_pixels, max_pixels=frame_pixels)


def prompt_text(problem: str) -> str:
  """The question as shown to the model: the problem (options included), then the format rule."""
  return problem.rstrip("\n") + "\n" + FORMAT_INSTRUCTION


def _answer(fields: dict[str, Any], where: str) -> str:
  value = fields.get("answer")
  if value is None:
    raise errors.field_error(errors.MISSING_FIELD, where, "answer", "missing ('<answer>X</answer>')")
  if not isinstance(value, str):
    raise errors.field_error(errors.BAD_RECORD, where, "answer",
                             f"expected '<answer>X</answer>', got {type(value).__name__}")
  answer = _ANSWER.fullmatch(value).group(1)
  if not answer:
    raise errors.field_error(errors.BAD_RECORD, where, "answer", f"no answer in {value[:60]!r}")
  return answer


def _video_path(fields: dict[str, Any], video_dir: str, where: str) -> str:
  """The record's one video as an absolute path that exists and whose headers decode."""
  value = fields.get("videos")
  if isinstance(value, list):
    if len(value) != 1:
      raise errors.field_error(errors.MISSING_FIELD if not value else errors.BAD_RECORD, where,
                               "videos", f"expected one video path, got {len(value)}")
    value = value[0]
  if not isinstance(value, str) or not value:
    raise errors.field_error(errors.MISSING_FIELD, where, "videos", "no video path")
  path = value if os.path.isabs(value) else os.path.normpath(os.path.join(video_dir, value))
  if not os.path.isfile(path):
    raise errors.field_error(errors.BAD_MEDIA, where, "videos", f"video file {path} does not exist")
  try:
    video.probe_video(path)  # headers only: a corrupt file is skipped here, named, not at decode
  except errors.BadExampleError as e:
    raise errors.field_error(errors.BAD_MEDIA, where, "videos", f"{media_name(path)}: {e.detail}") from e
  return path


def sft_response(reasoning: str, answer: str) -> str:
  """The CoT-SFT target: the reasoning in <think>, the answer in <answer>."""
  return f"<think>{reasoning.strip()}</think><answer>{answer}</answer>"


def to_example(raw: RawRecord, *, mode: str = "rl", video_dir: str = "",
               frames: video.VideoSampling | None = None) -> Example:
  """One LongVideo-Reason record → an Example (see the module docstring).

  Args:
    raw: the record; `video_dir` ('' : the data file's folder) resolves relative video paths.
    mode: 'rl' (prompt only) or 'sft' (prompt and the `sft_response` target).
    frames: the run's sampling (`sampling(nframes, frame_pixels)`); None: the dataset's video
      config decides.

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD / BAD_MEDIA, naming 'file:record N' and the field.
  """
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, raw.where, raw.error or "unreadable row")
  fields, where = raw.fields, raw.where
  problem = fields.get("problem")
  if not isinstance(problem, str) or not problem.strip():
    raise errors.field_error(errors.MISSING_FIELD, where, "problem", "missing or not text")
  answer = _answer(fields, where)
  response = None
  if mode == "sft":
    reasoning = fields.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
      raise errors.field_error(errors.MISSING_FIELD, where, "reasoning", "missing or not text (the CoT to learn)")
    response = sft_response(reasoning, answer)
  path = _video_path(fields, video_dir or raw.base_dir, where)
  messages = [{"role": "user", "content": [{"type": "video"},
                                           {"type": "text", "text": prompt_text(problem)}]}]
  return Example(id=str(fields.get("id", where)), where=where, messages=messages,
                 videos=[VideoRef(path, sampling=frames)],
                 ground_truth={"answer": answer, "solution": fields["answer"]}, data_type="video",
                 response=response, context={"video": path})
