"""Speed against the peers, in one run: r1jax, Tunix and transformers + PyTorch on the same weights.

    python benchmarks/peers.py --tunix-python /work/venvs/tunix/bin/python      # the sizes below (minutes)
    R1JAX_TUNIX_PYTHON=/work/venvs/tunix/bin/python python benchmarks/peers.py --parts learner
    python benchmarks/peers.py --model tiny --prompt-len 16 --new-tokens 8 ...  # checks the code path

Getting the peers. transformers + PyTorch: `pip install -e .[test]` (CPU torch). Tunix
(`google-tunix`) needs safetensors<0.8, which pins an older transformers than r1jax's, so it
lives in its own virtual environment and runs in a worker subprocess (benchmarks/tunix_worker.py)
that answers timed calls over stdin / stdout:

    python3 -m venv /work/venvs/tunix
    /work/venvs/tunix/bin/pip install google-tunix 'safetensors<0.8' 'jax[cpu]'

then pass --tunix-python /work/venvs/tunix/bin/python (or set R1JAX_TUNIX_PYTHON). This script
installs nothing; a peer that is not there is skipped with a line that says how to get it.

Every system gets the same random weights: the ~98M Qwen2.5-shaped model of benchmarks/sampling.py
(`--model tiny`: 2 layers, 64 wide), a transformers model saved with `save_pretrained`
(safetensors) and loaded by r1jax (`models.load_pretrained`) and by Tunix
(`tunix.models.qwen2.params.create_model_from_safe_tensors`), all in float32. The systems' calls
alternate (r1jax, transformers, Tunix, r1jax, ...), so all see the same load from whatever else
runs on the machine; the best and the median call are reported, and the machine's load average at
the start and the end.

1. Sampling: --prompts prompts x G=--samples rows, --prompt-len random prompt tokens, exactly
   --new-tokens new tokens per row (no stop token), temperature 1 over the full vocabulary.
   r1jax: `Sampler` (prefill each prompt once, decode; benchmarks/sampling.py `r1jax_runner`);
   transformers: `generate` with num_return_sequences (`transformers_runner`); Tunix:
   `tunix.generate.Sampler` on the prompts repeated G times, as its GRPO rollout does (its call
   includes its host work: the prompts' text to ids, a trivial id tokenizer here, and the outputs
   back to text). Tokens/s counts the rows' new tokens over one whole call, after each system's
   compilation / warm-up; Tunix's time is measured in the worker, around the call.
2. GRPO learner step: --batch rows of --learner-prompt-len + --completion-len tokens
   (benchmarks/train_step.py `grpo_batch`, padding ids set to 0 because Tunix reads padding from
   the ids), on-policy PPO-clip (epsilon 0.2, token-mean, no KL: train_step.py `LOSS_CONFIG`),
   gradient clipping at global norm 1 and AdamW (r1jax's `config.optim` defaults). r1jax:
   its learner step compiled ahead of time (train_step.py `JaxLearner`); PyTorch: eager
   forward / backward / clip / AdamW (`TorchLearner`); Tunix: `PeftTrainer`'s jitted train step
   with its registered GRPO loss (`tunix.rl.algo_core.grpo_loss_fn`), as `GRPOLearner` sets it up.
   The first step of each is the warm-up (compilation) and the numerical check: all start from the
   same weights and batch, so they must print the same loss (-mean advantage over completion
   tokens) and pre-clip gradient norm. Tokens/s counts every token of the batch over the later steps.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/

try:
  import torch  # noqa: E402
except ImportError:
  sys.exit("benchmarks/peers.py needs PyTorch (the shared weights are a transformers model, and it is a peer): "
           "pip install -e '.[test]'")
import jax  # noqa: E402
import numpy as np  # noqa: E402
import transformers  # noqa: E402

from benchmarks.sampling import (TINY_TEXT_MODEL, r1jax_runner, text_model, text_prompts,  # noqa: E402
                                 transformers_runner)
from benchmarks.train_step import LOSS_CONFIG, TEMPERATURE, JaxLearner, TorchLearner, grpo_batch  # noqa: E402
from r1jax import models  # noqa: E402
from r1jax.train import default_config  # noqa: E402

TUNIX_ENV = "R1JAX_TUNIX_PYTHON"
TUNIX_HOWTO = (f"python3 -m venv /work/venvs/tunix && /work/venvs/tunix/bin/pip install google-tunix "
               f"'safetensors<0.8' 'jax[cpu]', then pass --tunix-python /work/venvs/tunix/bin/python "
               f"(or set {TUNIX_ENV})")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tunix_worker.py")


class PeerUnavailable(RuntimeError):
  """A peer that cannot run here; the message says why and how to get it."""


class TunixPeer:
  """Tunix in its own Python (benchmarks/tunix_worker.py): one JSON request a line, one JSON answer."""

  def __init__(self, python: str, checkpoint: str, log_path: str):
    if not os.path.exists(python):
      raise PeerUnavailable(f"{python} does not exist. To get Tunix: {TUNIX_HOWTO}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this environment's packages
    self.log_path = log_path
    with open(log_path, "w") as log:
      self.process = subprocess.Popen([python, WORKER, "--checkpoint", checkpoint], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
      self.info = self._answer("start")
    except RuntimeError as e:
      self.close()
      raise PeerUnavailable(f"{e}. To get Tunix: {TUNIX_HOWTO}") from e

  def _answer(self, op: str) -> dict:
    line = self.process.stdout.readline()
    if not line:
      with open(self.log_path) as f:
        tail = [l.rstrip() for l in f.readlines() if l.strip()][-1:] or ["(no output)"]
      raise RuntimeError(f"the Tunix worker exited during '{op}' (code {self.process.poll()}; last line of "
                         f"{self.log_path}: {tail[0]})")
    answer = json.loads(line)
    if not answer.pop("ok"):
      raise RuntimeError(f"the Tunix worker failed: {answer['error']} (log: {self.log_path})")
    return answer

  def call(self, op: str, **kwargs) -> dict:
    self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
    self.process.stdin.flush()
    return self._answer(op)

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.process.stdin.close()
        self.process.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.process.kill()


def start_tunix(python: str | None, checkpoint: str) -> TunixPeer | None:
  """The Tunix worker (its stderr in a kept temp file), or None, with the line that says why and how to get it."""
  if not python:
    print(f"  tunix: skipped (no --tunix-python, no {TUNIX_ENV}). To get it: {TUNIX_HOWTO}")
    return None
  log_fd, log_path = tempfile.mkstemp(prefix="r1jax_tunix_worker_", suffix=".log")
  os.close(log_fd)
  try:
    peer = TunixPeer(python, checkpoint, log_path)
  except PeerUnavailable as e:
    print(f"  tunix: skipped: {e}")
    return None
  print(f"  tunix: google-tunix {peer.info['tunix']}, jax {peer.info['jax']} ({peer.info['backend']}) in {python}; "
        f"weights loaded in {peer.info['load_s']:.1f} s; its log: {log_path}")
  return peer


def summary(name: str, tokens: int, seconds: list[float], ours: list[float] | None, note: str) -> str:
  """A table row: best and median tokens/s, and r1jax's over this system's (best, median)."""
  best, median = min(seconds), statistics.median(seconds)
  ratio = "" if ours is None else f"{best / min(ours):6.2f}x {median / statistics.median(ours):6.2f}x"
  return (f"  {name:<13} {tokens / best:10.1f} {tokens / median:10.1f}   {ratio:<16} "
          f"(best {best:.3f} s, median {median:.3f} s, n={len(seconds)}) {note}")


HEADER = f"  {'system':<13} {'best tok/s':>10} {'median':>10}   {'r1jax/peer':<16} (best, median)"


def compare_sampling(args, reference, model, params, tunix: TunixPeer | None) -> None:
  vocab = model.config.text.vocab_size
  prompts = text_prompts(np.random.default_rng(0), args.prompts, args.prompt_len, vocab)
  tokens = args.prompts * args.samples * args.new_tokens
  sample, compile_stats = r1jax_runner(model, params, prompts, args.samples, args.new_tokens)
  generate, threads = transformers_runner(reference, prompts, args.samples, args.new_tokens)
  notes = {"r1jax": f"compile {compile_stats['compile']:.1f} s", "transformers": f"{threads} torch thread(s)"}
  calls = {"r1jax": lambda: sample()["total"], "transformers": generate}
  if tunix is not None:
    warm = tunix.call("prepare_sampling", prompts=[p["input_ids"].tolist() for p in prompts], samples=args.samples,
                      new_tokens=args.new_tokens, temperature=TEMPERATURE)
    notes["tunix"] = f"first call {warm['first_call_s']:.1f} s"
    seeds = iter(range(1, 1 << 30))
    calls["tunix"] = lambda: tunix.call("sample", seed=next(seeds))["seconds"]
  seconds = {name: [] for name in calls}
  for index in range(args.repeats):
    for name, call in calls.items():
      seconds[name].append(call())
    progress(f"sampling call {index + 1}/{args.repeats}", {name: s[-1] for name, s in seconds.items()})
  print(f"\n[sampling] {args.prompts} prompts x G={args.samples}, prompt {args.prompt_len} + {args.new_tokens} new "
        f"tokens ({tokens} new tokens per call), temperature {TEMPERATURE:g} over the full vocabulary; "
        f"{args.repeats} calls each, alternating")
  print(HEADER)
  for name in seconds:
    print(summary(name, tokens, seconds[name], None if name == "r1jax" else seconds["r1jax"], notes[name]))


def compare_learner(args, reference, model, params, tunix: TunixPeer | None) -> None:
  optim_config = default_config().optim
  batch = grpo_batch(np.random.default_rng(0), args.batch, args.learner_prompt_len, args.completion_len,
                     model.config.text.vocab_size)
  batch["input_ids"] = np.where(batch["attention_mask"] > 0, batch["input_ids"], 0).astype(np.int32)
  tokens = batch["input_ids"].size
  ours = JaxLearner(model, params, optim_config, args.steps + 1, batch)
  theirs = TorchLearner(reference, optim_config)
  steps = {"r1jax": lambda: _timed(ours.step, batch), "transformers": lambda: _timed(theirs.step, batch)}
  notes = {"r1jax": f"compile {ours.compile_s:.1f} s", "transformers": f"{torch.get_num_threads()} torch threads"}
  if tunix is not None:
    tunix.call("prepare_learner", batch={k: batch[k].tolist() for k in ("input_ids", "attention_mask",
                                                                         "completion_mask", "advantages")},
               optim={k: float(optim_config[k]) for k in ("learning_rate", "b1", "b2", "eps", "weight_decay",
                                                          "max_grad_norm")},
               loss=dict(epsilon_low=LOSS_CONFIG.epsilon_low, epsilon_high=LOSS_CONFIG.epsilon_high,
                         temperature=TEMPERATURE, loss_agg_mode=LOSS_CONFIG.loss_agg_mode))
    steps["tunix"] = lambda: tunix.call("learner_step")
    notes["tunix"] = "jitted PeftTrainer step"
  results = {name: [] for name in steps}
  for index in range(args.steps + 1):
    for name, step in steps.items():
      results[name].append(step())
    progress(f"learner step {index + 1}/{args.steps + 1}", {name: r[-1]["seconds"] for name, r in results.items()})
  print(f"\n[GRPO learner step] batch {args.batch} x (prompt {args.learner_prompt_len} + completion "
        f"{args.completion_len}) = {tokens} tokens/step, {int(batch['completion_mask'].sum())} completion tokens; "
        f"PPO-clip eps {LOSS_CONFIG.epsilon_low:g}, token-mean, on-policy, no KL; AdamW lr "
        f"{optim_config.learning_rate:g}, clip {optim_config.max_grad_norm:g}; {args.steps} timed steps each after "
        f"the first, alternating")
  print(HEADER)
  for name, runs in results.items():
    print(summary(name, tokens, [r["seconds"] for r in runs[1:]],
                  None if name == "r1jax" else [r["seconds"] for r in results["r1jax"][1:]],
                  f"first step {runs[0]['seconds']:.2f} s; {notes[name]}"))
  first = {name: runs[0] for name, runs in results.items()}
  ref = first["r1jax"]["grad_norm"]
  for name, out in first.items():
    print(f"  first step  {name:<13} loss {out['loss']:+.6f}  grad_norm {out['grad_norm']:.6f}  "
          f"(rel. diff to r1jax {abs(out['grad_norm'] - ref) / ref:.1e})")


def progress(what: str, seconds: dict[str, float]) -> None:
  """A line on stderr as the calls go (a full run takes minutes); stdout keeps the report."""
  print(f"  {what}: " + ", ".join(f"{name} {s:.2f} s" for name, s in seconds.items()), file=sys.stderr, flush=True)


def _timed(step, batch: dict) -> dict:
  out, phases = step(batch)
  return {**out, "seconds": sum(phases)}


def load_average() -> str:
  return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="sampling,learner", help="comma-separated: sampling, learner")
  parser.add_argument("--model", default="100m", choices=("100m", "tiny"), help="the ~98M model or a tiny one")
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--samples", type=int, default=8, help="G rows per prompt")
  parser.add_argument("--prompt-len", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls of each system")
  parser.add_argument("--batch", type=int, default=8, help="learner rows")
  parser.add_argument("--learner-prompt-len", type=int, default=128)
  parser.add_argument("--completion-len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=3, help="timed learner steps of each system, after the first")
  parser.add_argument("--tunix-python", default=os.environ.get(TUNIX_ENV),
                      help=f"the Python of a virtual environment with google-tunix (default ${TUNIX_ENV})")
  args = parser.parse_args()
  parts = args.parts.split(",")
  unknown = set(parts) - {"sampling", "learner"}
  if unknown:
    parser.error(f"--parts {sorted(unknown)} unknown; choose from sampling, learner")
  transformers.utils.logging.disable_progress_bar()
  torch.manual_seed(0)
  print(f"machine: {os.cpu_count()} CPU cores, {load_average()} at the start; r1jax: jax {jax.__version__} "
        f"({jax.default_backend()}); transformers {transformers.__version__}, torch {torch.__version__}")
  reference = text_model(**(TINY_TEXT_MODEL if args.model == "tiny" else {}))
  print(f"model: Qwen2.5-shaped, {sum(p.numel() for p in reference.parameters()) / 1e6:.1f}M parameters, float32, "
        "random weights shared through a save_pretrained folder")
  with tempfile.TemporaryDirectory() as checkpoint:
    reference.save_pretrained(checkpoint)
    model, params = models.load_pretrained(checkpoint)
    tunix = start_tunix(args.tunix_python, checkpoint)
    try:
      if "sampling" in parts:
        compare_sampling(args, reference, model, params, tunix)
      if "learner" in parts:
        compare_learner(args, reference, model, params, tunix)
    finally:
      if tunix is not None:
        tunix.close()
  print(f"\nmachine: {load_average()} at the end")


if __name__ == "__main__":
  main()
