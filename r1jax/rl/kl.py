"""Per-token estimators of KL(policy || reference) from the sampled tokens' log-probs.

Names follow verl's `kl_penalty` (Schulman, "Approximating KL divergence", 2020), with the
k-names as aliases. With log r = ref_logprob - logprob on tokens sampled from the policy:

* `kl`  (k1): -log r = logprob - ref_logprob. Unbiased, high variance, can be negative.
* `mse` (k2, also `mse_kl`): (log r)^2 / 2. Biased, low variance, >= 0. `mse` is verl's name
  (`kl_loss_type=mse`), so a verl config carries over as it is.
* `low_var_kl` (k3): r - 1 - log r. Unbiased, low variance, >= 0. As verl, log r is clamped
  to [-20, 20] before the exp and the result to [-10, 10], so one runaway token cannot
  blow up the loss (its gradient is then zero).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from r1jax.rl.registry import Registry

KlEstimatorFn = Callable[[jax.Array, jax.Array], jax.Array]

KL_ESTIMATORS: Registry[KlEstimatorFn] = Registry("KL estimator")
register_kl_estimator = KL_ESTIMATORS.register
get_kl_estimator = KL_ESTIMATORS.get


@register_kl_estimator("kl")
@register_kl_estimator("k1")
def k1(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
  return logprobs - ref_logprobs


@register_kl_estimator("mse")
@register_kl_estimator("mse_kl")
@register_kl_estimator("k2")
def k2(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
  return 0.5 * jnp.square(logprobs - ref_logprobs)


@register_kl_estimator("low_var_kl")
@register_kl_estimator("k3")
def k3(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
  log_ratio = jnp.clip(ref_logprobs - logprobs, -20.0, 20.0)
  return jnp.clip(jnp.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)


@functools.partial(jax.jit, static_argnames=("kl_estimator",))
def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, kl_estimator: str) -> jax.Array:
  """Per-token KL estimate, same shape as the inputs ([batch, length]).

  Args:
    logprobs: log-probs of the sampled tokens under the policy being trained.
    ref_logprobs: log-probs of the same tokens under the reference policy.
    kl_estimator: `kl`, `mse` or `low_var_kl` (or `k1`, `k2`, `k3`; `mse_kl` for `mse`).
  """
  return get_kl_estimator(kl_estimator)(logprobs, ref_logprobs)
