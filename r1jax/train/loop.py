"""The training loop behind `experiments/run.py`: stages, resume, GRPO and SFT steps, export.

A GRPO step:  draw prompts -> sample G per prompt -> rewards (host pool) -> advantages
              -> `rl.num_iterations` passes of `rl.mini_batches` updates -> metrics -> checkpoint.
An SFT step:  draw a batch -> teacher-forced cross-entropy update -> metrics -> checkpoint.

Each stage runs in `<workdir>/<stage>` (or `<workdir>` for a single-stage config) and resumes
from its latest complete checkpoint when re-run with the same workdir; a finished stage is
skipped. The data pipeline comes in through `DataHooks`, so `r1jax` never imports
`data_pipelines` (experiments/run.py wires them together).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import checkpoint, envs, processing, rewards, rl, sharding
from r1jax import frozen as frozen_lib
from r1jax.envs.observations import ObservationEncoder
from r1jax.envs.runner import EpisodeRunner, reward_fields
from r1jax.rewards.startup import frozen_model_judges, judge_context
from r1jax import models
from r1jax.errors import RunStoppedError
from r1jax.tokenization import load_tokenizer
from r1jax.train import config as config_lib
from r1jax.train import interrupts, learner, learner_batch, optim, rows
from r1jax.sampling import Sampler, SamplingControls
from r1jax.train.rollout import collect_rollout
from r1jax.train.sequences import SequenceBuilder
from r1jax.train.writer import MetricWriter, plot_curves, read_metrics

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataHooks:
  """What the loop needs from the data side, built by experiments/run.py.

  Attributes:
    prompt_iterator: (stage config, tokenizer) -> checkpointable iterator of prompt batches (GRPO).
    sft_iterator: (stage config, tokenizer) -> checkpointable iterator of SFT batches.
    evaluate: optional (stage config, model, params, tokenizer, stage_dir) -> {metric: value},
      called at the end of a stage (and every `train.eval_every` steps).
    video_clip: optional (prompt reward context, t1, t2) -> (frames uint8 [T, H, W, 3], frames
      per second, max pixels per frame): a clip of the prompt's video, for environments that
      show one (LOVE-R1's zoom).
  """

  prompt_iterator: Callable[[Any, Any], Iterator] | None = None
  sft_iterator: Callable[[Any, Any], Iterator] | None = None
  evaluate: Callable[..., dict[str, float]] | None = None
  video_clip: Callable[..., Any] | None = None  # (context, t1, t2) -> (frames, fps, max pixels), for envs


class NonFiniteError(RunStoppedError):
  """`train.max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


def run(config: ml_collections.ConfigDict, workdir: str, hooks: DataHooks) -> dict[str, dict[str, float]]:
  """Runs every stage of `config` in order; returns {stage: final metrics}."""
  config_lib.validate(config)
  stages = config_lib.stage_configs(config)
  for _, stage_config in stages:  # before any stage trains: a missing frozen model stops the run now
    check_frozen_models(stage_config)
  results, previous_export = {}, None
  for index, (name, stage_config) in enumerate(stages):
    stage_dir = workdir if len(stages) == 1 else os.path.join(workdir, name)
    # Stage 1 starts from the base `init_from`; a later stage from the previous stage's export,
    # unless its own overrides name an `init_from`.
    if index > 0 and not config.stages[name].get("init_from"):
      stage_config.init_from = previous_export
    results[name] = run_stage(name, stage_config, stage_dir, hooks)
    previous_export = os.path.join(stage_dir, "hf")
  return results


# --------------------------------------------------------------------------- setup


def runtime_options(model_config) -> dict[str, Any]:
  """The `ModelConfig` runtime options `config.model` sets; those left unset (None) take the preset's
  defaults, or ModelConfig's (fp32, unscanned) for an hf_config."""
  names = ("dtype", "param_dtype", "scan_layers", "remat", "attention_impl", "sequence_attention")
  return {k: model_config[k] for k in names if model_config[k] is not None}


def build_policy(config, mesh, rules) -> tuple[Any, Any, Any]:
  """(model, params, tokenizer) from `init_from` (HF folder or r1jax checkpoints) or random init."""
  m, runtime = config.model, runtime_options(config.model)
  init_from = config.init_from
  if init_from and not checkpoint.is_checkpoint_dir(init_from):
    model, params = models.load_pretrained(init_from, dtype=jnp.dtype(m.param_dtype or "float32"), mesh=mesh,
                                           compute_dtype=jnp.dtype(m.dtype or "float32"),
                                           scan_layers=bool(m.scan_layers), remat=m.remat,
                                           attention_impl=m.attention_impl,
                                           sequence_attention=m.sequence_attention, rules=rules)
  else:
    if config.model.preset:
      model_config = models.preset(config.model.preset, **runtime)
    elif config.model.hf_config:
      model_config = models.config_from_hf(config.model.hf_config.to_dict(), **runtime)
    else:
      raise ValueError("set config.init_from (an HF folder or r1jax checkpoints) or config.model.preset / "
                       "config.model.hf_config for a random init")
    model = models.build_model(model_config)
    params = sharding.init_sharded(model, jax.random.PRNGKey(config.seed), mesh, rules)
    if init_from:
      params = checkpoint.restore_params(init_from, params)
  tokenizer_path = config.tokenizer or (init_from if init_from and not checkpoint.is_checkpoint_dir(init_from)
                                        else "")
  if not tokenizer_path:
    raise ValueError("config.tokenizer is empty and config.init_from is not an HF folder holding a tokenizer")
  return model, params, load_tokenizer(tokenizer_path)


def check_frozen_models(config) -> None:
  """A GRPO stage's environment and reward have the frozen models they require
  (`envs.register(frozen=...)`, reward judges config.reward cannot build) in `config.frozen`;
  raises `frozen.MissingFrozenModelError` naming the config key otherwise."""
  if config.stage == "grpo":
    frozen_lib.check_required(config, envs.required_frozen(config.env.name), f"environment {config.env.name!r}")
    if config.reward.name:
      frozen_lib.check_required(config, frozen_model_judges(config.reward.name), f"reward {config.reward.name!r}")


def load_frozen_models(config, model, params, tokenizer, mesh, rules) -> tuple[dict[str, frozen_lib.FrozenModel],
                                                                               frozen_lib.FrozenModel | None]:
  """A GRPO stage's frozen models ({name: FrozenModel}, `config.frozen`), loaded once, and its KL
  reference (None when rl.beta == 0): `config.frozen.reference`, else a copy of the stage's initial
  policy, taken before a resume replaces the state (the updates donate the state's buffers). A
  frozen model that is that copy too (`init_from="policy"`, no `dtype`, e.g. Omni-R1's detail
  system) shares its params with the reference."""
  if config.stage != "grpo":
    return {}, None
  policy = (model, params, tokenizer)
  models_by_name = frozen_lib.load_all(config, mesh=mesh, rules=rules, policy=policy)
  reference = None
  if config.rl.beta > 0:
    same = [m for m in models_by_name.values() if m.source == (frozen_lib.POLICY, "")]
    reference = models_by_name.get("reference") or (
        same[0].renamed("reference", "reference") if same else
        frozen_lib.from_policy("reference", *policy, mesh=mesh, rules=rules))
  return models_by_name, reference


def loss_config(config) -> rl.PolicyLossConfig:
  r = config.rl
  return rl.PolicyLossConfig(policy_loss=r.policy_loss, epsilon_low=r.epsilon_low, epsilon_high=r.epsilon_high,
                             clip_ratio_c=r.clip_ratio_c or None, loss_agg_mode=r.loss_agg_mode, beta=r.beta,
                             kl_estimator=r.kl_estimator, tis_mode=r.tis_mode or None, tis_cap=r.tis_cap,
                             entropy_coeff=r.entropy_coeff,
                             # A constant: the learner's completion columns are bucketed per batch.
                             loss_scale_factor=float(config.sampling.max_new_tokens))


# --------------------------------------------------------------------------- one stage


def init_state(params, tx, seed: int, mesh, frozen: tuple[str, ...] = ()) -> learner.TrainState:
  """The initial train state, created in place: optimizer moments sharded like their parameters."""
  create = lambda p: learner.create_state(p, tx, jax.random.PRNGKey(seed), frozen)
  shardings = sharding.mirror_param_shardings(jax.eval_shape(create, params), params, mesh)
  return jax.jit(create, out_shardings=shardings)(params)


def run_stage(name: str, config, stage_dir: str, hooks: DataHooks) -> dict[str, float]:
  os.makedirs(stage_dir, exist_ok=True)
  done_marker = os.path.join(stage_dir, "DONE.json")
  if os.path.isfile(done_marker):
    _log.info("stage %s already finished in %s; skipping", name, stage_dir)
    with open(done_marker, encoding="utf-8") as f:
      return json.load(f)
  if jax.process_index() == 0:
    with open(os.path.join(stage_dir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(dict(config.mesh.rules) if config.mesh.rules else None)
  # Placement needs only the mesh; the models' activation constraints need the context below.
  _log.info("stage %s: building the policy (%s) and its tokenizer on a %s mesh", name,
            f"from {config.init_from}" if config.init_from else "random init", dict(mesh.shape))
  model, params, tokenizer = build_policy(config, mesh, rules)
  with sharding.use_mesh(mesh, rules):
    total_steps = config.train.steps
    schedule = optim.learning_rate_schedule(config.optim, total_steps * optim.updates_per_step(config))
    tx = optim.make_optimizer(config.optim, total_steps * optim.updates_per_step(config))
    state = init_state(params, tx, config.seed, mesh, optim.frozen_paths(params, config.optim.freeze))
    del params
    frozen_models, reference = load_frozen_models(config, model, state.params, tokenizer, mesh, rules)
    ckpt = checkpoint.Checkpointer(os.path.join(stage_dir, "checkpoints"), save_every=config.train.checkpoint_every,
                                   keep=config.train.keep_checkpoints, async_save=config.train.async_checkpoints)
    if config.stage == "grpo":
      data = hooks.prompt_iterator(config, tokenizer)
    elif config.stage == "sft":
      data = hooks.sft_iterator(config, tokenizer)
    else:
      raise ValueError(f"config.stage={config.stage!r} must be 'grpo' or 'sft'")
    counters = {"nonfinite_streak": 0, "skipped_updates": 0}
    if ckpt.latest_step() is not None:
      state, extra = ckpt.restore(state)
      data.set_state(extra["data"][jax.process_index()])
      counters = extra["counters"]
      _log.info("resumed stage %s at step %d from %s", name, int(state.step), ckpt.directory)

    step = int(state.step)
    _log.info("stage %s: training from step %d to %d; the first step compiles the sampler and the learner",
              name, step, total_steps)
    writer = MetricWriter(stage_dir, total_steps=total_steps, initial_step=step,
                          progress_bar=config.train.progress_bar, name=name)
    updater = _Updater(config, model, mesh, rules, tx)
    step_fn = _GrpoStep(config, model, tokenizer, reference, updater, hooks, frozen_models) \
        if config.stage == "grpo" else _SftStep(model, updater)
    if config.stage == "grpo":
      step_fn.vision_plan(state)  # logs whether the learner's passes reuse a step's vision features, and why
    stop = interrupts.GracefulStop()
    stop.install()
    # A step's metrics stay on device until the next step has been dispatched (or until this step
    # is logged with an evaluation, checkpointed or the last): the host does not wait for the
    # device at every step. So the non-finite counters, and NonFiniteError, may come one step late;
    # a checkpoint always holds the counters of every step it contains.
    clock = _StepClock()
    pending = None

    def finish(record: _StepRecord, evaluate: bool = False) -> None:
      metrics = {k: float(v) for k, v in record.metrics.items()}  # waits for that step's device work
      _count_nonfinite(metrics, counters, config.train.max_nonfinite_steps)
      metrics["perf/step_s"] = clock.seconds(record)
      metrics["perf/steps_per_s"] = 1.0 / metrics["perf/step_s"]
      metrics["train/skipped_updates"] = counters["skipped_updates"]
      metrics["optim/lr"] = float(record.learning_rate)  # of the step's last update
      if evaluate:
        metrics.update(_prefixed("eval", hooks.evaluate(config, model, state.params, tokenizer, stage_dir)))
      if record.step % config.train.log_every == 0 or record.step == total_steps:
        writer.write(record.step, metrics)
        writer.write_samples(record.step, record.samples)

    try:
      while step < total_steps:
        ckpt.check()  # a failed background save stops the run before another step is trained
        started = time.perf_counter()
        try:
          state, metrics = step_fn(state, data, jax.random.fold_in(jax.random.wrap_key_data(state.rng), step))
        except BaseException:
          if pending is not None:  # the last finished step is still logged (a preempted run shows it)
            finish(pending)
          raise
        step += 1
        record = _StepRecord(step, metrics, getattr(step_fn, "last_samples", []), started, _ReadyTime(metrics),
                             schedule(jnp.maximum(optim.update_count(state.opt_state) - 1, 0)))
        if pending is not None:
          finish(pending)
        pending = record
        evaluate = bool(config.train.eval_every and hooks.evaluate and step % config.train.eval_every == 0
                        and step < total_steps)
        # orbax saves on the interval, at the end, and the first time (no checkpoint yet).
        save_due = step % config.train.checkpoint_every == 0 or step == total_steps or ckpt.latest_step() is None
        if evaluate or save_due:
          finish(pending, evaluate)
          pending = None
        saved = ckpt.save(step, state, _extra(data, counters), force=step == total_steps)
        signum = stop.agreed()
        if signum:
          if pending is not None:
            finish(pending)
            pending = None
          if not saved:
            ckpt.save(step, state, _extra(data, counters), force=True)
          ckpt.wait()
          _log.warning("%s: stage %s stopped at step %d of %d; checkpoint saved in %s. Re-run the same command to "
                       "resume.", stop.name(signum), name, step, total_steps, ckpt.directory)
          raise interrupts.TrainingInterrupted(signum)
      ckpt.wait()
      final = {}
      if hooks.evaluate:
        final = _prefixed("eval", hooks.evaluate(config, model, state.params, tokenizer, stage_dir))
        if final:
          writer.write(int(state.step), final)
    finally:
      stop.uninstall()
      writer.close()
      ckpt.close()
      if hasattr(data, "close"):
        data.close()
    if config.train.export_hf:
      # With its tokenizer and image processor: transformers' Auto classes load the folder.
      models.save_pretrained(model, state.params, os.path.join(stage_dir, "hf"), tokenizer=tokenizer,
                             vision_processor=processing.VisionProcessorConfig.find(config.tokenizer, config.init_from))
    plot_curves(read_metrics(stage_dir), os.path.join(stage_dir, "curves.png"),
                keys=("reward/mean", "sft/nll", "kl", "entropy", "response_length/mean"), title=name)
    if jax.process_index() == 0:
      with open(done_marker, "w", encoding="utf-8") as f:
        json.dump(final, f, indent=2)
  return final


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
  return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


def _extra(data, counters) -> dict[str, Any]:
  """JSON saved with the state: every host's data-iterator state, and the loop's counters."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = json.dumps(data.get_state())
  states = [local] if jax.process_count() == 1 else multihost_utils.process_allgather_object(local)  # type: ignore
  return {"data": [json.loads(s) for s in states], "counters": dict(counters)}


class _ReadyTime:
  """The time (`time.perf_counter`) at which device arrays become ready, noted by a thread that waits
  for them, so that the host goes on dispatching work meanwhile. Calling it returns that time."""

  def __init__(self, tree: Any):
    self._at = 0.0
    self._thread = threading.Thread(target=self._wait, args=(tree,), daemon=True)
    self._thread.start()

  def _wait(self, tree: Any) -> None:
    try:
      jax.block_until_ready(tree)
    except Exception:  # noqa: BLE001  (the host meets the same error when it reads the values)
      pass
    self._at = time.perf_counter()

  def __call__(self) -> float:
    self._thread.join()
    return self._at


class _Seconds:
  """Seconds from `started` to `ready()`: a metric that is read (float) once its arrays are ready."""

  def __init__(self, started: float, ready: _ReadyTime):
    self.started, self.ready = started, ready

  def __float__(self) -> float:
    return self.ready() - self.started


@dataclasses.dataclass
class _StepRecord:
  """A dispatched loop step whose metrics (device scalars, floats or `_Seconds`) may still be computing."""

  step: int  # the step number once done
  metrics: dict[str, Any]
  samples: list[dict[str, Any]]  # what `writer.write_samples` logs for it
  started: float  # time.perf_counter() at its start
  ready: _ReadyTime  # when its metrics are ready
  learning_rate: jax.Array  # of its last update


class _StepClock:
  """perf/step_s: from a step's start (or, when steps overlap on the device, the previous step's
  results) to its own results, so the steps' seconds add up to the loop's time."""

  def __init__(self):
    self._previous_ready = None

  def seconds(self, record: _StepRecord) -> float:
    ready = record.ready()
    begin = record.started if self._previous_ready is None else max(record.started, self._previous_ready)
    self._previous_ready = max(ready, begin)
    # Two waiting threads may note their times out of order: a step never takes under a microsecond.
    return max(ready - begin, 1e-6)


def _count_nonfinite(metrics: dict[str, float], counters: dict[str, int], limit: int) -> None:
  skipped = int(metrics.pop("_skipped_updates", 0))
  counters["skipped_updates"] += skipped
  counters["nonfinite_streak"] = counters["nonfinite_streak"] + 1 if skipped else 0
  if counters["nonfinite_streak"] >= limit:
    raise NonFiniteError(f"{counters['nonfinite_streak']} consecutive steps had a non-finite loss or gradient "
                         f"(config.train.max_nonfinite_steps={limit}); aborting. Lower optim.learning_rate, check "
                         "the data, or use float32 (config.model.dtype).")


# --------------------------------------------------------------------------- step functions


class _Updater:
  """Accumulates micro-batch gradients and applies guarded updates."""

  def __init__(self, config, model, mesh, rules, tx):
    self.config, self.model, self.mesh, self.rules, self.tx = config, model, mesh, rules, tx
    self.builder = SequenceBuilder(model)

  def device_batch(self, batch: dict[str, Any], vision_cache=None) -> dict[str, Any]:
    """The learner batch on the mesh (`learner_batch.place`), with the step's `VisionCache` if any."""
    return learner_batch.place(self.model, batch, self.mesh, self.rules, vision_cache)

  def logprob_options(self) -> dict[str, Any]:
    """How a learner batch's log-probs are computed (the policy's and the frozen reference's alike):
    at the sampling temperature, in the updates' micro-batches (rows / (rl.mini_batches *
    optim.micro_batches) at a time), so the pass needs no more memory than an update."""
    return dict(temperature=float(self.config.sampling.temperature),
                pieces=self.config.rl.mini_batches * self.config.optim.micro_batches,
                logits_chunk=self.config.optim.logits_chunk)

  def completion_logprobs(self, params, batch: dict[str, Any], vision_cache=None) -> np.ndarray:
    """[rows, completion_len] log-probs of `batch`'s completions under `params` (`logprob_options`)."""
    return learner_batch.completion_logprobs(self.model, params, batch, mesh=self.mesh, rules=self.rules,
                                             vision_cache=vision_cache, **self.logprob_options())

  def update(self, state, batch: dict[str, Any], grad_fn, train_step=None, vision_cache=None
             ) -> tuple[Any, dict[str, Any], jax.Array]:
    """One optimizer update over `batch`, split into `optim.micro_batches` micro-batches.

    grad_fn(params, device batch, frozen) -> (grads, loss_sum, count, metrics) of one micro-batch
    (`learner.grpo_grads` / `sft_grads`); train_step(state, device batch) -> (state, metrics,
    skipped), the same update fused into one call (`learner.grpo_train_step` / `sft_train_step`),
    is used when there is one micro-batch. `vision_cache`: the step's `learner_batch.VisionCache`
    (the micro-batches take its features instead of pixels). Returns (state, metrics, skipped) as
    device scalars: the host does not wait for the update.
    """
    micro = self.config.optim.micro_batches
    n = rows.num_rows(batch)
    if n % micro:
      raise ValueError(f"{n} rows do not split into config.optim.micro_batches={micro}")
    if micro == 1 and train_step is not None:
      return train_step(state, self.device_batch(batch, vision_cache))
    grads = loss_sum = count = metrics = None
    for i in range(micro):
      part = rows.take_rows(batch, np.arange(i * n // micro, (i + 1) * n // micro))
      g, l, c, m = grad_fn(state.params, self.device_batch(part, vision_cache), state.frozen)
      grads, metrics = learner.add_trees(grads, g), (m if metrics is None else rl.accumulate_metrics(metrics, m))
      loss_sum = l if loss_sum is None else loss_sum + l
      count = c if count is None else count + c
    state, stats = learner.apply_update(self.tx, state, grads, loss_sum, count)
    out = {**rl.finalize_metrics(metrics), "loss": stats["loss"], "grad_norm": stats["grad_norm"]}
    return state, out, stats["skipped"]


class _SftStep:

  def __init__(self, model, updater: _Updater):
    self.model, self.updater = model, updater

  def __call__(self, state, data, rng):
    del rng  # teacher forcing draws nothing
    batch = self.updater.builder.with_positions(next(data))
    chunk, tx = self.updater.config.optim.logits_chunk, self.updater.tx
    state, metrics, skipped = self.updater.update(
        state, _learner_fields(batch), lambda p, b, frozen: learner.sft_grads(self.model, p, b, chunk, frozen),
        lambda state, b: learner.sft_train_step(self.model, tx, state, b, chunk))
    metrics["_skipped_updates"] = skipped  # device scalars: the loop reads them later (run_stage)
    metrics.update({f"data/{k}": float(v) for k, v in batch.get("data_stats", {}).items()})
    return state, metrics


def _learner_fields(batch: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in batch.items() if isinstance(v, np.ndarray)}


class _GrpoStep:

  def __init__(self, config, model, tokenizer, reference: frozen_lib.FrozenModel | None, updater: _Updater,
               hooks: DataHooks | None = None, frozen_models: dict[str, frozen_lib.FrozenModel] | None = None):
    self.config, self.model, self.tokenizer, self.updater = config, model, tokenizer, updater
    self.loss_config = loss_config(config)
    self.builder = updater.builder
    self.reward_fn = rewards.get(config.reward.name)
    # Judges the recipe requires are built (or found missing) now, not at the first sample; a
    # frozen model is the judge of the same name.
    self.judge_context = judge_context(config.reward.name, config.reward, provided=frozen_models)
    self.last_samples: list[dict[str, Any]] = []
    self.reference = reference  # the KL reference (frozen); None when rl.beta == 0
    self.vision_reuse = None  # (policy, reference) passes take a step's VisionCache (`vision_plan`)
    s = config.sampling
    self.sampler = Sampler(model, pad_id=self.builder.pad_id, decode_phases=s.decode_phases, mesh=updater.mesh,
                           rules=updater.rules)
    stop_ids = tuple(model.config.eos_token_id) + tuple(s.stop_token_ids)
    self.controls = SamplingControls(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k,
                                     top_p=s.top_p, stop_token_ids=stop_ids or None)
    self.groups_per_step = config.data.batch_size // jax.process_count()
    self.env = envs.build(config, hooks, frozen_models)
    encoder = None
    if self.env.max_turns > 1:
      encoder = ObservationEncoder(tokenizer, processing.VisionProcessorConfig.find(config.tokenizer, config.init_from)
                                   if model.config.is_multimodal else None)
    self.runner = EpisodeRunner(self.sampler, self.env, self.controls, self._decode, encoder,
                                num_workers=config.env.num_workers)

  def _sample(self, params):
    def sample(prompts, key):
      group = self.config.sampling.num_samples
      episodes = self.runner(params, self.builder.prompts(prompts), prompts["reward_context"],
                             prompts["ground_truth"], num_samples=group, key=key)
      batch = self.builder.trajectory_batch(prompts, episodes.prompts, episodes.trajectories, group,
                                            episodes.completion_width)
      if self.env.max_turns > 1 or self.env.batched:  # their samples carry the episodes' results (Omni-R1's
        batch.update(reward_fields(episodes, self.env))  # detail answers) into the reward context
      return batch, episodes.stats

    return sample

  def vision_plan(self, state) -> tuple[bool, bool]:
    """(policy passes, reference passes) take a step's `learner_batch.VisionCache`
    (`learner_batch.vision_reuse`): decided once (`run_stage` asks at the stage's start) and logged
    with the reason.
    A step with a single learner pass, whose pass would encode the pixels anyway, takes none."""
    if self.vision_reuse is None:
      policy_reuse, reference_reuse, why = learner_batch.vision_reuse(self.model, state.params, state.frozen,
                                                                      self.updater.mesh, self.reference)
      if policy_reuse and not reference_reuse and self._learner_passes() == 1:
        policy_reuse, why = False, ("one learner pass per step (no old or reference log-probs, one micro-batch) "
                                    "encodes the pixels itself: nothing to reuse")
      self.vision_reuse = (policy_reuse, reference_reuse)
      _log.info("GRPO vision inputs: %s", why)
    return self.vision_reuse

  def _learner_passes(self) -> int:
    """Learner device calls of the policy per step: old log-probs (when computed) and the updates."""
    r, pieces = self.config.rl, self.config.rl.mini_batches * self.config.optim.micro_batches
    old = pieces if r.num_iterations > 1 or r.mini_batches > 1 else 0
    return old + r.num_iterations * pieces

  def _decode(self, completion_ids: np.ndarray) -> list[str]:
    return self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)

  def __call__(self, state, data, rng):
    rollout = collect_rollout(sample=self._sample(state.params), prompt_batches=data, reward_fn=self.reward_fn,
                              decode=self._decode, rl_config=self.config.rl, sampling_config=self.config.sampling,
                              reward_config=self.config.reward, rng=rng, groups_wanted=self.groups_per_step,
                              pad_id=self.builder.pad_id, judge_context=self.judge_context)
    self.last_samples = rollout.samples
    batch = _learner_fields(rollout.batch)
    temperature, chunk = float(self.config.sampling.temperature), self.config.optim.logits_chunk
    started = time.perf_counter()
    # Each distinct image / video of the step through the frozen tower once, for every pass below.
    cache = learner_batch.encode_step_vision(self.model, state.params, batch, self.updater.mesh, self.updater.rules) \
        if self.vision_plan(state)[0] else None
    if self.config.rl.num_iterations > 1 or self.config.rl.mini_batches > 1:
      # Ratios against the policy that sampled, recomputed by the learner.
      batch["old_logprobs"] = self.updater.completion_logprobs(state.params, batch, cache)
    if self.reference is not None:
      batch["ref_logprobs"] = self.reference.completion_logprobs(
          batch, vision_cache=cache if self.vision_reuse[1] else None, **self.updater.logprob_options())
    grad_fn = lambda p, b, frozen: learner.grpo_grads(self.model, self.loss_config, temperature, p, b, chunk, frozen)
    tx = self.updater.tx
    train_step = lambda state, b: learner.grpo_train_step(self.model, self.loss_config, temperature, tx, state, b,
                                                          chunk)
    n = rows.num_rows(batch)
    group = self.config.sampling.num_samples
    mini = self.config.rl.mini_batches
    if (n // group) % mini:
      raise ValueError(f"{n // group} groups per step do not split into config.rl.mini_batches={mini}")
    updates = self.config.rl.num_iterations * mini
    metrics, skipped = {}, 0
    next_step = state.step + 1  # one loop step, however many updates (taken before they donate the state)
    for _ in range(self.config.rl.num_iterations):
      for m in range(mini):
        part = rows.take_rows(batch, np.arange(m * n // mini, (m + 1) * n // mini))
        state, step_metrics, was_skipped = self.updater.update(state, part, grad_fn, train_step, cache)
        skipped = skipped + was_skipped.astype(jnp.int32)
        for k, v in step_metrics.items():
          metrics[k] = metrics.get(k, 0.0) + v / updates
    state = state.replace(step=next_step)
    metrics.update(rollout.metrics)
    # Device scalars and a timer: the loop reads them once the updates are done (run_stage).
    metrics["perf/learn_s"] = _Seconds(started, _ReadyTime(skipped))  # ready with the last update
    metrics["_skipped_updates"] = skipped == updates
    return state, metrics
