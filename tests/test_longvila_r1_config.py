"""The LongVILA-R1 recipe's `:real` config: the released settings, valid keys, and both stages reading
LongVideo-Reason records in the published layout."""
import json

import numpy as np
import pytest

import data_pipelines
from data_pipelines import registry
from experiments.configs import longvila_r1
from r1jax import tokenization
from r1jax.train import config as train_config
from tests.data_pipelines import media


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  """records.jsonl (RL) and cot.jsonl (with `reasoning`) over one 56 x 56 counter video."""
  root = tmp_path_factory.mktemp("longvideo_reason")
  (root / "longvila_videos").mkdir()
  media.write_counter_video(str(root / "longvila_videos" / "a.mp4"), 24, 4, height=56, width=56)
  record = {"videos": ["longvila_videos/a.mp4"], "problem": "What happens last?\nA. x\nB. y",
            "answer": "<answer>A</answer>", "id": "0"}
  (root / "records.jsonl").write_text(json.dumps(record) + "\n")
  (root / "cot.jsonl").write_text(json.dumps(dict(record, reasoning="x comes last.")) + "\n")
  return root


def test_real_config_has_the_released_settings_and_validates(records):
  config = longvila_r1.get_config(f"real,model=/ckpt/qwen,data={records}/records.jsonl,video_dir={records},"
                                  f"sft_data={records}/cot.jsonl")
  train_config.validate(config)
  assert config.init_from == "/ckpt/qwen" and config.stage_order == ("sft", "grpo")
  assert (config.sampling.num_samples, config.sampling.temperature, config.sampling.top_p) == (5, 1.0, 0.99)
  assert (config.rl.kl_estimator, config.rl.beta) == ("low_var_kl", 1e-2)
  assert (config.rl.epsilon_low, config.rl.epsilon_high, config.rl.clip_ratio_c) == (0.2, 0.3, 3.0)
  assert (config.optim.learning_rate, config.optim.weight_decay, config.optim.max_grad_norm) == (1e-6, 1e-2, 1.0)
  assert config.sampling.max_new_tokens == 2048 and config.reward.name == "longvila"
  assert config.mesh.shape.sequence == longvila_r1.SEQUENCE_PARALLEL > 1
  # 64 frames of 448 x 448: 32 temporal patches of 16 x 16 merged patches, after 2,048 text tokens.
  assert config.data.max_prompt_length == 2048 + 32 * 256
  assert config.data.max_seq_length == config.data.max_prompt_length + 2048
  assert (config.data.nframes, config.data.frame_pixels) == (64, 448 * 448)

  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(records / "tok"), ["What happens last? A. x B. y x comes last. Output the thinking process in "
                             "<think> </think> and final answer in <answer> </answer> tags."], vocab_size=300))
  stages = dict(train_config.stage_configs(config))
  batches = {}
  small = dict(nframes=4, frame_pixels=56 * 56, batch_size=1, shuffle=False, num_epochs=1)
  for name, make in (("sft", data_pipelines.make_sft_iterator), ("grpo", data_pipelines.make_prompt_iterator)):
    stage = stages[name]
    stage.data.update(small)
    registry.build(stage.data)  # the stage's data section validates
    iterator = make(stage, tokenizer)
    try:
      batch = batches[name] = next(iterator)
    finally:
      iterator.close()
    np.testing.assert_array_equal(batch["video_grid_thw"], [[2, 4, 4]])  # 4 frames of 56 x 56
  # SFT learns the CoT, then the answer: exactly the tokens under the loss mask.
  sft = batches["sft"]
  learned = np.asarray(sft["input_ids"][0])[np.asarray(sft["loss_mask"][0]).astype(bool)]
  assert tokenizer.decode(learned).startswith("<think>x comes last.</think><answer>A</answer>")
  # The prompt holds the recipe's count of video tokens: max_prompt_length's arithmetic is right.
  prompt = tokenizer.decode(np.asarray(batches["grpo"]["input_ids"][0]))
  assert prompt.count("<|video_pad|>") == longvila_r1.video_tokens(4, 56 * 56) == 8


def test_without_sft_data_only_grpo_and_bad_args_are_named():
  config = longvila_r1.get_config("real,model=/m,data=/d.jsonl,video_dir=/v")
  assert config.stage_order == ("grpo",)
  train_config.validate(config)
  with pytest.raises(ValueError, match="options are model=, data="):
    longvila_r1.get_config("real,modle=/x")
  with pytest.raises(ValueError, match="embedded default .* is not built yet"):
    longvila_r1.get_config("")
