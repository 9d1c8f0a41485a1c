"""Choosing the next token from logits: forbidden ids, temperature, top-k, top-p, greedy.

Pure functions of [rows, vocab] logits, used inside the jitted decode loop. Sampling draws one
uniform number per row and inverts the cumulative distribution (cheaper on CPU than the Gumbel
trick, which needs one random number per vocabulary entry). The nucleus (top-p) set is found
without sorting the vocabulary: a bisection over the bit patterns of the float32 probabilities
finds the exact probability threshold (sorting 150k entries per row per step is slow on CPU).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def tempered_log_probs(logits: Array, temperature: Array | float) -> Array:
  """log softmax(logits / temperature) over the full vocabulary, fp32. [rows, vocab]."""
  return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def nucleus_threshold_mask(probs: Array, top_p: Array | float) -> Array:
  """bool [rows, vocab]: the top-p set, i.e. the most likely tokens whose mass first reaches top_p.

  A token is kept iff the mass of the strictly more likely tokens is < top_p (transformers'
  `TopPLogitsWarper`; tokens tied with the last kept one are kept too). Exact for float32
  `probs` [rows, vocab] (non-negative): non-negative floats order like their int32 bit patterns,
  so 31 bisection steps over those integers find the largest threshold whose mass is >= top_p.
  """
  bits = jax.lax.bitcast_convert_type(probs.astype(jnp.float32), jnp.int32)
  rows = probs.shape[0]

  def mass_at_least(threshold):
    return jnp.sum(jnp.where(bits >= threshold[:, None], probs, 0.0), axis=-1)

  def step(_, bounds):
    low, high = bounds  # mass(>= low) >= top_p, mass(>= high) < top_p
    mid = low + (high - low) // 2
    feasible = mass_at_least(mid) >= top_p
    return jnp.where(feasible, mid, low), jnp.where(feasible, high, mid)

  low = jnp.zeros((rows,), jnp.int32)
  high = jnp.max(bits, axis=-1) + 1
  low, _ = jax.lax.fori_loop(0, 31, step, (low, high))
  return bits >= low[:, None]


def sorted_nucleus_mask(sorted_scores: Array, top_p: Array | float) -> Array:
  """bool [rows, k]: the top-p set of scores already sorted in descending order."""
  probs = jax.nn.softmax(sorted_scores, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  return mass_before < top_p


def first_index(condition: Array) -> Array:
  """int32 [rows]: the first column where `condition` [rows, n] holds, n where it never does.

  A min-reduction: XLA's CPU argmax (a two-operand reduce) is several times slower.
  """
  size = condition.shape[-1]
  return jnp.min(jnp.where(condition, jnp.arange(size, dtype=jnp.int32), size), axis=-1)


def argmax(scores: Array) -> Array:
  """int32 [rows]: `jnp.argmax(scores, axis=-1)` (first maximum) of finite or -inf scores [rows, n]."""
  return first_index(scores == jnp.max(scores, axis=-1, keepdims=True))


def inverse_cdf_sample(scores: Array, uniform: Array) -> Array:
  """int32 [rows]: index drawn from softmax(scores) [rows, n] with one uniform [rows] in [0, 1) per row.

  Entries with zero probability (-inf scores) are never drawn, even under float rounding.
  """
  probs = jax.nn.softmax(scores, axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  drawn = first_index((cdf > (uniform * cdf[:, -1])[:, None]) & (probs > 0))
  # Only when rounding puts the draw past the total: the last entry that has probability.
  last = jnp.max(jnp.where(probs > 0, jnp.arange(probs.shape[-1], dtype=jnp.int32), 0), axis=-1)
  return jnp.where(drawn < probs.shape[-1], drawn, last)


def choose_tokens(logits: Array, key: Array, *, greedy: bool, top_k: int, use_top_p: bool,
                  temperature: Array | float, top_p: Array | float, forbidden: Array) -> Array:
  """The next token of every row. int32 [rows].

  Args:
    logits: [rows, vocab] fp32.
    key: PRNG key of this step (unused when greedy).
    greedy / top_k / use_top_p: static choices (top_k=0 and use_top_p=False turn those off).
    temperature, top_p: scalars (may be traced).
    forbidden: bool [vocab], True for tokens that must never be emitted.
  """
  scores = jnp.where(forbidden[None, :], -jnp.inf, logits.astype(jnp.float32))
  if greedy:
    return argmax(scores)
  scores = scores / temperature
  uniform = jax.random.uniform(key, (scores.shape[0],), jnp.float32)
  if top_k:
    top_scores, top_ids = jax.lax.top_k(scores, min(top_k, scores.shape[-1]))
    if use_top_p:
      top_scores = jnp.where(sorted_nucleus_mask(top_scores, top_p), top_scores, -jnp.inf)
    choice = inverse_cdf_sample(top_scores, uniform)
    return jnp.take_along_axis(top_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  if use_top_p:
    scores = jnp.where(nucleus_threshold_mask(jax.nn.softmax(scores, axis=-1), top_p), scores, -jnp.inf)
  return inverse_cdf_sample(scores, uniform)


def token_logprob_and_entropy(logits: Array, tokens: Array, temperature: Array | float,
                              with_entropy: bool) -> tuple[Array, Array | None]:
  """log p(token) and (optionally) the entropy under softmax(logits / temperature), full vocab.

  Args:
    logits: [rows, vocab]; tokens: int [rows].

  Returns:
    (fp32 [rows], fp32 [rows] or None).
  """
  log_probs = tempered_log_probs(logits, temperature)
  chosen = jnp.take_along_axis(log_probs, tokens[:, None].astype(jnp.int32), axis=-1)[:, 0]
  if not with_entropy:
    return chosen, None
  return chosen, -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
