"""Tunix side of benchmarks/peers.py: answers timed calls over stdin / stdout, one JSON object a line.

    /work/venvs/tunix/bin/python benchmarks/tunix_worker.py --checkpoint DIR

Runs in its own virtual environment (google-tunix needs safetensors<0.8, which pins an older
transformers than r1jax's; see benchmarks/peers.py for the commands), so that peers.py can
alternate Tunix's calls with r1jax's and transformers' in one run. It imports nothing of r1jax.

The model is `tunix.models.qwen2.Qwen2` with the weights of DIR (a transformers Qwen2ForCausalLM
saved with `save_pretrained`: config.json + model.safetensors), loaded by
`tunix.models.qwen2.params.create_model_from_safe_tensors`, float32.

Requests and answers (every answer has "ok"; a failed request answers {"ok": false, "error": ...}):
    {"op": "prepare_sampling", "prompts": [[ids...], ...], "samples": G, "new_tokens": N, "temperature": T}
        -> builds a `tunix.generate.Sampler` and makes one call (compilation): {"first_call_s"}
    {"op": "sample", "seed": k}
        -> one Sampler call, each prompt G times (Tunix repeats GRPO prompts as rows): {"seconds", "tokens"}
    {"op": "prepare_learner", "batch": {input_ids, attention_mask, completion_mask, advantages},
     "optim": {learning_rate, b1, b2, eps, weight_decay, max_grad_norm},
     "loss": {epsilon_low, epsilon_high, temperature, loss_agg_mode}}
        -> a `tunix.sft.peft_trainer.PeftTrainer` with Tunix's registered GRPO policy loss
           (`tunix.rl.algo_core.grpo_loss_fn`, as `tunix.rl.grpo.grpo_learner.GRPOLearner` sets it up)
    {"op": "learner_step"}
        -> one jitted train step (loss, backward, clip, AdamW): {"seconds", "loss", "grad_norm"}
    {"op": "quit"}
"""
import argparse
import json
import os
import sys
import time
import traceback

# Everything the libraries print goes to stderr; stdout carries the protocol only.
PROTOCOL = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from tunix.generate import sampler as sampler_lib  # noqa: E402
from tunix.models.qwen2 import model as qwen2  # noqa: E402
from tunix.models.qwen2 import params as qwen2_params  # noqa: E402
from tunix.rl import algo_core  # noqa: E402
from tunix.rl.grpo import grpo_learner  # noqa: E402
from tunix.sft import peft_trainer  # noqa: E402


class IdTokenizer:
  """Text of space-separated token ids <-> ids: the prompts are random ids, and Tunix's Sampler
  takes strings (`tunix.generate.tokenizer_adapter` accepts any object with these methods)."""

  def __init__(self, pad_id: int, eos_id: int):
    self._pad_id, self._eos_id = pad_id, eos_id

  def encode(self, text: str, **_) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, **_) -> str:
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return None  # no BOS prepended: the prompts are used as given

  def eos_id(self) -> int:
    return self._eos_id

  def pad_id(self) -> int:
    return self._pad_id


def model_config(checkpoint: str) -> qwen2.ModelConfig:
  """Tunix's Qwen2 config from a transformers config.json (v4 or v5 rope naming)."""
  with open(os.path.join(checkpoint, "config.json")) as f:
    hf = json.load(f)
  rope_theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta")
  if rope_theta is None:
    raise ValueError(f"{checkpoint}/config.json has no rope_theta (top level or in rope_parameters)")
  heads = hf["num_attention_heads"]
  return qwen2.ModelConfig(
      num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      hidden_dim=hf["intermediate_size"], num_heads=heads, head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      num_kv_heads=hf["num_key_value_heads"], rope_theta=int(rope_theta), norm_eps=hf["rms_norm_eps"],
      use_tied_embedding=bool(hf.get("tie_word_embeddings", False)), dtype=jnp.float32, param_dtype=jnp.float32)


class Worker:

  def __init__(self, checkpoint: str):
    start = time.perf_counter()
    self.config = model_config(checkpoint)
    self.model = qwen2_params.create_model_from_safe_tensors(checkpoint, self.config, mesh=None, dtype=jnp.float32)
    self.load_s = time.perf_counter() - start
    self.pad_id = 0
    # An id no logit has: rows never stop, as in the other systems (exactly new_tokens per row).
    self.tokenizer = IdTokenizer(pad_id=self.pad_id, eos_id=self.config.vocab_size)
    self.sampling = self.learner = None

  def prepare_sampling(self, prompts, samples: int, new_tokens: int, temperature: float) -> dict:
    prompt_len = max(len(p) for p in prompts)
    cache = sampler_lib.CacheConfig(cache_size=prompt_len + new_tokens, num_layers=self.config.num_layers,
                                    num_kv_heads=self.config.num_kv_heads, head_dim=self.config.head_dim)
    sampler = sampler_lib.Sampler(self.model, self.tokenizer, cache)
    texts = [self.tokenizer.decode(p) for p in prompts for _ in range(samples)]  # prompt-major rows
    # top_p=1 with no top_k: categorical sampling over the full vocabulary at `temperature`.
    kwargs = dict(max_generation_steps=new_tokens, max_prompt_length=prompt_len, temperature=temperature, top_p=1.0,
                  eos_tokens=[self.tokenizer.eos_id()], pad_output=True)
    self.sampling = (sampler, texts, kwargs, len(texts) * new_tokens)
    start = time.perf_counter()
    self._sample(0)
    return {"first_call_s": time.perf_counter() - start}

  def _sample(self, seed: int) -> int:
    sampler, texts, kwargs, expected = self.sampling
    out = sampler(texts, seed=seed, **kwargs)
    tokens = sum(len(t.split()) for t in out.text)
    if tokens != expected:
      raise RuntimeError(f"Tunix sampled {tokens} tokens, expected {expected} (rows x new_tokens)")
    return tokens

  def sample(self, seed: int) -> dict:
    if self.sampling is None:
      raise RuntimeError("'sample' before 'prepare_sampling'")
    start = time.perf_counter()
    tokens = self._sample(seed)
    return {"seconds": time.perf_counter() - start, "tokens": tokens}

  def prepare_learner(self, batch: dict, optim: dict, loss: dict) -> dict:
    completion_len = len(batch["completion_mask"][0])
    ids = np.asarray(batch["input_ids"], np.int32)
    # Tunix derives attention from the ids (`tunix.rl.common.process_ids`: pad = masked).
    ids = np.where(np.asarray(batch["attention_mask"]) > 0, ids, self.pad_id)
    prompt_ids, completion_ids = ids[:, :-completion_len], ids[:, -completion_len:]
    self.example = grpo_learner.TrainExample(
        prompt_ids=jnp.asarray(prompt_ids), prompt_mask=jnp.asarray(prompt_ids != self.pad_id),
        completion_ids=jnp.asarray(completion_ids),
        completion_mask=jnp.asarray(batch["completion_mask"], jnp.float32),
        advantages=jnp.asarray(batch["advantages"], jnp.float32), ref_per_token_logps=None, old_per_token_logps=None)
    algo = grpo_learner.GRPOConfig(num_generations=2, beta=0.0, epsilon=loss["epsilon_low"],
                                   loss_agg_mode=loss["loss_agg_mode"])
    algo.epsilon_high = loss["epsilon_high"]
    algo.temperature = loss["temperature"]  # GRPOLearner copies it from the rollout config
    chain = [optax.clip_by_global_norm(optim["max_grad_norm"])] if optim["max_grad_norm"] > 0 else []
    chain.append(optax.adamw(optim["learning_rate"], b1=optim["b1"], b2=optim["b2"], eps=optim["eps"],
                             weight_decay=optim["weight_decay"]))
    trainer = peft_trainer.PeftTrainer(self.model, optax.chain(*chain),
                                       peft_trainer.TrainingConfig(eval_every_n_steps=1 << 30))
    pad_id, eos_id = self.pad_id, self.tokenizer.eos_id()
    trainer.with_loss_fn(lambda model, train_example, algo_config: algo_core.grpo_loss_fn(
        model, train_example, algo_config=algo_config, pad_id=pad_id, eos_id=eos_id), has_aux=True)
    trainer.with_gen_model_input_fn(lambda example: {"train_example": example, "algo_config": algo})
    # Committed to the device first: the first step's outputs are, and jit would compile the step
    # a second time for them (seen: 10 s on the second step).
    device = jax.devices()[0]
    for tree in (self.model, trainer.optimizer):
      nnx.update(tree, jax.device_put(nnx.state(tree), device))
    self.example = jax.device_put(self.example, device)
    self.learner, _ = trainer.jit_train_and_eval_step()
    return {}

  def learner_step(self) -> dict:
    if self.learner is None:
      raise RuntimeError("'learner_step' before 'prepare_learner'")
    start = time.perf_counter()
    loss, _, grad_norm = jax.block_until_ready(self.learner(self.example))
    return {"seconds": time.perf_counter() - start, "loss": float(loss), "grad_norm": float(grad_norm)}


OPS = ("prepare_sampling", "sample", "prepare_learner", "learner_step")


def answer(message: dict) -> None:
  PROTOCOL.write(json.dumps(message) + "\n")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="transformers Qwen2 folder (config.json + safetensors)")
  args = parser.parse_args()
  import tunix  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    worker = Worker(args.checkpoint)
  except Exception as e:  # pylint: disable=broad-except
    answer({"ok": False, "error": f"loading {args.checkpoint}: {type(e).__name__}: {e}"})
    raise
  answer({"ok": True, "tunix": metadata.version("google-tunix"), "jax": jax.__version__,
          "backend": jax.default_backend(), "load_s": worker.load_s, "module": os.path.dirname(tunix.__file__)})
  for line in sys.stdin:
    request = json.loads(line)
    op = request.pop("op", None)
    if op == "quit":
      break
    try:
      if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}, quit")
      answer({"ok": True, **getattr(worker, op)(**request)})
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      answer({"ok": False, "error": f"{op}: {type(e).__name__}: {e}"})


if __name__ == "__main__":
  main()
