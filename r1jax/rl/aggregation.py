"""Loss aggregation modes (verl `agg_loss` names), returned as deferred (sum, count) pairs.

Every mode maps a per-token loss `[batch, length]` and its mask to `(sum, count)` such that
the loss is `sum / count`, and for a batch split into micro-batches along `batch`

    sum(sums) / sum(counts) == full-batch value,

so gradient accumulation (accumulate grad(sum), divide by the total count; the count does
not depend on the parameters) and multi-host averaging (psum both parts) are exact.
Write m for the mask, l for the loss and n_i = sum_t m[i, t]. A sequence is *valid* when
n_i > 0; fully masked rows (batch padding, filtered groups) count nowhere, as in verl.

| mode                      | sum                          | count            |
|---------------------------|------------------------------|------------------|
| `token-mean`              | sum_{i,t} m l                | sum_i n_i        |
| `seq-mean-token-mean`     | sum_{i valid} (sum_t m l)/n_i | #valid sequences |
| `seq-mean-token-sum`      | sum_{i,t} m l                | #valid sequences |
| `seq-mean-token-sum-norm` | sum_{i,t} m l / C            | #valid sequences |

`seq-mean-token-sum-norm` is Dr. GRPO's constant normaliser as in verl: the mean over
sequences of the per-sequence token sum, divided by a constant C = `loss_scale_factor`,
defaulting (like verl) to the padded response length `length`. Set `loss_scale_factor`
to the configured max response length whenever micro-batches may be padded to different
lengths (bucketing); otherwise each micro-batch divides by its own length and the
accumulated value is no longer the full-batch one.

Seq-mean modes need whole sequences in a micro-batch: split along `batch`, never `length`.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from r1jax.rl.registry import Registry

# (loss [batch, length], mask [batch, length], loss_scale_factor) -> (sum, count)
AggregationFn = Callable[[jax.Array, jax.Array, Optional[float]], tuple[jax.Array, jax.Array]]

AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation mode")
register_aggregation = AGGREGATIONS.register
get_aggregation = AGGREGATIONS.get


def _token_sums(loss: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-sequence masked loss sum and token count, both [batch]; masked slots never leak NaN."""
  mask = mask.astype(jnp.float32)
  per_token = jnp.where(mask > 0, loss, 0.0) * mask
  return jnp.sum(per_token, axis=-1), jnp.sum(mask, axis=-1)


@register_aggregation("token-mean")
def token_mean(loss, mask, loss_scale_factor=None):
  del loss_scale_factor  # Only seq-mean-token-sum-norm uses it.
  seq_sums, seq_tokens = _token_sums(loss, mask)
  return jnp.sum(seq_sums), jnp.sum(seq_tokens)


@register_aggregation("seq-mean-token-mean")
def seq_mean_token_mean(loss, mask, loss_scale_factor=None):
  del loss_scale_factor
  seq_sums, seq_tokens = _token_sums(loss, mask)
  valid = seq_tokens > 0
  seq_means = jnp.where(valid, seq_sums / jnp.maximum(seq_tokens, 1.0), 0.0)
  return jnp.sum(seq_means), jnp.sum(valid, dtype=jnp.float32)


@register_aggregation("seq-mean-token-sum")
def seq_mean_token_sum(loss, mask, loss_scale_factor=None):
  del loss_scale_factor
  seq_sums, seq_tokens = _token_sums(loss, mask)
  return jnp.sum(seq_sums), jnp.sum(seq_tokens > 0, dtype=jnp.float32)


@register_aggregation("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss, mask, loss_scale_factor=None):
  scale = loss.shape[-1] if loss_scale_factor is None else loss_scale_factor
  seq_sums, seq_tokens = _token_sums(loss, mask)
  return jnp.sum(seq_sums) / scale, jnp.sum(seq_tokens > 0, dtype=jnp.float32)


@functools.partial(jax.jit, static_argnames=("loss_agg_mode", "loss_scale_factor"))
def agg_loss(
    loss: jax.Array,
    mask: jax.Array,
    loss_agg_mode: str,
    loss_scale_factor: Optional[float] = None,
) -> tuple[jax.Array, jax.Array]:
  """Aggregates a per-token loss into (sum, count); the loss value is sum / count.

  Args:
    loss: per-token loss, [batch, length].
    mask: 1 for tokens that count, [batch, length] (bool or float).
    loss_agg_mode: a registered mode, see the module docstring for each one's definition.
    loss_scale_factor: the constant C of `seq-mean-token-sum-norm` (default: `length`).

  Returns:
    (sum, count), float32 scalars.
  """
  if loss.shape != mask.shape or loss.ndim != 2:
    raise ValueError(f"loss {loss.shape} and mask {mask.shape} must both be [batch, length]")
  return get_aggregation(loss_agg_mode)(loss, mask, loss_scale_factor)
