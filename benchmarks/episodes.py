"""Two-step episodes: continuing rows from the KV cache vs re-prefilling the whole trajectory.

    python benchmarks/episodes.py                # VL + text, 1 prompt x G=8 (3.3 min on 2 cores at load 6)
    python benchmarks/episodes.py --turn-tokens 128 --end-frac 0.5   # half the episodes end after turn 1
    python benchmarks/episodes.py --variants vl --prompts 2 --overview-frames 32 --clip-size 224  # slow: see below

One rollout: turn 1 (prefill B prompts, decode G samples each), an environment step on the host
(each row's action picks an interval of the prompt's source video; the step cuts that clip,
resizes and patchifies it with `processing.process_video` and tokenises the observation: caption,
the clip's video tokens, the next turn's header), then turn 2. Two ways of doing turn 2, timed
alternately in one process:

  continuation  r1jax: `decode(keep_cache=True)` -> `Sampler.extend` -> `decode`. The prompt's
                prefix (and its video) stays in the cache once per prompt; only each row's
                delta (last action token + observation, with the clip) is prefilled.
  re-prefill    what a framework without continuation does: for every continuing row a new
                prompt = prompt tokens + its turn-1 action + the observation, with all its vision
                inputs (the prompt's overview video and the clip), then `prefill(num_samples=1)`
                + `decode`: the vision tower and the decoder run over the prompt again for each
                of the G rows, and nothing is shared between them.

Turn 1 is sampled (temperature 1; a stop set of --stop-frac of the vocabulary, so rows end at
different lengths and their caches have gaps) with the same key in both ways, so both see the
same actions and observations. Turn 2 is greedy: both ways must give the same tokens; the
mismatch count and the largest log-prob difference are printed. Each rollout's work is the same
in every repeat (same key), so the warm-up call compiles everything; times are medians of
--repeats calls after it. Prompt and observation lengths are padded to multiples of --bucket
tokens in both ways (the sampler's default powers of two would pad the two ways differently).

--tower-breakdown (on by default) also times the vision tower alone on each way's turn-2 videos,
packed into one call as prefill / extend do and one video at a time: its full-attention blocks
cost (total packed patches)^2, so the packed call dominates VL prefills (BENCHMARKS.md) and
larger clips or more rows grow the run's time quickly.

Models: random weights (no download). VL: a Qwen2.5-VL-shaped model (4-layer 256-wide decoder,
vocab 32k; 4-block 128-wide vision tower, as `benchmarks/sampling.py`). Text: the same decoder
without vision and M-RoPE.
"""
import argparse
import dataclasses
import os
import statistics
import time

import jax
import numpy as np

from r1jax import models
from r1jax.models.config import ModelConfig, TextConfig, VisionConfig
from r1jax.models.vision import vision_grid
from r1jax.processing import VisionProcessorConfig, process_video
from r1jax.sampling import Prompt, Sampler, SamplingControls

VL_SPECIAL = dict(vision_start_token_id=31995, vision_end_token_id=31996, image_token_id=31997, video_token_id=31998)
VOCAB = 32000
TEXT_IDS = (10, 31000)  # ordinary text tokens are drawn from here (never a special id)
SOURCE_FPS = 2.0


def model_config(vision: bool) -> ModelConfig:
  text = TextConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_layers=4, num_heads=4,
                    num_kv_heads=2, tie_word_embeddings=True, mrope_section=(8, 12, 12) if vision else None)
  if not vision:
    return ModelConfig(text, pad_token_id=0)
  tower = VisionConfig(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                       patch_size=14, window_size=112, fullatt_block_indexes=(1, 3), tokens_per_second=2)
  return ModelConfig(text, tower, pad_token_id=0, **VL_SPECIAL)


def text_ids(rng, n: int) -> np.ndarray:
  return rng.integers(*TEXT_IDS, n).astype(np.int32)


def video_tokens(config: ModelConfig, grid) -> np.ndarray:
  n = int(np.prod(grid)) // config.vision.spatial_merge_size**2
  return np.array([config.vision_start_token_id] + [config.video_token_id] * n + [config.vision_end_token_id],
                  np.int32)


@dataclasses.dataclass
class Task:
  """The prompts, each prompt's source video (for clips) and the environment's fixed text."""

  prompts: list
  sources: list  # per prompt: uint8 [frames, H, W, 3] or None (text)
  caption: np.ndarray
  header: np.ndarray
  clip_frames: int
  clip_pixels: int
  observation_text: int


def make_task(config: ModelConfig, args, rng) -> Task:
  processor = VisionProcessorConfig()
  prompts, sources = [], []
  for _ in range(args.prompts):
    if not config.is_multimodal:
      prompts.append(Prompt(text_ids(rng, args.text_prompt_len)))
      sources.append(None)
      continue
    side = args.overview_size
    overview = process_video(rng.integers(0, 256, (args.overview_frames, side, side, 3), dtype=np.uint8), processor,
                             min_pixels=side * side, max_pixels=side * side)
    ids = np.concatenate([text_ids(rng, 12), video_tokens(config, overview.grid_thw[0]),
                          text_ids(rng, args.question_len)])
    prompts.append(Prompt(ids, pixel_values_videos=overview.pixel_values, video_grid_thw=overview.grid_thw,
                          second_per_grid_ts=np.array([processor.temporal_patch_size / SOURCE_FPS], np.float32)))
    sources.append(rng.integers(0, 256, (args.source_frames, args.clip_size, args.clip_size, 3), dtype=np.uint8))
  return Task(prompts, sources, caption=text_ids(rng, 10), header=text_ids(rng, 5), clip_frames=args.clip_frames,
              clip_pixels=args.clip_size**2, observation_text=args.observation_len)


def environment_step(config: ModelConfig, task: Task, action: np.ndarray, prompt: int, rng) -> Prompt:
  """One row's observation: the action picks a clip start; cut, resize, patchify and tokenise it."""
  source = task.sources[prompt]
  if source is None:  # text: an observation of --observation-len tokens
    return Prompt(np.concatenate([task.caption, text_ids(rng, task.observation_text), task.header]))
  start = int(action.astype(np.int64).sum()) % (len(source) - task.clip_frames + 1)
  clip = process_video(source[start:start + task.clip_frames], min_pixels=task.clip_pixels,
                       max_pixels=task.clip_pixels)
  ids = np.concatenate([task.caption, video_tokens(config, clip.grid_thw[0]), task.header])
  return Prompt(ids, pixel_values_videos=clip.pixel_values, video_grid_thw=clip.grid_thw,
                second_per_grid_ts=np.array([2 / SOURCE_FPS], np.float32))


def trajectory_prompt(prompt: Prompt, action: np.ndarray, observation: Prompt) -> Prompt:
  """Prompt + action + observation as one prompt, with the prompt's and the observation's videos."""
  ids = np.concatenate([prompt.input_ids, action, observation.input_ids]).astype(np.int32)
  if prompt.video_grid_thw is None:
    return Prompt(ids)
  cat = lambda name: np.concatenate([getattr(prompt, name), getattr(observation, name)])
  return Prompt(ids, pixel_values_videos=cat("pixel_values_videos"), video_grid_thw=cat("video_grid_thw"),
                second_per_grid_ts=cat("second_per_grid_ts"))


class Rollout:
  """Runs one two-step rollout either way and returns its times and turn-2 outputs."""

  def __init__(self, config: ModelConfig, params, task: Task, args):
    self.config, self.params, self.task, self.args = config, params, task, args
    buckets = tuple(range(args.bucket, 1 << 16, args.bucket)) if args.bucket else None
    self.sampler = Sampler(models.build_model(config), buckets=buckets)
    vocab = config.text.vocab_size
    stops = tuple(range(TEXT_IDS[0], TEXT_IDS[0] + max(1, int(args.stop_frac * vocab))))
    self.turn1 = SamplingControls(max_new_tokens=args.turn_tokens, temperature=1.0, stop_token_ids=stops)
    self.turn2 = SamplingControls(max_new_tokens=args.turn_tokens, greedy=True, stop_token_ids=stops)
    rows = args.prompts * args.samples
    # Episodes that end after turn 1 (the same rows both ways): every k-th row for --end-frac.
    self.ends = (np.arange(rows) % round(1 / args.end_frac) == 0) if args.end_frac > 0 else np.zeros(rows, bool)
    self.info = {}
    self.packs = {}  # the last call's prompts / observations of turn 2, per way (for `tower_breakdown`)

  def _turn1(self, keep_cache: bool):
    prefilled = self.sampler.prefill(self.params, self.task.prompts, num_samples=self.args.samples,
                                     max_new_tokens=self.turn1.max_new_tokens)
    out = self.sampler.decode(self.params, prefilled, key=jax.random.key(1), controls=self.turn1,
                              keep_cache=keep_cache)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    self.info["prompt_bucket"] = prefilled.prompts.length
    self.info["turn1_lengths"] = lengths
    return out, [tokens[row, :lengths[row]] for row in range(len(tokens))]

  def _environment(self, actions):
    rng = np.random.default_rng(7)  # the same observation text in every call
    return [None if self.ends[row] else
            environment_step(self.config, self.task, action, row // self.args.samples, rng)
            for row, action in enumerate(actions)]

  def __call__(self, way: str) -> dict:
    times = {}
    start = time.perf_counter()
    first, actions = self._turn1(keep_cache=way == "continuation")
    times["turn 1"] = time.perf_counter() - start
    start = time.perf_counter()
    observations = self._environment(actions)
    times["env"] = time.perf_counter() - start
    start = time.perf_counter()
    if way == "continuation":
      prefilled = self.sampler.extend(self.params, first.continuation, observations,
                                      max_new_tokens=self.turn2.max_new_tokens)
      jax.block_until_ready(prefilled.state)
      times["turn 2 prefill"] = time.perf_counter() - start
      self.info["observation_bucket"] = prefilled.slot_base - first.continuation.own_mask.shape[1]
      rows = np.arange(len(observations))
      self.packs["continuation"] = [o for o in observations if o is not None]
    else:
      rows = np.array([r for r, o in enumerate(observations) if o is not None])
      prompts = [trajectory_prompt(self.task.prompts[r // self.args.samples], actions[r], observations[r])
                 for r in rows]
      self.packs["re-prefill"] = prompts
      prefilled = self.sampler.prefill(self.params, prompts, num_samples=1, max_new_tokens=self.turn2.max_new_tokens)
      jax.block_until_ready(prefilled.state)
      times["turn 2 prefill"] = time.perf_counter() - start
      self.info["trajectory_bucket"] = prefilled.prompts.length
      self.info["trajectory_tokens"] = (int(prefilled.prompts.lengths.min()), int(prefilled.prompts.lengths.max()))
    middle = time.perf_counter()
    second = self.sampler.decode(self.params, prefilled, key=jax.random.key(2), controls=self.turn2)
    tokens, logprobs, lengths = (np.asarray(x) for x in (second.tokens, second.logprobs, second.lengths))
    end = time.perf_counter()
    times["turn 2 decode"] = end - middle
    times["turn 2"] = end - start
    times["total"] = sum(times[k] for k in ("turn 1", "env", "turn 2"))
    keep = ~self.ends if way == "continuation" else np.ones(len(rows), bool)
    return {"times": times, "rows": rows[keep], "tokens": tokens[keep], "logprobs": logprobs[keep],
            "lengths": lengths[keep]}


def tower_breakdown(model, params, packs: dict) -> None:
  """Times the vision tower alone on each way's turn-2 vision inputs: packed into one call (what the
  prefill / extend does) and one item at a time (summed), one timed call each after compiling."""
  config = model.config
  encode = jax.jit(lambda p, x, g: model.apply(p, x, g, method=model.encode_vision))

  def seconds(pixels, grid) -> float:
    pixels, layout = jax.device_put(pixels), jax.device_put(vision_grid(config.vision, grid))
    compiled = encode.lower(params, pixels, layout).compile()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, pixels, layout))
    return time.perf_counter() - start

  single = {}  # one item of each grid, timed once
  for way, items in packs.items():
    pixels = np.concatenate([item.pixel_values_videos for item in items])
    grids = np.concatenate([item.video_grid_thw for item in items])
    packed = seconds(pixels, grids)
    offsets = np.concatenate([[0], np.cumsum(grids.prod(axis=1))])
    for i, grid in enumerate(grids):
      if tuple(grid) not in single:
        single[tuple(grid)] = seconds(pixels[offsets[i]:offsets[i + 1]], grid[None])
    one_by_one = sum(single[tuple(grid)] for grid in grids)
    print(f"  vision tower, {way:12s}: {len(grids)} videos, {len(pixels)} patches: packed in one call "
          f"{packed:.3f} s, one video at a time {one_by_one:.3f} s (sum)")


def compare(a: dict, b: dict) -> tuple[int, int, float]:
  """(rows whose turn-2 tokens differ, rows compared, max |log-prob difference| over agreeing tokens)."""
  assert (a["rows"] == b["rows"]).all()
  mismatched, worst = 0, 0.0
  for row in range(len(a["rows"])):
    n = int(a["lengths"][row])
    same = n == int(b["lengths"][row]) and (a["tokens"][row, :n] == b["tokens"][row, :n]).all()
    mismatched += not same
    if same:
      worst = max(worst, float(np.abs(a["logprobs"][row, :n] - b["logprobs"][row, :n]).max(initial=0.0)))
  return mismatched, len(a["rows"]), worst


def run_variant(name: str, args) -> None:
  config = model_config(vision=name == "vl")
  model = models.build_model(config)
  params = models.init_params(model, jax.random.key(0))
  task = make_task(config, args, np.random.default_rng(0))
  rollout = Rollout(config, params, task, args)
  ways = ("continuation", "re-prefill")
  start = time.perf_counter()
  warm = {way: rollout(way) for way in ways}  # compiles every executable
  warm_seconds = time.perf_counter() - start
  compile_seconds = sum(e.seconds for e in rollout.sampler.compile_events)
  timings = {way: [] for way in ways}
  results = {}
  for repeat in range(args.repeats):
    for way in (ways if repeat % 2 == 0 else ways[::-1]):  # alternate which goes first
      results[way] = rollout(way)
      timings[way].append(results[way]["times"])
  mismatched, compared, worst = compare(results["continuation"], results["re-prefill"])
  warm_mismatch = compare(warm["continuation"], warm["re-prefill"])[0]
  median = {way: {k: statistics.median(t[k] for t in timings[way]) for k in timings[way][0]} for way in ways}

  params_count = sum(x.size for x in jax.tree_util.tree_leaves(params))
  rows = args.prompts * args.samples
  lengths = rollout.info["turn1_lengths"]
  print(f"\n[{name}] {params_count / 1e6:.1f}M params; {args.prompts} prompts x G={args.samples} = {rows} rows, "
        f"{int(rollout.ends.sum())} end after turn 1; turn budgets {args.turn_tokens} + {args.turn_tokens} tokens")
  prompt_tokens = [len(p.input_ids) for p in task.prompts]
  if config.is_multimodal:
    overview = task.prompts[0].video_grid_thw[0]
    clip = environment_step(config, task, np.zeros(1, np.int32), 0, np.random.default_rng(0))
    print(f"  prompt {prompt_tokens[0]} tokens ({len(video_tokens(config, overview)) - 2} video tokens: "
          f"{args.overview_frames} frames {args.overview_size}x{args.overview_size}, grid {overview.tolist()}); "
          f"observation {len(clip.input_ids)} tokens ({len(video_tokens(config, clip.video_grid_thw[0])) - 2} "
          f"video tokens: {args.clip_frames} frames {args.clip_size}x{args.clip_size}, grid "
          f"{clip.video_grid_thw[0].tolist()})")
  else:
    print(f"  prompt {prompt_tokens[0]} tokens; observation {len(task.caption) + args.observation_len + 5} tokens")
  print(f"  turn-1 lengths min/median/max {lengths.min()}/{int(np.median(lengths))}/{lengths.max()}; buckets: prompt "
        f"{rollout.info['prompt_bucket']}, continuation delta {rollout.info['observation_bucket']}, re-prefilled "
        f"trajectory {rollout.info['trajectory_bucket']} (real {rollout.info['trajectory_tokens'][0]}-"
        f"{rollout.info['trajectory_tokens'][1]} tokens)")
  print(f"  warm-up (both ways, compiles included) {warm_seconds:.1f} s, of which compiles {compile_seconds:.1f} s "
        f"({len(rollout.sampler.compile_events)} executables)")
  print(f"  median of {args.repeats} (s)   " + "".join(f"{k:>15s}" for k in median["continuation"]))
  for way in ways:
    print(f"  {way:22s}" + "".join(f"{v:15.3f}" for v in median[way].values()))
  ratio = {k: median["re-prefill"][k] / median["continuation"][k] for k in ("turn 2 prefill", "turn 2", "total")}
  print(f"  ratio re-prefill / continuation: turn-2 prefill {ratio['turn 2 prefill']:.2f}x, turn 2 "
        f"{ratio['turn 2']:.2f}x, whole rollout {ratio['total']:.2f}x")
  print(f"  greedy turn 2: {mismatched} of {compared} rows differ (warm-up call: {warm_mismatch}); max |log-prob "
        f"diff| on agreeing rows {worst:.1e}")
  if config.is_multimodal and args.tower_breakdown:
    tower_breakdown(rollout.sampler.model, params, rollout.packs)
  if args.strict:
    assert mismatched == 0 and warm_mismatch == 0, "continuation and re-prefill disagree on greedy turn-2 tokens"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="vl,text", help="comma-separated: vl, text")
  parser.add_argument("--prompts", type=int, default=1, help="B")
  parser.add_argument("--samples", type=int, default=8, help="G")
  parser.add_argument("--turn-tokens", type=int, default=64, help="completion budget of each turn")
  parser.add_argument("--overview-frames", type=int, default=16, help="VL: frames of the prompt's video")
  parser.add_argument("--overview-size", type=int, default=112, help="VL: overview frame side in pixels")
  parser.add_argument("--question-len", type=int, default=100, help="VL: text tokens after the overview video")
  parser.add_argument("--clip-frames", type=int, default=4, help="VL: frames of each zoom clip")
  parser.add_argument("--clip-size", type=int, default=168, help="VL: zoom clip frame side in pixels")
  parser.add_argument("--source-frames", type=int, default=64, help="VL: frames of the source a clip is cut from")
  parser.add_argument("--text-prompt-len", type=int, default=384, help="text: prompt tokens")
  parser.add_argument("--observation-len", type=int, default=48, help="text: observation tokens (plus 15 fixed)")
  parser.add_argument("--stop-frac", type=float, default=0.01, help="fraction of the vocabulary that stops a row")
  parser.add_argument("--end-frac", type=float, default=0.0, help="fraction of episodes that end after turn 1")
  parser.add_argument("--bucket", type=int, default=64, help="pad lengths to multiples of this; 0: powers of two")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tower-breakdown", action=argparse.BooleanOptionalAction, default=True,
                      help="VL: also time the vision tower alone on each way's turn-2 videos")
  parser.add_argument("--strict", action="store_true", help="fail when the greedy turn-2 tokens differ")
  args = parser.parse_args()
  print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}, jax {jax.__version__} "
        f"({jax.default_backend()})")
  for name in args.variants.split(","):
    run_variant(name, args)


if __name__ == "__main__":
  main()
