"""Long-video memory model and sequence-parallel speed (issue 23, LongVILA-R1).

    python benchmarks/long_video.py memory   # Qwen2.5-VL-7B / 3B at 3,600 frames x 60 tokens on 8 devices
    python benchmarks/long_video.py check    # the model against XLA's memory analysis, CPU-sized, 8 sim. devices
    python benchmarks/long_video.py speed    # MR-SP (sequence = 8, 4) vs no sequence parallelism, 8 sim. devices

`memory` prints, per device and per mesh layout fsdp x sequence of 8 devices, the bytes of the
learner (params, grads, Adam moments, activations of one micro-batch row with per-layer remat)
and of the sampler's prefill (params, the prompt's KV cache, the video embeddings, the frozen
tower's working set), and whether each fits devices of 80 and 141 GB. It is arithmetic on the
model's shapes (`estimate`); `check` compiles the learner's gradient of a tiny model at CPU scale
under the same layouts and prints the model's prediction beside XLA's memory analysis.

Conventions (the estimate's assumptions, stated so they can be checked):
  * parameters shard by r1jax's logical rules (`sharding.logical_to_spec`): embed -> fsdp by
    default; `--embed-over-sequence` adds the rule embed -> (fsdp, sequence) (ZeRO over all 8).
  * the vision tower is frozen (no grads, no moments); AdamW's two moments are in param dtype.
  * activations with remat "full": each layer's input [rows, L / n, hidden] is kept; one layer's
    forward + backward is live at a time (Q/K/V/O, MLP intermediates, attention).
  * attention "xla" (r1jax's einsum reference, CPU/TPU): SCORE_COPIES fp32 tensors of the device's
    query rows' scores over all keys ([heads, L / n, L]) are live in the backward, and the bool
    visibility mask [L / n, L]; "ring" holds one [L / n, L / n] block of scores (and the same
    mask); "flash" (a fused kernel such as cuDNN, given per-row lengths) neither.
  * the KV cache is NOT sharded on length (issue 23, deliverable 3, not implemented): each
    device of a `sequence` group holds the whole prompt's cache; `kv_cache/n` shows the gain.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import types

if __name__ == "__main__":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import models, sharding  # noqa: E402
from r1jax.models import api  # noqa: E402
from r1jax.models.llm import CausalLM  # noqa: E402

GB = 1e9
LAYOUTS = ((8, 1), (4, 2), (2, 4), (1, 8))  # (fsdp, sequence) on 8 devices
DEVICES_GB = (80, 141)
SCORE_COPIES = 6


@dataclasses.dataclass(frozen=True)
class Workload:
  """One long-video GRPO step's shapes."""

  frames: int = 3600
  tokens_per_frame: int = 60  # merged LLM tokens per frame
  text_tokens: int = 256  # question and template
  response: int = 2048
  rows: int = 1  # learner micro-batch rows per device group (gradient accumulation over the G rows)
  logits_chunk: int = 128  # completion positions per log-prob chunk (config.optim.logits_chunk)

  @property
  def video_tokens(self) -> int:
    return self.frames * self.tokens_per_frame

  @property
  def prompt(self) -> int:
    return self.video_tokens + self.text_tokens

  @property
  def length(self) -> int:
    return self.prompt + self.response


def _param_bytes(model, mesh_shape: dict[str, int], rules, dtype_bytes: int, part: str | None = None) -> int:
  """Per-device bytes of the parameters (of the top-level `part` only, e.g. "visual"), as sharded."""
  mesh = types.SimpleNamespace(shape=mesh_shape)
  boxed = api.abstract_params(model)
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: hasattr(x, "names"))[0]:
    keys = [getattr(k, "key", None) for k in path]
    if part is not None and part not in keys:
      continue
    spec = sharding.logical_to_spec(leaf.names, leaf.value.shape, mesh, rules)
    shards = math.prod(mesh_shape[a] for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry))
    total += leaf.value.size * dtype_bytes // shards
  return total


def _split(size: int, ways: int) -> int:
  """The per-device share of a dimension split `ways` ways, or all of it when it does not divide."""
  return size // ways if size % ways == 0 else size


def estimate(config: models.ModelConfig, work: Workload, fsdp: int, sequence: int, tensor: int = 1,
             attention: str = "xla", embed_over_sequence: bool = False, param_bytes: int = 2,
             act_bytes: int = 2, model=None) -> dict[str, float]:
  """Per-device bytes of the learner and the sampler's prefill (see the module docstring)."""
  t = config.text
  model = model or api.build_model(config)
  mesh_shape = {"data": 1, "fsdp": fsdp, "tensor": tensor, "sequence": sequence}
  rules = sharding.logical_rules({"embed": ["fsdp", "sequence"], "vision_embed": ["fsdp", "sequence"]}
                                 if embed_over_sequence else None)
  everything = _param_bytes(model, mesh_shape, rules, param_bytes)
  tower = _param_bytes(model, mesh_shape, rules, param_bytes, "visual") if config.is_multimodal else 0
  trainable = everything - tower
  rows = _split(work.rows, fsdp)
  length = work.length // sequence
  heads, kv_heads = _split(t.num_heads, tensor), _split(t.num_kv_heads, tensor)
  hd, hidden, inter = t.head_dim, t.hidden_size, _split(t.intermediate_size, tensor)
  saved_inputs = t.num_layers * rows * length * hidden * act_bytes
  # One layer's forward + backward: x, norms, q/k/v/out and their grads; MLP gate/up/product and grads.
  projections = 2 * rows * length * (3 * hidden + (heads + 2 * kv_heads) * hd + heads * hd) * act_bytes
  mlp = 2 * rows * length * 3 * inter * act_bytes
  if attention == "flash":
    attn = 2 * rows * length * heads * 4  # log-sum-exp rows
    gathered_kv = 0
  else:
    keys = work.length if attention == "xla" else work.length // sequence
    # fp32 score-sized tensors live in one layer's backward: scores, masked scores, probabilities
    # and their gradients; SCORE_COPIES was calibrated against XLA:CPU (`check`: 6.2 at fsdp 8 and at seq 8).
    attn = SCORE_COPIES * rows * heads * length * keys * 4
    gathered_kv = 2 * 2 * rows * (work.length if attention == "xla" else 2 * length) * kv_heads * hd * act_bytes
  # The bool visibility mask [rows, L / n, L] (built once, outside the layers); a fused kernel takes lengths.
  mask = 0 if attention == "flash" else rows * length * work.length
  logits = 2 * rows * work.logits_chunk * _split(t.vocab_size, tensor) * 4
  activations = saved_inputs + projections + mlp + attn + gathered_kv + mask + logits
  learner = {"params": everything, "grads": trainable, "adam": 2 * trainable, "activations": activations}
  learner["total"] = sum(learner.values())
  # Sampler prefill of one prompt: every layer's K/V of the prompt, the video embeddings (once per
  # prompt), the tower's working set over the device's share of the patches, one layer's activations.
  kv_cache = t.num_layers * 2 * work.prompt * kv_heads * hd * act_bytes
  embeds = work.video_tokens * hidden * act_bytes
  tower_set = 0
  if config.is_multimodal:
    v = config.vision
    patches = _split(work.video_tokens * v.spatial_merge_size**2, fsdp * sequence)
    tower_set = patches * (4 * v.hidden_size + 2 * v.intermediate_size) * act_bytes
  prefill_layer = (rows * (work.prompt // sequence) * (3 * hidden + 3 * inter) * act_bytes
                   + (0 if attention == "flash" else
                      rows * heads * (work.prompt // sequence) * (work.prompt if attention == "xla"
                                                                  else work.prompt // sequence) * 4))
  sampler = {"params": everything, "kv_cache": kv_cache, "video_embeds": embeds, "tower": tower_set,
             "prefill_layer": prefill_layer}
  sampler["total"] = sum(sampler.values())
  sampler["kv_cache/n"] = kv_cache / sequence
  return {"learner": learner, "sampler": sampler}


# --------------------------------------------------------------------------- memory


def memory(args) -> None:
  work = Workload(frames=args.frames, tokens_per_frame=args.tokens_per_frame)
  print(f"workload: {work.frames} frames x {work.tokens_per_frame} tokens = {work.video_tokens:,} video tokens, "
        f"prompt {work.prompt:,}, +{work.response} response, learner micro-batch {work.rows} row; bf16; GB = 1e9")
  for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b"):
    config = models.preset(name)
    model = api.build_model(config)
    print(f"\n### {name}\n")
    print("| fsdp x seq | embed over | attention | params | grads+adam | activations | learner | "
          "KV cache (/n if split) | sampler | fits 80 / 141 GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for over_seq in (False, True):
      for attention in ("xla", "ring", "flash"):
        for fsdp, seq in LAYOUTS:
          out = estimate(config, work, fsdp, seq, attention=attention, embed_over_sequence=over_seq, model=model)
          lr, sa = out["learner"], out["sampler"]
          peak = max(lr["total"], sa["total"])
          fits = " / ".join("yes" if peak < cap * GB else "no" for cap in DEVICES_GB)
          print(f"| {fsdp} x {seq} | {'fsdp+seq' if over_seq else 'fsdp'} | {attention} | {lr['params'] / GB:.1f} | "
                f"{(lr['grads'] + lr['adam']) / GB:.1f} | {lr['activations'] / GB:,.1f} | {lr['total'] / GB:,.1f} | "
                f"{sa['kv_cache'] / GB:.1f} ({sa['kv_cache/n'] / GB:.1f}) | {sa['total'] / GB:,.1f} | {fits} |")


# --------------------------------------------------------------------------- check against XLA

CHECK_CONFIG = models.ModelConfig(
    models.TextConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=8,
                      num_kv_heads=2, rope_theta=10000.0), remat="full")


def _grad_fn(model, completion: int):
  """jax.grad of a policy-gradient-like loss: -mean log-prob of the last `completion` tokens."""
  def loss(params, ids, mask):
    hidden = model.apply(params, ids, attention_mask=mask, return_hidden=True)[0][:, -completion - 1:-1]
    logits = model.apply(params, hidden, method=model.logits)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, ids[:, -completion:, None], axis=-1))
  return jax.grad(loss)


def _compiled_grad(config, fsdp, sequence, rows, length, completion, params=None):
  model = CausalLM(config)
  mesh = sharding.make_mesh({"data": 1, "fsdp": fsdp, "tensor": 1, "sequence": sequence})
  ids = jax.ShapeDtypeStruct((rows, length), jnp.int32)
  mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_)
  with sharding.use_mesh(mesh):
    shardings = sharding.param_shardings(model, mesh)
    abstract = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings,
                            jax.eval_shape(lambda: api.init_params(model, jax.random.key(0))))
    # Rows split over the batch axes when they divide, else replicated (1 long row under fsdp 8).
    batch = sharding.batch_sharding(mesh) if rows % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0 else \
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    ids = jax.ShapeDtypeStruct(ids.shape, ids.dtype, sharding=batch)
    mask = jax.ShapeDtypeStruct(mask.shape, mask.dtype, sharding=batch)
    compiled = jax.jit(_grad_fn(model, completion), out_shardings=shardings).lower(abstract, ids, mask).compile()
  return model, mesh, compiled, batch


def check(args) -> None:
  length, completion, rows = args.length, 128, 1
  work = Workload(frames=0, text_tokens=length - completion, response=completion, rows=rows,
                  logits_chunk=completion)
  print(f"tiny decoder (hidden 128, 2 layers, 8/2 heads, vocab 512, remat full, fp32), {rows} row x {length} "
        f"tokens, loss over the last {completion}; jax {jax.__version__}, {jax.device_count()} CPU devices\n")
  print("| fsdp x seq | attention | params: model / XLA args | grads: model / XLA out | activations: model / "
        "XLA temp | ratio |")
  print("|---|---|---|---|---|---|")
  for attention in ("xla", "ring"):
    config = CHECK_CONFIG.replace(sequence_attention="ring" if attention == "ring" else "all_gather")
    for fsdp, seq in LAYOUTS:
      if attention == "ring" and seq == 1:
        continue
      model, _, compiled, _ = _compiled_grad(config, fsdp, seq, rows, length, completion)
      mem = compiled.memory_analysis()
      out = estimate(config, work, fsdp, seq, attention=attention, param_bytes=4, act_bytes=4, model=model)["learner"]
      batch_bytes = rows * length * 5  # int32 ids + bool mask, replicated (1 row does not split)
      print(f"| {fsdp} x {seq} | {attention} | {out['params'] / 1e6:.2f} / {(mem.argument_size_in_bytes - batch_bytes) / 1e6:.2f} MB"
            f" | {out['grads'] / 1e6:.2f} / {mem.output_size_in_bytes / 1e6:.2f} MB | {out['activations'] / 1e6:.1f} / "
            f"{mem.temp_size_in_bytes / 1e6:.1f} MB | {mem.temp_size_in_bytes / out['activations']:.2f} |")


# --------------------------------------------------------------------------- speed


def speed(args) -> None:
  rows, length, completion = args.rows, args.length, 128
  config = CHECK_CONFIG.replace(remat="none")
  print(f"tiny decoder (hidden 128, 2 layers, 8/2 heads, vocab 512, fp32), jax.grad of the loss over "
        f"{rows} row(s) x {length} tokens; {jax.device_count()} simulated CPU devices on {os.cpu_count()} cores; "
        f"load average {os.getloadavg()[0]:.2f}")
  rng = np.random.default_rng(0)
  ids_host = rng.integers(1, config.text.vocab_size, (rows, length)).astype(np.int32)
  mask_host = np.ones((rows, length), bool)
  params = api.init_params(CausalLM(config), jax.random.key(0))
  results = {}
  reference = None
  variants = [("no SP (fsdp 8)", 8, 1, "all_gather"), ("fsdp 2 x seq 4, all-gather", 2, 4, "all_gather"),
              ("fsdp 2 x seq 4, ring", 2, 4, "ring"), ("seq 8, all-gather", 1, 8, "all_gather"),
              ("seq 8, ring", 1, 8, "ring")]
  compiled = {}
  for name, fsdp, seq, strategy in variants:
    model, mesh, fn, placement = _compiled_grad(config.replace(sequence_attention=strategy), fsdp, seq, rows, length,
                                                completion)
    placed = sharding.shard_params(params, mesh, model=model)
    batch = jax.device_put({"ids": ids_host, "mask": mask_host}, placement)
    compiled[name] = (fn, placed, batch)
  for name, (fn, placed, batch) in compiled.items():
    grads = jax.block_until_ready(fn(placed, batch["ids"], batch["mask"]))
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(grads)]
    reference = reference or leaves
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, reference))
    results[name] = ([], diff)
  for _ in range(args.repeats):  # alternate variants, so that each sees the same machine load
    for name, (fn, placed, batch) in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(placed, batch["ids"], batch["mask"]))
      results[name][0].append(time.perf_counter() - start)
  base = min(results[variants[0][0]][0])
  print("\n| layout | best s | median s | speed-up vs no SP | max |grad diff| vs no SP |")
  print("|---|---|---|---|---|")
  for name, (times, diff) in results.items():
    print(f"| {name} | {min(times):.3f} | {float(np.median(times)):.3f} | {base / min(times):.2f}x | {diff:.1e} |")
  print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("what", choices=("memory", "check", "speed"))
  parser.add_argument("--frames", type=int, default=3600)
  parser.add_argument("--tokens-per-frame", type=int, default=60)
  parser.add_argument("--length", type=int, default=2048, help="check/speed: tokens per row")
  parser.add_argument("--rows", type=int, default=1, help="speed: rows per step")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  {"memory": memory, "check": check, "speed": speed}[args.what](args)


if __name__ == "__main__":
  main()
