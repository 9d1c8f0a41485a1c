"""Deferred-reduction metrics: every value is a pair that micro-batches and hosts can combine exactly.

A metrics dict maps a name to a pair of scalars `(value, count)`:

* most names are means: `value` is a sum and the reported number is `sum / count`;
  pairs combine by adding both parts;
* names ending in `/min` or `/max` are extrema: `value` is the min (max) over the
  `count` elements seen; pairs combine by min (max) of values and sum of counts.
  An empty extremum holds +inf (-inf), the identity of its reduction.

`accumulate_metrics` combines two dicts (micro-batch accumulation; the same rule is
`psum`/`pmin`/`pmax` across hosts) and `finalize_metrics` turns a dict into numbers,
reporting 0.0 for a name that saw no elements (count 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Metric = tuple[jax.Array, jax.Array]
Metrics = dict[str, Metric]


def _reduction(name: str) -> str:
  if name.endswith("/min"):
    return "min"
  if name.endswith("/max"):
    return "max"
  return "mean"


def mean_metric(values: jax.Array, mask: jax.Array) -> Metric:
  """(sum of `values` where `mask`, number of masked-in elements); same shapes in."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask > 0, values, 0.0) * mask), jnp.sum(mask)


def min_metric(values: jax.Array, mask: jax.Array) -> Metric:
  mask = mask > 0
  return jnp.min(jnp.where(mask, values, jnp.inf)), jnp.sum(mask, dtype=jnp.float32)


def max_metric(values: jax.Array, mask: jax.Array) -> Metric:
  mask = mask > 0
  return jnp.max(jnp.where(mask, values, -jnp.inf)), jnp.sum(mask, dtype=jnp.float32)


@jax.jit
def accumulate_metrics(total: Metrics, new: Metrics) -> Metrics:
  """Combines two metrics dicts with the same names, following each name's reduction."""
  if set(total) != set(new):
    raise ValueError(f"metrics to accumulate differ in names: {sorted(set(total) ^ set(new))}")
  combined = {}
  for name, (value, count) in total.items():
    new_value, new_count = new[name]
    reduce = {"mean": jnp.add, "min": jnp.minimum, "max": jnp.maximum}[_reduction(name)]
    combined[name] = (reduce(value, new_value), count + new_count)
  return combined


@jax.jit
def finalize_metrics(metrics: Metrics) -> dict[str, jax.Array]:
  """Name -> reported scalar: sum / count for means, the extremum itself for /min and /max."""
  out = {}
  for name, (value, count) in metrics.items():
    if _reduction(name) == "mean":
      value = value / jnp.maximum(count, 1.0)
    out[name] = jnp.where(count > 0, value, 0.0)
  return out
