"""LOVE-R1's environment: a zoom request shows the model a high-resolution clip of the interval.

Turn 1 sees the overview (the prompt). Its action starts with `I get the answer.` (the episode
ends) or `I need to zoom in on the video.` with `\\boxed{[t1, t2]}`: a valid zoom (the reward's
`zoom_is_valid`) appends `Subset zoom-in video clip [t1, t2]:` and the clip as a user turn, and
turn 2 answers. An unparseable or invalid zoom ends the episode (the reward gives it format 0);
a second zoom at turn 2 ends it too (MAX_TURNS; the reward masks it).

Decoupled RL (`samples`): each turn trains as its own single-step sample. Turn 1 is scored with
step 1 (an answer by its correctness, a zoom by the correctness of turn 2, passed as
`step2_completion`) in group "step1"; turn 2 with step 2 and the zoom as `earlier_zooms` in
group "step2", so advantages are taken over the G first steps and over the second steps apart.

Clips come from the data side (`DataHooks.video_clip`: the prompt's video, its context and the
interval -> frames and their rate), sized by the recipe's zoom budget.
"""
from __future__ import annotations

from typing import Any, Mapping

from r1jax import envs
from r1jax.envs.base import Environment, Episode, Observation, Sample, StepResult
from r1jax.rewards import love_r1 as reward
from r1jax.rewards.geometry import interval_iou


class LoveR1(Environment):
  """Two turns: overview, then optionally one zoom clip (see the module docstring).

  Args:
    video_clip: (context, t1, t2) -> (frames uint8 [T, H, W, 3], frames per second, max pixels
      per frame); the data side's clip reader.
    max_observation_tokens: the most tokens a clip turn adds (its vision tokens included).
    timeout_s: limit of one step (decoding the clip).
  """

  max_turns = 2

  def __init__(self, video_clip, max_observation_tokens: int, timeout_s: float = 60.0):
    self.video_clip = video_clip
    self.max_observation_tokens = int(max_observation_tokens)
    self.timeout_s = float(timeout_s)

  def reset(self, context: Mapping[str, Any], ground_truth: Any) -> dict[str, Any]:
    # Zooms the record already took: their clips are in the prompt (the released `zoomin_intervals`).
    earlier = [[float(t) for t in zoom] for zoom in (context.get("zoomin_intervals") or ())]
    return {"duration": float(ground_truth["duration"]), "grounding": bool(ground_truth.get("tgt")),
            "earlier": earlier, "clues": [tuple(map(float, c)) for c in (ground_truth.get("clue_intervals") or ())]}

  def step(self, episode: Episode, turn: int) -> StepResult:
    request = reward.zoom_request(episode.actions[turn], grounding=episode.state["grounding"])
    if request is None:
      return StepResult(done=True, info={"action": "answer_or_unparsed"})
    if turn > 0:  # a second zoom: MAX_TURNS ends it, the reward masks it
      return StepResult(done=False, observation=Observation(content=[]), info={"zoom": list(request)})
    if not reward.zoom_is_valid(request, episode.state["duration"], episode.state["earlier"]):
      return StepResult(done=True, info={"action": "invalid_zoom", "zoom": list(request)})
    t1, t2 = request
    frames, fps, max_pixels = self.video_clip(episode.context, t1, t2)
    content = [{"type": "text", "text": reward.zoom_clip_caption(t1, t2)}, {"type": "video"}]
    return StepResult(done=False, observation=Observation(content, videos=[frames], video_fps=[fps],
                                                          max_pixels=max_pixels),
                      info={"action": "zoom", "zoom": [t1, t2]})

  def episode_metrics(self, episode: Episode) -> dict[str, float]:
    """zoom_iou: the valid zoom's best IoU with the record's true intervals (`clue_intervals`),
    for episodes that zoomed into a clip."""
    zoom = episode.infos[0].get("zoom") if episode.infos and episode.infos[0].get("action") == "zoom" else None
    if zoom is None or not episode.state["clues"]:
      return {}
    return {"zoom_iou": max(interval_iou(tuple(zoom), clue) for clue in episode.state["clues"])}

  def samples(self, episode: Episode) -> list[Sample]:
    first, earlier = episode.actions[0], episode.state["earlier"]
    if len(episode.actions) == 1:
      return [Sample((0,), first, {"step": 1, "earlier_zooms": earlier}, "step1")]
    zoom = list(reward.zoom_request(first, grounding=episode.state["grounding"]))
    return [Sample((0,), first, {"step": 1, "earlier_zooms": earlier, "step2_completion": episode.actions[1]},
                   "step1"),
            Sample((1,), episode.actions[1], {"step": 2, "earlier_zooms": earlier + [zoom]}, "step2")]


@envs.register("love_r1")
def make(config, hooks) -> LoveR1:
  """config.env.options: max_observation_tokens (required), timeout_s."""
  if hooks is None or getattr(hooks, "video_clip", None) is None:
    raise ValueError("environment 'love_r1' needs the data side's clip reader (DataHooks.video_clip); "
                     "run it through experiments/run.py or pass hooks with video_clip")
  options = config.env.options
  if not options.get("max_observation_tokens"):
    raise ValueError("config.env.options.max_observation_tokens must be set for 'love_r1' (the most tokens a "
                     "zoom clip turn adds: caption, vision tokens and the chat template)")
  return LoveR1(hooks.video_clip, options.max_observation_tokens, options.get("timeout_s", 60.0))
