"""Held-out evaluation: greedy episodes of every prompt, scored by the recipe's reward.

Reports the mean total reward and the mean of every reward component of each episode's headline
sample (its first `Environment.samples` entry; for single-turn recipes the one completion): e.g.
for STAR-R1 the `format` rate, TAcc as the mean of `exact_set`, NDiff as the mean of `n_diff`;
for LOVE-R1 the step-1 sample, whose accuracy is that of the episode's final answer. The
environment's `episode_metrics` (LOVE-R1: the zoom's IoU with the true interval) and the episode
statuses are added.
"""
from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np

from r1jax.envs import FAILED, Environment, SingleTurn
from r1jax.envs.observations import ObservationEncoder
from r1jax.envs.runner import EpisodeRunner, status_counts
from r1jax.rewards import scorer
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train.sequences import SequenceBuilder


def evaluate(model, params, tokenizer, batches: Iterable[dict[str, Any]], reward_fn, *, max_new_tokens: int,
             stop_token_ids=(), sampler: Sampler | None = None, timeout_s: float = 10.0, num_workers: int = 1,
             env: Environment | None = None, encoder: ObservationEncoder | None = None,
             forced_prefix: str = "") -> tuple[dict[str, float], list[str]]:
  """Returns ({"reward": mean total, "<component>": mean, "num_examples": n, ...}, episode texts).

  Args:
    env: the recipe's environment (default single-turn); `encoder` tokenises its observations.
    forced_prefix: text every first action starts with (appended to the prompts), e.g. LOVE-R1's
      answer prefix for the forced no-zoom baseline.
  """
  builder = SequenceBuilder(model)
  sampler = sampler or Sampler(model, pad_id=builder.pad_id)
  env = env or SingleTurn()
  stop = tuple(model.config.eos_token_id) + tuple(stop_token_ids)
  controls = SamplingControls(max_new_tokens=max_new_tokens, greedy=True, stop_token_ids=stop or None)
  decode = lambda ids: tokenizer.batch_decode(ids, skip_special_tokens=True)
  runner = EpisodeRunner(sampler, env, controls, decode, encoder, num_workers=num_workers)
  forced = (np.asarray(tokenizer.encode(forced_prefix, add_special_tokens=False), np.int32), forced_prefix) \
      if forced_prefix else None
  texts, totals, components, extra, all_episodes = [], [], {}, {}, []
  for batch in batches:
    episodes = runner(params, builder.prompts(batch), batch["reward_context"], batch["ground_truth"], num_samples=1,
                      key=jax.random.PRNGKey(0), forced_prefix=forced)
    headlines, truths, contexts = [], [], []
    for row, episode in enumerate(episodes.episodes):
      all_episodes.append(episode)
      texts.append("\n[observation]\n".join(episode.actions))
      sample = env.samples(episode)[0] if episode.status not in FAILED else None
      headlines.append("" if sample is None else sample.completion)
      truths.append(batch["ground_truth"][row])
      contexts.append(dict(batch["reward_context"][row], **({} if sample is None else sample.context)))
      for name, value in env.episode_metrics(episode).items():
        extra.setdefault(name, []).append(value)
    scores = scorer.score_batch(reward_fn, headlines, truths, contexts, timeout_s=timeout_s, num_workers=num_workers)
    totals.append(scores.totals)
    for name, values in scores.components.items():
      components.setdefault(name, []).append(values)
  if not texts:
    raise ValueError("evaluation got no prompts: check the eval split's data config (batches are full: a split "
                     "with fewer examples than its batch_size yields none)")
  metrics = {"reward": float(np.mean(np.concatenate(totals))), "num_examples": float(len(texts))}
  metrics.update({name: float(np.mean(np.concatenate(v))) for name, v in components.items()})
  metrics.update({name: float(np.mean(v)) for name, v in extra.items()})
  if env.max_turns > 1:
    metrics.update(status_counts(all_episodes))
  return metrics, texts
