"""Held-out evaluation: greedy completions of every prompt, scored by the recipe's reward.

Reports the mean total reward and the mean of every reward component (e.g. for STAR-R1 the
`format` rate, TAcc as the mean of `exact_set`, NDiff as the mean of `n_diff`).
"""
from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np

from r1jax.rewards import scorer
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train.sequences import SequenceBuilder


def evaluate(model, params, tokenizer, batches: Iterable[dict[str, Any]], reward_fn, *, max_new_tokens: int,
             stop_token_ids=(), sampler: Sampler | None = None, timeout_s: float = 10.0,
             num_workers: int = 1) -> tuple[dict[str, float], list[str]]:
  """Returns ({"reward": mean total, "<component>": mean, "num_examples": n}, completions)."""
  builder = SequenceBuilder(model)
  sampler = sampler or Sampler(model, pad_id=builder.pad_id)
  stop = tuple(model.config.eos_token_id) + tuple(stop_token_ids)
  controls = SamplingControls(max_new_tokens=max_new_tokens, greedy=True, stop_token_ids=stop or None)
  completions, totals, components = [], [], {}
  for batch in batches:
    output = sampler(params, builder.prompts(batch), key=jax.random.PRNGKey(0), num_samples=1, controls=controls)
    texts = tokenizer.batch_decode(np.asarray(output.tokens), skip_special_tokens=True)
    scores = scorer.score_batch(reward_fn, texts, batch["ground_truth"], batch["reward_context"],
                                timeout_s=timeout_s, num_workers=num_workers)
    completions.extend(texts)
    totals.append(scores.totals)
    for name, values in scores.components.items():
      components.setdefault(name, []).append(values)
  if not completions:
    raise ValueError("evaluation got no prompts: check the eval split's data config")
  metrics = {"reward": float(np.mean(np.concatenate(totals))), "num_examples": float(len(completions))}
  metrics.update({name: float(np.mean(np.concatenate(v))) for name, v in components.items()})
  return metrics, completions
