"""STAR-R1: transformation-driven visual reasoning (TVR), SFT on brief reasoning then GRPO with the STAR-R1 reward.

The embedded default (no argument) trains end to end on a CPU, with no downloads:

    python experiments/run.py --config=experiments/configs/star_r1.py --workdir=/tmp/star_r1

* model: a tiny Qwen2.5-VL built from scratch (2-layer vision tower kept at its random initialisation, a trained
  merger, a 128-wide 2-layer M-RoPE decoder), with a tokenizer built locally from the task's text
  (`config.tokenizer = "build:star_tvr"`);
* data: the synthetic 'star_tvr' task (data_pipelines/tasks/tvr.py) at its smallest: 84x84 initial/final images
  of one flat object on a 3x3 floor that changes colour (4 colours); half of the GRPO pairs (and of the held-out
  `test_cross_view` split) see the final state from another camera. Answers are `index.attribute.value`
  triplets, e.g. `1.color.red`. The generator's other options (2-3 objects, shape / size / position changes,
  1-3 changes per pair) are `--config.data.<option>=...` flags; a model this small does not learn them within
  the CPU budget;
* stage `sft` (450 steps x 16 in-view pairs): teacher-forced cross-entropy on the reference answers with their
  brief reasoning (`<think>object 1 changed color</think><answer>1.color.red</answer>`);
* stage `grpo` (400 steps x 8 prompts, in-view and cross-view): G=8 samples per prompt at temperature 1.0,
  the STAR-R1 reward (format + one-to-one triplet matching with partial credit 5 / 1.5 / 0.5 and the
  excessive-enumeration / passive-inaction penalties; its total ranges up to 1 + 5 * #transformations, GRPO
  normalises it per group), lr 5e-4 after 20 warmup updates, k3 KL 0.04 to the SFT policy;
* evaluation after each stage (greedy) on the fixed held-out splits `test_in_view` and `test_cross_view`
  (100 pairs each): format rate, TAcc (`exact_set`: predicted set == true set), NDiff (`n_diff`:
  |#predicted - #true|) and the mean reward, printed as a table at the end and saved in <workdir>/summary.json.

Measured (2 idle CPU cores, seed 0; all seeds in BENCHMARKS.md, re-measured by `python benchmarks/star_r1_default.py`):

    stage     split        format   TAcc   NDiff  reward
    sft       in_view       1.000  0.770   0.000   4.965
    sft       cross_view    1.000  0.700   0.000   4.650
    grpo      in_view       1.000  0.990   0.000   5.955
    grpo      cross_view    1.000  0.900   0.000   5.550      (wall time 5.1 min, all compilation included)

GRPO's gain depends on the seed: seed 1: 0.42 / 0.42 -> 0.72 / 0.70; seed 2: 0.48 / 0.41 -> 0.95 / 0.90.

The reward curve is <workdir>/grpo/curves.png and the final policy (with its tokenizer) is exported to
<workdir>/grpo/hf; `experiments/eval.py` re-scores any checkpoint on the held-out splits. Re-running the command
resumes (a finished stage is skipped).

`:real` points the same recipe at a local Qwen2.5-VL checkpoint and a TVR-format dataset for a real run, with
the paper's settings where the spec gives them (single-stage RL: GRPO only, as STAR-R1):

    python experiments/run.py --config=experiments/configs/star_r1.py:real,model=/ckpt/Qwen2.5-VL-7B-Instruct,data=/data/tvr \\
        --workdir=/runs/star_r1

`data` is a folder holding train.jsonl, test_in_view.jsonl and test_cross_view.jsonl in the EasyR1 layout
('problem' with two `<image>` tags, 'images', 'answer'), e.g. as written by
`data_pipelines.tasks.write_split`. Both can also be set with `--config.init_from=...` and
`--config.data.path=...` plus `--config.eval.splits.<split>.path=...`.
"""
import ml_collections

from experiments.configs import recipe_args
from r1jax.train import default_config

SUMMARY = (("format", "format"), ("TAcc", "exact_set"), ("NDiff", "n_diff"), ("reward", "reward"))
HELD_OUT = ("in_view", "test_in_view"), ("cross_view", "test_cross_view")


def tiny_qwen2_5_vl() -> ml_collections.ConfigDict:
  """HF config.json (v5 layout) of the from-scratch model; 0 fields are filled from the built tokenizer."""
  return ml_collections.ConfigDict(dict(
      architectures=["Qwen2_5_VLForConditionalGeneration"], vocab_size=0, tie_word_embeddings=True,
      image_token_id=0, video_token_id=0, vision_start_token_id=0, vision_end_token_id=0,
      eos_token_id=0, pad_token_id=0,
      text_config=dict(vocab_size=0, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       eos_token_id=0, pad_token_id=0,
                       rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 7, 7])),
      vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                         patch_size=14, window_size=56, fullatt_block_indexes=[1], tokens_per_second=2)))


def _held_out_splits(test_size: int, batch_size: int, paths: dict[str, str] | None = None):
  splits = {}
  for name, split in HELD_OUT:
    splits[name] = dict(split=split, test_size=test_size, batch_size=batch_size) if paths is None else \
        dict(path=paths[name], batch_size=batch_size)
  return ml_collections.ConfigDict(splits)


def embedded_config() -> ml_collections.ConfigDict:
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.seed = 0
  config.tokenizer = "build:star_tvr"
  config.model.hf_config = tiny_qwen2_5_vl()
  config.data = data_pipelines.default_config(name="star_tvr", max_prompt_length=64, max_seq_length=80,
                                              length_buckets=(64, 80))
  config.data.prompt_style = "short"  # the two images and "What changed?": few tokens for a model from scratch
  config.data.min_objects = config.data.max_objects = 1
  config.data.attributes = ("color",)
  config.data.change_counts = (1.0,)
  config.data.cross_view_fraction = 0.5
  config.data.read_threads = 1
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 28
  config.reward.name = "star_r1"
  config.reward.num_workers = 1
  # The vision tower stays at its random initialisation (its merger trains): random features of
  # flat colours suffice, and its backward pass would double the step time.
  config.optim.freeze = ("visual/(patch_embed|blocks_).*",)
  config.optim.max_grad_norm = 1.0
  config.train.checkpoint_every = 100
  config.train.log_every = 10
  config.eval.summary = SUMMARY
  config.eval.splits = _held_out_splits(test_size=100, batch_size=50)
  config.stages = ml_collections.ConfigDict({
      # SFT on in-view pairs only; GRPO then meets the cross-view ones.
      "sft": dict(stage="sft", data=dict(batch_size=16, cross_view_fraction=0.0),
                  optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=450)),
      "grpo": dict(stage="grpo", data=dict(batch_size=8, length_buckets=(64,)),
                   # A fresh Adam state moves every weight by ~lr in its first updates: the warmup keeps
                   # those from knocking the SFT policy out of its format, and the KL to the SFT policy
                   # pulls a policy back that one bad update sent off (without it, seed 2 at lr 1e-3
                   # collapsed to unformatted output, where no group has reward variance left).
                   optim=dict(learning_rate=5e-4, warmup_steps=20, micro_batches=2),
                   rl=dict(epsilon_high=0.28, beta=0.04), train=dict(steps=400)),
  })
  config.stage_order = ("sft", "grpo")
  return config


def real_config(model: str = "", data: str = "") -> ml_collections.ConfigDict:
  """GRPO on a local Qwen2.5-VL checkpoint and a TVR-format dataset folder.

  From shared/specs/rewards.md (STAR-R1): the reward and its format. STAR-R1 trains Qwen2.5-VL-7B with a
  single RL stage. The remaining values are the common R1-V / EasyR1 settings for Qwen2.5-VL GRPO (not stated
  in the spec; check them against the paper before comparing numbers): G=8 at temperature 1.0, lr 1e-6,
  k3 KL with beta 0.04, up to 1024 new tokens.
  """
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.stage = "grpo"
  config.init_from = model  # an HF folder with config.json, *.safetensors and the tokenizer files
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.data = data_pipelines.default_config(name="files", path=f"{data}/train.jsonl" if data else "",
                                              batch_size=16, max_prompt_length=2048)
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 1024
  config.reward.name = "star_r1"
  config.rl.beta = 0.04
  config.rl.kl_estimator = "low_var_kl"
  config.optim.learning_rate = 1e-6
  config.train.steps = 1000
  config.train.checkpoint_every = 50
  config.eval.summary = SUMMARY
  config.eval.splits = _held_out_splits(test_size=0, batch_size=16, paths={
      name: f"{data}/{split}.jsonl" if data else "" for name, split in HELD_OUT})
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default; 'real[,model=DIR][,data=DIR]' -> a real run (see the module docstring)."""
  return recipe_args.select(arg, embedded_config, real_config, ("model", "data"))
