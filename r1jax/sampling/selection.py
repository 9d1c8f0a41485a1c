"""Choosing the next token from logits: forbidden ids, temperature, top-k, top-p, greedy.

Pure functions of [rows, vocab] logits, used inside the jitted decode loop. Sampling draws one
uniform number per row and inverts the cumulative distribution (cheaper on CPU than the Gumbel
trick, which needs one random number per vocabulary entry). The nucleus (top-p) set is found
without sorting the vocabulary: a bisection over the bit patterns of the float32 probabilities
finds the exact probability threshold (sorting 150k entries per row per step is slow on CPU).
"""
from __future__ import annotations

import math

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


def last_index(condition: Array) -> Array:
  """int32 [rows]: the last column where `condition` [rows, n] holds, 0 where it never does."""
  return jnp.max(jnp.where(condition, jnp.arange(condition.shape[-1], dtype=jnp.int32), 0), axis=-1)


def _draw_from_cdf(probs: Array, cdf: Array, target: Array) -> Array:
  """int32 [rows]: the first entry of `probs` [rows, n] with probability whose `cdf` exceeds `target`.

  Entries with zero probability are never chosen; when rounding leaves no entry past the
  target, the last entry that has probability is.
  """
  drawn = first_index((cdf > target[:, None]) & (probs > 0))
  return jnp.where(drawn < probs.shape[-1], drawn, last_index(probs > 0))


def inverse_cdf_sample(scores: Array, uniform: Array) -> Array:
  """int32 [rows]: index drawn from softmax(scores) [rows, n] with one uniform [rows] in [0, 1) per row.

  Two levels, because a cumulative sum over a whole vocabulary is slow on CPU (XLA lowers it to
  a log-depth scan of full-size passes): the mass of blocks of ~sqrt(n) entries picks a block,
  then the cumulative sum inside that block picks the entry. Entries with zero probability
  (-inf scores) are never drawn, even under float rounding.
  """
  rows, size = scores.shape
  block = max(1, math.isqrt(size))
  num_blocks = -(-size // block)
  probs = jnp.pad(jax.nn.softmax(scores, axis=-1), ((0, 0), (0, num_blocks * block - size)))
  blocks = probs.reshape(rows, num_blocks, block)
  mass = jnp.sum(blocks, axis=-1)  # [rows, num_blocks]
  cdf = jnp.cumsum(mass, axis=-1)
  target = uniform * cdf[:, -1]
  chosen = _draw_from_cdf(mass, cdf, target)
  inside = jnp.take_along_axis(blocks, chosen[:, None, None], axis=1)[:, 0]  # [rows, block]
  before = jnp.take_along_axis(cdf - mass, chosen[:, None], axis=1)
  return chosen * block + _draw_from_cdf(inside, before + jnp.cumsum(inside, axis=-1), target)


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
