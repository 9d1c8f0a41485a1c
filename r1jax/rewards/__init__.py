"""Verifiable rewards, one module per recipe. Entry point: `r1jax.rewards.get(name)`.

Every reward is `reward(completion, ground_truth, **context) -> RewardResult` (see `base`);
`scorer.score_batch` runs one over a batch with per-sample timeouts.
"""
from r1jax.rewards.base import RewardResult, get, names, register  # noqa: F401
from r1jax.rewards import (  # noqa: F401  (importing a recipe module registers its reward)
    embodied_r1,
    got_r1,
    infigui,
    longvila,
    love_r1,
    omni_r1,
    sanity,
    satori,
    scorer,
    star_r1,
    three_d_r1,
    xiangqi,
)
