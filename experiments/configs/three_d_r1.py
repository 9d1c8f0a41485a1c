"""3D-R1: multi-view 3D scene reasoning; CoT SFT then GRPO with the 3D-R1 reward (format, 3D IoU, semantic).

The embedded default (no argument) trains end to end on a CPU, with no downloads:

    python experiments/run.py --config=experiments/configs/three_d_r1.py --workdir=/tmp/three_d_r1

* data: the synthetic rooms (data_pipelines/tasks/three_d_r1_synthetic.py), written on first use under
  <workdir>/data as ScanQA-style records with Scene-30K `cot` answers and `.npy` point clouds, and read back
  by the same reader as `:real`: an 18 x 12 room (floor colour says where) with three of six coloured 4 x 4 x 2 boxes,
  each colour in its own slot of a 3 x 2 grid (so the answer's box follows from its colour: found by content, which
  a tiny model reads, not by a token's position, which it does not), a white ball on one box; every fifth of the
  60 layouts is held out; "Which box is under the white ball?" ->
  `<think>The white ball rests on the red box, box: [1,1,0,5,5,2].</think><answer>the red box</answer>`;
* views: 8 candidate cameras rendered from the point cloud (top, front, side, 5 orbit; 56 x 56 px), the view
  selector (r1jax/view_selection.py, weights 0.3 / 0.35 / 0.35; S_text from all-MiniLM-L6-v2 in JAX, S_cov the
  z-buffer coverage) keeps 4;
* model: the tiny Qwen2.5-VL of the STAR-R1 default (random, frozen 2-layer vision tower; trained merger and
  128-wide 2-layer decoder) with a tokenizer built from the task's text;
* stage `sft`: the records' CoT, written by an imperfect teacher: half of them name the box nearest to the right
  one (its name and box);
* stage `grpo`: G=8 at temperature 1.0, the 3D-R1 reward (0.3 format + 0.4 3D IoU + 0.3 semantic cosine from
  the frozen MiniLM, batched once per rollout), k3 KL 0.04 to the SFT policy, warmup;
* evaluation after each stage (greedy) on 100 fixed items of the held-out layouts, with the selected views (`held_out`) and
  with the fixed top/front/side/orbit0 views (`fixed_views`): format, mean 3D IoU, semantic similarity,
  answer accuracy (ScanQA exact match), reward; printed as a table and saved in <workdir>/summary.json.

Measured with the GRPO lr decaying on a cosine (the three seeds side by side on 2 cores, load 3-6, 760-763 s of
wall time each; not a quiet-core time), held-out accuracy / mean 3D IoU with the selected views, SFT -> GRPO:

    seed  split         SFT accuracy  GRPO accuracy   SFT IoU  GRPO IoU
    0     held_out          0.410        0.720         0.410     0.558
    0     fixed_views       0.160        0.440         0.160     0.368
    1     held_out          0.610        0.310         0.610     0.490
    1     fixed_views       0.340        0.160         0.340     0.340
    2     held_out          0.500        0.890         0.500     0.890
    2     fixed_views       0.380        0.630         0.380     0.630

With a constant GRPO lr (the first committed setting) the same SFT policies gave 0.41 -> 0.65, 0.61 -> 0.14 and
0.50 -> 0.72. So the >= 10-point GRPO gain holds on 2 of 3 seeds (+31, -30, +39): NOT met over seeds. In seed 1
(the best SFT policy, 0.61) GRPO's KL to the SFT policy is already 0.19 by step 20 and the final greedy policy writes
the box of one object in its reasoning and names another in its answer; with the constant lr its rollout accuracy rose
0.39 -> 0.64 by step 90 before destabilising (KL 0.16 -> 0.33).
The view selector beats the fixed top/front/side/orbit0 views after SFT on every seed (+25, +27, +12 points of
accuracy; the policy is trained on selected views). The box is in the reasoning and the answer is the object's name:
with the box inside <answer>, GRPO learned to drop it, since the semantic term embeds the whole answer text (a box
there lowers the cosine to the reference name).

`:real,model=DIR,data=PATH,scenes=DIR[,sft_data=PATH][,eval_data=PATH]` runs the released recipe on a local
Qwen2.5-VL checkpoint: SFT on Scene-30K CoT records (`sft_data`, default `data`), then GRPO on ScanQA /
ScanRefer-style records (`data`) over the point clouds in `scenes`, with G = 8, beta = 0.1 (as released), lr
1e-5 decaying to 1e-7 (cosine).

    python experiments/run.py --config=experiments/configs/three_d_r1.py:real,model=/ckpt/Qwen2.5-VL-3B-Instruct,data=/data/scanqa/ScanQA_v1.0_train.json,scenes=/data/scannet/points \\
        --workdir=/runs/three_d_r1
"""
import ml_collections

from experiments.configs import recipe_args
from experiments.configs.star_r1 import tiny_qwen2_5_vl
from r1jax.train import default_config

SUMMARY = (("format", "format"), ("IoU_3d", "perception"), ("semantic", "semantic"), ("accuracy", "answer_match"),
           ("reward", "reward"))


def embedded_config() -> ml_collections.ConfigDict:
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import three_d_r1_dataset  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  config = default_config()
  config.seed = 0
  config.tokenizer = "build:three_d_r1"
  config.model.hf_config = tiny_qwen2_5_vl()
  config.data = data_pipelines.default_config(name="three_d_r1", max_prompt_length=64, max_seq_length=112,
                                              length_buckets=(64, 112))
  config.data.update(dict(prompt_style="short", synthetic="train", synthetic_items=2000, synthetic_dir="",
                          synthetic_test_size=100, teacher_error=0.5, read_threads=1))
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 40
  config.reward.name = "three_d_r1"
  config.reward.num_workers = 1
  config.optim.freeze = ("visual/(patch_embed|blocks_).*",)  # as the STAR-R1 default: random features suffice
  config.optim.max_grad_norm = 1.0
  config.train.checkpoint_every = 100
  config.train.log_every = 10
  config.eval.summary = SUMMARY
  config.eval.splits = ml_collections.ConfigDict({
      "held_out": dict(synthetic="test", synthetic_items=100, batch_size=50),
      "fixed_views": dict(synthetic="test", synthetic_items=100, batch_size=50, view_selection="fixed")})
  config.stages = ml_collections.ConfigDict({
      "sft": dict(stage="sft", data=dict(batch_size=16),
                  optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=300)),
      "grpo": dict(stage="grpo", data=dict(batch_size=8, length_buckets=(64,)),
                   optim=dict(learning_rate=5e-4, warmup_steps=20, micro_batches=2, schedule="cosine"),
                   rl=dict(epsilon_high=0.28, beta=0.04), train=dict(steps=150)),
  })
  config.stage_order = ("sft", "grpo")
  return config


def real_config(model: str = "", data: str = "", scenes: str = "", sft_data: str = "",
                eval_data: str = "") -> ml_collections.ConfigDict:
  """CoT SFT (Scene-30K) then GRPO (ScanQA / ScanRefer) on a local Qwen2.5-VL checkpoint (3D-R1's settings)."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tasks import three_d_r1_dataset  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  config = default_config()
  config.init_from = model  # an HF folder with config.json, *.safetensors and the tokenizer files
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.data = data_pipelines.default_config(name="three_d_r1", path=data, batch_size=2,
                                              max_prompt_length=2048 - 512, max_seq_length=2048)
  config.data.scene_dir = scenes
  config.data.view_image_size = 448
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 512
  config.reward.name = "three_d_r1"
  config.rl.beta = 0.1
  config.rl.kl_estimator = "low_var_kl"
  config.optim.learning_rate = 1e-5
  config.optim.schedule = "cosine"
  config.optim.end_lr_ratio = 0.01  # 1e-5 -> 1e-7
  config.eval.summary = SUMMARY
  if eval_data:
    config.eval.splits = ml_collections.ConfigDict({"held_out": dict(path=eval_data, batch_size=4)})
  config.stages = ml_collections.ConfigDict({
      "sft": dict(stage="sft", data=dict(path=sft_data or data), train=dict(steps=2000)),
      "grpo": dict(stage="grpo", train=dict(steps=2000)),
  })
  config.stage_order = ("sft", "grpo")
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default; 'real[,model=DIR][,data=PATH][,scenes=DIR][,sft_data=PATH][,eval_data=PATH]'."""
  return recipe_args.select(arg, embedded_config, real_config, ("model", "data", "scenes", "sft_data", "eval_data"))
