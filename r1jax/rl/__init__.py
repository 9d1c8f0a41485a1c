"""RL building blocks: pure, jitted functions registered by name (advantages, losses, KL, aggregation).

Typical use in a train step:

    advantages = rl.get_advantage("grpo")(rewards, group_mask)       # [num_groups, G]
    config = rl.PolicyLossConfig(epsilon_high=0.28, loss_agg_mode="token-mean")
    loss_sum, count, metrics = rl.grpo_loss(config, logprobs, old_logprobs, None,
                                            advantages.reshape(-1), completion_mask)
"""
from r1jax.rl.advantages import (  # noqa: F401
    ADVANTAGES,
    dr_grpo,
    get_advantage,
    group_metrics,
    grpo,
    register_advantage,
    reinforce_pp,
    rloo,
)
from r1jax.rl.aggregation import AGGREGATIONS, agg_loss, get_aggregation, register_aggregation  # noqa: F401
from r1jax.rl.kl import KL_ESTIMATORS, get_kl_estimator, kl_penalty, register_kl_estimator  # noqa: F401
from r1jax.rl.logprobs import token_entropy, token_logprobs, token_logprobs_and_entropy  # noqa: F401
from r1jax.rl.metrics import Metrics, accumulate_metrics, finalize_metrics  # noqa: F401
from r1jax.rl.objective import grpo_loss  # noqa: F401
from r1jax.rl.policy_losses import (  # noqa: F401
    POLICY_LOSSES,
    PolicyLossConfig,
    PolicyLossOutput,
    get_policy_loss,
    register_policy_loss,
)
from r1jax.rl.rollout_correction import mismatch_metrics, truncated_is_weights  # noqa: F401
from r1jax.rl.shaping import groups_with_reward_variance, soft_overlong_punishment  # noqa: F401
