"""Sampling throughput: r1jax's KV-cache sampler vs transformers' `generate` (PyTorch CPU).

    python benchmarks/sampling.py                       # ~100M Qwen2.5-shaped model + tiny Qwen2.5-VL (~5-8 min)
    python benchmarks/sampling.py --models text --prompts 4 --samples 8 --prompt-len 256 --new-tokens 256

Both systems get the same random weights (a transformers model saved with `save_pretrained` and
loaded by r1jax), the same prompts, temperature-1 sampling over the full vocabulary and exactly
--new-tokens new tokens per row (no stop token; transformers with min_new_tokens). transformers
expands every prompt --samples times before its prefill (`num_return_sequences`); r1jax
prefills each prompt once. Tokens/s counts the B*G*new_tokens completion tokens over the wall
time of one whole call (prefill + decode), after compilation for r1jax (reported separately);
the two systems' calls alternate and the best of --repeats is reported.

The roofline line divides the bytes a decode step must move (all weights, each prompt's K/V once
for its G rows, and each row's own completion slots filled so far, new_tokens / 2 on average) by a
measured memory bandwidth, and the step's FLOPs by a measured matmul throughput; the larger bound
is the best a step can do on this machine.
"""
import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from r1jax import models
from r1jax.processing import process_images
from r1jax.sampling import Sampler, SamplingControls

VL_SPECIAL = dict(vision_start_token_id=31995, vision_end_token_id=31996, image_token_id=31997, video_token_id=31998)


TEXT_MODEL = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=2)
TINY_TEXT_MODEL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)  # checks a benchmark's code path in seconds


def text_model(**sizes) -> transformers.PreTrainedModel:
  """A Qwen2.5-shaped Qwen2ForCausalLM with random weights: tied embeddings, rope theta 1e6.

  By default ~98M parameters, Qwen2.5-0.5B proportions (`TEXT_MODEL`: hidden 768, 12 layers,
  12/2 heads, vocab 32k); `sizes` replaces those Qwen2Config fields (e.g. `**TINY_TEXT_MODEL`).
  """
  unknown = set(sizes) - set(TEXT_MODEL)
  if unknown:
    raise ValueError(f"text_model sizes {sorted(unknown)} are not among {sorted(TEXT_MODEL)}")
  config = transformers.Qwen2Config(
      **{**TEXT_MODEL, **sizes}, tie_word_embeddings=True, max_position_embeddings=32768,
      rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6)
  return transformers.Qwen2ForCausalLM(config).eval()


def vl_model() -> transformers.PreTrainedModel:
  """A tiny Qwen2.5-VL: 4-layer 256-wide decoder (vocab 32k), 4-block 128-wide vision tower."""
  config = transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       bos_token_id=None, eos_token_id=None, pad_token_id=0,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
      vision_config=dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                         patch_size=14, window_size=112, fullatt_block_indexes=[1, 3], tokens_per_second=2),
      tie_word_embeddings=True, **VL_SPECIAL)
  return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


def text_prompts(rng, count: int, length: int, vocab: int = 32000) -> list[dict]:
  """`count` prompts of `length` random ids in [10, vocab * 31 / 32)."""
  return [{"input_ids": rng.integers(10, vocab * 31 // 32, length).astype(np.int32)} for _ in range(count)]


def vl_prompts(rng, count: int, length: int) -> list[dict]:
  """One random 224x224 image per prompt (64 merged tokens) inside `length` tokens."""
  prompts = []
  for _ in range(count):
    image = process_images([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)])
    num_image_tokens = int(image.grid_thw.prod()) // 4
    text = length - num_image_tokens - 2
    ids = np.concatenate([rng.integers(10, 31000, text // 2), [VL_SPECIAL["vision_start_token_id"]],
                          [VL_SPECIAL["image_token_id"]] * num_image_tokens, [VL_SPECIAL["vision_end_token_id"]],
                          rng.integers(10, 31000, text - text // 2)]).astype(np.int32)
    prompts.append({"input_ids": ids, "pixel_values": image.pixel_values, "image_grid_thw": image.grid_thw})
  return prompts


def hf_inputs(model, prompts: list[dict]) -> dict:
  inputs = {"input_ids": torch.as_tensor(np.stack([p["input_ids"] for p in prompts]), dtype=torch.long)}
  inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
  if "pixel_values" in prompts[0]:
    inputs["pixel_values"] = torch.as_tensor(np.concatenate([p["pixel_values"] for p in prompts]))
    inputs["image_grid_thw"] = torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in prompts]))
    ids = inputs["input_ids"]
    inputs["mm_token_type_ids"] = (ids == model.config.image_token_id).long()
  return inputs


def transformers_runner(model, prompts, samples: int, new_tokens: int):
  """(a function timing one `generate` call (sampling, num_return_sequences=samples), torch threads).

  torch's OpenMP threads stall when other processes share the cores, so a short generate with 1
  thread and with all cores picks the faster setting first.
  """
  inputs = hf_inputs(model, prompts)
  kwargs = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=samples,
                pad_token_id=0, eos_token_id=None)
  expected_shape = (len(prompts) * samples, prompts[0]["input_ids"].size + new_tokens)

  def generate(max_new_tokens: int = new_tokens) -> float:
    start = time.perf_counter()
    with torch.no_grad():
      out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, **kwargs)
    seconds = time.perf_counter() - start
    assert max_new_tokens != new_tokens or out.shape == expected_shape, out.shape
    return seconds

  calibration = {}
  for threads in sorted({1, os.cpu_count()}):
    torch.set_num_threads(threads)
    generate(2)  # Warm-up: allocator, first calls.
    calibration[threads] = generate(4)
  threads = min(calibration, key=calibration.get)
  torch.set_num_threads(threads)
  return generate, threads


def r1jax_runner(model, params, prompts, samples: int, new_tokens: int):
  """(a function timing one sampler call as {total, prefill, decode} seconds, compile stats)."""
  sampler = Sampler(model)
  controls = SamplingControls(max_new_tokens=new_tokens, temperature=1.0, stop_token_ids=())
  start = time.perf_counter()
  jax.block_until_ready(sampler(params, prompts, key=jax.random.key(0), num_samples=samples, controls=controls).tokens)
  compile_stats = {"compile": sum(e.seconds for e in sampler.compile_events), "first_call": time.perf_counter() - start}
  calls = iter(range(1, 1 << 30))

  def sample() -> dict:
    start = time.perf_counter()
    prefilled = sampler.prefill(params, prompts, num_samples=samples, max_new_tokens=new_tokens)
    jax.block_until_ready(prefilled.state)
    middle = time.perf_counter()
    out = sampler.decode(params, prefilled, key=jax.random.key(next(calls)), controls=controls)
    jax.block_until_ready(out.tokens)
    end = time.perf_counter()
    assert int(np.asarray(out.lengths).min()) == new_tokens
    return {"total": end - start, "prefill": middle - start, "decode": end - middle}

  return sample, compile_stats


def memory_bandwidth() -> float:
  """Bytes/s of reading a 512 MiB float32 array (best of jitted JAX and multi-threaded torch sums)."""
  size = 128 * 2**20
  array = jnp.ones((size,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(array).block_until_ready()
  tensor = torch.ones(size)
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    total(array).block_until_ready()
    best = min(best, time.perf_counter() - start)
    start = time.perf_counter()
    tensor.sum()
    best = min(best, time.perf_counter() - start)
  return 4 * size / best


def matmul_throughput() -> float:
  """FLOP/s of a jitted float32 2048^3 matmul (best of 5)."""
  a = jnp.ones((2048, 2048), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * 2048**3 / best


def decode_step_cost(config, prompts: int, rows: int, prompt_len: int, own_slots: float) -> tuple[float, float]:
  """(bytes, FLOPs) of one decode step: every weight once, each prompt's K/V once and each row's
  `own_slots` K/V slots; every row attends over prompt_len + own_slots slots; 2 FLOPs per MAC."""
  t = config.text
  language_params = (t.vocab_size * t.hidden_size * (1 if t.tie_word_embeddings else 2)
                     + t.num_layers * (t.hidden_size * (t.num_heads + 2 * t.num_kv_heads) * t.head_dim
                                       + t.num_heads * t.head_dim * t.hidden_size
                                       + 3 * t.hidden_size * t.intermediate_size))
  cache_bytes = 2 * t.num_layers * (prompts * prompt_len + rows * own_slots) * t.num_kv_heads * t.head_dim * 4
  attention_flops = 4 * t.num_layers * rows * (prompt_len + own_slots) * t.num_heads * t.head_dim
  return 4 * language_params + cache_bytes, 2 * rows * language_params + attention_flops


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="text,vl", help="comma-separated: text, vl")
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--samples", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls of each system, alternating; best reported")
  args = parser.parse_args()
  torch.manual_seed(0)
  bandwidth, flops_per_second = memory_bandwidth(), matmul_throughput()
  print(f"machine: {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()}), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; measured memory bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s, fp32 matmul {flops_per_second / 1e9:.0f} GFLOP/s")
  builders = {"text": (text_model, text_prompts), "vl": (vl_model, vl_prompts)}
  for name in args.models.split(","):
    build, make_prompts = builders[name]
    reference = build()
    with tempfile.TemporaryDirectory() as path:
      reference.save_pretrained(path)
      model, params = models.load_pretrained(path)
    prompts = make_prompts(np.random.default_rng(0), args.prompts, args.prompt_len)
    tokens = args.prompts * args.samples * args.new_tokens
    sample, ours = r1jax_runner(model, params, prompts, args.samples, args.new_tokens)
    generate, threads = transformers_runner(reference, prompts, args.samples, args.new_tokens)
    # Alternate the two so that both see the same load from whatever else runs on the machine.
    timings, theirs = [], float("inf")
    for _ in range(args.repeats):
      timings.append(sample())
      theirs = min(theirs, generate())
    ours.update(min(timings, key=lambda t: t["total"]))
    rows = args.prompts * args.samples
    step_bytes, step_flops = decode_step_cost(model.config, args.prompts, rows, args.prompt_len, args.new_tokens / 2)
    step = ours["decode"] / args.new_tokens
    bound = max(step_bytes / bandwidth, step_flops / flops_per_second)
    params_count = sum(p.numel() for p in reference.parameters())
    print(f"\n[{name}] {params_count / 1e6:.1f}M params; {args.prompts} prompts x G={args.samples}, prompt "
          f"{args.prompt_len} tokens, {args.new_tokens} new tokens ({tokens} tokens per call)")
    print(f"  r1jax        {tokens / ours['total']:8.1f} tokens/s  ({ours['total']:.2f} s: prefill "
          f"{ours['prefill']:.2f} s + decode {ours['decode']:.2f} s); compile {ours['compile']:.1f} s "
          f"(first call {ours['first_call']:.1f} s)")
    print(f"  transformers {tokens / theirs:8.1f} tokens/s  ({theirs:.2f} s, {threads} torch thread(s))")
    print(f"  ratio        {theirs / ours['total']:8.2f}x (r1jax / transformers tokens/s)")
    print(f"  roofline     decode step {step * 1e3:.1f} ms measured; moves {step_bytes / 1e6:.0f} MB "
          f"-> {step_bytes / bandwidth * 1e3:.1f} ms at {bandwidth / 1e9:.1f} GB/s, {step_flops / 1e9:.2f} GFLOP "
          f"-> {step_flops / flops_per_second * 1e3:.1f} ms; {bound / step:.0%} of the bound")


if __name__ == "__main__":
  main()
