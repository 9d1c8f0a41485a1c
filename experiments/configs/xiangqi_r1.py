"""Xiangqi-R1: Chinese chess on a text Qwen2.5 in three stages, legal-move SFT -> strategy SFT -> GRPO.

The embedded default (no argument) trains end to end on a CPU, with no downloads:

    python experiments/run.py --config=experiments/configs/xiangqi_r1.py --workdir=/tmp/xiangqi_r1

* data: positions written on first use under <workdir>/data in the position-record JSONL format
  (data_pipelines/tasks/xiangqi_r1.py) and labelled by Fairy-Stockfish at depth 8 (best move, score,
  PV, evaluation for the side to move); without the engine, by the built-in searcher at depth 2
  (said at start-up). The default draws 2,000 sparse endgame positions (+200 held out): both kings and
  one or two chariots a side on random squares, so every position differs and a model from scratch must
  read the board, yet the rules it needs (king in the palace, no facing kings, chariot lines, checks)
  fit a tiny model's budget. Tried first and dropped: 1-3 pieces of every kind (10% legality after
  stage 2, no GRPO gain), chariots and pawns (22%). Other positions are options: `synthetic_sparse_kinds`
  (e.g. "RNCPAB"), `synthetic_sparse_pieces`, `synthetic_playout=N`, `synthetic_selfplay=N`;
* model: a tiny Qwen2.5 text decoder (4 layers, 128 wide) from scratch, with a tokenizer built from
  the task's text; prompts are the piece list only (`prompt_style="short"`);
* stage `legal_sft` (300 steps x 16): the legal moves of one piece, or one legal move, from the move
  generator;
* stage `strategy_sft` (300 steps x 16): the engine's evaluation, a PV-based rationale and its best move,
  `<think>evaluation: winning. line: b4b9 d9d8</think><answer>b4b9</answer>`;
* stage `grpo` (200 steps x 8 prompts): G=8 at temperature 1.0 on the strategy prompts, lr 5e-4 after 20
  warmup updates then cosine to 0, k3 KL 0.04 to the stage-2 policy, the xiangqi_r1_legal_first reward
  (format 0.1, legality 0.5, quality from the judge's centipawn loss 0.3, analysis 0.1), judged by the
  default judge (Fairy-Stockfish at depth 8, else the built-in searcher). Why legality first: stage 2
  leaves legality near 50% and, with the paper-style weights (xiangqi_r1: legality 0.2, quality 0.6), a
  legal move of poor quality (~0.3) falls below the mean of any group holding a good move, so GRPO
  pushed legal moves down as often as up (120 steps: legality +8 / +6.5 / 0 points). The held-out rows
  of every stage are scored with xiangqi_r1 (`config.eval.reward`), so the reward column compares;
* evaluation after each stage (greedy) on 200 held-out positions: move legality, top-1 agreement with
  the engine, mean centipawn loss (illegal moves count 1000), analysis accuracy (the stated
  evaluation), format rate.

Measured with these settings (2 CPU cores shared with other runs, load average 8-15, one run at a time;
seed 0's GRPO stage ran from the stage-2 export of a run with the same SFT settings), held-out, greedy:

    seed stage         legal   top1  cp_loss  analysis  format
    0    strategy_sft  0.480  0.080    771.1     0.540   1.000
    0    grpo          0.600  0.135    651.8     0.540   1.000
    1    strategy_sft  0.595  0.100    674.1     0.545   1.000
    1    grpo          0.605  0.115    709.3     0.535   1.000

(seed 2 not run with these settings; after legal_sft: legality 0.00-0.02 on these analysis prompts, which
stage 1 never asks.) GRPO - stage 2 legality: +12.0 (seed 0), +1.0 (seed 1): the issue's +10 points on 3
seeds is NOT met. Why (probe of seed 1's exports, G=8 at T=1 on the 200 held-out positions): GRPO raises
the legality of its samples from 0.40 to 0.57 but not that of the greedy move (0.595 -> 0.605): it
sharpens the policy onto the moves it already ranks first, and 18-25% of positions have no legal sample
of 8, hence no signal. Stage 2 says "winning" for every position (analysis = the 53% majority label).
The earlier settings (xiangqi_r1 reward, 120 steps, constant lr): legality -0.5 / +6.5 / +0.0 and +8.0
(seed 0 re-run), analysis never above the majority label.

Each stage starts from the previous stage's export (<workdir>/<stage>/hf). Re-running resumes.
`experiments/eval.py --config=experiments/configs/xiangqi_r1.py --checkpoint=<workdir>/grpo/hf` re-scores
a checkpoint on the held-out positions.

`:real,model=DIR,data=DIR` trains a local Qwen2.5-7B-Instruct (HF folder) on a user's position records:
DIR holds train.jsonl and test.jsonl (position records; `legal.jsonl` / `strategy.jsonl` are used for
stages 1 and 2 when present, else train.jsonl). The paper (arXiv 2507.12215) does not publish its
hyperparameters; these are the common R1 settings for a 7B text model: SFT lr 1e-5 (one epoch or 2,000 steps each),
GRPO lr 1e-6, G=8, temperature 1.0, k3 KL 0.04, 1024 new tokens.
"""
import ml_collections

from experiments.configs import recipe_args
from r1jax.train import default_config

SUMMARY = (("legal", "legality"), ("top1", "top1"), ("cp_loss", "cp_loss"), ("analysis", "evaluation"),
           ("format", "format"), ("reward", "reward"))
STAGES = ("legal_sft", "strategy_sft", "grpo")


def tiny_qwen2_5() -> ml_collections.ConfigDict:
  """HF config.json of a from-scratch Qwen2.5 text decoder; 0 fields come from the built tokenizer."""
  return ml_collections.ConfigDict(dict(
      architectures=["Qwen2ForCausalLM"], vocab_size=0, hidden_size=128, intermediate_size=384,
      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
      rope_parameters=dict(rope_type="default", rope_theta=10000.0), rms_norm_eps=1e-6,
      eos_token_id=0, pad_token_id=0))


def embedded_config() -> ml_collections.ConfigDict:
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.seed = 0
  config.tokenizer = "build:xiangqi_r1"
  config.model.hf_config = tiny_qwen2_5()
  config.data = data_pipelines.default_config(name="xiangqi_r1", max_prompt_length=64, max_seq_length=160,
                                              length_buckets=(64, 160))
  config.data.update(dict(prompt_style="short", synthetic="train", synthetic_dir="", synthetic_sparse=2000,
                          synthetic_test_size=200, synthetic_sparse_pieces=(1, 2), synthetic_sparse_kinds="R",
                          pv_plies=2, piece_max_moves=0, read_threads=1))
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 32
  config.reward.name = "xiangqi_r1"
  config.reward.num_workers = 1
  config.optim.max_grad_norm = 1.0
  config.train.checkpoint_every = 100
  config.train.log_every = 10
  config.eval.summary = SUMMARY
  config.eval.reward = "xiangqi_r1"  # every stage's table row is scored with the paper-style weights
  config.eval.splits = ml_collections.ConfigDict(
      {"held_out": dict(synthetic="test", mode="grpo", batch_size=50)})
  config.stages = ml_collections.ConfigDict({
      "legal_sft": dict(stage="sft", data=dict(mode="legal", batch_size=16),
                        optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=300)),
      "strategy_sft": dict(stage="sft", data=dict(mode="strategy", batch_size=16),
                           optim=dict(learning_rate=1e-3, warmup_steps=10), train=dict(steps=300)),
      # Legality-first reward (see r1jax/rewards/xiangqi.py): with the paper-style weights a legal move of
      # poor quality sits below its group's mean, so GRPO pushed legal moves down as often as up. The
      # cosine decay lands the policy instead of stopping it mid-walk at lr 5e-4.
      "grpo": dict(stage="grpo", data=dict(mode="grpo", batch_size=8, length_buckets=(64,)),
                   reward=dict(name="xiangqi_r1_legal_first"),
                   optim=dict(learning_rate=5e-4, warmup_steps=20, micro_batches=2, schedule="cosine"),
                   rl=dict(epsilon_high=0.28, beta=0.04), train=dict(steps=200)),
  })
  config.stage_order = STAGES
  return config


def real_config(model: str = "", data: str = "") -> ml_collections.ConfigDict:
  """The three stages on a local Qwen2.5(-7B-Instruct) checkpoint and a folder of position records."""
  import os  # pylint: disable=g-import-not-at-top
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.init_from = model  # an HF folder with config.json, *.safetensors and the tokenizer files
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  train = f"{data}/train.jsonl" if data else ""

  def stage_file(name: str) -> str:
    path = f"{data}/{name}.jsonl"
    return path if data and os.path.isfile(path) else train

  config.data = data_pipelines.default_config(name="xiangqi_r1", path=train, batch_size=16,
                                              max_prompt_length=1024, max_seq_length=2048)
  config.data.prompt_style = "full"
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 1024
  config.reward.name = "xiangqi_r1"
  config.rl.beta = 0.04
  config.rl.kl_estimator = "low_var_kl"
  config.train.checkpoint_every = 200
  config.eval.summary = SUMMARY
  config.eval.splits = ml_collections.ConfigDict(
      {"held_out": dict(path=f"{data}/test.jsonl" if data else "", mode="grpo", batch_size=16)})
  config.stages = ml_collections.ConfigDict({
      "legal_sft": dict(stage="sft", data=dict(mode="legal", path=stage_file("legal"), num_epochs=1),
                        optim=dict(learning_rate=1e-5, warmup_steps=100), train=dict(steps=2000)),
      "strategy_sft": dict(stage="sft", data=dict(mode="strategy", path=stage_file("strategy"), num_epochs=1),
                           optim=dict(learning_rate=1e-5, warmup_steps=100), train=dict(steps=2000)),
      "grpo": dict(stage="grpo", data=dict(mode="grpo", path=train), optim=dict(learning_rate=1e-6),
                   train=dict(steps=1000)),
  })
  config.stage_order = STAGES
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default; 'real[,model=DIR][,data=DIR]' -> a real run (see the module docstring)."""
  return recipe_args.select(arg, embedded_config, real_config, ("model", "data"))
