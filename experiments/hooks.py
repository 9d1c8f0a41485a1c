"""Wires data_pipelines into the trainer: iterators, locally built tokenizers, evaluation.

Kept in experiments/ because `r1jax` never imports `data_pipelines` (design.md).

`config.tokenizer = "build:<task>"` builds a small tokenizer from the task's text corpus into
`<workdir>/tokenizer` (deterministic) for models trained from scratch; `config.model.hf_config`
entries left at 0 (`vocab_size`, special token ids) are then filled from that tokenizer.
"""
from __future__ import annotations

import json
import os

import data_pipelines
from data_pipelines.tasks import (embodied_r1_synthetic, letters, love_r1, love_r1_synthetic, omni_r1_synthetic,
                                  satori_r1_synthetic, tvr, xiangqi_r1)
from data_pipelines.tasks import infigui_r1_synthetic
from data_pipelines.tasks import three_d_r1_synthetic
from r1jax import envs, processing, rewards
from r1jax.envs.observations import ObservationEncoder
from r1jax.sampling import Sampler
from r1jax.tokenization import build_tokenizer, load_tokenizer, special_token_ids
from r1jax.train import DataHooks, evaluate as evaluate_lib

TOKENIZER_CORPORA = {
    "letters": lambda: letters.corpus(),
    "star_tvr": lambda: tvr.text_corpus(tvr.TvrTask(prompt_style="short")) + tvr.text_corpus(tvr.TvrTask()),
    "love_r1": lambda: love_r1_synthetic.text_corpus(),
    "xiangqi_r1": lambda: xiangqi_r1.text_corpus(),
    "embodied_r1": lambda: embodied_r1_synthetic.text_corpus(),
    "satori_r1": lambda: satori_r1_synthetic.text_corpus(),
    "omni_r1": lambda: omni_r1_synthetic.text_corpus(),
    "infigui_r1": lambda: infigui_r1_synthetic.text_corpus(),
    "three_d_r1": lambda: three_d_r1_synthetic.text_corpus(),
}


def prepare(config, workdir: str) -> None:
  """Resolves `build:` tokenizers and fills tokenizer-dependent model fields, in place; a synthetic
  dataset without a folder writes its files under `<workdir>/data`."""
  if config.data.get("synthetic") is not None and not config.data.get("synthetic_dir"):
    config.data.synthetic_dir = os.path.join(workdir, "data")
  if not config.tokenizer.startswith("build:"):
    return
  task = config.tokenizer[len("build:"):]
  if task not in TOKENIZER_CORPORA:
    raise ValueError(f"config.tokenizer={config.tokenizer!r}: no corpus for {task!r}; known: {sorted(TOKENIZER_CORPORA)}")
  path = os.path.join(workdir, "tokenizer")
  if not os.path.isfile(os.path.join(path, "tokenizer.json")):
    build_tokenizer(path, TOKENIZER_CORPORA[task](), vocab_size=1024)
  tokenizer = load_tokenizer(path)
  config.tokenizer = path
  hf = config.model.hf_config
  if hf and not hf.get("vocab_size"):
    ids = special_token_ids(tokenizer)
    hf.vocab_size = -(-len(tokenizer) // 64) * 64
    filled = dict(eos_token_id=ids.eos, pad_token_id=ids.pad, image_token_id=ids.image_pad,
                  video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                  vision_end_token_id=ids.vision_end)
    for key, value in filled.items():
      if key in hf and not hf[key]:
        hf[key] = value
    if "text_config" in hf:
      hf.text_config.vocab_size = hf.vocab_size
      hf.text_config.eos_token_id = ids.eos
      hf.text_config.pad_token_id = ids.pad


def _frozen_for_env(config, model, params, tokenizer) -> dict:
  """The frozen models the environment needs, for evaluation, on the params' mesh (`init_from="policy"`:
  the evaluated params); {} when it needs none. A missing one is named by `envs.build`."""
  names = [n for n in envs.required_frozen(config.env.name) if n in config.get("frozen", {})]
  if not names:
    return {}
  import jax  # pylint: disable=g-import-not-at-top
  from r1jax import frozen, sharding  # pylint: disable=g-import-not-at-top
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  rules = sharding.logical_rules(dict(config.mesh.rules) if config.mesh.rules else None)
  return {name: frozen.load(name, config.frozen[name], mesh=mesh, rules=rules, policy=(model, params, tokenizer))
          for name in names}


def _vision_config(config) -> processing.VisionProcessorConfig:
  for folder in (config.tokenizer, config.init_from):
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
      return processing.VisionProcessorConfig.from_pretrained(folder)
  return processing.VisionProcessorConfig()


def data_hooks(config) -> DataHooks:

  def prompt_iterator(stage_config, tokenizer):
    return data_pipelines.make_prompt_iterator(stage_config, tokenizer, _vision_config(stage_config))

  def sft_iterator(stage_config, tokenizer):
    return data_pipelines.make_sft_iterator(stage_config, tokenizer, _vision_config(stage_config))

  samplers = {}  # by model (configs compare by value): compiled prefill/decode serve every split and stage

  def evaluate(stage_config, model, params, tokenizer, stage_dir):
    """Greedy evaluation on each split of `config.eval.splits` ({name: data overrides})."""
    if not stage_config.eval.get("splits"):
      return {}
    reward_fn = rewards.get(stage_config.eval.get("reward", "") or stage_config.reward.name)
    if model not in samplers:
      samplers[model] = Sampler(model)  # pads with the config's pad_token_id
    results, samples = {}, {}
    env = envs.build(stage_config, hooks, _frozen_for_env(stage_config, model, params, tokenizer))
    encoder = ObservationEncoder(tokenizer, _vision_config(stage_config)) if env.max_turns > 1 else None
    for split, overrides in stage_config.eval.splits.items():
      split_config = stage_config.copy_and_resolve_references()
      split_config.data.update(dict(shuffle=False, num_epochs=1))
      overrides = overrides.to_dict()
      forced_prefix = overrides.pop("forced_prefix", "")  # e.g. LOVE-R1's no-zoom baseline
      split_config.data.update(overrides)
      iterator = data_pipelines.make_prompt_iterator(split_config, tokenizer, _vision_config(split_config))
      try:
        metrics, completions = evaluate_lib.evaluate(
            model, params, tokenizer, iterator, reward_fn, max_new_tokens=stage_config.sampling.max_new_tokens,
            stop_token_ids=tuple(stage_config.sampling.stop_token_ids), sampler=samplers[model], env=env,
            encoder=encoder, forced_prefix=forced_prefix)
      finally:
        iterator.close()
      results.update({f"{split}/{k}": v for k, v in metrics.items()})
      samples[split] = completions[:8]
    with open(os.path.join(stage_dir, "eval_samples.json"), "w", encoding="utf-8") as f:
      json.dump(samples, f, indent=2)
    return results

  hooks = DataHooks(prompt_iterator=prompt_iterator, sft_iterator=sft_iterator, evaluate=evaluate,
                    video_clip=love_r1.video_clip)
  return hooks
