"""Omni-R1: a global system picks keyframes and rewrites the target, a frozen detail system grounds it; GRPO.

The embedded default (no argument) trains end to end on a CPU, with no downloads:

    python experiments/run.py --config=experiments/configs/omni_r1.py --workdir=/tmp/omni_r1

* data: the synthetic moving-shapes task (data_pipelines/tasks/omni_r1_synthetic.py), written on first use
  under <workdir>/data in the ReVOS layout and read back by the same reader as `:real`: 16 frames (8 s at
  2 fps) of 112x112 pixels, three shapes of distinct colours; the target moves and is visible only during
  its 2 s window, the others stand still on screen throughout; the expression names the target by
  attribute ("red circle") or by motion ("shape moving left");
* policy (global system): the tiny Qwen2.5-VL of the STAR-R1 default (random, frozen vision tower; trained
  merger and 2-layer decoder) with a tokenizer built from the task's text; it sees the 16 frames at 56x56 as
  eight one-second clips, each followed by its second as text (`time_labels`: "0s" ... "7s", so a frame's
  time is in the prompt, not only in the rotary positions) and answers
  `<think>..</think><answer>{"start_time", "end_time", "description"}</answer>`;
* detail system: the frozen reference model, as released (`frozen.detail.init_from="policy"`: the stage's
  initial policy, sharing its params with the KL reference): in GRPO the SFT model, which learned both
  systems (stage `sft` mixes the policy's records with the detail records: one high-resolution 112x112
  keyframe + the released grounding instruction -> `{"bbox_2d": [...]}`); the environment
  (r1jax/envs/omni_r1.py) calls it once per rollout, greedily, for every chosen keyframe of the batch;
* stage `sft` (200 steps x 16): the teacher's completions (40% imperfect: the video's first window, a
  distractor's window and description, or the motion expression copied as the description) and the
  detail records;
* stage `grpo` (100 steps x 8 prompts): G=8, temperature 1, top_p 0.95, the Omni-R1 reward (hierarchical
  keyframe terms + grounding IoU through the detail system + format), lr 5e-4 after 20 warmup updates,
  clip-higher 0.28, k3 KL 0.04 to the SFT policy;
* evaluation (greedy) on 100 held-out videos: keyframe hit rate (`keyframe_hit`: the fraction of the
  grounded keyframes that show the target), grounding IoU through the detail system (`avg_iou`), format
  and the reward. An evaluation's detail system is `frozen.detail`: "policy" is the evaluated model itself
  (for the GRPO row, the GRPO policy's own grounding); name the SFT export to hold it fixed.

Measured (seed 0, 2 shared cores at load 11-14, 2026-12-07; not quiet-machine times): the learning target
(GRPO >= 10 points of keyframe hit over SFT) is NOT met. After SFT the greedy policy answers the same
keyframes (00:00-00:01.50) and nearly the same description for every video: it does not even copy the
colour words of the expression into its description, so it reads neither prompt nor frames (held-out hit
0.230 = the share of targets in the first window; IoU 0.011). GRPO's rollout hit rate stays at 0.07-0.27
over steps 10-50 (the run was stopped at step 55; 14-20 s a step at that load). The same holds with the
labels before the clips (SFT 300 steps: hit 0.230), with one video and no labels (3 earlier designs), and
with SFT on the policy's records only (300 steps, then 60 GRPO steps): SFT hit 0.000 (one invalid interval,
end before start, for every video), GRPO 0.285 with again one answer for every video (00:02.00-00:03.50,
"green square"): a format fix and the majority window, not grounding. The tiny policy does not learn the
grounding in minutes; see BENCHMARKS.md's Omni-R1 section.

`:real,model=DIR,detail_model=DIR,data=DIR[,eval_data=DIR]` runs the released recipe on a local
Qwen2.5-VL checkpoint (the policy; Omni-R1 uses Qwen2.5-Omni's thinker, whose audio tower r1jax lacks),
a detail model (an HF folder; the released recipe uses the reference model itself: pass the same folder)
and a ReVOS or MeViS split folder (meta_expressions*.json, mask_dict.json, JPEGImages/): single-iteration
GRPO (no clipping needed with one iteration), k3 KL beta 0.04, G 8, temperature 1, top_p 0.95, lr 1e-6
cosine, weight decay 0.01, max completion 2048, max grad norm 5, vision tower frozen, 16-24 frames of at
most 128x28x28 pixels.

Evaluate a checkpoint (the detail system: the checkpoint itself, or `--config.frozen.detail.init_from=DIR`):

    python experiments/eval.py --config=experiments/configs/omni_r1.py --checkpoint=/tmp/omni_r1/grpo/hf
"""
import ml_collections

from experiments.configs import recipe_args
from experiments.configs.star_r1 import tiny_qwen2_5_vl
from r1jax.train import default_config

SUMMARY = (("hit", "keyframe_hit"), ("IoU", "avg_iou"), ("format", "format"), ("reward", "reward"))
# The embedded default's sizes (the paper's: 16-24 frames of <= 128x28x28 pixels; the detail model's
# keyframe at Qwen2.5-VL's default <= 1280x28x28).
TINY = dict(max_frames=16, policy_max_pixels=56 * 56, policy_min_pixels=56 * 56, detail_max_pixels=112 * 112,
            detail_min_pixels=56 * 56)


def embedded_config() -> ml_collections.ConfigDict:
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.seed = 0
  config.tokenizer = "build:omni_r1"
  config.model.hf_config = tiny_qwen2_5_vl()
  config.data = data_pipelines.default_config(name="omni_r1", max_prompt_length=136, max_seq_length=184,
                                              length_buckets=(64, 136, 184), read_threads=1)
  config.data.image = dict(min_pixels=TINY["detail_min_pixels"], max_pixels=TINY["detail_max_pixels"])
  # time_labels: the frames as one-second clips, each followed by its second as text (the tiny model does not
  # read absolute time from its rotary positions; see data_pipelines/tasks/omni_r1.py).
  config.data.update(dict(prompt_style="short", time_labels=True, synthetic="train", synthetic_items=400,
                          synthetic_dir="", synthetic_test_size=100, imperfect_fraction=0.4, **TINY))
  config.env.name = "omni_r1"
  # The detail system: the frozen reference (the stage's own initial policy; GRPO names the SFT export).
  config.frozen = ml_collections.ConfigDict({"detail": dict(init_from="policy", role="detail", max_new_tokens=24)})
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.top_p = 0.95
  config.sampling.max_new_tokens = 48
  config.reward.name = "omni_r1"
  config.reward.num_workers = 1
  config.optim.freeze = ("visual/(patch_embed|blocks_).*",)  # as the STAR-R1 default: random features suffice
  config.train.checkpoint_every = 100
  config.train.log_every = 10
  config.eval.summary = SUMMARY
  config.eval.splits = ml_collections.ConfigDict({"held_out": dict(synthetic="test", synthetic_items=100,
                                                                   batch_size=50, mode="rl")})
  config.stages = ml_collections.ConfigDict({
      "sft": dict(stage="sft", data=dict(mode="sft", with_detail=True, batch_size=16),
                  optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=200)),
      "grpo": dict(stage="grpo", data=dict(batch_size=8),
                   optim=dict(learning_rate=5e-4, warmup_steps=20),
                   rl=dict(beta=0.04, epsilon_high=0.28), train=dict(steps=100)),
  })
  config.stage_order = ("sft", "grpo")
  return config


def real_config(model: str = "", detail_model: str = "", data: str = "", eval_data: str = "") -> ml_collections.ConfigDict:
  """The released recipe (aim-uofa/Omni-R1's HEAD script settings) on local checkpoints and a ReVOS/MeViS split."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.init_from = model
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.data = data_pipelines.default_config(name="omni_r1", path=data, batch_size=8, max_prompt_length=8192,
                                              max_seq_length=8192 + 2048)
  detail_pixels = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
  config.data.image = dict(detail_pixels)  # the detail records' (mode 'detail'); the policy's frames are below
  config.data.update(dict(max_frames=24, policy_max_pixels=128 * 28 * 28,
                          **{f"detail_{k}": v for k, v in detail_pixels.items()}))
  config.env.name = "omni_r1"
  config.frozen = ml_collections.ConfigDict({"detail": dict(init_from=detail_model, role="detail", dtype="bfloat16",
                                                            max_new_tokens=256)})
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.top_p = 0.95
  config.sampling.max_new_tokens = 2048
  config.reward.name = "omni_r1"
  config.rl.beta = 0.04
  config.rl.kl_estimator = "low_var_kl"  # k3
  config.rl.num_iterations = 1  # single iteration: the ratio is 1, clipping never acts
  config.optim.learning_rate = 1e-6
  config.optim.schedule = "cosine"
  config.optim.weight_decay = 0.01
  config.optim.max_grad_norm = 5.0
  config.optim.freeze = ("visual/.*",)
  config.train.steps = 1000
  config.train.checkpoint_every = 50
  config.eval.summary = SUMMARY
  if eval_data:
    config.eval.splits = ml_collections.ConfigDict({"held_out": dict(path=eval_data, mode="rl", batch_size=8)})
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default; 'real[,model=DIR][,detail_model=DIR][,data=DIR][,eval_data=DIR]'."""
  return recipe_args.select(arg, embedded_config, real_config, ("model", "detail_model", "data", "eval_data"))
