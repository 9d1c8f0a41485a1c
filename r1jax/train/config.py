"""The trainer's config sections, their defaults, and validation (unknown keys are errors).

A recipe's `get_config(arg)` starts from `default_config()` and sets what differs. Every key
below is documented where it is defined; README's config reference is generated from here.
`stages` lets one command run several stages in `stage_order` (e.g. SFT then GRPO): each stage
is a ConfigDict of overrides applied on top of the base config and runs in `<workdir>/<stage name>`.
The first stage starts from `init_from`; a later one from the previous stage's HF export unless its
own overrides name an `init_from`.
"""
from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from r1jax import frozen

ConfigDict = ml_collections.ConfigDict


def default_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.stage = "grpo"  # "grpo" (sample -> reward -> advantage -> update) or "sft" (teacher-forced CE)
  c.init_from = ""  # an HF folder, or an r1jax `checkpoints` folder; "" = random init from `model`
  c.tokenizer = ""  # local tokenizer folder; "" = init_from when it is an HF folder
  c.stages = ConfigDict()  # name -> overrides (see module docstring)
  c.stage_order = ()  # the names of `stages` in run order (ConfigDict sorts its keys)

  c.model = ConfigDict()
  c.model.preset = ""  # r1jax.models.PRESETS name, used for random init when init_from is ""
  c.model.hf_config = ConfigDict()  # or an HF config.json dict for random init (tiny from-scratch models)
  # Unset (None): a preset's own defaults (bf16 compute over fp32 params, layers scanned from 1.5B up);
  # float32, unscanned for an HF folder or an hf_config.
  c.model.dtype = ml_collections.config_dict.placeholder(str)  # computation dtype
  c.model.param_dtype = ml_collections.config_dict.placeholder(str)
  c.model.scan_layers = ml_collections.config_dict.placeholder(bool)
  c.model.remat = "none"  # "none" | "full" | "dots_saveable"
  c.model.attention_impl = "auto"  # "auto" (cuDNN fused on a GPU in bf16, else XLA) | "xla" | "jax_xla" | "cudnn"
  # Under mesh.shape.sequence > 1: "all_gather" (each device gathers K/V, attends its query rows) | "ring"
  # (K/V blocks passed device to device, flash-style partials); r1jax/models/sequence_parallel.py.
  c.model.sequence_attention = "all_gather"

  c.mesh = ConfigDict()
  c.mesh.shape = ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=1))  # -1: all remaining devices
  c.mesh.rules = ()  # extra (logical axis, mesh axes) pairs overriding the defaults

  c.sampling = ConfigDict()
  c.sampling.num_samples = 8  # G, completions per prompt
  c.sampling.temperature = 1.0
  c.sampling.top_p = 1.0
  c.sampling.top_k = 0  # 0 = off
  c.sampling.max_new_tokens = 256
  c.sampling.stop_token_ids = ()  # besides the model's EOS ids
  c.sampling.decode_phases = 4  # the decode loop's cache grows in up to this many steps (Sampler)

  c.rl = ConfigDict()
  c.rl.advantage = "grpo"  # grpo | dr_grpo | rloo | reinforce_pp
  c.rl.policy_loss = "ppo_clip"  # ppo_clip | gspo
  c.rl.epsilon_low = 0.2
  c.rl.epsilon_high = 0.2  # > epsilon_low: DAPO clip-higher
  c.rl.clip_ratio_c = 3.0  # dual-clip bound for negative advantages; 0 = off
  c.rl.loss_agg_mode = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
  c.rl.beta = 0.0  # KL coefficient; 0 = no reference model is kept or run
  c.rl.kl_estimator = "low_var_kl"  # kl (k1) | mse_kl (k2, verl: mse) | low_var_kl (k3)
  c.rl.entropy_coeff = 0.0
  c.rl.tis_mode = ""  # "" | "token" | "sequence": truncated importance sampling vs the sampler
  c.rl.tis_cap = 2.0
  c.rl.num_iterations = 1  # mu: passes over each rollout batch
  c.rl.mini_batches = 1  # optimizer updates per pass
  c.rl.dynamic_sampling = False  # DAPO: keep only groups with reward variance, resample to fill
  c.rl.max_sampling_rounds = 4  # cap on sampling rounds per step with dynamic sampling
  c.rl.overlong_buffer = 0  # DAPO soft overlong punishment window in tokens; 0 = off
  c.rl.overlong_penalty = 1.0

  c.reward = ConfigDict()
  c.reward.name = ""  # r1jax.rewards registry name
  c.reward.timeout_s = 10.0  # per sample; a sample that times out or raises is excluded from its group, and counted
  c.reward.num_workers = 4
  c.reward.max_error_frac = 0.5  # abort when more than this fraction of a step's samples fail to score
  c.reward.text_embedder = ""  # sentence-embedding model folder (HF layout); "" = the packaged all-MiniLM-L6-v2

  c.optim = ConfigDict()
  c.optim.learning_rate = 1e-6
  c.optim.schedule = "constant"  # constant | cosine (both after linear warmup)
  c.optim.warmup_steps = 0
  c.optim.end_lr_ratio = 0.0  # cosine floor as a fraction of learning_rate
  c.optim.weight_decay = 0.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.max_grad_norm = 1.0  # 0 = no clipping
  c.optim.freeze = ()  # regexes over "/"-joined param paths, e.g. ("visual/.*",)
  c.optim.micro_batches = 1  # gradient accumulation within each update
  c.optim.logits_chunk = 0  # positions projected onto the vocabulary at once by the learner; 0 = all

  c.train = ConfigDict()
  c.train.steps = 100
  c.train.log_every = 1
  c.train.checkpoint_every = 50
  c.train.keep_checkpoints = 2
  c.train.async_checkpoints = True
  c.train.max_nonfinite_steps = 5  # abort after this many consecutive skipped (non-finite) updates
  c.train.export_hf = True  # write <workdir>/hf (transformers layout) at the end
  c.train.eval_every = 0  # 0 = only at the end (when the recipe defines evaluation)
  c.train.progress_bar = True  # a tqdm bar when stderr is a terminal (else a log line per written step)

  c.env = ConfigDict()  # what happens between model turns (r1jax.envs)
  c.env.name = "single_turn"  # a registered environment; multi-step recipes name theirs
  c.env.num_workers = 4  # threads running environment steps
  c.env.options = ConfigDict()  # the environment's own settings (its factory reads them)

  # Frozen models (r1jax.frozen): name -> `frozen_model_config()` entry, loaded once per stage onto the
  # policy's mesh and handed by name to the environment and the reward (e.g. Omni-R1's "detail").
  # "reference" overrides the GRPO reference, which is otherwise the stage's initial policy.
  c.frozen = ConfigDict()

  c.data = ConfigDict()  # owned by data_pipelines (validated there)
  c.eval = ConfigDict()  # recipe-defined evaluation options (validated by the recipe's evaluator)
  return c


def frozen_model_config() -> ConfigDict:
  """The keys of one `config.frozen.<name>` entry, with their defaults."""
  f = ConfigDict()
  f.init_from = ""  # a local HF folder (config.json + safetensors + tokenizer), or "policy": the stage's initial policy
  f.tokenizer = ""  # local tokenizer folder; "" = init_from's
  f.dtype = ""  # params and computation: "bfloat16" | "float32"; "" = float32 (an HF folder) or the policy's
  f.role = ""  # what it is for: reference | detail | judge | embedder ("" = reference for the name "reference")
  f.max_new_tokens = 256  # generation budget of a call that sets none
  f.max_batch = 0  # the most prompts per on-device generation call; 0 = a call's whole batch at once
  return f


_FREE_FORM = {("model", "hf_config"), ("data",), ("eval",), ("stages",), ("mesh", "rules"), ("env", "options"),
              ("frozen",)}


def validate(config: ConfigDict) -> None:
  """Raises ValueError naming the first key of `config` (or of a stage's overrides) that
  `default_config()` lacks, with the closest valid key as a hint."""
  reference = default_config()
  _check(config, reference, (), ())
  _check_frozen(config.get("frozen", {}), ())
  for name, overrides in config.get("stages", {}).items():
    _check(overrides, reference, (), ("stages", name))
    _check_frozen(overrides.get("frozen", {}), ("stages", name))
  if sorted(config.get("stage_order", ())) != sorted(config.get("stages", {}).keys()):
    raise ValueError(f"config.stage_order={tuple(config.stage_order)} must name every stage of config.stages "
                     f"({sorted(config.stages.keys())}) once")
  for name, stage in stage_configs(config):
    _check_frozen_roles(stage.get("frozen", {}), ("stages", name) if config.get("stages") else ())


def _check_frozen(entries, shown: tuple[str, ...]) -> None:
  """Each `frozen.<name>` entry is a section of `frozen_model_config()` keys."""
  for name, entry in entries.items():
    if not isinstance(entry, (ConfigDict, dict)):
      raise ValueError(f"config key {'.'.join(shown + ('frozen', name))!r} must be a section "
                       f"({sorted(frozen_model_config().keys())}), got {entry!r}")
    _check(entry, frozen_model_config(), (), shown + ("frozen", name))


def _check_frozen_roles(entries, shown: tuple[str, ...]) -> None:
  """Each full `frozen.<name>` entry (a stage's after its overrides) has a role of `frozen.ROLES`."""
  for name, entry in entries.items():
    role = entry.get("role", "") or ("reference" if name == "reference" else "")
    if role not in frozen.ROLES:
      raise ValueError(f"config key {'.'.join(shown + ('frozen', name, 'role'))!r} must be one of {frozen.ROLES}, "
                       f"got {entry.get('role', '')!r}")


def _check(config, reference: ConfigDict, path: tuple[str, ...], shown: tuple[str, ...]) -> None:
  for key in config.keys():
    full = path + (key,)
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference.keys()), n=1)
      hint = f"; did you mean {'.'.join(shown + path + (close[0],))!r}?" if close else ""
      raise ValueError(f"unknown config key {'.'.join(shown + full)!r}{hint}")
    if full in _FREE_FORM:
      continue
    if isinstance(reference[key], ConfigDict):
      if not isinstance(config[key], (ConfigDict, dict)):
        raise ValueError(f"config key {'.'.join(shown + full)!r} must be a section, got {config[key]!r}")
      _check(config[key], reference[key], full, shown)


def stage_configs(config: ConfigDict) -> list[tuple[str, ConfigDict]]:
  """[(stage name, full config)]: the base config with each stage's overrides applied."""
  if not config.stages:
    return [(config.stage, config)]
  result = []
  for name in config.stage_order:
    stage = ConfigDict(config.to_dict())
    stage.stages, stage.stage_order = ConfigDict(), ()
    _merge(stage, config.stages[name])
    result.append((name, stage))
  return result


def _merge(target: ConfigDict, overrides: Any) -> None:
  for key, value in overrides.items():
    if isinstance(value, (ConfigDict, dict)) and isinstance(target.get(key), ConfigDict) and value:
      _merge(target[key], value)
    else:
      target[key] = value
