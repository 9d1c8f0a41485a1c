"""GRPO learner step: r1jax vs transformers + a PyTorch GRPO loss (CPU), the RL step's time split, and MFU.

    python benchmarks/train_step.py                     # learner step side by side + letters RL step split
    python benchmarks/train_step.py --batch 8 --prompt-len 128 --completion-len 128 --steps 5
    python benchmarks/train_step.py --mfu --peak-tflops 989      # on a GPU: Qwen2.5-VL-3B-shaped, random weights

1. Learner step. The ~100M Qwen2.5-shaped model of benchmarks/sampling.py (hidden 768, 12 layers,
   12/2 heads, intermediate 2048, vocab 32k, tied) with the same random weights in both systems (a
   transformers model saved with `save_pretrained`, loaded by `r1jax.models.load_pretrained`), the
   same batch (left-padded prompts + completions with a completion mask, random advantages) and the
   same update: the on-policy PPO-clip GRPO loss (ratio against the detached log-probs, epsilon 0.2,
   no KL, no dual-clip, token-mean), entropy logged without gradient, gradient clipping at global
   norm 1 and AdamW (`config.optim` defaults). r1jax runs `learner.grpo_train_step` (one call,
   state donated; compiled ahead of time, the compile time reported separately; the path with
   gradient accumulation, grpo_grads + apply_update, is compared to it by benchmarks/learner_fused.py);
   PyTorch runs forward (logits of the completion positions only, `logits_to_keep`), backward, `clip_grad_norm_` and
   `torch.optim.AdamW.step`, eagerly. Steps alternate between the systems so that both see the same
   machine load; PyTorch's step is split into forward+backward and the update. Tokens/s counts every token of
   the batch (batch x (prompt + completion)); GFLOP/s are model FLOPs as defined in 3. The first
   step's loss, pre-clip gradient norm and entropy are printed for both (the on-policy loss itself
   is -mean(A) over completion tokens and does not depend on the model; the gradient norm does), and
   the last step's gradient norm shows that both trajectories stay together.
2. RL step split. The letters sanity config (experiments/configs/letters_grpo.py) runs --split-steps
   steps through `r1jax.train.run`; perf/sample_s, perf/reward_s, perf/learn_s and perf/step_s from
   <workdir>/metrics.jsonl are averaged over the steps after the first (which compiles). Reward
   time includes decoding completions to text; "other" is the rest of the step (drawing prompts,
   advantages, assembling the learner batch, metrics).
3. --mfu (instead of 1 and 2): the learner step of a Qwen2.5-VL-3B-shaped model (`--mfu-model
   qwen2.5-vl-3b`, random weights initialised in their shards over all devices) on --mfu-batch rows
   of one --mfu-image-size image + text, with MFU = model FLOPs/s / (--peak-tflops x devices).
   Model FLOPs are 6 x (matmul parameters x the tokens they process) per step: decoder layers x
   every token, output head x completion tokens (only those get logits), vision blocks x patches,
   patch merger x merged tokens; attention scores are not counted. `--mfu-model tiny` runs a tiny
   VL config to check the code path on CPU.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/, benchmarks/

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.sampling import text_model  # noqa: E402
from r1jax import models, rl, sharding  # noqa: E402
from r1jax.models.config import ModelConfig, TextConfig, VisionConfig  # noqa: E402
from r1jax.train import default_config, learner, optim  # noqa: E402
from r1jax.train.sequences import SequenceBuilder  # noqa: E402
from r1jax.train.writer import read_metrics  # noqa: E402

LOSS_CONFIG = rl.PolicyLossConfig(policy_loss="ppo_clip", epsilon_low=0.2, epsilon_high=0.2, clip_ratio_c=None,
                                  loss_agg_mode="token-mean", beta=0.0)
TEMPERATURE = 1.0


# --------------------------------------------------------------------------- the batch


def grpo_batch(rng: np.random.Generator, batch: int, prompt_len: int, completion_len: int, vocab: int) -> dict:
  """A learner batch as the trainer builds it, with random tokens.

  Prompts are left-padded to `prompt_len` (real lengths in [prompt_len / 2, prompt_len]),
  completions end early (lengths in [completion_len / 4, completion_len]) and are padded after.
  Token ids are drawn from [10, vocab - 10).

  Returns:
    input_ids, attention_mask, positions [batch, prompt_len + completion_len] int32,
    completion_mask [batch, completion_len] float32, advantages [batch] float32.
  """
  prompt_lengths = rng.integers(prompt_len // 2, prompt_len + 1, batch)
  completion_lengths = rng.integers(max(1, completion_len // 4), completion_len + 1, batch)
  prompt_mask = np.arange(prompt_len)[None, :] >= prompt_len - prompt_lengths[:, None]
  completion_mask = np.arange(completion_len)[None, :] < completion_lengths[:, None]
  attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1).astype(np.int32)
  return {
      "input_ids": rng.integers(10, vocab - 10, (batch, prompt_len + completion_len)).astype(np.int32),
      "attention_mask": attention_mask,
      "positions": np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0).astype(np.int32),
      "completion_mask": completion_mask.astype(np.float32),
      "advantages": rng.standard_normal(batch).astype(np.float32),
  }


# --------------------------------------------------------------------------- r1jax


def state_shardings(tx, init, params):
  """Shardings of `init(params)`: optimizer moments like their parameters, everything else replicated.

  Left to XLA, the zero-initialised moments come out replicated; then the first update's output
  shardings differ from its inputs (a second compilation, and full moments on every device).
  """
  param_shardings = jax.tree_util.tree_map(lambda x: x.sharding, params)
  some = jax.tree_util.tree_leaves(param_shardings)[0]
  replicated = (jax.sharding.NamedSharding(some.mesh, jax.sharding.PartitionSpec())
                if isinstance(some, jax.sharding.NamedSharding) else some)
  abstract = jax.eval_shape(init, params)
  opt_state = optax.tree_map_params(tx, lambda _, sharding: sharding, abstract.opt_state, param_shardings,
                                    transform_non_params=lambda _: replicated)
  return abstract.replace(step=replicated, params=param_shardings, opt_state=opt_state, rng=replicated)


class JaxLearner:
  """`learner.grpo_train_step` (gradients, clipping, AdamW and the non-finite guard in one call, the
  state donated), compiled ahead of time for one batch shape."""

  def __init__(self, model, params, optim_config, total_steps: int, example_batch: dict):
    self.tx = optim.make_optimizer(optim_config, total_steps)
    init = lambda p: learner.create_state(p, self.tx, jax.random.PRNGKey(0))
    self.state = jax.jit(init, out_shardings=state_shardings(self.tx, init, params))(params)
    start = time.perf_counter()
    self.step_fn = learner.grpo_train_step.lower(model, LOSS_CONFIG, TEMPERATURE, self.tx, self.state,
                                                 example_batch).compile()
    self.compile_s = time.perf_counter() - start

  def step(self, batch: dict) -> tuple[dict[str, float], tuple[float]]:
    """({"loss", "grad_norm", "entropy"}, (seconds of the fused step, until its new state is ready,)."""
    start = time.perf_counter()
    self.state, metrics, _ = self.step_fn(self.state, batch)
    jax.block_until_ready(self.state)
    seconds = time.perf_counter() - start
    out = {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
           "entropy": float(metrics["entropy"])}
    return out, (seconds,)


# --------------------------------------------------------------------------- PyTorch


class TorchLearner:
  """The same GRPO update on a transformers Qwen2ForCausalLM: eager forward, backward, clip, AdamW."""

  def __init__(self, model, optim_config):
    self.model = model.train()
    self.max_grad_norm = optim_config.max_grad_norm
    self.optimizer = torch.optim.AdamW(model.parameters(), lr=optim_config.learning_rate,
                                       betas=(optim_config.b1, optim_config.b2), eps=optim_config.eps,
                                       weight_decay=optim_config.weight_decay)

  def step(self, batch: dict) -> tuple[dict[str, float], tuple[float, float]]:
    """({"loss", "grad_norm", "entropy"}, (forward + backward seconds, clip + AdamW seconds))."""
    start = time.perf_counter()
    completion_len = batch["completion_mask"].shape[1]
    input_ids = torch.as_tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.as_tensor(batch["completion_mask"])
    advantages = torch.as_tensor(batch["advantages"])[:, None]
    # Logits at positions L-C-1 .. L-2 predict the C completion tokens.
    logits = self.model(input_ids=input_ids, attention_mask=torch.as_tensor(batch["attention_mask"]),
                        position_ids=torch.as_tensor(batch["positions"], dtype=torch.long), use_cache=False,
                        logits_to_keep=completion_len + 1).logits[:, :-1]
    log_probs = torch.log_softmax(logits.float() / TEMPERATURE, dim=-1)
    logprobs = log_probs.gather(-1, input_ids[:, -completion_len:, None])[..., 0]
    with torch.no_grad():
      entropy = -(log_probs.exp() * log_probs).sum(-1)
    ratio = torch.exp(logprobs - logprobs.detach())
    clipped = torch.clamp(ratio, 1.0 - LOSS_CONFIG.epsilon_low, 1.0 + LOSS_CONFIG.epsilon_high)
    token_loss = torch.maximum(-advantages * ratio, -advantages * clipped)
    loss = (token_loss * mask).sum() / mask.sum()
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    middle = time.perf_counter()
    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
    self.optimizer.step()
    out = {"loss": loss.item(), "grad_norm": grad_norm.item(), "entropy": float((entropy * mask).sum() / mask.sum())}
    return out, (middle - start, time.perf_counter() - middle)


# --------------------------------------------------------------------------- part 1: side by side


def spread(seconds: list[float]) -> str:
  return f"median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}, n={len(seconds)})"


def phase_summary(phases: list[tuple[float, ...]], update_name: str) -> str:
  if len(phases[0]) == 1:
    return f"one {update_name} call"
  grads, update = (statistics.median(p[i] for p in phases) for i in (0, 1))
  return f"forward+backward {grads:.2f} s + {update_name} {update:.2f} s"


def compare_learner_steps(args) -> None:
  torch.manual_seed(0)
  reference = text_model()
  optim_config = default_config().optim
  with tempfile.TemporaryDirectory() as path:
    reference.save_pretrained(path)
    model, params = models.load_pretrained(path)
  batch = grpo_batch(np.random.default_rng(0), args.batch, args.prompt_len, args.completion_len,
                     model.config.text.vocab_size)
  tokens = batch["input_ids"].size
  ours = JaxLearner(model, params, optim_config, args.steps + 1, batch)
  del params
  theirs = TorchLearner(reference, optim_config)

  # The first step of each: warm-up (allocator, first dispatch) and the numerical check. Then the
  # systems alternate step by step, so that both see the same machine load.
  results = {"r1jax": [], "transformers": []}
  phases = {"r1jax": [], "transformers": []}
  for _ in range(args.steps + 1):
    for name, system in (("r1jax", ours), ("transformers", theirs)):
      out, seconds = system.step(batch)
      results[name].append(out)
      phases[name].append(seconds)

  params_count = sum(p.numel() for p in reference.parameters())
  flops = model_flops(model.config, ours.state.params, batch)
  totals = {name: [sum(p) for p in phases[name][1:]] for name in phases}
  median = {name: statistics.median(totals[name]) for name in totals}
  print(f"\n[learner step] {params_count / 1e6:.1f}M params; batch {args.batch} x (prompt {args.prompt_len} + "
        f"completion {args.completion_len}) = {tokens} tokens/step, "
        f"{int(batch['completion_mask'].sum())} completion tokens; PPO-clip eps 0.2, token-mean, on-policy, "
        f"no KL; AdamW lr {optim_config.learning_rate:g}, clip {optim_config.max_grad_norm:g}; "
        f"{flops / 1e12:.2f} model TFLOP/step")
  for name, update_name, note in (
      ("r1jax", "grpo_train_step", f"compile {ours.compile_s:.1f} s (grpo_train_step)"),
      ("transformers", "clip+AdamW", f"{torch.get_num_threads()} torch threads, eager")):
    print(f"  {name:<12} {tokens / median[name]:8.1f} tokens/s  {flops / median[name] / 1e9:5.1f} GFLOP/s  "
          f"step {spread(totals[name])} = {phase_summary(phases[name][1:], update_name)}; "
          f"first step {sum(phases[name][0]):.2f} s; {note}")
  best = {name: min(totals[name]) for name in totals}
  print(f"  ratio        {median['transformers'] / median['r1jax']:8.2f}x r1jax / transformers tokens/s of the median "
        f"steps, {best['transformers'] / best['r1jax']:.2f}x of the fastest steps")
  for index, label in ((0, "first step"), (-1, f"step {args.steps + 1}")):
    a, b = results["r1jax"][index], results["transformers"][index]
    print(f"  {label:<12} r1jax loss {a['loss']:+.6f} grad_norm {a['grad_norm']:.6f} entropy {a['entropy']:.6f} | "
          f"transformers loss {b['loss']:+.6f} grad_norm {b['grad_norm']:.6f} entropy {b['entropy']:.6f} | "
          f"rel. diff grad_norm {abs(a['grad_norm'] - b['grad_norm']) / b['grad_norm']:.1e}")


# --------------------------------------------------------------------------- part 2: RL step split


def rl_step_split(args) -> None:
  from experiments import hooks as hooks_lib  # pylint: disable=g-import-not-at-top
  from experiments.configs import letters_grpo  # pylint: disable=g-import-not-at-top
  from r1jax import train  # pylint: disable=g-import-not-at-top

  config = letters_grpo.get_config()
  config.train.update(dict(steps=args.split_steps, progress_bar=False, async_checkpoints=False, export_hf=False,
                           checkpoint_every=args.split_steps))
  with tempfile.TemporaryDirectory() as workdir:
    hooks_lib.prepare(config, workdir)
    train.run(config, workdir, hooks_lib.data_hooks(config))
    records = [r for r in read_metrics(workdir) if "perf/step_s" in r][1:]
  if not records:
    raise ValueError(f"--split-steps={args.split_steps} leaves no step after the first (compiling) one")
  mean = {k: statistics.mean(r[f"perf/{k}"] for r in records) for k in ("sample_s", "reward_s", "learn_s", "step_s")}
  other = mean["step_s"] - mean["sample_s"] - mean["reward_s"] - mean["learn_s"]
  s = config.sampling
  print(f"\n[RL step split] letters_grpo ({config.data.batch_size} prompts x G={s.num_samples}, up to "
        f"{s.max_new_tokens} new tokens); mean over steps 2..{args.split_steps}")
  for name in ("sample_s", "reward_s", "learn_s"):
    print(f"  {name[:-2]:<7} {mean[name]:7.3f} s  {mean[name] / mean['step_s']:6.1%}")
  print(f"  other   {other:7.3f} s  {other / mean['step_s']:6.1%}  (prompts, advantages, learner batch, metrics)")
  print(f"  step    {mean['step_s']:7.3f} s")


# --------------------------------------------------------------------------- part 3: MFU


def tiny_vl_config(**runtime) -> ModelConfig:
  """A 2-layer 64-wide Qwen2.5-VL with a 2-block vision tower: checks the MFU code path on CPU."""
  text = TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                    mrope_section=(2, 3, 3), tie_word_embeddings=True)
  vision = VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                        fullatt_block_indexes=(1,))
  return ModelConfig(text, vision, image_token_id=500, video_token_id=501, vision_start_token_id=502,
                     vision_end_token_id=503, eos_token_id=(1,), pad_token_id=0, **runtime)


def vl_batch(rng: np.random.Generator, config: ModelConfig, batch: int, prompt_len: int, completion_len: int,
             image_size: int) -> dict:
  """`grpo_batch` rows whose prompts end with one random image_size x image_size image (as pixels)."""
  special = (config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id)
  out = grpo_batch(rng, batch, prompt_len, completion_len, min(special))  # text never holds a vision token
  if not image_size:
    return out
  v = config.vision
  side = image_size // v.patch_size
  if image_size % (v.patch_size * v.spatial_merge_size):
    raise ValueError(f"--mfu-image-size={image_size} must be a multiple of {v.patch_size * v.spatial_merge_size} "
                     "(patch size x spatial merge size)")
  merged = (side // v.spatial_merge_size) ** 2
  if merged + 2 > prompt_len:
    raise ValueError(f"--mfu-image-size={image_size} gives {merged} image tokens (+ 2 markers), more than "
                     f"--mfu-prompt-len={prompt_len}")
  start = prompt_len - merged - 2
  out["attention_mask"][:, start:prompt_len] = 1  # a prompt shorter than its image grows (padding shrinks)
  out["input_ids"][:, start] = config.vision_start_token_id
  out["input_ids"][:, start + 1:start + 1 + merged] = config.image_token_id
  out["input_ids"][:, start + 1 + merged] = config.vision_end_token_id
  out["pixel_values"] = rng.standard_normal((batch * side * side, v.patch_dim)).astype(np.float32)
  out["image_grid_thw"] = np.tile(np.array([[1, side, side]]), (batch, 1))
  return out


def model_flops(config: ModelConfig, params, batch: dict) -> float:
  """6 x (matmul parameters x tokens through them) for one forward + backward; see the module docstring."""
  sizes = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  p = params["params"]
  text = p["language_model"] if "language_model" in p else p
  embedding = text["embed_tokens"]["embedding"].size
  head = embedding if config.text.tie_word_embeddings else sizes(text["lm_head"])
  decoder = sizes(text) - embedding - (0 if config.text.tie_word_embeddings else head)
  rows, length = batch["input_ids"].shape
  flops = decoder * rows * length + head * rows * batch["completion_mask"].shape[1]
  if "pixel_values" in batch:
    merger = sizes(p["visual"]["merger"])
    patches = batch["pixel_values"].shape[0]
    flops += (sizes(p["visual"]) - merger) * patches + merger * patches // config.vision.spatial_merge_size**2
  return 6.0 * flops


def measure_mfu(args) -> None:
  runtime = dict(dtype=args.mfu_dtype, param_dtype="float32", scan_layers=True, remat=args.mfu_remat)
  config = tiny_vl_config(**runtime) if args.mfu_model == "tiny" else models.preset(args.mfu_model, **runtime)
  model = models.build_model(config)
  mesh = sharding.make_mesh({"fsdp": -1})
  rules = sharding.logical_rules()
  host_batch = vl_batch(np.random.default_rng(0), config, args.mfu_batch, args.mfu_prompt_len,
                        args.mfu_completion_len, args.mfu_image_size)
  host_batch = SequenceBuilder(model).with_positions(host_batch)
  per_row = {"positions": 1 if host_batch["positions"].ndim == 3 else 0, "pixel_values": None,
             "image_grid_thw": None}
  batch = sharding.shard_batch(SequenceBuilder(model).device_vision(host_batch), mesh, rules,
                               batch_axis={k: per_row.get(k, 0) for k in host_batch})
  params = sharding.init_sharded(model, jax.random.PRNGKey(0), mesh, rules)
  flops = model_flops(config, params, host_batch)
  params_count = sum(x.size for x in jax.tree_util.tree_leaves(params))
  with sharding.use_mesh(mesh, rules):
    ours = JaxLearner(model, params, default_config().optim, args.steps + 1, batch)
    del params
    first_s = sum(ours.step(batch)[1])
    phases = [ours.step(batch)[1] for _ in range(args.steps)]
  seconds = [sum(p) for p in phases]
  step = statistics.median(seconds)
  devices = mesh.devices.size
  tokens = host_batch["input_ids"].size
  mfu = flops / step / (args.peak_tflops * 1e12 * devices)
  print(f"\n[MFU] {args.mfu_model}: {params_count / 1e6:.1f}M params, {args.mfu_dtype} compute, remat "
        f"{args.mfu_remat}, {devices} x {jax.devices()[0].device_kind}; batch {args.mfu_batch} x (prompt "
        f"{args.mfu_prompt_len} + completion {args.mfu_completion_len})"
        + (f", one {args.mfu_image_size}px image per row ({host_batch['pixel_values'].shape[0]} patches)"
           if "pixel_values" in host_batch else ""))
  print(f"  step {spread(seconds)} = {phase_summary(phases, 'grpo_train_step')}; compile {ours.compile_s:.1f} s, "
        f"first step {first_s:.2f} s")
  print(f"  {tokens / step:.1f} tokens/s, {flops / 1e12:.2f} model TFLOP/step -> {flops / step / 1e12 / devices:.2f} "
        f"TFLOP/s per device; MFU {mfu:.1%} of {args.peak_tflops:g} TFLOP/s peak")


# --------------------------------------------------------------------------- main


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3, help="timed learner steps per system (after one warm-up step)")
  parser.add_argument("--batch", type=int, default=8, help="sequences per learner step")
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--completion-len", type=int, default=128)
  parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
  parser.add_argument("--split-steps", type=int, default=6, help="letters_grpo steps for the RL step split")
  parser.add_argument("--mfu", action="store_true", help="measure MFU of the VL learner step instead of 1 and 2")
  parser.add_argument("--mfu-model", default="qwen2.5-vl-3b", help="a models.PRESETS name, or 'tiny'")
  parser.add_argument("--mfu-batch", type=int, default=8)
  parser.add_argument("--mfu-prompt-len", type=int, default=512)
  parser.add_argument("--mfu-completion-len", type=int, default=512)
  parser.add_argument("--mfu-image-size", type=int, default=448, help="pixels per side of each row's image; 0: none")
  parser.add_argument("--mfu-dtype", default="bfloat16", help="computation dtype (parameters stay float32)")
  parser.add_argument("--mfu-remat", default="full", help="none | full | dots_saveable")
  parser.add_argument("--peak-tflops", type=float, default=989.0,
                      help="peak dense TFLOP/s of one device at --mfu-dtype (989: H100/H200 SXM bf16)")
  args = parser.parse_args()
  torch.set_num_threads(args.torch_threads)
  transformers.utils.logging.disable_progress_bar()
  print(f"machine: {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} "
        f"device(s)), torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}")
  if args.mfu:
    measure_mfu(args)
    return
  compare_learner_steps(args)
  rl_step_split(args)


if __name__ == "__main__":
  main()
