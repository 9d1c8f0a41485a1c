"""Record layouts → the canonical `Example` (chat messages + media references + ground truth).

Supported layouts (`layout` option; 'auto' picks 'swift' when a record has `messages`):

* 'easyr1' (EasyR1 / verl): `problem` (text with `<image>` / `<video>` tags), `answer`,
  `images`, `videos`, `data_type`. The key names are configurable (`prompt_key`, `answer_key`,
  `image_key`, `video_key`). A verl-style record whose prompt is already a list of chat messages
  and whose answer sits in `reward_model.ground_truth` is read too.
* 'swift' (ms-swift): `messages` = [{role, content}] with `<image>` / `<video>` tags in the
  content and `images` / `videos` lists. A trailing assistant turn is the reference answer (RL)
  or the target (SFT); it never enters the prompt.

Every other column is passed through to `Example.ground_truth`, which always has an 'answer'
key (None when the layout has none), as the ground truth of the reward functions.

Media entries may be paths relative to the data file (or to `media_root`), absolute paths,
raw bytes, or {'bytes': ..., 'path': ...} dicts as HF `datasets` writes them into Parquet.
When a text has no tags, its images and videos are placed before the text.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Union

from data_pipelines import errors
from data_pipelines.sources import RawRecord

MediaRef = Union[str, bytes]  # an absolute path, or the encoded file itself
_TAG_PATTERN = re.compile(r"(<image>|<video>)")


@dataclasses.dataclass(frozen=True)
class VideoRef:
  """A video to sample, optionally restricted to [start, end) seconds or given timestamps.

  Attributes:
    source: absolute path or encoded bytes.
    start, end: the interval to sample from, seconds (None: the whole video).
    timestamps: explicit sample times in seconds (overrides the sampling rule).
    sampling: a per-video `video.VideoSampling` overriding the dataset's (None: dataset's).
  """
  source: MediaRef
  start: float | None = None
  end: float | None = None
  timestamps: tuple[float, ...] | None = None
  sampling: Any = None


@dataclasses.dataclass(frozen=True)
class Example:
  """One prompt with references to its media, before any decoding or tokenisation.

  Attributes:
    id: the record's `id` column, else `where`.
    where: the file/record this came from, named in every error about it.
    messages: HF chat messages; user content is a list of {'type': 'text', 'text': ...},
      {'type': 'image'} and {'type': 'video'} items, in the order the media lists follow.
    images: one reference per image item.
    videos: one reference per video item.
    ground_truth: the reward's reference data (always has 'answer').
    data_type: 'image', 'video', 'text', 'multi_image', ... (the record's, or inferred).
    response: the SFT target (assistant reply), None when the record has none.
    context: extra reward context the dataset provides (e.g. a 3D scene's chosen views).
  """
  id: str
  where: str
  messages: list[dict[str, Any]]
  images: list[MediaRef] = dataclasses.field(default_factory=list)
  videos: list[VideoRef] = dataclasses.field(default_factory=list)
  ground_truth: dict[str, Any] = dataclasses.field(default_factory=dict)
  data_type: str = "text"
  response: str | None = None
  context: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LayoutOptions:
  """How to read records; mirrors the `config.data` keys of the same names."""
  layout: str = "auto"
  prompt_key: str = "problem"
  answer_key: str = "answer"
  image_key: str = "images"
  video_key: str = "videos"
  system_prompt: str = ""
  prompt_template: str = "{content}"
  media_root: str = ""


def resolve_media(entry: Any, base_dir: str, where: str) -> MediaRef:
  """Returns an absolute path or the bytes of one media entry of a record."""
  if isinstance(entry, dict):
    if entry.get("bytes"):
      return bytes(entry["bytes"])
    entry = entry.get("path") or entry.get("image") or entry.get("video")
  if isinstance(entry, (bytes, bytearray)):
    return bytes(entry)
  if isinstance(entry, str) and entry:
    if entry.startswith("file://"):
      entry = entry[len("file://"):]
    return entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base_dir, entry))
  raise errors.BadExampleError(errors.BAD_RECORD, where,
                               f"media entry must be a path, bytes or {{'bytes', 'path'}}, "
                               f"got {type(entry).__name__}")


def _media_list(fields: dict[str, Any], key: str) -> list[Any]:
  value = fields.get(key)
  if value is None:
    return []
  return list(value) if isinstance(value, (list, tuple)) else [value]


def split_media_tags(text: str, num_images: int, num_videos: int,
                     where: str) -> list[dict[str, Any]]:
  """Splits `text` on <image>/<video> tags into chat content items.

  Without tags, all images then all videos are placed before the text (EasyR1's behaviour).

  Raises:
    BadExampleError: when the tag counts differ from the media counts.
  """
  pieces = _TAG_PATTERN.split(text)
  n_image_tags = pieces.count("<image>")
  n_video_tags = pieces.count("<video>")
  if n_image_tags == 0 and n_video_tags == 0:
    items = [{"type": "image"}] * num_images + [{"type": "video"}] * num_videos
    return [dict(item) for item in items] + ([{"type": "text", "text": text}] if text else [])
  if (n_image_tags, n_video_tags) != (num_images, num_videos):
    raise errors.BadExampleError(
        errors.BAD_RECORD, where,
        f"text has {n_image_tags} <image> and {n_video_tags} <video> tags but the record has "
        f"{num_images} images and {num_videos} videos")
  items = []
  for piece in pieces:
    if piece == "<image>":
      items.append({"type": "image"})
    elif piece == "<video>":
      items.append({"type": "video"})
    elif piece:
      items.append({"type": "text", "text": piece})
  return items


def _require(fields: dict[str, Any], key: str, where: str) -> Any:
  value = fields.get(key)
  if value is None or (isinstance(value, (str, list)) and not value):
    raise errors.BadExampleError(errors.MISSING_FIELD, where,
                                 f"record has no {key!r} (columns: {sorted(fields)})")
  return value


def _infer_data_type(num_images: int, num_videos: int) -> str:
  if num_videos:
    return "video"
  if num_images > 1:
    return "multi_image"
  return "image" if num_images else "text"


def _apply_template(text: str, options: LayoutOptions) -> str:
  return options.prompt_template.replace("{content}", text)


def _chat_from_messages(messages: list[Any], options: LayoutOptions, num_images: int,
                        num_videos: int, where: str) -> tuple[list[dict[str, Any]], str | None]:
  """Converts string-content chat messages into content lists; splits off a final reply."""
  if not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
    raise errors.BadExampleError(errors.BAD_RECORD, where,
                                 "every message needs 'role' and 'content'")
  response = None
  if messages[-1]["role"] == "assistant":
    response = messages[-1]["content"]
    messages = messages[:-1]
  user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
  if not user_turns:
    raise errors.BadExampleError(errors.MISSING_FIELD, where, "messages have no user turn")
  text = "".join(m["content"] for m in messages if isinstance(m["content"], str))
  n_image_tags, n_video_tags = text.count("<image>"), text.count("<video>")
  untagged = n_image_tags == 0 and n_video_tags == 0
  if not untagged and (n_image_tags, n_video_tags) != (num_images, num_videos):
    raise errors.BadExampleError(
        errors.BAD_RECORD, where,
        f"messages have {n_image_tags} <image> and {n_video_tags} <video> tags but the record "
        f"has {num_images} images and {num_videos} videos")
  chat = []
  for i, message in enumerate(messages):
    content = message["content"]
    if message["role"] == "system":
      chat.append({"role": "system", "content": content})
      continue
    if i == user_turns[-1]:
      content = _apply_template(content, options)
    if untagged and i == user_turns[0]:
      items = split_media_tags(content, num_images, num_videos, where)
    else:
      items = split_media_tags(content, content.count("<image>"), content.count("<video>"), where)
    chat.append({"role": message["role"], "content": items})
  if options.system_prompt and chat[0]["role"] != "system":
    chat.insert(0, {"role": "system", "content": options.system_prompt})
  return chat, response


def to_example(record: RawRecord, options: LayoutOptions) -> Example:
  """Normalises one raw record into an `Example`.

  Raises:
    BadExampleError: MISSING_FIELD / BAD_RECORD naming `record.where`.
  """
  where = record.where
  if record.fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, where, record.error or "unreadable row")
  fields = record.fields
  base_dir = options.media_root or record.base_dir
  images = [resolve_media(e, base_dir, where) for e in _media_list(fields, options.image_key)]
  videos = [VideoRef(resolve_media(e, base_dir, where))
            for e in _media_list(fields, options.video_key)]
  layout = options.layout
  if layout == "auto":
    layout = "swift" if "messages" in fields else "easyr1"
  used_keys = {options.image_key, options.video_key, "data_type"}
  answer = fields.get(options.answer_key)
  if layout == "swift":
    messages, response = _chat_from_messages(
        list(_require(fields, "messages", where)), options, len(images), len(videos), where)
    used_keys.add("messages")
    if answer is None:
      answer = response
  elif layout == "easyr1":
    prompt = _require(fields, options.prompt_key, where)
    used_keys.add(options.prompt_key)
    response = fields.get("response")
    if answer is None and isinstance(fields.get("reward_model"), dict):
      answer = fields["reward_model"].get("ground_truth")  # verl's layout
    if answer is None:
      raise errors.BadExampleError(
          errors.MISSING_FIELD, where,
          f"record has no {options.answer_key!r} (columns: {sorted(fields)})")
    if isinstance(prompt, list):  # verl: the prompt is already a chat
      messages, _ = _chat_from_messages(prompt, options, len(images), len(videos), where)
    elif isinstance(prompt, str):
      content = split_media_tags(_apply_template(prompt, options), len(images), len(videos), where)
      messages = [{"role": "user", "content": content}]
      if options.system_prompt:
        messages.insert(0, {"role": "system", "content": options.system_prompt})
    else:
      raise errors.BadExampleError(errors.BAD_RECORD, where,
                                   f"{options.prompt_key!r} must be text or a list of messages, "
                                   f"got {type(prompt).__name__}")
  else:
    raise ValueError(f"config.data.layout must be 'auto', 'easyr1' or 'swift', got {layout!r}")
  ground_truth = {k: v for k, v in fields.items() if k not in used_keys}
  ground_truth["answer"] = answer
  return Example(
      id=str(fields.get("id", where)),
      where=where,
      messages=messages,
      images=images,
      videos=videos,
      ground_truth=ground_truth,
      data_type=str(fields.get("data_type") or _infer_data_type(len(images), len(videos))),
      response=response,
  )
