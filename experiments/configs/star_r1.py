"""STAR-R1 draft (being tuned)."""
import ml_collections

from r1jax.train import default_config


def tiny_qwen2_5_vl() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      architectures=["Qwen2_5_VLForConditionalGeneration"], vocab_size=0,
      image_token_id=0, video_token_id=0, vision_start_token_id=0, vision_end_token_id=0,
      eos_token_id=0, pad_token_id=0, tie_word_embeddings=True,
      text_config=dict(vocab_size=0, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, eos_token_id=0, pad_token_id=0,
                       rope_parameters=dict(rope_type="default", rope_theta=3.0,
                                            mrope_section=[2, 7, 7])),
      vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                         out_hidden_size=128, patch_size=14, window_size=56,
                         fullatt_block_indexes=[1], tokens_per_second=2)))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.tokenizer = "build:star_tvr"
  config.model.hf_config = tiny_qwen2_5_vl()
  config.data = data_pipelines.default_config(
      name="star_tvr", batch_size=16, max_prompt_length=64, max_seq_length=96, length_buckets=(64, 96))
  config.data.prompt_style = "short"
  config.data.cross_view_fraction = 0.5
  config.sampling.num_samples = 8
  config.sampling.max_new_tokens = 32
  config.reward.name = "star_r1"
  config.reward.num_workers = 1
  config.train.progress_bar = False
  config.train.checkpoint_every = 50
  config.eval.splits = ml_collections.ConfigDict({
      "in_view": {"split": "test_in_view", "test_size": 100, "batch_size": 50},
      "cross_view": {"split": "test_cross_view", "test_size": 100, "batch_size": 50},
  })
  config.stages = ml_collections.ConfigDict({
      "sft": {"stage": "sft", "optim": {"learning_rate": 3e-3, "schedule": "cosine", "warmup_steps": 10},
              "data": {"batch_size": 32}, "train": {"steps": 200}},
      "grpo": {"stage": "grpo", "optim": {"learning_rate": 1e-4}, "data": {"batch_size": 8},
               "train": {"steps": 30}},
  })
  config.stage_order = ("sft", "grpo")
  return config
