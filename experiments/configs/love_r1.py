"""LOVE-R1: long-video QA with an adaptive zoom-in, a two-turn episode; SFT on CoT steps then decoupled GRPO.

The embedded default (no argument) trains end to end on a CPU, with no downloads:

    python experiments/run.py --config=experiments/configs/love_r1.py --workdir=/tmp/love_r1

* data: the synthetic long-video task (data_pipelines/tasks/love_r1_synthetic.py), written on first use
  under <workdir>/data in the released record layout and read back by the same reader as `:real`: 160 s
  videos of eight 20 s slots. A clock band across the top grows one step per slot; during one slot a white
  square shows (visible in the overview) beside a checkered pattern whose top-left colour is the answer
  (A-D) and which fades into its mean colour at its edges, so it is legible only in a zoomed clip.
  Overview: 32 frames of 28x28 pixels (4 per slot) stamped with their second; zoom clip: 4 frames of
  112x112;
* model: the tiny Qwen2.5-VL of the STAR-R1 default (random, frozen vision tower; trained merger and
  2-layer decoder) with a tokenizer built from the task's text;
* episode (r1jax/envs/love_r1.py): turn 1 answers (`I get the answer.` ... `\\boxed{X}`) or asks for a
  zoom (`I need to zoom in on the video.` ... `\\boxed{[t1, t2]}`); a valid zoom appends the clip and
  turn 2 answers. Decoupled rewards: turn 1 by its own answer or by turn 2's, turn 2 by its answer;
  advantages over the G first turns and over the second turns apart;
* stage `sft` (300 steps): both CoT steps of every record (30% written by an imperfect teacher: loose or
  wrong zooms, or direct guesses);
* stage `grpo` (24 steps): G=8, temperature 1.0, the LOVE-R1 reward (accuracy + format); grounding
  records are rolled out with the zoom prefix forced;
* evaluation (greedy) on 100 held-out videos: accuracy, format, the fraction of episodes that zoom, the
  zoom's IoU with the true interval, and `no_zoom`: the same videos with the answer prefix forced, so
  the policy must answer from the overview alone.

`:real,model=DIR,data=FILE,video_dir=DIR` runs the released recipe on a local Qwen2.5-VL checkpoint and
the released JSON records (`path`, `problem`, `options`, `problem_type`, `data_type`, `solution`,
`zoomin_intervals`, optional `tgt`): SFT cold start on the CoT records (`sft_data=FILE`, lr 1e-5, 2 epochs)
then decoupled GRPO with the released hyperparameters (lr 1e-6 cosine, weight decay 0.01, G=8, mu=2,
beta=0, max grad norm 5, prompts up to 13,000 tokens, 512 new tokens per turn, vision tower frozen).
"""
import ml_collections

from experiments.configs import recipe_args
from experiments.configs.star_r1 import tiny_qwen2_5_vl
from r1jax.train import default_config

SUMMARY = (("accuracy", "accuracy"), ("format", "format"), ("zoom", "zoom"), ("zoom_iou", "zoom_iou"),
           ("reward", "reward"))
ANSWER_PREFIX = "I get the answer.\n\n"  # r1jax.rewards.love_r1.ANSWER_PREFIX
# Frame budgets of the embedded default (the paper's: 2 fps up to 768 frames of 32x28x28 pixels;
# clips of up to 16 frames of 256x28x28).
TINY_BUDGETS = dict(overview_max_frames=32, overview_max_pixels=28 * 28, zoom_max_frames=4,
                    zoom_max_pixels=112 * 112)


def _held_out(data: dict) -> ml_collections.ConfigDict:
  data = dict(data, mode="rl")  # step-1 prompts whatever the stage reads
  return ml_collections.ConfigDict({"held_out": data, "no_zoom": dict(data, forced_prefix=ANSWER_PREFIX)})


def embedded_config() -> ml_collections.ConfigDict:
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.seed = 0
  config.tokenizer = "build:love_r1"
  config.model.hf_config = tiny_qwen2_5_vl()
  config.data = data_pipelines.default_config(name="love_r1", max_prompt_length=160, max_seq_length=320,
                                              length_buckets=(160, 320))
  config.data.update(dict(prompt_style="short", synthetic="train", synthetic_items=400, synthetic_dir="",
                          synthetic_test_size=100, synthetic_brief=True,
                          synthetic_min_slots=8, synthetic_max_slots=8, imperfect_fraction=0.3, read_threads=1,
                          **TINY_BUDGETS))
  config.env.name = "love_r1"
  config.env.options = ml_collections.ConfigDict(dict(max_observation_tokens=64))
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 24
  config.reward.name = "love_r1"
  config.reward.num_workers = 1
  config.optim.freeze = ("visual/(patch_embed|blocks_).*",)  # as the STAR-R1 default: random features suffice
  config.optim.max_grad_norm = 1.0
  config.train.checkpoint_every = 100
  config.train.log_every = 10
  config.eval.summary = SUMMARY
  config.eval.splits = _held_out(dict(synthetic="test", synthetic_items=100, batch_size=50))
  config.stages = ml_collections.ConfigDict({
      "sft": dict(stage="sft", data=dict(mode="sft", batch_size=16),
                  optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=300)),
      "grpo": dict(stage="grpo", data=dict(batch_size=8),
                   optim=dict(learning_rate=5e-4, warmup_steps=20, micro_batches=2),
                   rl=dict(epsilon_high=0.28, beta=0.04), train=dict(steps=24)),
  })
  config.stage_order = ("sft", "grpo")
  return config


def real_config(model: str = "", data: str = "", video_dir: str = "", sft_data: str = "",
                eval_data: str = "") -> ml_collections.ConfigDict:
  """The released recipe on a local Qwen2.5-VL checkpoint (HumanMLLM/LOVE-R1's settings)."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.init_from = model
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.data = data_pipelines.default_config(name="love_r1", path=data, batch_size=16, max_prompt_length=13000,
                                              max_seq_length=14000)
  config.data.video_dir = video_dir
  config.env.name = "love_r1"
  # A zoom turn: up to 16 frames of 256x28x28 pixels (8 temporal patches x 256 tokens) plus its caption.
  config.env.options = ml_collections.ConfigDict(dict(max_observation_tokens=8 * 256 + 64))
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 512
  config.reward.name = "love_r1"
  config.rl.beta = 0.0
  config.rl.num_iterations = 2  # mu
  config.optim.learning_rate = 1e-6
  config.optim.schedule = "cosine"
  config.optim.weight_decay = 0.01
  config.optim.max_grad_norm = 5.0
  config.optim.freeze = ("visual/.*",)
  config.train.checkpoint_every = 50
  config.eval.summary = SUMMARY
  if eval_data:
    config.eval.splits = _held_out(dict(path=eval_data, mode="rl", batch_size=8))
  stages = {}
  if sft_data:
    stages["sft"] = dict(stage="sft", data=dict(path=sft_data, mode="sft", num_epochs=2),
                         optim=dict(learning_rate=1e-5))
  stages["grpo"] = dict(stage="grpo", train=dict(steps=1000))
  config.stages = ml_collections.ConfigDict(stages)
  config.stage_order = tuple(stages)
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default; 'real[,model=DIR][,data=FILE][,video_dir=DIR][,sft_data=FILE][,eval_data=FILE]'."""
  return recipe_args.select(arg, embedded_config, real_config,
                            ("model", "data", "video_dir", "sft_data", "eval_data"))
