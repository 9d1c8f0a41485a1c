"""One GRPO step of a Qwen2.5-VL-3B-shaped model on an accelerator: tokens/s per device, step time, MFU.

    python benchmarks/gpu.py                                   # Qwen2.5-VL-3B shapes on every device (GPU / TPU)
    python benchmarks/gpu.py --peak-tflops 989 --prompts 4     # a peak the table below does not know
    python benchmarks/gpu.py --model tiny --devices 8          # a tiny VL config on 8 simulated CPU devices

A step is what the trainer does for GRPO, on random weights initialised in their shards over all
devices (`sharding.init_sharded`, FSDP over every device; float32 parameters, --dtype compute):
  rollout  `r1jax.sampling.Sampler` samples G=--samples completions of exactly --new-tokens tokens
           (no stop token, temperature 1) for each of --prompts prompts (left-padded to --prompt-len
           tokens, ending with one random --image-size px image: the prompt half of
           benchmarks/train_step.py `vl_batch`);
  learner  the rows as the trainer builds them (`SequenceBuilder.learner_batch`, each prompt's image
           once: `shared_vision`), random advantages (no reward model here), then
           the `r1jax.train.learner` step (benchmarks/train_step.py `JaxLearner`:
           PPO-clip, token-mean, AdamW, clip at 1); the next step samples with the updated weights.
The first step compiles; the median of the --steps steps after it is reported.

Figures. Tokens/s per device: the learner batch's real tokens (prompt + completion, as verl's
throughput) per step second per device; the rollout line counts sampled tokens. Model FLOPs as in
benchmarks/train_step.py `model_flops`: 6 x matmul parameters x tokens for the learner (decoder x
every token, head x completion tokens, vision x patches); the rollout's forward is 2 x (decoder x
prompt and sampled tokens, head x sampled tokens, vision x patches); attention is not counted. MFU
= model FLOPs / seconds / (peak x devices), the peak bf16 dense TFLOP/s of `PEAK_BF16_TFLOPS` by
`jax.devices()[0].device_kind`, or --peak-tflops.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/

# Dense bf16 TFLOP/s of one device, by a lower-case piece of `device_kind` (first match wins).
PEAK_BF16_TFLOPS = (
    ("h100 pcie", 756.0), ("h100", 989.0), ("h200", 989.0), ("a100", 312.0),
    ("v5 lite", 197.0), ("v5e", 197.0), ("v5p", 459.0), ("v5", 459.0),
    ("v6 lite", 918.0), ("v6e", 918.0), ("v4", 275.0),
)


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="qwen2.5-vl-3b", help="a models.PRESETS VL name, or 'tiny'")
  parser.add_argument("--devices", type=int, default=0,
                      help="simulated CPU devices (sets XLA_FLAGS before JAX starts); 0: the machine's devices")
  parser.add_argument("--prompts", type=int, default=2)
  parser.add_argument("--samples", type=int, default=8, help="G completions per prompt")
  parser.add_argument("--prompt-len", type=int, default=512)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--image-size", type=int, default=448, help="pixels per side of each prompt's image")
  parser.add_argument("--steps", type=int, default=3, help="timed GRPO steps after the first (compiling) one")
  parser.add_argument("--dtype", default="bfloat16", help="computation dtype (parameters stay float32)")
  parser.add_argument("--remat", default="full", help="none | full | dots_saveable")
  parser.add_argument("--scan-layers", action="store_true", help="scanned decoder layers (faster compile)")
  parser.add_argument("--peak-tflops", type=float, default=0.0,
                      help="peak TFLOP/s of one device; 0: from PEAK_BF16_TFLOPS by device kind")
  args = parser.parse_args()
  if args.model == "tiny":  # sizes that take seconds on CPU
    for name, value in (("prompt_len", 64), ("new_tokens", 16), ("image_size", 56)):
      if getattr(args, name) == parser.get_default(name):
        setattr(args, name, value)
  return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={ARGS.devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.train_step import JaxLearner, model_flops, spread, tiny_vl_config, vl_batch  # noqa: E402
from r1jax import models, sharding  # noqa: E402
from r1jax.sampling import Sampler, SamplingControls  # noqa: E402
from r1jax.train import default_config, learner  # noqa: E402
from r1jax.train.sequences import SequenceBuilder  # noqa: E402

PER_ROW = ("input_ids", "attention_mask", "positions", "completion_mask", "advantages", "sampler_logprobs")
VISION = learner.VISION_KEYS + ("image_embed_index", "video_embed_index")


def peak_tflops(device_kind: str) -> float | None:
  """The table's bf16 peak for a `device_kind` (e.g. 'NVIDIA H100 80GB HBM3', 'TPU v5 lite'), or None."""
  kind = device_kind.lower()
  return next((tflops for piece, tflops in PEAK_BF16_TFLOPS if piece in kind), None)


def prompt_batch(config, prompts: int, prompt_len: int, image_size: int) -> dict:
  """A data-pipeline prompt batch: the prompt columns of `vl_batch` (left-padded text ending with one
  image), its pixels, grids and `image_counts`."""
  rows = vl_batch(np.random.default_rng(0), config, prompts, prompt_len, 1, image_size)
  return {"input_ids": rows["input_ids"][:, :prompt_len], "attention_mask": rows["attention_mask"][:, :prompt_len],
          "pixel_values": rows["pixel_values"], "image_grid_thw": rows["image_grid_thw"],
          "image_counts": np.ones(prompts, np.int64)}


def device_batch(builder: SequenceBuilder, batch: dict, mesh, rules) -> dict:
  """The learner's input as the trainer places it: rows over the batch mesh axes, each prompt's
  vision inputs once and replicated (`shared_vision`, `device_vision`)."""
  arrays = builder.device_vision({k: batch[k] for k in PER_ROW + VISION if k in batch}, mesh, rules)
  axes = {k: (1 if k == "positions" and np.ndim(v) == 3 else 0 if k in PER_ROW else None) for k, v in arrays.items()}
  return sharding.shard_batch(arrays, mesh, rules, batch_axis=axes)


def rollout_flops(config, params, prompts: int, prompt_len: int, rows: int, new_tokens: int, patches: int) -> float:
  """Forward model FLOPs of a rollout: `model_flops` / 3 of one sequence holding every token the
  decoder runs (each prompt once, every sampled token), all sampled tokens through the head, and
  every prompt's patches once. Only shapes are read (zero-stride arrays)."""
  shapes = {"input_ids": np.broadcast_to(np.int32(0), (1, prompts * prompt_len + rows * new_tokens)),
            "completion_mask": np.broadcast_to(np.float32(0), (1, rows * new_tokens)),
            "pixel_values": np.broadcast_to(np.float32(0), (patches, config.vision.patch_dim))}
  return model_flops(config, params, shapes) / 3


def main(args: argparse.Namespace) -> None:
  runtime = dict(dtype=args.dtype, param_dtype="float32", scan_layers=args.scan_layers, remat=args.remat)
  config = tiny_vl_config(**runtime) if args.model == "tiny" else models.preset(args.model, **runtime)
  if not config.is_multimodal:
    raise ValueError(f"--model {args.model} is a text model; this benchmark needs a Qwen2.5-VL preset")
  device_kind = jax.devices()[0].device_kind
  peak = args.peak_tflops or peak_tflops(device_kind)
  model = models.build_model(config)
  mesh = sharding.make_mesh({"fsdp": -1})
  rules = sharding.logical_rules()
  devices = mesh.devices.size
  params = sharding.init_sharded(model, jax.random.PRNGKey(0), mesh, rules)
  params_count = sum(x.size for x in jax.tree_util.tree_leaves(params))

  prompts = prompt_batch(config, args.prompts, args.prompt_len, args.image_size)
  builder = SequenceBuilder(model)
  sampler = Sampler(model, pad_id=builder.pad_id, mesh=mesh, rules=rules)
  controls = SamplingControls(max_new_tokens=args.new_tokens, temperature=1.0, stop_token_ids=())
  rows = args.prompts * args.samples
  advantages = np.random.default_rng(1).standard_normal(rows).astype(np.float32)
  ours, times, compile_s = None, [], 0.0
  for step in range(args.steps + 1):
    start = time.perf_counter()
    out = sampler(ours.state.params if ours else params, builder.prompts(prompts), key=jax.random.key(step),
                  num_samples=args.samples, controls=controls)
    jax.block_until_ready(out.tokens)
    sampled = time.perf_counter()
    host = builder.shared_vision(dict(builder.learner_batch(prompts, out, args.samples), advantages=advantages))
    batch = device_batch(builder, host, mesh, rules)
    built = time.perf_counter()
    if ours is None:  # compiles the learner for this batch's shapes
      with sharding.use_mesh(mesh, rules):
        ours = JaxLearner(model, params, default_config().optim, args.steps + 1, batch)
      del params
      compile_s = ours.compile_s
    with sharding.use_mesh(mesh, rules):
      learn_start = time.perf_counter()
      stats, _ = ours.step(batch)
    end = time.perf_counter()
    times.append({"rollout": sampled - start, "batch": built - sampled, "learner": end - learn_start,
                  "step": end - start - (compile_s if step == 0 else 0.0), "stats": stats})
  first, timed = times[0], times[1:]
  median = {k: statistics.median(t[k] for t in timed) for k in ("rollout", "batch", "learner", "step")}

  sampler_compile = sum(e.seconds for e in sampler.compile_events)
  patches = host["pixel_values"].shape[0]
  learner_flops = model_flops(config, ours.state.params, host)
  sample_flops = rollout_flops(config, ours.state.params, args.prompts, args.prompt_len, rows, args.new_tokens,
                               patches)
  real_tokens = int(np.asarray(host["attention_mask"]).sum())
  sampled_tokens = rows * args.new_tokens
  mfu = lambda flops, seconds: None if peak is None else flops / seconds / (peak * 1e12 * devices)
  result = {
      "model": args.model, "params_m": params_count / 1e6, "devices": devices, "device_kind": device_kind,
      "peak_tflops": peak, "rows": rows, "step_s": median["step"], "rollout_s": median["rollout"],
      "learner_s": median["learner"], "batch_s": median["batch"],
      "tokens_per_s_per_device": real_tokens / median["step"] / devices,
      "rollout_tokens_per_s_per_device": sampled_tokens / median["rollout"] / devices,
      "learner_tokens_per_s_per_device": real_tokens / median["learner"] / devices,
      "mfu": mfu(learner_flops + sample_flops, median["step"]), "rollout_mfu": mfu(sample_flops, median["rollout"]),
      "learner_mfu": mfu(learner_flops, median["learner"]), "rollout_tflop": sample_flops / 1e12,
      "learner_tflop": learner_flops / 1e12, "loss": first["stats"]["loss"],
      "grad_norm": first["stats"]["grad_norm"]}
  pct = lambda x: "n/a" if x is None else f"{x:.1%}"
  print(f"[GRPO step] {args.model}: {params_count / 1e6:.1f}M params, {args.dtype} compute, remat {args.remat}, "
        f"{devices} x {device_kind} (FSDP); {args.prompts} prompts x G={args.samples}, prompt {args.prompt_len} "
        f"tokens with one {args.image_size}px image ({patches // args.prompts} patches), {args.new_tokens} new tokens")
  print(f"  step     {spread([t['step'] for t in timed])}; first step {first['step']:.1f} s with the sampler's "
        f"compilation ({sampler_compile:.1f} s), learner compile {compile_s:.1f} s besides")
  print(f"  rollout  {median['rollout']:.3f} s  {result['rollout_tokens_per_s_per_device']:.1f} sampled tokens/s "
        f"per device  {sample_flops / 1e12:.3f} model TFLOP  MFU {pct(result['rollout_mfu'])}")
  print(f"  learner  {median['learner']:.3f} s  {result['learner_tokens_per_s_per_device']:.1f} tokens/s per device  "
        f"{learner_flops / 1e12:.3f} model TFLOP  MFU {pct(result['learner_mfu'])}  (+ {median['batch']:.3f} s "
        f"building the batch on the host)")
  print(f"  total    {result['tokens_per_s_per_device']:.1f} tokens/s per device ({real_tokens} real tokens per step); "
        f"MFU {pct(result['mfu'])} of "
        + (f"{peak:g} TFLOP/s per device" if peak else f"an unknown peak (no table entry for {device_kind!r}; "
           "pass --peak-tflops)"))
  print(f"  first step loss {result['loss']:+.6f} grad_norm {result['grad_norm']:.6f}")
  print("result " + json.dumps(result))


if __name__ == "__main__":
  main(ARGS)
