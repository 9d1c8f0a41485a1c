"""Verifiable rewards, one module per recipe. Entry point: `r1jax.rewards.get(name)`."""
from r1jax.rewards.base import RewardResult, get, names, register  # noqa: F401
