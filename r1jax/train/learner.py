"""Jitted learner functions: completion log-probs, GRPO / SFT gradients, and the guarded update.

Gradients are of the loss *sum* of each micro-batch; `apply_update` divides the accumulated sum
by the accumulated count, so gradient accumulation equals the full-batch gradient exactly
(`r1jax.rl.aggregation`). A step whose loss or gradient is non-finite leaves the state untouched
and reports `skipped`. Without accumulation, `grpo_train_step` / `sft_train_step` compute the
gradients and apply the same guarded update in one jitted call with the state donated: no
gradient tree crosses a call boundary and the old state's buffers are reused.

Frozen parameters (`TrainState.frozen`, from `config.optim.freeze`) are read as constants: the
gradient functions differentiate the trainable tree only (`optim.split_frozen`), so gradients,
optimizer state and the gradient norm hold trainable leaves only (None elsewhere), and nothing is
differentiated through a frozen vision tower.

Batches are dicts of arrays. A sequence batch holds
    input_ids [batch, length] int32, attention_mask [batch, length], positions [batch, length]
    (or [3, batch, length] for M-RoPE), and for Qwen2.5-VL the vision inputs the model takes;
GRPO adds completion_mask [batch, completion_len] (the last completion_len tokens of every row
are the completion), advantages [batch], sampler_logprobs [batch, completion_len] and
optionally old_logprobs / ref_logprobs; SFT adds loss_mask [batch, length] (1 on target tokens).
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from r1jax import rl
from r1jax.models.llm import CausalLM
from r1jax.train.optim import merge_frozen, split_frozen

Batch = dict[str, Any]
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "positions") + VISION_KEYS


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any  # of the trainable tree
  rng: jax.Array  # raw key data (uint32), so orbax can save it
  frozen: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())  # frozen parameter paths

  @property
  def trainable_params(self):
    return split_frozen(self.params, self.frozen)[0]


def create_state(params, tx: optax.GradientTransformation, rng: jax.Array, frozen: tuple[str, ...] = ()) -> TrainState:
  """Step 0 with the optimizer state of the parameters not named in `frozen` (`optim.frozen_paths`)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(split_frozen(params, frozen)[0]),
                    rng=jax.random.key_data(rng), frozen=frozen)


def _value_and_trainable_grad(loss_fn, params, frozen: tuple[str, ...]):
  """value_and_grad of `loss_fn(params)` with respect to the leaves not in `frozen` only.

  The frozen leaves enter as constants, so autodiff builds no backward pass for what depends on
  them alone (a frozen vision tower runs forward only). Returns ((loss, aux), grads) with grads
  shaped like the trainable tree (None at frozen leaves).
  """
  trainable, fixed = split_frozen(params, frozen)
  return jax.value_and_grad(lambda t: loss_fn(merge_frozen(t, fixed)), has_aux=True)(trainable)


def hidden_states(model, params, batch: Batch) -> jax.Array:
  """Final-normed hidden states [batch, length, embed] of the sequences in `batch`.

  With `image_embed_index` / `video_embed_index` (`SequenceBuilder.shared_vision`), the packed
  pixel values hold each prompt's images once: the vision tower runs once per prompt and every
  row gathers its vision tokens' features [row vision tokens] from that output (gradients of the
  rows sharing a prompt add up, as if each had been encoded separately).

  With `vision_hidden` [cache tokens, merge**2, vision hidden] (a GRPO step's
  `learner_batch.VisionCache`: the frozen tower's output before the merger, computed once per
  step) and `image_hidden_index` / `video_hidden_index` [the pass's unique merged tokens] instead
  of pixels, the tower does not run: the merger (trainable or not) merges the indexed rows under
  `params`, and the rows gather their features from those as above.
  """
  kwargs = {k: batch[k] for k in _SEQUENCE_KEYS[3:] if k in batch}
  for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                     ("video", "pixel_values_videos", "video_grid_thw")):
    index = batch.get(f"{kind}_embed_index")
    hidden_index = batch.get(f"{kind}_hidden_index")
    if hidden_index is not None:
      features = model.apply(params, batch["vision_hidden"][hidden_index], method=type(model).merge_vision)
      kwargs[f"{kind}_embeds"] = features[index]
    elif index is not None and pixels_key in kwargs:
      features = model.apply(params, kwargs.pop(pixels_key), kwargs.pop(grid_key), method=type(model).encode_vision)
      kwargs[f"{kind}_embeds"] = features[index]
  hidden, _ = model.apply(params, batch["input_ids"], positions=batch["positions"],
                          attention_mask=batch["attention_mask"].astype(bool), return_hidden=True, **kwargs)
  return hidden


def logits_from_hidden(model, params, hidden: jax.Array) -> jax.Array:
  """fp32 logits [batch, length, vocab] through the (possibly tied) output head."""
  if isinstance(model, CausalLM):
    return model.apply(params, hidden, method=CausalLM.logits)
  # Qwen2.5-VL: the output head belongs to its decoder.
  return model.apply(params, hidden, method=lambda module, h: module.language_model.logits(h))


def token_scores(model, params, hidden: jax.Array, targets: jax.Array, temperature: float = 1.0, *,
                 chunk: int = 0, entropy: str = "none", accuracy: bool = False) -> dict[str, jax.Array]:
  """Per-token scores of `targets` [batch, length] from final hidden states [batch, length, embed].

  Position t of `hidden` predicts `targets[:, t]`. Returns {"logprobs": [batch, length]} (under
  softmax(logits / temperature)), plus "entropy" when `entropy` is "logged" (no gradient) or
  "loss" (with gradient), plus "correct" (argmax == target, float) when `accuracy`.

  chunk > 0 projects `chunk` positions onto the vocabulary at a time and recomputes them in the
  backward pass (`jax.checkpoint`), so [batch, chunk, vocab] logits exist at once instead of
  [batch, length, vocab]; with a 152k vocabulary those are the learner's largest buffers.
  """
  def scores(hidden, targets):
    logits = logits_from_hidden(model, params, hidden)
    # One pass over the logits for both scores, and a backward without a vocab-sized scatter.
    logprobs, token_entropy = rl.token_logprobs_and_entropy(logits, targets, temperature, entropy=entropy)
    out = {"logprobs": logprobs}
    if token_entropy is not None:
      out["entropy"] = token_entropy
    if accuracy:
      out["correct"] = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return out

  batch, length = targets.shape
  if not chunk or chunk >= length:
    return scores(hidden, targets)
  chunks = -(-length // chunk)
  pad = chunks * chunk - length
  split = lambda x: jnp.moveaxis(jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(
      batch, chunks, chunk, *x.shape[2:]), 1, 0)
  out = jax.lax.map(lambda xs: jax.checkpoint(scores)(*xs), (split(hidden), split(targets)))
  return {k: jnp.moveaxis(v, 0, 1).reshape(batch, chunks * chunk)[:, :length] for k, v in out.items()}


def completion_hidden(model, params, batch: Batch) -> jax.Array:
  """Hidden states [batch, completion_len, embed] predicting the completion tokens (the last C of each row)."""
  completion_len = batch["completion_mask"].shape[1]
  hidden = hidden_states(model, params, batch)
  length = hidden.shape[1]
  return hidden[:, length - completion_len - 1:length - 1]


def completion_targets(batch: Batch) -> jax.Array:
  return batch["input_ids"][:, -batch["completion_mask"].shape[1]:]


@functools.partial(jax.jit, static_argnames=("model", "temperature", "logits_chunk"))
def completion_logprobs(model, params, batch: Batch, temperature: float, logits_chunk: int = 0) -> jax.Array:
  """[batch, completion_len] log-probs of the completion under the temperature-scaled policy."""
  return token_scores(model, params, completion_hidden(model, params, batch), completion_targets(batch), temperature,
                      chunk=logits_chunk)["logprobs"]


@functools.partial(jax.jit, static_argnames=("model", "loss_config", "temperature", "logits_chunk", "frozen"))
def grpo_grads(model, loss_config: rl.PolicyLossConfig, temperature: float, params, batch: Batch,
               logits_chunk: int = 0, frozen: tuple[str, ...] = ()):
  """(grads of loss_sum, loss_sum, count, metrics) for one micro-batch; `logits_chunk` as `token_scores`;
  grads over the parameters not in `frozen` (None there)."""

  def loss_fn(p):
    # Entropy is always logged; it carries gradient only when it is part of the loss.
    scores = token_scores(model, p, completion_hidden(model, p, batch), completion_targets(batch), temperature,
                          chunk=logits_chunk, entropy="loss" if loss_config.entropy_coeff else "logged")
    logprobs, entropy = scores["logprobs"], scores["entropy"]
    loss_sum, count, metrics = rl.grpo_loss(
        loss_config, logprobs, batch.get("old_logprobs"), batch.get("ref_logprobs"), batch["advantages"],
        batch["completion_mask"], sampler_logprobs=batch.get("sampler_logprobs"), entropy=entropy)
    return loss_sum, (count, metrics)

  (loss_sum, (count, metrics)), grads = _value_and_trainable_grad(loss_fn, params, frozen)
  return grads, loss_sum, count, metrics


@functools.partial(jax.jit, static_argnames=("model", "logits_chunk", "frozen"))
def sft_grads(model, params, batch: Batch, logits_chunk: int = 0, frozen: tuple[str, ...] = ()):
  """Teacher-forced cross-entropy on `loss_mask` tokens: (grads of the sum, sum, count, metrics), the
  grads over the parameters not in `frozen`."""

  def loss_fn(p):
    targets, mask = batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:].astype(jnp.float32)
    scores = token_scores(model, p, hidden_states(model, p, batch)[:, :-1], targets, chunk=logits_chunk, accuracy=True)
    logprobs, correct = scores["logprobs"], scores["correct"]
    count = mask.sum()
    metrics = {"sft/nll": (-(logprobs * mask).sum(), count), "sft/token_accuracy": ((correct * mask).sum(), count)}
    return -(logprobs * mask).sum(), (count, metrics)

  (loss_sum, (count, metrics)), grads = _value_and_trainable_grad(loss_fn, params, frozen)
  return grads, loss_sum, count, metrics


def add_trees(a, b):
  """a + b leaf by leaf; `a` None = nothing accumulated yet."""
  return b if a is None else jax.tree_util.tree_map(jnp.add, a, b)


def _guarded_update(tx: optax.GradientTransformation, state: TrainState, grads_sum, loss_sum, count):
  """The body of `apply_update` (traced inside `apply_update` and the fused train steps)."""
  scale = 1.0 / jnp.maximum(count, 1.0)
  grads = jax.tree_util.tree_map(lambda g: g * scale, grads_sum)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
  trainable, fixed = split_frozen(state.params, state.frozen)

  def update(operands):
    trainable, opt_state = operands
    updates, new_opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), new_opt_state

  # A conditional instead of selecting between the old and new params and moments leaf by leaf:
  # the select kept both alive, so XLA copied every moment before updating it in place (about 1.5x
  # the bytes moved). The skipped branch returns the operands untouched, bit for bit.
  new_trainable, new_opt_state = jax.lax.cond(finite, update, lambda operands: operands, (trainable, state.opt_state))
  new_state = state.replace(step=state.step + 1, params=merge_frozen(new_trainable, fixed), opt_state=new_opt_state)
  return new_state, {"loss": loss_sum * scale, "grad_norm": grad_norm, "skipped": ~finite}


@functools.partial(jax.jit, static_argnames=("tx",), donate_argnums=(1,))
def apply_update(tx: optax.GradientTransformation, state: TrainState, grads_sum, loss_sum, count):
  """Update with grads_sum / count, unless the loss or gradient is non-finite (then the params and
  optimizer state stay as they are; `step` counts loop steps and advances either way).

  `grads_sum` has the trainable tree's structure (what `grpo_grads` / `sft_grads` return). Used
  after gradient accumulation; without it, `grpo_train_step` / `sft_train_step` do both in one call.
  Returns (state, stats) with stats = {"loss", "grad_norm" (trainable leaves), "skipped"}.
  """
  return _guarded_update(tx, state, grads_sum, loss_sum, count)


def _train_step(tx, state: TrainState, grads_and_loss):
  """`grads_and_loss(params, frozen)` -> (grads, loss_sum, count, metrics), then the guarded update;
  returns (state, {finalized metrics..., "loss", "grad_norm"}, skipped)."""
  grads, loss_sum, count, metrics = grads_and_loss(state.params, state.frozen)
  state, stats = _guarded_update(tx, state, grads, loss_sum, count)
  return state, {**rl.finalize_metrics(metrics), "loss": stats["loss"], "grad_norm": stats["grad_norm"]}, \
      stats["skipped"]


@functools.partial(jax.jit, static_argnames=("model", "loss_config", "temperature", "tx", "logits_chunk"),
                   donate_argnames=("state",))
def grpo_train_step(model, loss_config: rl.PolicyLossConfig, temperature: float, tx: optax.GradientTransformation,
                    state: TrainState, batch: Batch, logits_chunk: int = 0):
  """`grpo_grads` + `apply_update` in one call, with `state` donated (its buffers become the new
  state's; the caller's `state` is deleted). For an update without gradient accumulation.

  Returns (state, metrics, skipped): metrics = the finalized loss diagnostics of `rl.grpo_loss`
  plus "loss" and "grad_norm", all device scalars; skipped = bool device scalar.
  """
  return _train_step(tx, state, lambda params, frozen: grpo_grads(model, loss_config, temperature, params, batch,
                                                                   logits_chunk, frozen))


@functools.partial(jax.jit, static_argnames=("model", "tx", "logits_chunk"), donate_argnames=("state",))
def sft_train_step(model, tx: optax.GradientTransformation, state: TrainState, batch: Batch, logits_chunk: int = 0):
  """`sft_grads` + `apply_update` in one call, with `state` donated; returns as `grpo_train_step`."""
  return _train_step(tx, state, lambda params, frozen: sft_grads(model, params, batch, logits_chunk, frozen))
