"""Per-token log-probs and entropy from logits, computed in float32 (or wider) whatever the logits' dtype.

Position t of `logits` is the distribution that predicts `targets[:, t]`; the caller does the
one-token shift. Logits are divided by the sampling temperature first, so the learner scores
tokens under the same distribution the sampler drew them from (verl and Tunix do the same).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _tempered_log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  return jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature, axis=-1)


@functools.partial(jax.jit, static_argnames=("temperature",))
def token_logprobs(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> jax.Array:
  """log p(targets[b, t]) under softmax(logits[b, t] / temperature).

  Args:
    logits: [batch, length, vocab], any float dtype.
    targets: [batch, length] int token ids.
    temperature: the sampling temperature, > 0.

  Returns:
    [batch, length] float32 (float64 for float64 logits).
  """
  if logits.shape[:-1] != targets.shape:
    raise ValueError(f"logits {logits.shape} must be targets {targets.shape} + [vocab]")
  log_probs = _tempered_log_softmax(logits, temperature)
  return jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("temperature",))
def token_entropy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Entropy -sum_v p log p of softmax(logits / temperature) per position.

  Args:
    logits: [batch, length, vocab], any float dtype.
    temperature: the sampling temperature, > 0.

  Returns:
    [batch, length] float32 (float64 for float64 logits).
  """
  log_probs = _tempered_log_softmax(logits, temperature)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
