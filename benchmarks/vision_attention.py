"""Vision-tower attention: blocked window / chunked frame attention vs one dense masked softmax.

    python benchmarks/vision_attention.py [--patches 4096 --heads 16 --head-dim 80]

Qwen2.5-VL's tower attends within 64-patch windows in most blocks and within whole frames in a
few. For one packed image of --patches patches (64-patch windows; one frame), this compiles each
way of computing it and prints XLA's temporary-buffer size and the best of 3 forward times side
by side, and checks that the outputs agree.
"""
import argparse
import time

import jax
import numpy as np

from r1jax.models import vision


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--patches", type=int, default=4096)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--head-dim", type=int, default=80)
  args = parser.parse_args()
  n = args.patches
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (n, args.heads, args.head_dim)) for key in keys)
  windows, frame = np.arange(n) // 64, np.zeros(n, np.int32)
  dense = lambda *a: vision.chunked_segment_attention(*a, chunk=n)  # one chunk: the whole masked softmax
  cases = [("window blocks", "dense", dense, windows),
           ("window blocks", "blocked (span 64)", lambda *a: vision.local_segment_attention(*a, span=64), windows),
           ("full blocks", "dense", dense, frame),
           ("full blocks", f"chunked ({vision.FULL_ATTENTION_QUERY_CHUNK} queries)",
            lambda *a: vision.chunked_segment_attention(*a, chunk=vision.FULL_ATTENTION_QUERY_CHUNK), frame)]
  print(f"{n} patches, {args.heads} heads x {args.head_dim}; jax {jax.__version__} ({jax.default_backend()})")
  reference = {}
  for block, name, fn, segments in cases:
    compiled = jax.jit(fn).lower(q, k, v, segments).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = jax.block_until_ready(compiled(q, k, v, segments))
    best = float("inf")
    for _ in range(3):
      start = time.perf_counter()
      jax.block_until_ready(compiled(q, k, v, segments))
      best = min(best, time.perf_counter() - start)
    error = float(np.abs(np.asarray(out) - reference.setdefault(block, np.asarray(out))).max())
    print(f"  {block:13s} {name:24s} temporary buffers {temp / 2**20:8.1f} MiB   forward {best * 1e3:8.1f} ms   "
          f"max |diff| vs dense {error:.1e}")


if __name__ == "__main__":
  main()
