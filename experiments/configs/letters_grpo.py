"""Tiny GRPO sanity run: a from-scratch 2-layer Qwen2 learns to write a target letter.

    python experiments/run.py --config=experiments/configs/letters_grpo.py --workdir=/tmp/letters

Runtime: under a minute on 2 CPU cores (40 steps). Expected result: `reward/mean` (the fraction of
characters that are the prompt's letter, `target_letter_rate`) climbs from ~0.04 to ~0.3
(seed 0); the curve is in <workdir>/curves.png. Re-running the command resumes (or skips, when done).
"""
import ml_collections

from r1jax.train import default_config


def tiny_qwen2(vocab_size: int = 0) -> ml_collections.ConfigDict:
  """HF config.json of a 2-layer Qwen2; vocab_size 0 = take it from the locally built tokenizer."""
  return ml_collections.ConfigDict(dict(
      architectures=["Qwen2ForCausalLM"], vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
      rope_parameters=dict(rope_type="default", rope_theta=10000.0), rms_norm_eps=1e-6,
      eos_token_id=0, pad_token_id=0))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.stage = "grpo"
  config.tokenizer = "build:letters"
  config.model.hf_config = tiny_qwen2()
  config.data = data_pipelines.default_config(name="letters", batch_size=4, max_prompt_length=64)
  config.data.letters = "abc"
  config.sampling.num_samples = 8
  config.sampling.max_new_tokens = 12
  config.reward.name = "target_letter_rate"
  config.reward.num_workers = 1
  config.rl.epsilon_high = 0.28
  config.optim.learning_rate = 1e-2
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 2
  config.optim.max_grad_norm = 1.0
  config.train.steps = 40
  config.train.checkpoint_every = 10
  return config
