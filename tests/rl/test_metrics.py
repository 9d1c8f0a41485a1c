"""Deferred-reduction metrics: means add, extrema take min/max, empty ones report 0."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import rl
from r1jax.rl import metrics as metrics_lib


def test_accumulate_and_finalize():
  values = jnp.array([[1.0, -2.0, 3.0], [4.0, 5.0, jnp.nan]])
  first = jnp.array([[1, 1, 0], [0, 0, 0]], bool)
  second = jnp.array([[0, 0, 1], [1, 1, 0]], bool)

  @jax.jit
  def collect(mask):
    return {"x": metrics_lib.mean_metric(values, mask), "x/min": metrics_lib.min_metric(values, mask),
            "x/max": metrics_lib.max_metric(values, mask)}

  merged = rl.finalize_metrics(rl.accumulate_metrics(collect(first), collect(second)))
  np.testing.assert_allclose([merged["x"], merged["x/min"], merged["x/max"]], [11 / 5, -2.0, 5.0])
  empty = rl.finalize_metrics(collect(jnp.zeros((2, 3), bool)))
  assert [float(empty[k]) for k in ("x", "x/min", "x/max")] == [0.0, 0.0, 0.0]
  with pytest.raises(ValueError, match=r"differ in names: \['y'\]"):
    rl.accumulate_metrics(collect(first), {**collect(first), "y": (jnp.zeros(()), jnp.zeros(()))})
