"""Can the embedded defaults' tiny policy learn to copy a word from its prompt, under a recipe's SFT settings?

Several embedded defaults (Omni-R1, Embodied-R1, InfiGUI-R1) end SFT with one answer for every input:
the policy reads neither the prompt's words nor the image. This probe separates model capacity from
optimisation in about a minute per setting, with the trainer's own pieces (the tiny Qwen2.5-VL of the
STAR-R1 default, `learner.sft_train_step`, `optim.make_optimizer`), text only, no tokenizer:

    prompt  [BOS] s_1..s_20 [MARK] (w | [KEY]) f_1..f_18 [COLON]      w one of 4 "colour" words
    answer  w t_1..t_n [EOS]                                          half the prompts name w

The answer's first token copies the prompt's word when the prompt names one (otherwise it cannot be
known); `t_1..t_n` stand for the rest of a recipe's completion: a template of n tokens (`--answer_tokens`),
every `--noisy_every`-th of them drawn at random (a timestamp or coordinate the model cannot yet read
from the image). The held-out word accuracy over prompts that name the word is printed as training goes
(chance 0.25; a policy that ignores the prompt scores one word's share).

    python experiments/copy_probe.py --answer_tokens=0                 # the copy alone
    python experiments/copy_probe.py --answer_tokens=40 --noisy_every=4 --b2=0.95

Findings on 2 cores (BENCHMARKS.md, "Why the tiny policy ignores its prompt"): not capacity: the copy
is learned by step 100 in most seeds and settings, a 40-token noisy completion and a 400-example pool
included; one seed's stream plateaus for 400-800 steps. (The recipes' real SFT batches hold it longer:
there the whole completion in the loss blocks it, the decision token alone does not.)
"""
from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.configs.star_r1 import tiny_qwen2_5_vl  # noqa: E402
from r1jax.models import api  # noqa: E402
from r1jax.models.config import config_from_hf  # noqa: E402
from r1jax.train import default_config, learner  # noqa: E402
from r1jax.train import optim as optim_lib  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 600, "SFT steps.")
_BATCH = flags.DEFINE_integer("batch", 16, "Examples per step.")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (after 10 warmup steps, then constant).")
_B2 = flags.DEFINE_float("b2", 0.999, "AdamW's second-moment decay.")
_ANSWER_TOKENS = flags.DEFINE_integer("answer_tokens", 40, "Template tokens after the copied word, in the loss.")
_NOISY_EVERY = flags.DEFINE_integer("noisy_every", 4, "Every k-th template token is random (0: none).")
_POOL = flags.DEFINE_integer("pool", 0, "Train on a fixed pool of this many examples (0: a fresh stream).")
_LOSS_ON = flags.DEFINE_enum("loss_on", "answer", ["answer", "word"], "Supervise the whole answer, or the word only.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between held-out evaluations.")
_SEED = flags.DEFINE_integer("seed", 0, "Parameter and data seed.")

PAD, BOS, MARK, COLON, EOS, KEY = 0, 1, 2, 3, 4, 5  # 6-9: the vision ids the VL config needs (unused)
WORDS = np.arange(10, 14)  # the 4 words to copy
FILLER = np.arange(20, 96)
VOCAB = 96
SYSTEM, GAP = FILLER[:20], FILLER[20:38]  # fixed prompt text around the word
TEMPLATE, NOISE = FILLER[38:48], FILLER[48:54]
PROMPT_LENGTH = 1 + len(SYSTEM) + 2 + len(GAP) + 1


def tiny_policy():
  """The STAR-R1 default's tiny Qwen2.5-VL (2 layers, width 128) over the probe's 96-token vocabulary."""
  hf = tiny_qwen2_5_vl()
  hf.update(dict(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=PAD, image_token_id=6, video_token_id=7,
                 vision_start_token_id=8, vision_end_token_id=9))
  hf.text_config.update(dict(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=PAD))
  return api.build_model(config_from_hf(hf.to_dict()))


def make_batch(rng: np.random.Generator, size: int, answer_tokens: int, noisy_every: int, loss_on: str):
  """An SFT batch (rows of one length, no padding; M-RoPE positions [3, size, length]) and each row's word
  (-1: the prompt does not name it)."""
  length = PROMPT_LENGTH + 1 + answer_tokens + 1
  ids = np.full((size, length), PAD, np.int32)
  loss_mask = np.zeros((size, length), np.int32)
  words = np.full(size, -1)
  for row in range(size):
    word = int(rng.choice(WORDS))
    named = rng.random() < 0.5
    tail = [int(rng.choice(NOISE)) if noisy_every and k % noisy_every == 0 else int(TEMPLATE[k % len(TEMPLATE)])
            for k in range(answer_tokens)]
    prompt = [BOS, *SYSTEM, MARK, word if named else KEY, *GAP, COLON]
    ids[row] = prompt + [word] + tail + [EOS]
    loss_mask[row, PROMPT_LENGTH:] = 1
    if loss_on == "word":
      loss_mask[row, PROMPT_LENGTH + 1:] = 0
    words[row] = word if named else -1
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), (3, size, length))
  batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), positions=np.ascontiguousarray(positions),
               loss_mask=loss_mask)
  return batch, words


def take(batch: dict, rows: np.ndarray) -> dict:
  """The batch's `rows` (positions are [3, rows, length])."""
  return {k: (v[:, rows] if k == "positions" else v[rows]) for k, v in batch.items()}


def word_accuracy(model, params, batch: dict, words: np.ndarray) -> tuple[float, int]:
  """(accuracy of the first answer token on rows that name the word, distinct predictions there)."""
  logits = _logits(model, params, batch)
  predicted = np.asarray(logits[:, PROMPT_LENGTH - 1].argmax(-1))
  named = words >= 0
  return float(np.mean(predicted[named] == words[named])), len(set(predicted[named].tolist()))


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, batch):
  return learner.logits_from_hidden(model, params, learner.hidden_states(model, params, batch))


def train(steps: int, *, batch_size: int = 16, lr: float = 1e-3, b2: float = 0.999, answer_tokens: int = 40,
          noisy_every: int = 4, pool: int = 0, loss_on: str = "answer", eval_every: int = 100, seed: int = 0,
          log=print) -> list[tuple[int, float, float, int]]:
  """Trains the tiny policy on the probe task; returns [(step, nll, held-out word accuracy, distinct)]."""
  model = tiny_policy()
  optim = default_config().optim
  optim.update(dict(learning_rate=lr, warmup_steps=10, b2=b2))
  tx = optim_lib.make_optimizer(optim, steps)
  state = learner.create_state(api.init_params(model, jax.random.PRNGKey(seed)), tx, jax.random.PRNGKey(seed + 1))
  rng = np.random.default_rng(seed)
  held_out, held_out_words = make_batch(np.random.default_rng(10_000 + seed), 256, answer_tokens, noisy_every, loss_on)
  fixed = make_batch(rng, pool, answer_tokens, noisy_every, loss_on)[0] if pool else None
  history, started = [], time.perf_counter()
  for step in range(1, steps + 1):
    if fixed is not None:
      batch = take(fixed, rng.choice(pool, batch_size, replace=False))
    else:
      batch = make_batch(rng, batch_size, answer_tokens, noisy_every, loss_on)[0]
    state, metrics, _ = learner.sft_train_step(model, tx, state, batch)
    if step % eval_every == 0 or step == steps:
      accuracy, distinct = word_accuracy(model, state.params, held_out, held_out_words)
      history.append((step, float(metrics["sft/nll"]), accuracy, distinct))
      log(f"step {step:5d}  nll {history[-1][1]:.3f}  held-out word accuracy {accuracy:.3f}  "
          f"distinct words {distinct}  ({time.perf_counter() - started:.0f} s)")
  return history


def main(argv):
  del argv
  train(_STEPS.value, batch_size=_BATCH.value, lr=_LR.value, b2=_B2.value, answer_tokens=_ANSWER_TOKENS.value,
        noisy_every=_NOISY_EVERY.value, pool=_POOL.value, loss_on=_LOSS_ON.value, eval_every=_EVAL_EVERY.value,
        seed=_SEED.value)


if __name__ == "__main__":
  app.run(main)
