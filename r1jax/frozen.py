"""Frozen models: a second model in the loop (the GRPO reference, Omni-R1's detail model, an MLLM
judge), placed on the policy's mesh by the same logical rules and called in batches on device.

A `FrozenModel` is a loaded model + params + tokenizer + vision processor settings + `Sampler`.
The loop loads a stage's frozen models once, from the `config.frozen.<name>` entries (keys
documented in `r1jax.train.config.frozen_model_config`), before the stage's first step, and hands
them to the environment and the reward by name:

    # config: a detail model in bf16, loaded from an HF folder (e.g. an earlier stage's export).
    config.frozen.detail = dict(init_from="/ckpt/Qwen2.5-VL-3B-Instruct", dtype="bfloat16",
                                role="detail", max_new_tokens=128)

    # an environment names the frozen models it cannot run without; a run whose config lacks one
    # stops at start-up naming `config.frozen.detail.init_from`:
    @envs.register("omni_r1", frozen=("detail",))
    def make(config, hooks, frozen):          # frozen: {"detail": FrozenModel}
      return OmniR1(frozen["detail"], ...)

    # inside a batched environment step (`Environment.batched = True`, `step_batch`): ONE call
    # for every episode of the turn, greedy, on device.
    requests = [ChatRequest(messages=[{"role": "user", "content": [
                    {"type": "image"}, {"type": "text", "text": f"Locate {description}."}]}],
                            images=[keyframe])
                for keyframe, description in ...]
    texts = [g.text for g in detail.generate(requests)]

    # the GRPO reference is a frozen model too (the stage's initial policy unless
    # `config.frozen.reference` names another): log-probs of a learner batch's completions.
    batch["ref_logprobs"] = reference.completion_logprobs(batch, temperature=1.0, pieces=2)

A reward reaches a frozen model through its judges: `rewards.register(name, judges=("quality",))`
gets the frozen model named `quality`, or the judge its recipe builds from it
(`rewards.startup.register_frozen_judge`), typically a `frozen_judge.FrozenModelJudge`: it renders a
prompt template, generates in one batch and parses a score under a time limit, and the rollout asks
it once per round for every reward sample (`frozen_judge.judge_rollout`).

Memory: the params are placed like the policy's (`sharding.param_shardings`, FSDP over the mesh),
so a frozen model adds its parameter bytes once per mesh, not once per device; entries of one
source (`init_from`, `dtype`) share one copy, and a copy of the initial policy is also the KL
reference.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint, models, processing, sharding
from r1jax.errors import RunStoppedError
from r1jax.sampling import Prompt, Sampler, SamplingControls
from r1jax.tokenization import load_tokenizer

_log = logging.getLogger(__name__)

ROLES = ("reference", "detail", "judge", "embedder")
POLICY = "policy"  # `init_from` value: a copy of the stage's initial policy params


class MissingFrozenModelError(RunStoppedError):
  """An environment or a reward needs a frozen model that the config does not name."""


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  """One chat prompt for a frozen model: HF-format messages and the images / videos they refer to.

  Attributes:
    messages: e.g. [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "..."}]}];
      the i-th image (video) item refers to images[i] (videos[i]).
    images: PIL images or uint8 [H, W, 3], in item order.
    videos: uint8 [T, H, W, 3] frame stacks, in item order.
    video_fps: frames per second of each video.
    max_pixels: per-image / per-frame pixel cap (None: the model's processor setting), e.g. a
      high-resolution keyframe for a detail model.
  """

  messages: Sequence[Mapping[str, Any]]
  images: Sequence[Any] = ()
  videos: Sequence[Any] = ()
  video_fps: Sequence[float] = ()
  max_pixels: int | None = None


@dataclasses.dataclass(frozen=True)
class Generation:
  """A frozen model's greedy answer to one prompt.

  Attributes:
    text: the decoded completion (special tokens skipped).
    token_ids: int32 [n], the stop token included when there was one.
    truncated: it hit max_new_tokens without a stop token.
  """

  text: str
  token_ids: np.ndarray
  truncated: bool


class FrozenModel:
  """A model that is run, never trained: batched greedy generation and completion log-probs.

  Args:
    name: its `config.frozen` key (in logs and errors).
    role: what it is for (`ROLES`).
    model, params: the model and its params, placed on `mesh` (`sharding.param_shardings`).
    tokenizer: a transformers tokenizer (None for a model only used for log-probs).
    vision: the processor settings of its images and videos (None for a text model).
    mesh, rules: the policy's mesh and logical-axis rules.
    max_new_tokens: default generation budget.
    max_batch: the most prompts per device call; 0 = all at once.
    source: (init_from, dtype) it was loaded from: frozen models of one source share their params.
  """

  def __init__(self, name: str, role: str, model, params, tokenizer=None,
               vision: processing.VisionProcessorConfig | None = None, mesh=None, rules=None,
               max_new_tokens: int = 256, max_batch: int = 0, source: tuple[str, str] = ("", "")):
    if role not in ROLES:
      raise ValueError(f"config.frozen.{name}.role={role!r} must be one of {ROLES}")
    self.name, self.role, self.model, self.params, self.tokenizer = name, role, model, params, tokenizer
    self.vision = vision if vision is not None or not model.config.is_multimodal else \
        processing.VisionProcessorConfig()
    self.mesh, self.rules, self.source = mesh, rules, tuple(source)
    self.max_new_tokens, self.max_batch = int(max_new_tokens), int(max_batch)
    self.sampler = Sampler(model, mesh=mesh, rules=rules)
    self._batch_shards = _local_batch_shards(mesh, rules)
    self._stop_ids = _stop_ids(model, tokenizer)

  def renamed(self, name: str, role: str, max_new_tokens: int | None = None, max_batch: int | None = None
              ) -> "FrozenModel":
    """The same model and params (not copied) under another name and role."""
    return FrozenModel(name, role, self.model, self.params, self.tokenizer, self.vision, self.mesh, self.rules,
                       self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                       self.max_batch if max_batch is None else max_batch, self.source)

  @property
  def param_bytes(self) -> int:
    """Bytes of the params (one copy: what the mesh holds in all, when nothing is replicated)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.params))

  # ------------------------------------------------------------------ prompts

  def encode(self, request: ChatRequest) -> processing.EncodedPrompt:
    """The chat template applied to `request`, tokenised, with its images / videos processed (the
    sampler takes it as a `Prompt`)."""
    if self.tokenizer is None:
      raise ValueError(f"frozen model {self.name!r} has no tokenizer: it cannot encode chat prompts")
    cfg = self.vision or processing.VisionProcessorConfig()
    if request.max_pixels is not None:
      cfg = dataclasses.replace(cfg, max_pixels=int(request.max_pixels),
                                min_pixels=min(cfg.min_pixels, int(request.max_pixels)))
    return processing.encode_prompt(self.tokenizer, request.messages, images=list(request.images),
                                    videos=list(request.videos),
                                    video_fps=list(request.video_fps) or processing.DEFAULT_VIDEO_FPS, cfg=cfg)

  # ------------------------------------------------------------------ generation

  def generate(self, requests: Sequence[ChatRequest | Prompt | Any], *, max_new_tokens: int | None = None,
               key: jax.Array | None = None) -> list[Generation]:
    """Greedy completions of `requests` (`ChatRequest`s, or `Prompt`s / token ids already encoded),
    decoded on device in as few calls as `max_batch` allows.

    Each call pads its prompts with one-token prompts (their answers are dropped) to a power-of-two
    count, at least the number of batch shards of this process's devices: the sampler compiles
    once per count bucket and prompt-length bucket, not once per batch size, and every device
    decodes its own rows (a count the shards do not divide would be replicated on each).
    """
    if not requests:
      return []
    budget = int(max_new_tokens or self.max_new_tokens)
    prompts = [self.encode(r) if isinstance(r, ChatRequest) else r for r in requests]
    controls = SamplingControls(max_new_tokens=budget, greedy=True, stop_token_ids=self._stop_ids)
    key = jax.random.key(0) if key is None else key  # greedy: the key changes nothing
    size = self.max_batch or len(prompts)
    out: list[Generation] = []
    started = time.perf_counter()
    for begin in range(0, len(prompts), size):
      chunk = list(prompts[begin:begin + size])
      filler = max(_count_bucket(len(chunk)), self._batch_shards) - len(chunk)
      chunk += [np.array([self.sampler.pad_id], np.int32)] * filler
      result = self.sampler(self.params, chunk, key=key, num_samples=1, controls=controls)
      tokens, lengths, finished = (np.asarray(x) for x in (result.tokens, result.lengths, result.finished))
      ids = [tokens[row, :lengths[row]] for row in range(len(chunk) - filler)]
      texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True) if self.tokenizer is not None else \
          [""] * len(ids)
      out += [Generation(text, row_ids, not bool(done)) for text, row_ids, done in zip(texts, ids, finished)]
    _log.debug("frozen model %s: %d prompts generated in %.2f s", self.name, len(prompts),
               time.perf_counter() - started)
    return out

  # ------------------------------------------------------------------ log-probs

  def completion_logprobs(self, batch: dict[str, Any], *, temperature: float, pieces: int = 1,
                          logits_chunk: int = 0, vision_cache=None) -> np.ndarray:
    """float32 [rows, completion_len]: log-probs of a learner batch's completions under this model
    (`train.learner_batch.completion_logprobs`), `rows / pieces` rows per device call.
    `vision_cache`: the step's `learner_batch.VisionCache`, only when this model's tower before
    the merger is the one that encoded it (`learner_batch.vision_reuse`)."""
    from r1jax.train import learner_batch  # pylint: disable=g-import-not-at-top  (the trainer imports us)
    with sharding.use_mesh(self.mesh, self.rules) if self.mesh is not None else contextlib.nullcontext():
      return learner_batch.completion_logprobs(self.model, self.params, batch, mesh=self.mesh, rules=self.rules,
                                               temperature=temperature, pieces=pieces, logits_chunk=logits_chunk,
                                               vision_cache=vision_cache)


def _count_bucket(n: int) -> int:
  """The smallest power of two >= n."""
  return 1 << max(0, int(n) - 1).bit_length()


def _local_batch_shards(mesh, rules) -> int:
  """How many parts this process's rows are split into over the batch mesh axes (1 without a mesh)."""
  if mesh is None:
    return 1
  axes = sharding.batch_sharding(mesh, rules).spec[0]
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return max(1, int(np.prod([mesh.shape[a] for a in axes])) // sharding.process_shard_info(mesh, rules)[1])


def _stop_ids(model, tokenizer) -> tuple[int, ...]:
  """The model's EOS ids, plus the chat turn's end (`<|im_end|>`) when the tokenizer has it: an
  instruct model ends its answer there."""
  ids = list(model.config.eos_token_id or ())
  if tokenizer is not None:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != getattr(tokenizer, "unk_token_id", None) and end < model.config.text.vocab_size:
      ids.append(end)
  return tuple(dict.fromkeys(int(i) for i in ids))


# --------------------------------------------------------------------------- loading


def from_policy(name: str, model, params, tokenizer, *, mesh, rules, dtype: str = "", role: str = "reference",
                vision: processing.VisionProcessorConfig | None = None, **options) -> FrozenModel:
  """A frozen copy of the policy's current params (the GRPO reference: the stage's initial policy).

  The params are copied (the policy's updates donate their buffers) in place on the mesh, keeping
  their shardings; `dtype` ("bfloat16" / "float32") casts them and sets the model's compute dtype.
  """
  model, cast = _with_dtype(model, dtype)
  copy = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(cast) if cast is not None else x.copy(), p),
                 out_shardings=jax.tree.map(lambda x: x.sharding, params))(params)
  return FrozenModel(name, role, model, copy, tokenizer, vision, mesh, rules, source=(POLICY, dtype), **options)


def _with_dtype(model, dtype: str):
  """(model computing in `dtype`, the params' cast dtype) for a frozen model's `dtype` key; "" keeps both."""
  if not dtype:
    return model, None
  if dtype not in ("bfloat16", "float32"):
    raise ValueError(f"frozen model dtype={dtype!r} must be '', 'bfloat16' or 'float32'")
  return models.build_model(model.config.replace(dtype=dtype, param_dtype=dtype)), jnp.dtype(dtype)


def load(name: str, entry, *, mesh, rules, policy: tuple[Any, Any, Any] | None = None) -> FrozenModel:
  """Loads the frozen model of `config.frozen.<name>` (`entry`) onto `mesh`.

  Args:
    policy: (model, params, tokenizer) of the stage's initial policy, for `init_from="policy"`.

  Raises:
    MissingFrozenModelError naming `config.frozen.<name>.init_from` when it is empty or no folder.
  """
  from r1jax.train.config import frozen_model_config  # pylint: disable=g-import-not-at-top  (the trainer imports us)
  full = frozen_model_config()
  full.update(dict(entry))
  init_from, dtype = full.init_from, full.dtype
  role = full.role or ("reference" if name == "reference" else "")
  options = dict(max_new_tokens=full.max_new_tokens, max_batch=full.max_batch)
  if init_from == POLICY:
    if policy is None:
      raise ValueError(f"config.frozen.{name}.init_from='policy' needs the stage's policy")
    model, params, tokenizer = policy
    return from_policy(name, model, params, tokenizer, mesh=mesh, rules=rules, dtype=dtype, role=role, **options)
  if not init_from:
    raise MissingFrozenModelError(f"config.frozen.{name}.init_from is empty: set it to a local HF folder "
                                  "(config.json + safetensors + tokenizer), e.g. an earlier stage's `hf` export")
  if not os.path.isdir(init_from) or checkpoint.is_checkpoint_dir(init_from):
    raise MissingFrozenModelError(f"config.frozen.{name}.init_from={init_from!r} is not a local HF folder "
                                  "(config.json + safetensors); r1jax never downloads models")
  _log.info("loading frozen model %s (%s) from %s%s", name, role, init_from, f" in {dtype}" if dtype else "")
  param_dtype = jnp.dtype(dtype or "float32")
  model, params = models.load_pretrained(init_from, dtype=param_dtype, mesh=mesh, rules=rules)
  tokenizer_path = full.tokenizer or init_from
  tokenizer = load_tokenizer(tokenizer_path)
  vision = processing.VisionProcessorConfig.find(tokenizer_path, init_from) if model.config.is_multimodal else None
  return FrozenModel(name, role, model, params, tokenizer, vision, mesh, rules, source=(init_from, dtype), **options)


def load_all(config, *, mesh, rules, policy: tuple[Any, Any, Any] | None = None) -> dict[str, FrozenModel]:
  """{name: FrozenModel} for every `config.frozen` entry, each loaded once (a stage calls this once);
  entries with the same `init_from` and `dtype` share one copy of the params."""
  from r1jax.train.config import frozen_model_config  # pylint: disable=g-import-not-at-top  (the trainer imports us)
  out: dict[str, FrozenModel] = {}
  for name, entry in sorted(config.get("frozen", {}).items()):
    full = frozen_model_config()
    full.update(dict(entry))
    same = next((m for m in out.values() if m.source == (full.init_from, full.dtype)), None)
    role = full.role or ("reference" if name == "reference" else "")
    out[name] = same.renamed(name, role, full.max_new_tokens, full.max_batch) if same is not None else \
        load(name, entry, mesh=mesh, rules=rules, policy=policy)
  return out


def require(models_by_name: Mapping[str, FrozenModel], names: Sequence[str], who: str) -> dict[str, FrozenModel]:
  """{name: model} for `names`; raises MissingFrozenModelError naming `who` and the config key of
  the first one missing."""
  missing = [n for n in names if n not in models_by_name]
  if missing:
    raise MissingFrozenModelError(
        f"{who} needs the frozen model {missing[0]!r}: set config.frozen.{missing[0]}.init_from to a local HF "
        f"folder (configured: {sorted(models_by_name) or 'none'})")
  return {n: models_by_name[n] for n in names}


def check_required(config, names: Sequence[str], who: str) -> None:
  """Start-up check before anything loads: every name in `names` has a `config.frozen` entry with
  an `init_from`; raises MissingFrozenModelError naming the config key otherwise."""
  entries = config.get("frozen", {})
  for name in names:
    if name not in entries or not entries[name].get("init_from"):
      raise MissingFrozenModelError(f"{who} needs the frozen model {name!r}: set config.frozen.{name}.init_from to "
                                    f"a local HF folder (configured: {sorted(entries) or 'none'})")
