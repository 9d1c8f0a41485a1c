"""LOVE-R1's released data format: records → step-1 prompts (RL) or per-step CoT targets (SFT).

Source: HumanMLLM/LOVE-R1, `src/r1-v/src/open_r1/grpo.py` (record fields, type templates, zoom
instruction), `trainer/grpo_trainer.py` (the step-1 and step-2 prompts) and `sft_video.py` (the
CoT SFT records). The texts below are the released ones, character for character.

RL record (a JSON list or JSONL; `grpo.py`'s LazySupervisedDataset):
    {"path": "videos/x.mp4",            # relative paths resolve against `video_dir`
     "problem": "What ...?\\n", "options": ["A. ...", "B. ...", ...],
     "problem_type": "multiple choice",  # a key of TYPE_TEMPLATE
     "data_type": "video", "solution": "<answer>B</answer>",
     "zoomin_intervals": [[t1, t2], ...],  # zooms already taken: their clips are in the prompt
     "tgt": [[s, e], ...]}               # optional: a grounding sample (reward: IoU with tgt > 0)
  Extra keys pass through: `duration` (seconds; probed from the video when absent) and
  `clue_intervals` (the true evidence intervals, CG-Bench's name; r1jax's synthetic task writes
  them for the zoom-IoU metric) are read, anything else is ignored.

Step-1 prompt (`grpo_trainer.py`):
    system: SYSTEM_MESSAGE (the red numbers on each frame are timestamps)
    user:   "Full video [0, T]:" <overview video>
            ("Subset zoom-in video clip [a, b]:" <zoom clip>)*   # the record's zoomin_intervals
            question_text(record) + ZOOM_INSTRUCTION
  The overview is `overview_budget` frames stamped with their red integer second; the zoom
  clips `zoom_budget` frames (also stamped). Grounding records (`tgt`) show no earlier zooms at
  step 1 (as released) and have their completion pre-filled with the zoom prefix
  (`context['forced_prefix']`).

Step 2. The released trainer builds a fresh prompt (overview + every zoom clip + question).
r1jax continues the episode instead (token-in/token-out): the environment appends the user turn
`zoom_turn(t1, t2)` (caption + clip from `zoom_clip`; `video_clip(context, t1, t2)` is the
environment's hook) after the model's step-1 completion. The SFT step-2 examples below use that
same layout, so SFT teaches what the rollout will show.

CoT SFT records (`sft_video.py`; the 38k file itself is not public, its keys are):
    {"video": "videos/x.mp4",  # or "path"
     "messages": [{"role": "user", "content": [{"type": "text", "text": question_text}]},
                  {"role": "assistant", "content": "<step text>"}, ...],
     "cot_data": true, "zoomin_intervals": [[t1, t2], ...]}
  `zoomin_intervals` holds the clips shown before the LAST assistant turn. Step texts start with
  `I need to zoom in on the video.\\n\\n` (… `\\boxed{[t1, t2]}`) or `I get the answer.\\n\\n`
  (… `\\boxed{X}`). How records become SFT examples (mode 'sft'):
    * one assistant turn: one example, prompt = the step-1 prompt with every zoomin_interval
      clip in the user turn (the released layout: a zoom step asks for one more clip, an answer
      step answers from the clips it was shown);
    * two assistant turns (zoom text, answer text): two examples, in r1jax's continuation layout
      - step 1: step-1 prompt (earlier zooms = zoomin_intervals minus the chain's zoom) → the
        zoom text;
      - step 2: step-1 prompt + the zoom text as an assistant turn + `zoom_turn(t1, t2)` → the
        answer text, where [t1, t2] is the zoom text's `\\boxed{}` and must be one of
        zoomin_intervals.
    * no assistant turn: skipped (MISSING_FIELD): a bare letter would teach no step format.
  In mode 'rl' a CoT record gives its step-1 prompt (question from the user turn).

Example (records.Example) fields:
  messages: the chat above; videos: [overview VideoRef, earlier-zoom VideoRefs...] in the order of
  the {'type': 'video'} items, each with its own `sampling` (the dataset's video config is not
  used); ground_truth: {'answer': the solution's content (None without one), 'solution', 'tgt',
  'duration', 'problem_type', 'clue_intervals' (when known)} — what r1jax.rewards.love_r1
  reads; context: {'video': absolute path, 'duration': s, 'zoomin_intervals': the record's,
  'earlier_zooms': zooms shown in the step-1 prompt (the reward's `earlier_zooms`),
  'forced_prefix': '' or the zoom prefix, 'step': 1 or 2 (SFT), 'budgets': FrameBudgets fields}.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from data_pipelines import errors, video
from data_pipelines.images import media_name
from data_pipelines.records import Example, VideoRef
from data_pipelines.sources import RawRecord

# --- The released texts. ---------------------------------------------------------------------
SYSTEM_MESSAGE = ("You are a helpful assistant. The red numbers on each frame represent the "
                  "timestamp in seconds and you can refer them during temporal grounding.")
ZOOM_INSTRUCTION = (
    "\nBased on the video and the user question, determine whether the visual content is "
    "sufficient to answer the question. If you have enough information, reason using the visual "
    "content and provide your final answer within \\boxed{}. Otherwise, you may zoom in a "
    "specific interval of the video related to the question for more details based on your "
    "reasoning. Also provide the time span of the interval in seconds within "
    "\\boxed{[start_time, end_time]}.")
TYPE_TEMPLATE = {
    "multiple choice": "\nProvide only the single option letter (e.g., A, B, C, D, etc.) as the "
                       "answer.",
    "numerical": "\nProvide the numerical value (e.g., 42 or 3.14) without units as the answer.",
    "OCR": " \nTranscribe text from the image/video clearly and provide your text answer.",
    "free-form": "\nProvide your text answer.",
    "regression": "\nProvide the numerical value (e.g., 42 or 3.14) without units as the answer.",
    "tal": "\nProvide the answer in list format, ie, [start_time, end_time].",
}
MODES = ("rl", "sft")

_ZOOM_BOXED = re.compile(r"\\boxed\{\s*\[\s*(-?\d+)\s*,\s*(-?\d+)\s*\]\s*\}")


def prefixes() -> tuple[str, str]:
  """(zoom prefix, answer prefix) of a step text, as the reward parses them.

  They are defined once, in r1jax.rewards.love_r1, imported here on use: importing r1jax.rewards
  loads every recipe's reward (about 2 s), which `import data_pipelines.tasks` should not pay.
  """
  from r1jax.rewards import love_r1  # Deferred: see the docstring.

  return love_r1.ZOOM_PREFIX, love_r1.ANSWER_PREFIX


def full_video_caption(duration: float) -> str:
  """'Full video [0, T]:' with T the integer seconds of the video."""
  return "Full video [0, %d]:" % int(duration)


def zoom_caption(t1: float, t2: float) -> str:
  """'Subset zoom-in video clip [t1, t2]:' (integer seconds; the reward module's text)."""
  return video.zoom_clip_label(t1, t2)


def question_text(problem: str, options: Sequence[str], problem_type: str) -> str:
  """The question as released: problem, 'Options:' lines for multiple choice, type template."""
  text = problem
  if problem_type == "multiple choice" and options:
    text += "Options:\n" + "".join(f"{option}\n" for option in options)
  return text + TYPE_TEMPLATE[problem_type]


# --- Frame budgets. --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FrameBudgets:
  """Caps on the paper's sampling rules (None: the paper's, see r1jax.rewards.love_r1).

  Overview: min(⌊2·duration⌋, overview_max_frames) frames of ≤ overview_max_pixels pixels;
  zoom clip [t1, t2]: min(⌊2·(t2 − t1)⌋, zoom_max_frames) frames of ≤ zoom_max_pixels
  pixels.
  """
  overview_max_frames: int | None = None
  overview_max_pixels: int | None = None
  zoom_max_frames: int | None = None
  zoom_max_pixels: int | None = None

  @classmethod
  def from_options(cls, options: Mapping[str, Any] | FrameBudgets | None) -> FrameBudgets:
    """From `config.data`, a DataConfig, a dict, or FrameBudgets; 0 / missing → None."""
    if isinstance(options, FrameBudgets):
      return options
    options = getattr(options, "options", options) or {}  # a DataConfig keeps them in .options
    values = {}
    for field in dataclasses.fields(cls):
      value = options.get(field.name) if hasattr(options, "get") else None
      if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 0):
        raise ValueError(f"config.data.{field.name}={value!r} must be an int >= 0 "
                         "(0: the paper's rule)")
      values[field.name] = value or None
    return cls(**values)

  def overview(self, duration: float) -> video.VideoSampling:
    return video.love_r1_overview_sampling(duration, max_frames=self.overview_max_frames,
                                           max_pixels=self.overview_max_pixels)

  def zoom(self, t1: float, t2: float) -> video.VideoSampling:
    return video.love_r1_zoom_sampling(t1, t2, max_frames=self.zoom_max_frames,
                                       max_pixels=self.zoom_max_pixels)


def zoom_ref(source, t1: float, t2: float, duration: float,
             budgets: FrameBudgets | Mapping[str, Any] | None = None) -> VideoRef:
  """The VideoRef of zoom clip [t1, t2]: budget from [t1, t2], frames from its part ≤ duration.

  A valid zoom may end up to 1 s past the end (r1jax.rewards.love_r1.zoom_is_valid) and so may
  start at the very end: the frames then come from the last moments, never an empty interval.
  """
  budgets = FrameBudgets.from_options(budgets)
  end = min(float(t2), duration)
  start = min(float(t1), max(0.0, end - 1e-3))
  return VideoRef(source, start=start, end=end, sampling=budgets.zoom(t1, t2))


def zoom_clip(source, t1: float, t2: float,
              options: FrameBudgets | Mapping[str, Any] | None = None) -> video.VideoClip:
  """Samples the step-2 clip of [t1, t2] seconds: what the environment shows after a zoom.

  Args:
    source: the video (context['video']: absolute path or bytes).
    t1, t2: the zoom in seconds (t2 − t1 ≥ 0.5).
    options: FrameBudgets, an example's context['budgets'], `config.data`, a DataConfig or a
      dict with zoom_max_frames / zoom_max_pixels (0 / None / absent: the paper's 16 frames
      of 256·28·28 pixels).

  Returns:
    VideoClip: frames uint8 [min(⌊2(t2−t1)⌋, cap), H, W, 3] resized to the budget and stamped
    with their second; timestamps float64 [T] in [t1, min(t2, duration)) (the last frames
    when t1 is at the very end: a valid zoom never comes back empty). Give the frames and
    `clip.sample_fps` to r1jax.processing as they are (the sizes are multiples of 28).

  Raises:
    BadExampleError: BAD_MEDIA naming the file when it cannot be read.
  """
  ref = zoom_ref(source, t1, t2, video.probe_video(source).duration, options)
  return video.sample_video(source, ref.sampling, start=ref.start, end=ref.end)


def video_clip(context: Mapping[str, Any], t1: float, t2: float) -> tuple[Any, float, int]:
  """The environment's clip reader (train.loop.DataHooks.video_clip) for an example's context.

  Returns:
    (frames uint8 [T, H, W, 3], their rate in frames per second, the budget's max pixels per
    frame), from `zoom_clip(context['video'], t1, t2, context['budgets'])`.
  """
  budgets = FrameBudgets.from_options(context.get("budgets"))
  clip = zoom_clip(context["video"], t1, t2, budgets)
  return clip.frames, clip.sample_fps, budgets.zoom(t1, t2).max_pixels


def zoom_turn(t1: float, t2: float) -> dict[str, Any]:
  """The user turn the environment appends after a zoom: caption, then the clip."""
  return {"role": "user", "content": [{"type": "text", "text": zoom_caption(t1, t2)},
                                      {"type": "video"}]}


# --- Reading records. ------------------------------------------------------------------------
def _intervals(value: Any, where: str, field: str) -> list[list[float]]:
  """[[t1, t2], ...] with numbers t1 < t2; raises BAD_RECORD naming `field`."""
  if value is None:
    return []
  ok = isinstance(value, (list, tuple)) and all(
      isinstance(p, (list, tuple)) and len(p) == 2
      and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
              for t in p) and p[0] < p[1] for p in value)
  if not ok:
    raise errors.field_error(errors.BAD_RECORD, where, field, f"expected [[start, end], ...] seconds with "
                             f"start < end, got {str(value)[:80]}")
  return [[float(a), float(b)] for a, b in value]


def _text(content: Any) -> str | None:
  """A message's text: a string, or the concatenated text items of a content list."""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    texts = [item.get("text") for item in content if isinstance(item, dict)
             and item.get("type") == "text" and isinstance(item.get("text"), str)]
    return "".join(texts) if texts else None
  return None


def _solution_answer(solution: Any, where: str) -> str:
  if solution is None:
    raise errors.field_error(errors.MISSING_FIELD, where, "solution", "missing ('<answer>X</answer>')")
  if not isinstance(solution, str):
    raise errors.field_error(errors.BAD_RECORD, where, "solution", f"expected '<answer>X</answer>', got "
                             f"{type(solution).__name__}")
  match = re.fullmatch(r"\s*(?:<answer>)?\s*(.*?)\s*(?:</answer>)?\s*", solution, re.DOTALL)
  if not match or not match.group(1):
    raise errors.field_error(errors.BAD_RECORD, where, "solution", f"no answer in {solution[:60]!r}")
  return match.group(1)


@dataclasses.dataclass(frozen=True)
class _Question:
  text: str  # question_text(...): what precedes ZOOM_INSTRUCTION
  problem_type: str | None
  options: list[str]
  short_text: str = ""  # the problem and options without the type template (prompt_style 'short')


def _question(fields: dict[str, Any], where: str) -> _Question:
  if fields.get("problem") is None and isinstance(fields.get("messages"), list):
    user = next((m for m in fields["messages"] if isinstance(m, dict)
                 and m.get("role") == "user"), None)
    text = _text(user.get("content")) if user else None
    if not text:
      raise errors.field_error(errors.MISSING_FIELD, where, "messages", "no user turn with text")
    return _Question(text, fields.get("problem_type"), list(fields.get("options") or []), text)
  problem = fields.get("problem")
  if not isinstance(problem, str) or not problem:
    raise errors.field_error(errors.MISSING_FIELD, where, "problem", "missing or not text")
  problem_type = fields.get("problem_type")
  if problem_type not in TYPE_TEMPLATE:
    raise errors.field_error(errors.MISSING_FIELD if problem_type is None else errors.BAD_RECORD, where, "problem_type",
                             f"{problem_type!r} is not one of {sorted(TYPE_TEMPLATE)}")
  options = fields.get("options") or []
  if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
    raise errors.field_error(errors.BAD_RECORD, where, "options", "expected a list of strings")
  return _Question(question_text(problem, options, problem_type), problem_type, options,
                   question_text(problem, options, problem_type)[:-len(TYPE_TEMPLATE[problem_type]) or None])


def _duration(fields: dict[str, Any], source, where: str) -> float:
  value = fields.get("duration")
  if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.5 <= value < math.inf:
    return float(value)
  try:
    return video.probe_video(source).duration
  except errors.BadExampleError as e:
    key = "path" if "path" in fields else "video"
    raise errors.field_error(errors.BAD_MEDIA, where, key, f"{media_name(source)}: {e.detail}") from e


def _video_source(fields: dict[str, Any], base_dir: str, where: str) -> str:
  key = "path" if fields.get("path") else "video"
  value = fields.get(key)
  if not isinstance(value, str) or not value:
    raise errors.field_error(errors.MISSING_FIELD, where, "path", "no video path ('path' or 'video')")
  if value.startswith("file://"):
    value = value[len("file://"):]
  path = value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
  if not os.path.isfile(path):
    raise errors.field_error(errors.BAD_MEDIA, where, key, f"video file {path} does not exist")
  return path


def assistant_turns(fields: dict[str, Any]) -> list[str]:
  """The CoT step texts of a record (its assistant turns), [] when it has none."""
  messages = fields.get("messages")
  if not isinstance(messages, list):
    return []
  return [_text(m.get("content")) or "" for m in messages
          if isinstance(m, dict) and m.get("role") == "assistant"]


# Prompt styles: the released texts, or short ones for a tiny model trained from scratch (the
# embedded default), which reads the same task in a third of the tokens.
PROMPT_STYLES = ("released", "short")
SHORT_SYSTEM_MESSAGE = "Red numbers are seconds."
SHORT_ZOOM_INSTRUCTION = "\nAnswer \\boxed{letter} or zoom \\boxed{[start, end]}."


def _step1_messages(question: str, duration: float, earlier: list[list[float]], style: str) -> list[dict]:
  content = [{"type": "text", "text": full_video_caption(duration)}, {"type": "video"}]
  for t1, t2 in earlier:
    content += [{"type": "text", "text": zoom_caption(t1, t2)}, {"type": "video"}]
  instruction, system = ((ZOOM_INSTRUCTION, SYSTEM_MESSAGE) if style == "released"
                         else (SHORT_ZOOM_INSTRUCTION, SHORT_SYSTEM_MESSAGE))
  content.append({"type": "text", "text": question + instruction})
  return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def to_example(record: Any, *, mode: str = "rl", video_dir: str = "",
               budgets: FrameBudgets = FrameBudgets(), prompt_style: str = "released") -> Example:
  """One LOVE-R1 record (a RawRecord, or a `CotStep` in mode 'sft') → an Example.

  See the module docstring for the prompt, the ground truth and the context.

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD / BAD_MEDIA, naming 'file:record N' and the field.
  """
  step = getattr(record, "step", None)
  raw: RawRecord = getattr(record, "raw", record)
  where = raw.where if step is None else f"{raw.where} (step {step})"
  if raw.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, raw.where, raw.error or "unreadable row")
  fields = raw.fields
  question = _question(fields, where)
  tgt = _intervals(fields.get("tgt"), where, "tgt")
  if "zoomin_intervals" not in fields and "messages" not in fields:
    raise errors.field_error(errors.MISSING_FIELD, where, "zoomin_intervals", "missing (use [] for none)")
  zooms = sorted(_intervals(fields.get("zoomin_intervals"), where, "zoomin_intervals"))
  answer = None
  if fields.get("solution") is not None or (mode == "rl" and not tgt):
    answer = _solution_answer(fields.get("solution"), where)
    letters = [o.split(".", 1)[0].strip() for o in question.options if "." in o]
    if question.problem_type == "multiple choice" and letters and answer not in letters:
      raise errors.field_error(errors.BAD_RECORD, where, "solution", f"answer {answer!r} is not one of the "
                               f"options {letters}")
  source = _video_source(fields, video_dir or raw.base_dir, where)
  duration = _duration(fields, source, where)

  turns = assistant_turns(fields) if mode == "sft" else []
  response, zoom, earlier = None, None, [] if tgt else zooms
  if mode == "sft":
    if not turns:
      raise errors.field_error(errors.MISSING_FIELD, where, "messages", "no assistant turn (CoT) to learn")
    if len(turns) > 2:
      raise errors.field_error(errors.BAD_RECORD, where, "messages", f"{len(turns)} assistant turns; "
                               "expected 1 (one step) or 2 (zoom, then answer)")
    if len(turns) == 2:
      zoom = _chain_zoom(turns[0], zooms, where)
      earlier = list(zooms)
      earlier.remove(list(zoom))
    response = turns[(step or 1) - 1]
    if not response.startswith(prefixes()):
      raise errors.field_error(errors.BAD_RECORD, where, "messages", "the step text starts with neither "
                               f"prefix {prefixes()}")

  messages = _step1_messages(question.text if prompt_style == "released" else question.short_text, duration, earlier,
                             prompt_style)
  videos = [VideoRef(source, sampling=budgets.overview(duration))]
  videos += [zoom_ref(source, t1, t2, duration, budgets) for t1, t2 in earlier]
  if step == 2:
    messages += [{"role": "assistant", "content": turns[0]}, zoom_turn(*zoom)]
    videos.append(zoom_ref(source, *zoom, duration, budgets))
  ground_truth = {"answer": answer, "solution": fields.get("solution"), "tgt": tgt or None,
                  "duration": duration, "problem_type": question.problem_type}
  if fields.get("clue_intervals") is not None:
    ground_truth["clue_intervals"] = _intervals(fields["clue_intervals"], where,
                                                "clue_intervals")
  context = {"video": source, "duration": duration, "zoomin_intervals": zooms,
             "earlier_zooms": earlier + ([list(zoom)] if step == 2 else []),
             "forced_prefix": prefixes()[0] if tgt else "", "step": step or 1,
             "budgets": dataclasses.asdict(budgets)}
  return Example(id=str(fields.get("id", where)), where=where, messages=messages, videos=videos,
                 ground_truth=ground_truth, data_type="video", response=response,
                 context=context)


def _chain_zoom(text: str, zooms: list[list[float]], where: str) -> tuple[float, float]:
  """The [t1, t2] a two-step record's zoom text asks for; it must be one of its zoomin_intervals."""
  match = _ZOOM_BOXED.search(text) if text.startswith(prefixes()[0]) else None
  if match is None:
    raise errors.field_error(
        errors.BAD_RECORD, where, "messages", "a two-step record's first assistant turn "
        f"must start with {prefixes()[0]!r} and hold \\boxed{{[t1, t2]}}")
  zoom = (float(match.group(1)), float(match.group(2)))
  if list(zoom) not in zooms:
    raise errors.field_error(
        errors.BAD_RECORD, where, "zoomin_intervals", f"the zoom text asks for "
        f"{[int(t) for t in zoom]}, which is not among the record's {zooms}")
  return zoom
