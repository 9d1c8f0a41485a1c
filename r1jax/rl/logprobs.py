"""Per-token log-probs and entropy from logits, computed in float32 (or wider) whatever the logits' dtype.

Position t of `logits` is the distribution that predicts `targets[:, t]`; the caller does the
one-token shift. Logits are divided by the sampling temperature first, so the learner scores
tokens under the same distribution the sampler drew them from (verl and Tunix do the same).

`token_logprobs_and_entropy` is the learner's one pass over the [batch, length, vocab] logits:
the log-prob of the target and the entropy come from one tempered log-softmax, and its backward
is written out (`jax.custom_vjp`) as one elementwise expression of the logits and three per-token
statistics, with the target's one-hot an iota compare in that same expression. Autodiff of the
plain formulas would instead scatter into a zero [batch, length, vocab] buffer for the target
(`take_along_axis`'s transpose) and run a second log-softmax for the entropy.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ENTROPY_MODES = ("none", "logged", "loss")


def _check(logits: jax.Array, targets: jax.Array, temperature: float, entropy: str) -> None:
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if logits.shape[:-1] != targets.shape:
    raise ValueError(f"logits {logits.shape} must be targets {targets.shape} + [vocab]")
  if entropy not in ENTROPY_MODES:
    raise ValueError(f"entropy={entropy!r} must be one of {ENTROPY_MODES}")


def _shifted(logits: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """(logits / temperature - its max over the vocabulary [..., vocab], that max [..., 1]), in fp32 or wider."""
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature
  top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  return z - top, top


def _statistics(logits, targets, temperature: float, with_entropy: bool):
  """(log p(target) [...], entropy [...] or None, max [..., 1], log-sum-exp of the shifted logits [..., 1])."""
  shifted, top = _shifted(logits, temperature)
  exp = jnp.exp(shifted)
  sum_exp = jnp.sum(exp, axis=-1, keepdims=True)
  log_sum_exp = jnp.log(sum_exp)
  # The target's logit is read from the logits themselves (one element per token), with the same
  # arithmetic as `shifted`, so it equals shifted[target] exactly.
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)
  logprobs = (target_logit.astype(shifted.dtype) / temperature - top - log_sum_exp)[..., 0]
  if not with_entropy:
    return logprobs, None, top, log_sum_exp
  # -sum p log p = log_sum_exp - sum(e^s s) / sum(e^s): both terms are >= 0 (s <= 0), so no
  # cancellation, and both sums come from the same pass over the logits.
  entropy = (log_sum_exp - jnp.sum(exp * shifted, axis=-1, keepdims=True) / sum_exp)[..., 0]
  return logprobs, entropy, top, log_sum_exp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _fused(logits, targets, temperature: float, entropy: str):
  logprobs, token_entropy_, _, _ = _statistics(logits, targets, temperature, entropy != "none")
  return logprobs, token_entropy_


def _fused_fwd(logits, targets, temperature: float, entropy: str):
  logprobs, token_entropy_, top, log_sum_exp = _statistics(logits, targets, temperature, entropy != "none")
  # Residuals: the logits (kept alive by the caller anyway) and per-token scalars; no vocab-sized buffer.
  return (logprobs, token_entropy_), (logits, targets, top, log_sum_exp, token_entropy_)


def _fused_bwd(temperature: float, entropy: str, residuals, cotangents):
  logits, targets, top, log_sum_exp, token_entropy_ = residuals
  g_logprobs, g_entropy = cotangents
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature
  log_p = z - top - log_sum_exp
  p = jnp.exp(log_p)
  onehot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == targets[..., None]
  # d log p(t) / dz = onehot - p;  d H / dz = -p (log p + H);  z = logits / temperature.
  grad = g_logprobs[..., None] * (onehot - p)
  if entropy == "loss":
    grad = grad - g_entropy[..., None] * p * (log_p + token_entropy_[..., None])
  return (grad / temperature).astype(logits.dtype), None


_fused.defvjp(_fused_fwd, _fused_bwd)


@functools.partial(jax.jit, static_argnames=("temperature", "entropy"))
def token_logprobs_and_entropy(logits: jax.Array, targets: jax.Array, temperature: float = 1.0, *,
                               entropy: str = "none") -> tuple[jax.Array, jax.Array | None]:
  """log p(targets[b, t]) and the entropy -sum_v p log p under softmax(logits[b, t] / temperature), in one pass.

  Args:
    logits: [batch, length, vocab], any float dtype.
    targets: [batch, length] int token ids.
    temperature: the sampling temperature, > 0.
    entropy: "none" (entropy not computed, None returned), "logged" (computed, no gradient flows
      through it) or "loss" (computed, differentiable).

  Returns:
    (logprobs [batch, length], entropy [batch, length] or None), float32 (float64 for float64 logits).
    The gradient with respect to `logits` has their dtype; the backward holds one [batch, length,
    vocab] buffer (the gradient itself).
  """
  _check(logits, targets, temperature, entropy)
  return _fused(logits, targets, temperature, entropy)


def token_logprobs(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> jax.Array:
  """log p(targets[b, t]) under softmax(logits[b, t] / temperature).

  Args:
    logits: [batch, length, vocab], any float dtype.
    targets: [batch, length] int token ids.
    temperature: the sampling temperature, > 0.

  Returns:
    [batch, length] float32 (float64 for float64 logits).
  """
  return token_logprobs_and_entropy(logits, targets, temperature)[0]


def token_entropy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Entropy -sum_v p log p of softmax(logits / temperature) per position (differentiable).

  Args:
    logits: [batch, length, vocab], any float dtype.
    temperature: the sampling temperature, > 0.

  Returns:
    [batch, length] float32 (float64 for float64 logits).
  """
  # Any in-range target: its log-prob is computed in the same pass and dropped.
  targets = jnp.zeros(logits.shape[:-1], jnp.int32)
  return token_logprobs_and_entropy(logits, targets, temperature, entropy="loss")[1]
