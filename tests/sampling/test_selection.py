"""Next-token selection: top-k / top-p / forbidden / temperature, checked statistically with fixed keys."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from r1jax.sampling import selection

VOCAB = 24
DRAWS = 4000  # Per distribution; frequencies then match within ~4 standard deviations (<= 0.032).


def _allowed_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float, forbidden) -> np.ndarray:
  """The renormalised distribution transformers' warpers define (float64, by sorting)."""
  scores = logits.astype(np.float64) / temperature
  scores[list(forbidden)] = -np.inf
  order = np.argsort(-scores)
  keep = np.zeros(len(scores), bool)
  ranked = order[:top_k] if top_k else order
  probs = softmax(scores[ranked])
  keep[ranked[(np.cumsum(probs) - probs) < top_p]] = True
  kept = np.where(keep, np.exp(scores - scores[keep].max()), 0.0)
  return kept / kept.sum()


@functools.partial(jax.jit, static_argnames=("top_k", "use_top_p", "greedy"))
def _draw(logits, key, temperature, top_p, forbidden, *, top_k, use_top_p, greedy=False):
  return selection.choose_tokens(logits, key, greedy=greedy, top_k=top_k, use_top_p=use_top_p,
                                 temperature=temperature, top_p=top_p, forbidden=forbidden)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.7), (8, 0.6)])
def test_samples_stay_in_the_allowed_set_with_the_right_frequencies(top_k, top_p):
  rng = np.random.default_rng(top_k)
  logits = rng.normal(size=(3, VOCAB)).astype(np.float32) * 2
  forbidden = np.zeros(VOCAB, bool)
  forbidden[[int(np.argmax(logits[0])), 7]] = True  # Forbid the favourite of row 0.
  temperature = 0.8
  tokens = np.asarray(_draw(jnp.repeat(logits, DRAWS, axis=0), jax.random.key(0), temperature, top_p, forbidden,
                            top_k=top_k, use_top_p=top_p < 1)).reshape(3, DRAWS)
  for row in range(3):
    expected = _allowed_probs(logits[row], temperature, top_k, top_p, np.flatnonzero(forbidden))
    assert expected.min() == 0  # The test really excludes tokens.
    assert set(tokens[row]) <= set(np.flatnonzero(expected)), row
    frequencies = np.bincount(tokens[row], minlength=VOCAB) / DRAWS
    np.testing.assert_allclose(frequencies, expected, atol=0.032)


def test_greedy_takes_the_best_allowed_token_and_keys_are_deterministic():
  logits = np.random.default_rng(3).normal(size=(4, VOCAB)).astype(np.float32)
  forbidden = np.zeros(VOCAB, bool)
  forbidden[np.argmax(logits, axis=-1)] = True
  greedy = _draw(logits, jax.random.key(0), 1.0, 1.0, forbidden, top_k=0, use_top_p=False, greedy=True)
  np.testing.assert_array_equal(greedy, np.argmax(np.where(forbidden, -np.inf, logits), axis=-1))
  many = jnp.tile(logits, (3 * DRAWS // 4, 1))  # The shape of the test above: no new compilation.
  draw = lambda seed: _draw(many, jax.random.key(seed), 1.0, 0.7, forbidden, top_k=0, use_top_p=True)
  np.testing.assert_array_equal(draw(1), draw(1))
  assert not np.array_equal(draw(1), draw(2))


def test_nucleus_mask_without_sorting_equals_the_sorted_definition():
  rng = np.random.default_rng(4)
  probs = softmax(rng.normal(size=(64, 1000)) * 3, axis=-1).astype(np.float32)
  for top_p in (0.05, 0.5, 0.9, 0.999):
    mask = np.asarray(jax.jit(selection.nucleus_threshold_mask)(probs, top_p))
    for row in range(len(probs)):
      order = np.argsort(-probs[row].astype(np.float64))
      sorted_probs = probs[row, order].astype(np.float64)
      mass_before = np.zeros(probs.shape[1])
      mass_before[order] = np.cumsum(sorted_probs) - sorted_probs
      # float32 sums may decide tokens whose mass lies within rounding of top_p either way.
      clear = np.abs(mass_before - top_p) > 1e-5
      np.testing.assert_array_equal(mask[row][clear], (mass_before < top_p)[clear], err_msg=f"row {row} p {top_p}")


def test_logprob_and_entropy_are_those_of_the_full_tempered_distribution():
  logits = np.random.default_rng(5).normal(size=(5, VOCAB)).astype(np.float32) * 3
  tokens = np.array([0, 3, 7, 11, 23])
  logprob, entropy = selection.token_logprob_and_entropy(jnp.asarray(logits), jnp.asarray(tokens), 0.6, True)
  log_probs = log_softmax(logits.astype(np.float64) / 0.6, axis=-1)
  np.testing.assert_allclose(logprob, log_probs[np.arange(5), tokens], atol=1e-5, rtol=0)
  np.testing.assert_allclose(entropy, -(np.exp(log_probs) * log_probs).sum(-1), atol=1e-5, rtol=0)


def test_two_level_inverse_cdf_draws_the_softmax_and_never_a_zero_probability_entry():
  # 29 entries: blocks of 5 with a padded last block; entries 5-9 (a whole block) and 27 have
  # zero probability.
  rng = np.random.default_rng(5)
  scores = rng.normal(size=(29,)).astype(np.float32)
  scores[[5, 6, 7, 8, 9, 27]] = -np.inf
  uniform = jax.random.uniform(jax.random.key(1), (8000,))
  tokens = np.asarray(jax.jit(selection.inverse_cdf_sample)(jnp.tile(scores, (8000, 1)), uniform))
  expected = softmax(scores.astype(np.float64))
  assert set(tokens) <= set(np.flatnonzero(expected))
  np.testing.assert_allclose(np.bincount(tokens, minlength=29) / 8000, expected, atol=0.025)
  # Draws at the very ends of [0, 1) land on the first and last entries that have probability.
  edges = selection.inverse_cdf_sample(jnp.tile(scores, (2, 1)), jnp.asarray([0.0, np.nextafter(1, 0)], jnp.float32))
  np.testing.assert_array_equal(edges, [0, 28])
