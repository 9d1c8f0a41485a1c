"""Learner-side layout of the decoder on XLA:CPU: flattened dense matmuls, the GQA attention layout,
compile time of scanned layers, bf16 vs fp32.

    python benchmarks/learner_layout.py                  # old vs new layout: jax.grad of the loss
    python benchmarks/learner_layout.py --compile        # + grad compile time, scan_layers False/True
    python benchmarks/learner_layout.py --dtypes         # + grad time, fp32 vs bf16 compute
    python benchmarks/learner_layout.py --steps 3 --layers 4     # a quick look

The model is the ~100M Qwen2.5-shaped one of benchmarks/train_step.py (hidden 768, 12 layers,
12/2 heads, intermediate 2048, vocab 32k, tied, fp32, random weights), on its batch (8 rows x
(128 left-padded prompt + 128 completion) tokens, `train_step.grpo_batch`). The timed function
is `jax.grad` of a policy-gradient loss over the completion tokens (-advantage x log-prob,
token-mean; logits of every position through the tied head), compiled ahead of time.

Layouts (the old ones live here only, patched in while tracing):
  old:        3-D dense matmuls (tensordot / einsum over [batch, length, ...]) and GQA attention
              contracting "btkgd,bskd->bkgts" (r1jax before issue 17);
  dense2d:    dense matmuls as 2-D [batch*length, in] @ [in, out] (`layers.flat_matmul`), old attention;
  new:        2-D dense matmuls and the [batch, kv_heads, q_len*groups, ...] attention (the code now).
The variants run alternately, so all see the same machine load; best and median are printed.
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.train_step import grpo_batch  # noqa: E402
from r1jax import models  # noqa: E402
from r1jax.models import layers, llm  # noqa: E402
from r1jax.models.config import ModelConfig, TextConfig  # noqa: E402


def model_config(layers_count: int, **runtime) -> ModelConfig:
  text = TextConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_layers=layers_count,
                    num_heads=12, num_kv_heads=2, tie_word_embeddings=True)
  return ModelConfig(text, **runtime)


# --------------------------------------------------------------------------- the old layouts


def _tensordot_matmul(x, kernel, in_dims=1, preferred_element_type=None):
  """The 3-D contraction DenseND, nn.Dense and the LM head's einsum ran before `flat_matmul`."""
  return jnp.tensordot(x, kernel, axes=in_dims, preferred_element_type=preferred_element_type)


def _old_attention(q, k, v, mask):
  """`dot_product_attention` before issue 17: scores laid out [batch, kv_heads, groups, q_len, kv_len]."""
  batch, q_len, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(batch, q_len, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * (head_dim**-0.5)
  probs = layers._masked_softmax(scores, mask[:, None, None]).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


@contextlib.contextmanager
def patched(module, name, value):
  saved = getattr(module, name)
  setattr(module, name, value)
  try:
    yield
  finally:
    setattr(module, name, saved)


def layout(name: str) -> contextlib.ExitStack:
  """The patches that trace variant `name` ("old", "dense2d" or "new")."""
  stack = contextlib.ExitStack()
  if name == "old":
    stack.enter_context(patched(layers, "flat_matmul", _tensordot_matmul))
    stack.enter_context(patched(llm, "flat_matmul", _tensordot_matmul))
  if name in ("old", "dense2d"):
    stack.enter_context(patched(llm, "dot_product_attention", _old_attention))
  return stack


# --------------------------------------------------------------------------- the timed function


def loss_fn(model, params, batch, completion_len: int):
  """Token-mean of -advantage x log p(token) over the completion tokens (logits of every position)."""
  logits, _ = model.apply(params, batch["input_ids"], positions=batch["positions"],
                          attention_mask=batch["attention_mask"].astype(bool))
  logits = logits[:, -completion_len - 1:-1]
  targets = batch["input_ids"][:, -completion_len:]
  logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
  mask = batch["completion_mask"]
  return -jnp.sum(batch["advantages"][:, None] * logprobs * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def compiled_grad(config: ModelConfig, batch: dict, completion_len: int, variant: str = "new"):
  """(compiled grad, params, seconds to lower + compile) for `variant`'s layout."""
  model = models.build_model(config)
  params = jax.jit(model.init)(jax.random.key(0), batch["input_ids"][:1, :8])
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(model, p, b, completion_len)))
  start = time.perf_counter()
  with layout(variant):
    compiled = grad.lower(params, batch).compile()
  return compiled, params, time.perf_counter() - start


def race(fns: dict, steps: int) -> dict[str, list[float]]:
  """Seconds per call of each `fns` value (a thunk), called in turn `steps` times after one warm-up."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return times


def report(times: dict[str, list[float]], baseline: str) -> None:
  base = min(times[baseline])
  for name, ts in times.items():
    print(f"  {name:>8s}: best {min(ts):7.3f} s  median {statistics.median(ts):7.3f} s  "
          f"({base / min(ts):.2f}x {baseline}'s best)")


def max_relative_difference(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def compare_layouts(args, batch) -> None:
  config = model_config(args.layers)
  runs = {}
  for variant in ("old", "dense2d", "new"):
    compiled, params, seconds = compiled_grad(config, batch, args.completion_len, variant)
    runs[variant] = (compiled, params)
    print(f"{variant}: compiled in {seconds:.1f} s")
  reference = runs["old"][0](runs["old"][1], batch)
  for variant in ("dense2d", "new"):
    grads = runs[variant][0](runs[variant][1], batch)
    print(f"{variant} vs old: max relative gradient difference {max_relative_difference(grads, reference):.2e}")
  print(f"jax.grad of the loss, {args.layers} layers, {args.batch} x {args.prompt_len + args.completion_len} "
        f"tokens, {args.steps} alternating calls each:")
  report(race({name: (lambda c=c, p=p: c(p, batch)) for name, (c, p) in runs.items()}, args.steps), "old")


def compare_compile_times(args, batch) -> None:
  print(f"grad compile time (lower + compile), {args.layers} layers, alternating:")
  seconds = {False: [], True: []}
  for _ in range(args.compile_repeats):
    for scan in (False, True):
      seconds[scan].append(compiled_grad(model_config(args.layers, scan_layers=scan), batch, args.completion_len)[2])
  for scan, ts in seconds.items():
    print(f"  scan_layers={scan!s:5s}: best {min(ts):6.1f} s  median {statistics.median(ts):6.1f} s")


def compare_dtypes(args, batch) -> None:
  runs = {}
  for dtype in ("float32", "bfloat16"):
    compiled, params, _ = compiled_grad(model_config(args.layers, dtype=dtype), batch, args.completion_len)
    runs[dtype] = lambda c=compiled, p=params: c(p, batch)
  print(f"jax.grad of the loss by compute dtype (fp32 params), {args.layers} layers, alternating:")
  report(race(runs, args.steps), "float32")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--completion-len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--compile", action="store_true", help="also time compiling the grad with scan_layers")
  parser.add_argument("--compile-repeats", type=int, default=2)
  parser.add_argument("--dtypes", action="store_true", help="also time the grad with bf16 compute")
  parser.add_argument("--skip-layouts", action="store_true", help="only --compile / --dtypes")
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
  batch = {k: jnp.asarray(v) for k, v in grpo_batch(np.random.default_rng(0), args.batch, args.prompt_len,
                                                     args.completion_len, 32000).items()}
  if not args.skip_layouts:
    compare_layouts(args, batch)
  if args.compile:
    compare_compile_times(args, batch)
  if args.dtypes:
    compare_dtypes(args, batch)


if __name__ == "__main__":
  main()
