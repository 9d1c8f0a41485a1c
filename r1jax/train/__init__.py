"""Training: GRPO-family RL and SFT stages behind `experiments/run.py`.

`run(config, workdir, hooks)` runs every stage of a config (see `r1jax.train.config`); the
learner's jitted pieces are in `r1jax.train.learner`, a rollout in `r1jax.train.rollout`.
"""
from r1jax.train.config import default_config, stage_configs, validate  # noqa: F401
from r1jax.train.loop import DataHooks, run, run_stage  # noqa: F401
