"""Learner memory with a Qwen2.5 vocabulary: GRPO gradient with and without chunked logits.

    python benchmarks/learner_memory.py [--rows 8 --prompt-len 128 --completion-len 512 --chunks 0,128,32]

A tiny Qwen2.5 (hidden 64, 2 layers) with the real 151,936-token vocabulary, so the output
projection dominates: `learner.grpo_grads` is compiled for each `config.optim.logits_chunk` value
(0 = all completion positions at once) and XLA's temporary-buffer size, one timed step and the
loss are printed side by side. The loss must not depend on the chunk size.
"""
import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from r1jax import models, rl
from r1jax.train import learner

VOCAB = 151936


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--completion-len", type=int, default=512)
  parser.add_argument("--chunks", default="0,128,32", help="comma-separated logits_chunk values")
  args = parser.parse_args()
  config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
  with tempfile.TemporaryDirectory() as path:
    transformers.Qwen2ForCausalLM(config).save_pretrained(path)
    model, params = models.load_pretrained(path)
  rows, completion = args.rows, args.completion_len
  length = args.prompt_len + completion
  rng = np.random.default_rng(0)
  batch = {"input_ids": jnp.asarray(rng.integers(1, VOCAB, (rows, length)), jnp.int32),
           "attention_mask": jnp.ones((rows, length), bool),
           "positions": jnp.broadcast_to(jnp.arange(length), (rows, length)),
           "completion_mask": jnp.ones((rows, completion), bool),
           "advantages": jnp.asarray(rng.normal(size=rows), jnp.float32),
           "sampler_logprobs": jnp.asarray(-rng.random((rows, completion)), jnp.float32)}
  loss_config = rl.PolicyLossConfig()
  print(f"vocab {VOCAB}, {rows} rows x ({args.prompt_len} prompt + {completion} completion) tokens; "
        f"jax {jax.__version__} ({jax.default_backend()})")
  for chunk in (int(c) for c in args.chunks.split(",")):
    compiled = learner.grpo_grads.lower(model, loss_config, 1.0, params, batch, chunk).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(params, batch))
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(params, batch))
    seconds = time.perf_counter() - start
    print(f"  logits_chunk={chunk:<4d} temporary buffers {temp / 2**30:6.2f} GiB   step {seconds:6.2f} s   "
          f"loss {float(out[1]):.6f}")


if __name__ == "__main__":
  main()
