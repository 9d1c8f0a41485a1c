"""Omni-R1's environment: the frozen detail system grounds the keyframes the policy chose.

One policy turn (the global system) answers keyframe intervals with rewritten descriptions
(r1jax.rewards.omni_r1). The environment's step then runs the Detail Understanding System for the
whole batch at once (`batched`: `step_batch` gets every episode of the rollout):
  1. each episode's grounding requests (`omni_r1.grounding_requests`: its first 4 unique keyframes,
     each with the description of its interval), as the reward will score them;
  2. each keyframe rendered at high resolution: the frame file the policy saw at low resolution
     (`context['frames'][i]`), read again and resized to the detail model's bounds
     (`detail_min_pixels` / `detail_max_pixels`);
  3. the detail prompt (`omni_r1.detail_messages`: the image, then the released grounding instruction);
  4. ONE greedy `generate` call of the frozen detail model (`config.frozen.detail`) for every
     distinct (frame file, description) of the batch, under `detail_timeout_s` (the G episodes of
     a prompt often choose the same keyframes: greedy answers to one request are the same);
  5. the answers (`bbox_2d` / `point_2d` JSON, parsed by the reward) go to the reward context of
     the episode's sample: `detail_answers` {frame: text}, `detail_status` (the judge status of the
     call: "ok", "error", "timeout" or "invalid"), `detail_error`.
A detail call that fails or times out does not fail the episodes: the reward reports it as its
`detail_failed` component (counted in the rollout metrics), an unparsable answer as
`detail_unparsed`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import PIL.Image

from r1jax import envs, processing
from r1jax.envs.base import Environment, Episode, Sample, StepResult
from r1jax.rewards import judges
from r1jax.rewards import omni_r1 as reward

def _frame_file(context: Mapping[str, Any], frame: int) -> str:
  paths = context.get("frames")
  if not isinstance(paths, (list, tuple)) or not 0 <= frame < len(paths):
    raise ValueError(f"keyframe {frame} is not among the prompt's {len(paths or ())} frame files "
                     "(context['frames'])")
  return paths[frame]


def keyframe_image(context: Mapping[str, Any], frame: int) -> np.ndarray:
  """uint8 [H, W, 3]: frame `frame` of the prompt's frame files (`context['frames']`), resized to the
  detail bounds (`smart_resize` with context `detail_min_pixels` / `detail_max_pixels`)."""
  defaults = processing.VisionProcessorConfig()
  with PIL.Image.open(_frame_file(context, frame)) as image:
    image = image.convert("RGB")
    height, width = processing.smart_resize(image.height, image.width,
                                            min_pixels=int(context.get("detail_min_pixels", defaults.min_pixels)),
                                            max_pixels=int(context.get("detail_max_pixels", defaults.max_pixels)))
    if (height, width) != (image.height, image.width):
      image = image.resize((width, height), PIL.Image.Resampling.BICUBIC)
    return np.asarray(image, np.uint8)


class OmniR1(Environment):
  """One policy turn, then the detail model over the batch's keyframes (see the module docstring).

  Args:
    generate: requests -> texts: the frozen detail model's batched greedy generation (`detail_generator`).
    make_request: (messages, image, max_pixels) -> one request for `generate`.
    detail_timeout_s: limit of the one detail call per rollout; past it, every keyframe of the
      batch is a `timeout` judge status.
    timeout_s: limit of the whole step (the runner fails the episodes past it).
  """

  batched = True
  max_turns = 1

  def __init__(self, generate: Callable[[list[Any]], list[str]], make_request: Callable[..., Any],
               detail_timeout_s: float = 120.0, timeout_s: float = 600.0):
    self.generate, self.make_request = generate, make_request
    self.detail_timeout_s, self.timeout_s = float(detail_timeout_s), float(timeout_s)
    self.last_detail_s = 0.0  # seconds of the last step's detail call (benchmarks/omni_r1_detail.py)

  def reset(self, context: Mapping[str, Any], ground_truth: Any) -> dict[str, Any]:
    boxes = ground_truth.get("bboxs", ground_truth.get("boxes")) if isinstance(ground_truth, Mapping) else None
    if not isinstance(boxes, Sequence) or not boxes or not isinstance(boxes[0], Sequence):
      raise ValueError("an Omni-R1 episode needs ground_truth['bboxs'] [num_obj, frames, 4]")
    return {"num_frames": len(boxes[0]), "answers": {}, "status": judges.JUDGE_OK, "error": ""}

  def step_batch(self, episodes: Sequence[Episode], turn: int) -> list[StepResult]:
    requests, owners, distinct = [], [], {}  # owners: (episode, frame, index of its distinct request)
    for index, episode in enumerate(episodes):
      for frame, description in reward.grounding_requests(episode.actions[turn], episode.state["num_frames"]):
        key = (_frame_file(episode.context, frame), description, episode.context.get("detail_max_pixels"))
        if key not in distinct:
          distinct[key] = len(requests)
          requests.append((episode.context, frame, description))
        owners.append((index, frame, distinct[key]))
    started = time.perf_counter()
    call = judges.call_judge(self._ground, requests, timeout_s=self.detail_timeout_s,
                             validate=lambda texts: _texts(texts, len(requests))) if requests else None
    self.last_detail_s = time.perf_counter() - started
    if call is not None and call.ok:
      for index, frame, request in owners:
        episodes[index].state["answers"][frame] = call.value[request]
    if call is not None and not call.ok:
      for index, _, _ in owners:
        episodes[index].state.update(status=call.status, error=call.error)
    return [StepResult(done=True, info={"keyframes": sorted(e.state["answers"]), "detail_status": e.state["status"]})
            for e in episodes]

  def _ground(self, requests: list[tuple[Mapping[str, Any], int, str]]) -> list[str]:
    """The detail model's answers for (context, frame, description) requests, in one call."""
    batch = [self.make_request(reward.detail_messages(description), keyframe_image(context, frame),
                               int(context.get("detail_max_pixels") or processing.VisionProcessorConfig().max_pixels))
             for context, frame, description in requests]
    return self.generate(batch)

  def samples(self, episode: Episode) -> list[Sample]:
    state = episode.state
    return [Sample((0,), episode.actions[0], {"detail_answers": dict(state["answers"]),
                                                "detail_status": state["status"], "detail_error": state["error"]})]


def _texts(value: Any, count: int) -> list[str]:
  if not isinstance(value, (list, tuple)) or len(value) != count or not all(isinstance(t, str) for t in value):
    raise TypeError(f"the detail model answered {type(value).__name__} of {len(value) if hasattr(value, '__len__') else '?'}"
                    f" items, expected {count} texts")
  return list(value)


def detail_generator(model) -> tuple[Callable[[list[Any]], list[str]], Callable[..., Any]]:
  """(generate, make_request) over a `r1jax.frozen.FrozenModel`: its batched greedy generation."""
  from r1jax import frozen  # pylint: disable=g-import-not-at-top  (frozen imports the trainer)

  def generate(requests):
    return [g.text for g in model.generate(requests)]

  def make_request(messages, image, max_pixels):
    return frozen.ChatRequest(messages=messages, images=[image], max_pixels=max_pixels)

  return generate, make_request


@envs.register("omni_r1", frozen=("detail",))
def make(config, hooks, frozen) -> OmniR1:
  """config.env.options: detail_timeout_s (default 120), timeout_s (default 600). Needs
  config.frozen.detail (the detail model: an HF folder)."""
  del hooks
  options = config.env.options
  generate, make_request = detail_generator(frozen["detail"])
  return OmniR1(generate, make_request, detail_timeout_s=options.get("detail_timeout_s", 120.0),
                timeout_s=options.get("timeout_s", 600.0))
