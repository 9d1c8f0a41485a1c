"""The fused, donated GRPO train step against grads + apply_update, alternating, on the train_step.py learner.

    python benchmarks/learner_fused.py --steps 3

The ~100M Qwen2.5-shaped model and batch of benchmarks/train_step.py (8 rows x (128 prompt + 128
completion), vocab 32k, fp32). Two learners start from the same weights: "separate" runs
`learner.grpo_grads` then `learner.apply_update` (two jitted calls, the gradient tree handed from
one to the other: the path kept for gradient accumulation), "fused" runs
`learner.grpo_train_step` (one call, state donated). Both are compiled ahead of time; steps
alternate so both see the same machine load. Each step's time runs until its new state is ready.
The gradient norms of the two show they take the same steps.

Part 2 times the per-token scores over [batch, completion, vocab] logits alone (forward +
backward of log-prob + entropy): `rl.token_logprobs_and_entropy` against the plain formulas it
replaced (log_softmax, take_along_axis, a second log_softmax for the entropy).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.sampling import text_model  # noqa: E402
from benchmarks.train_step import LOSS_CONFIG, TEMPERATURE, grpo_batch, spread, state_shardings  # noqa: E402
from r1jax import models, rl  # noqa: E402
from r1jax.train import default_config, learner, optim  # noqa: E402


def _state(tx, params):
  init = lambda p: learner.create_state(p, tx, jax.random.PRNGKey(0))
  return jax.jit(init, out_shardings=state_shardings(tx, init, params))(params)


def compare_steps(args) -> None:
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as path:
    text_model().save_pretrained(path)
    model, params = models.load_pretrained(path)
  batch = grpo_batch(np.random.default_rng(0), args.batch, args.prompt_len, args.completion_len,
                     model.config.text.vocab_size)
  tx = optim.make_optimizer(default_config().optim, args.steps + 1)
  states = {"separate": _state(tx, params), "fused": _state(tx, jax.tree_util.tree_map(jnp.copy, params))}
  del params
  grads_fn = learner.grpo_grads.lower(model, LOSS_CONFIG, TEMPERATURE, states["separate"].params, batch).compile()
  grads, loss_sum, count, _ = grads_fn.out_info
  update_fn = learner.apply_update.lower(tx, states["separate"], grads, loss_sum, count).compile()
  fused_fn = learner.grpo_train_step.lower(model, LOSS_CONFIG, TEMPERATURE, tx, states["fused"], batch).compile()

  def separate(state):
    grads, loss_sum, count, _ = grads_fn(state.params, batch)
    state, stats = update_fn(state, grads, loss_sum, count)
    return state, stats["grad_norm"]

  def fused(state):
    state, metrics, _ = fused_fn(state, batch)
    return state, metrics["grad_norm"]

  seconds, norms = {"separate": [], "fused": []}, {"separate": [], "fused": []}
  for _ in range(args.steps + 1):  # the first step of each warms up
    for name, step in (("separate", separate), ("fused", fused)):
      start = time.perf_counter()
      states[name], grad_norm = step(states[name])
      jax.block_until_ready(states[name])
      seconds[name].append(time.perf_counter() - start)
      norms[name].append(float(grad_norm))
  print(f"[learner step] batch {args.batch} x ({args.prompt_len} + {args.completion_len}), "
        f"vocab {model.config.text.vocab_size}, fp32; steps alternate; first (warm-up) step left out")
  for name in seconds:
    print(f"  {name:<9} {spread(seconds[name][1:])}")
  ratio = statistics.median(seconds["separate"][1:]) / statistics.median(seconds["fused"][1:])
  print(f"  fused is {ratio:.2f}x as fast (medians); grad norms separate {norms['separate']} fused {norms['fused']}")


def _plain_scores(logits, targets):
  """The previous implementation: log_softmax + take_along_axis, and a second log_softmax for the entropy."""
  log_p = jax.nn.log_softmax(logits / TEMPERATURE, axis=-1)
  logprobs = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
  entropy_log_p = jax.nn.log_softmax(jax.lax.stop_gradient(logits) / TEMPERATURE, axis=-1)
  return logprobs, -jnp.sum(jnp.exp(entropy_log_p) * entropy_log_p, axis=-1)


def compare_scores(args) -> None:
  rng = np.random.default_rng(0)
  shape = (args.batch, args.completion_len, args.vocab)
  logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
  targets = jnp.asarray(rng.integers(0, args.vocab, shape[:2]), jnp.int32)
  weights = jnp.asarray(rng.normal(size=shape[:2]), jnp.float32)
  def grad_and_entropy(scores):  # the entropy is an output, so it is computed (as the learner logs it)
    def loss(x):
      logprobs, entropy = scores(x)
      return jnp.sum(weights * logprobs), entropy
    return jax.jit(jax.grad(loss, has_aux=True))

  fns = {"plain": grad_and_entropy(lambda x: _plain_scores(x, targets)),
         "fused": grad_and_entropy(lambda x: rl.token_logprobs_and_entropy(x, targets, TEMPERATURE, entropy="logged"))}
  compiled = {name: fn.lower(logits).compile() for name, fn in fns.items()}
  seconds = {name: [] for name in fns}
  for _ in range(args.steps + 1):
    for name, fn in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(logits))
      seconds[name].append(time.perf_counter() - start)
  print(f"[scores] log-prob (+ logged entropy) forward + backward over {shape} fp32 logits; alternating")
  for name, fn in compiled.items():
    temp = fn.memory_analysis().temp_size_in_bytes / 2**20
    print(f"  {name:<9} {spread(seconds[name][1:])}; temporaries {temp:.0f} MiB")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--completion-len", type=int, default=128)
  parser.add_argument("--vocab", type=int, default=32000, help="vocabulary of part 2's logits")
  args = parser.parse_args()
  print(f"machine: {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})")
  compare_scores(args)
  compare_steps(args)


if __name__ == "__main__":
  main()
