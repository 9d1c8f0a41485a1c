"""LongVILA-R1: RL over hour-long videos; CoT-SFT then GRPO on LongVideo-Reason.

`:real,model=DIR,data=FILE,video_dir=DIR[,sft_data=FILE]` runs the released recipe on a local Qwen2.5-VL
checkpoint (LongVILA-R1's own model is a VILA, which r1jax does not implement; Long-RL trains Qwen2.5-VL
with the same settings) and the LongVideo-Reason records (`videos`, `problem`, `answer` as
`<answer>X</answer>`; data_pipelines/tasks/longvila_r1.py):

* data: every video as NFRAMES uniform frames of FRAME_PIXELS pixels (448 x 448: 256 vision tokens per
  two frames), so a prompt is at most 2,048 text tokens plus the video's tokens;
* stage `sft` (only with `sft_data=FILE`, records with `reasoning`): CoT-SFT on
  `<think>reasoning</think><answer>X</answer>`, 1 epoch at lr 1e-5 — r1jax's choice, the release
  does not state them in the issue;
* stage `grpo`, the released settings: G = 5, temperature 1.0, top_p 0.99, the low-variance KL (k3)
  with beta 1e-2, clip 0.2 / 0.3 (epsilon / epsilon_high), dual clip 3.0, lr 1e-6, weight decay 1e-2,
  max response 2,048 tokens, grad clip 1.0, the LongVILA-R1 reward (0.9 accuracy + 0.1 format);
* mesh: the sequence axis is SEQUENCE_PARALLEL devices wide, so a long video's tokens (and its frames
  in the vision tower) are split over them; the rest of the devices are fsdp.

The embedded default (no argument: a synthetic long-video task on a tiny model) is not built yet;
`get_config('')` says so.
"""
import ml_collections

from experiments.configs import recipe_args
from r1jax.train import default_config

NFRAMES = 64
FRAME_PIXELS = 448 * 448
MAX_TEXT_TOKENS = 2048  # the released max prompt length, text only: the video's tokens are added
MAX_RESPONSE_TOKENS = 2048
SEQUENCE_PARALLEL = 4  # devices the sequence axis spans for a long video (r1jax's choice; Long-RL sets its own per run)
_PATCH, _MERGE, _TEMPORAL = 14, 2, 2  # Qwen2.5-VL's vision patching


def video_tokens(nframes: int, frame_pixels: int) -> int:
  """LLM tokens of one video: nframes / 2 temporal patches x (side / 28)^2 merged patches (square frames)."""
  side = round(frame_pixels ** 0.5)
  merged = side // (_PATCH * _MERGE)
  return -(-nframes // _TEMPORAL) * merged * merged


def real_config(model: str = "", data: str = "", video_dir: str = "",
                sft_data: str = "") -> ml_collections.ConfigDict:
  """The released recipe on a local Qwen2.5-VL checkpoint (see the module docstring)."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.init_from = model
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.mesh.shape.sequence = SEQUENCE_PARALLEL
  max_prompt = MAX_TEXT_TOKENS + video_tokens(NFRAMES, FRAME_PIXELS)
  config.data = data_pipelines.default_config(name="longvila_r1", path=data, batch_size=8,
                                              max_prompt_length=max_prompt,
                                              max_seq_length=max_prompt + MAX_RESPONSE_TOKENS)
  config.data.update(dict(video_dir=video_dir, nframes=NFRAMES, frame_pixels=FRAME_PIXELS))
  config.sampling.num_samples = 5
  config.sampling.temperature = 1.0
  config.sampling.top_p = 0.99
  config.sampling.max_new_tokens = MAX_RESPONSE_TOKENS
  config.reward.name = "longvila"
  config.rl.beta = 1e-2
  config.rl.kl_estimator = "low_var_kl"
  config.rl.epsilon_low = 0.2
  config.rl.epsilon_high = 0.3
  config.rl.clip_ratio_c = 3.0
  config.optim.learning_rate = 1e-6
  config.optim.weight_decay = 1e-2
  config.optim.max_grad_norm = 1.0
  config.train.checkpoint_every = 50
  stages = {}
  if sft_data:
    stages["sft"] = dict(stage="sft", data=dict(path=sft_data, mode="sft", num_epochs=1),
                         optim=dict(learning_rate=1e-5))
  stages["grpo"] = dict(stage="grpo", data=dict(mode="rl"), train=dict(steps=1000))
  config.stages = ml_collections.ConfigDict(stages)
  config.stage_order = tuple(stages)
  return config


def embedded_config() -> ml_collections.ConfigDict:
  raise ValueError("experiments/configs/longvila_r1.py: the embedded default (a synthetic long-video task) "
                   "is not built yet; use ':real,model=DIR,data=FILE,video_dir=DIR[,sft_data=FILE]'")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """'' -> the embedded default (not built yet: raises); 'real[,model=DIR][,data=FILE][,video_dir=DIR][,sft_data=FILE]'."""
  return recipe_args.select(arg, embedded_config, real_config, ("model", "data", "video_dir", "sft_data"))
