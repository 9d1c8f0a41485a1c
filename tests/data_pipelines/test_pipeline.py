"""The grain pipeline end to end: batches, determinism, resume, host shards, bad data, workers."""
import json
import logging
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import batching, errors
from r1jax import processing
from tests.data_pipelines import media

_NUM_GOOD = 12  # 6 text + 6 image records
_VISION = processing.VisionProcessorConfig(min_pixels=28 * 28, max_pixels=56 * 56)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  os.makedirs(root / "images")
  rows = []
  for i in range(6):
    rows.append({"id": f"text{i}", "problem": f"What is {i} plus {i}?", "answer": str(2 * i)})
    media.write_image(str(root / "images" / f"{i}.png"), 30 + 7 * i, 50 - 3 * i, seed=i)
    rows.append({"id": f"image{i}", "problem": f"<image>How many chairs? ({i})",
                 "answer": str(i), "images": [f"images/{i}.png"], "box": [1, 2, 3, 4]})
  with open(root / "images" / "corrupt.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
  rows.insert(3, {"id": "missing_image", "problem": "<image>?", "answer": "1",
                  "images": ["images/missing.png"]})
  rows.insert(8, {"id": "corrupt_image", "problem": "<image>?", "answer": "1",
                  "images": ["images/corrupt.png"]})
  rows.insert(11, {"id": "no_answer", "problem": "Unanswerable?"})
  with open(root / "train.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)
  return root


def _config(data_dir, **overrides):
  config = data_pipelines.default_config(path=str(data_dir / "train.jsonl"), batch_size=2,
                                         seed=1, read_threads=1, prefetch_batches=0,
                                         max_prompt_length=128)
  config.update(overrides)
  return config


def _iterator(data_dir, tokenizer, shard=(0, 1), **overrides):
  return data_pipelines.make_prompt_iterator(
      _config(data_dir, **overrides), tokenizer, _VISION, shard_index=shard[0],
      shard_count=shard[1])


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _key(batch):
  return (batch["example_id"], batch["input_ids"].tolist(),
          float(batch["pixel_values"].sum()), batch["image_grid_thw"].tolist())


def _all_batches(iterator):
  batches = list(iterator)
  iterator.close()
  return batches


def test_prompt_batch_is_left_padded_with_vision_inputs(data_dir, tokenizer):
  batches = _take(_iterator(data_dir, tokenizer), 6)
  for batch in batches:
    ids, mask, lengths = batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"]
    assert ids.dtype == np.int32 and ids.shape[0] == 2 and ids.shape[1] in (64, 128)
    np.testing.assert_array_equal(mask.sum(1), lengths)
    for row in range(2):  # left padding: pads first, prompt right-aligned
      assert (ids[row, :ids.shape[1] - lengths[row]] == tokenizer.pad_token_id).all()
      assert mask[row, -1] == 1
    grids = batch["image_grid_thw"]
    assert batch["pixel_values"].shape == (grids.prod(1).sum(), _VISION.patch_dim)
    assert batch["image_counts"].sum() == len(grids)
    image_pad = tokenizer.convert_tokens_to_ids(processing.IMAGE_PAD)
    for row in range(2):
      row_grids = grids[batch["image_counts"][:row].sum():][:batch["image_counts"][row]]
      assert (ids[row] == image_pad).sum() == processing.num_vision_tokens(row_grids)
      context, truth = batch["reward_context"][row], batch["ground_truth"][row]
      assert truth["answer"] is not None
      if context["id"].startswith("image"):
        i = int(context["id"][-1])
        assert context["original_image_sizes"] == [(30 + 7 * i, 50 - 3 * i)]
        h, w = context["resized_image_sizes"][0]
        np.testing.assert_array_equal(row_grids, [[1, h // 14, w // 14]])
        assert truth["box"] == [1, 2, 3, 4]
    assert batch["pixel_values_videos"].shape == (0, _VISION.patch_dim)


def test_same_seed_same_batches_other_seed_other_order(data_dir, tokenizer):
  first = [_key(b) for b in _take(_iterator(data_dir, tokenizer), 8)]
  again = [_key(b) for b in _take(_iterator(data_dir, tokenizer), 8)]
  other = [_key(b) for b in _take(_iterator(data_dir, tokenizer, seed=2), 8)]
  assert first == again
  assert first != other


def test_epochs_are_reshuffled(data_dir, tokenizer):
  batches = _all_batches(_iterator(data_dir, tokenizer, num_epochs=2, batch_size=1))
  ids = [b["example_id"][0] for b in batches]
  assert len(ids) == 2 * _NUM_GOOD
  assert sorted(ids[:_NUM_GOOD]) == sorted(ids[_NUM_GOOD:])
  assert ids[:_NUM_GOOD] != ids[_NUM_GOOD:]


def test_restored_state_yields_the_following_batches(data_dir, tokenizer):
  iterator = _iterator(data_dir, tokenizer, prefetch_batches=2, read_threads=2)
  _take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))  # as a checkpoint stores it
  expected = _take(iterator, 5)
  restored = _iterator(data_dir, tokenizer, prefetch_batches=2, read_threads=2)
  restored.set_state(state)
  following = _take(restored, 5)
  # The skip counts first: a record skipped on one side only (one failure under a loaded full-suite run,
  # session 9, not reproduced in 40 trials alone) shows as a count here rather than as shifted ids.
  assert [b["data_stats"] for b in following] == [b["data_stats"] for b in expected], state
  assert [_key(b) for b in following] == [_key(b) for b in expected]


def test_two_hosts_get_disjoint_shards_covering_the_data(data_dir, tokenizer):
  ids = []
  for index in range(2):
    batches = _all_batches(_iterator(data_dir, tokenizer, shard=(index, 2), num_epochs=1,
                                     batch_size=2))  # one prompt per host per step
    ids.append([i for b in batches for i in b["example_id"]])
  assert not set(ids[0]) & set(ids[1])
  assert sorted(ids[0] + ids[1]) == sorted([f"text{i}" for i in range(6)]
                                           + [f"image{i}" for i in range(6)])
  with pytest.raises(ValueError, match="not divisible"):
    _iterator(data_dir, tokenizer, shard=(0, 2), batch_size=3)


def test_bad_records_are_skipped_counted_and_named(data_dir, tokenizer, caplog):
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    batches = _all_batches(_iterator(data_dir, tokenizer, num_epochs=1, batch_size=1))
  assert len(batches) == _NUM_GOOD
  assert batches[-1]["data_stats"] == {
      "examples": _NUM_GOOD, "skipped_missing_field": 1, "skipped_bad_record": 0,
      "skipped_bad_media": 2, "skipped_too_long": 0}
  logged = caplog.text
  assert "missing.png" in logged and "corrupt.png" in logged and "'answer'" in logged


def test_strict_raises_naming_the_file(data_dir, tokenizer):
  iterator = _iterator(data_dir, tokenizer, strict=True, num_epochs=1, shuffle=False)
  with pytest.raises(errors.BadExampleError, match="missing.png"):
    _all_batches(iterator)


def test_too_long_prompts_are_dropped_never_cut(data_dir, tokenizer):
  lengths = {}
  for batch in _all_batches(_iterator(data_dir, tokenizer, num_epochs=1, batch_size=1)):
    lengths[batch["example_id"][0]] = int(batch["prompt_lengths"][0])
  limit = int(np.median(list(lengths.values())))
  expected_kept = sorted(i for i, n in lengths.items() if n <= limit)
  assert 0 < len(expected_kept) < len(lengths)
  batches = _all_batches(_iterator(data_dir, tokenizer, num_epochs=1, batch_size=1,
                                   max_prompt_length=limit))
  assert sorted(b["example_id"][0] for b in batches) == expected_kept
  assert batches[-1]["data_stats"]["skipped_too_long"] == len(lengths) - len(expected_kept)
  image_pad = tokenizer.convert_tokens_to_ids(processing.IMAGE_PAD)
  for batch in batches:  # kept prompts are whole: every vision token is there
    assert int(batch["prompt_lengths"][0]) == lengths[batch["example_id"][0]]
    assert (batch["input_ids"] == image_pad).sum() == processing.num_vision_tokens(
        batch["image_grid_thw"])


def test_worker_processes_give_the_same_batches_and_resume(data_dir, tokenizer):
  in_process = [_key(b) for b in _take(_iterator(data_dir, tokenizer), 6)]
  iterator = _iterator(data_dir, tokenizer, num_workers=2)
  try:
    with_workers = [_key(b) for b in _take(iterator, 3)]
    state = json.loads(json.dumps(iterator.get_state()))
    with_workers += [_key(b) for b in _take(iterator, 3)]
  finally:
    iterator.close()
  assert with_workers == in_process
  restored = _iterator(data_dir, tokenizer, num_workers=2)
  try:
    restored.set_state(state)
    assert [_key(b) for b in _take(restored, 3)] == in_process[3:]
  finally:
    restored.close()


def test_sft_batches_are_right_padded_with_response_loss_mask(data_dir, tokenizer):
  config = _config(data_dir, max_seq_length=128, shuffle=False)
  batch = next(data_pipelines.make_sft_iterator(config, tokenizer, _VISION, shard_index=0,
                                                shard_count=1))
  ids, mask, loss = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
  for row in range(2):
    length = batch["sequence_lengths"][row]
    assert mask[row, :length].all() and not mask[row, length:].any()
    target = tokenizer.decode(ids[row][loss[row] == 1])
    assert target == batch["ground_truth"][row]["answer"] + "<|im_end|>"
    assert tokenizer.decode(ids[row][:length][loss[row][:length] == 0]).endswith(
        "<|im_start|>assistant\n")


def test_video_records_carry_grids_and_frame_times(tmp_path, tokenizer):
  media.write_counter_video(str(tmp_path / "clip.mp4"), 40, fps=10)
  with open(tmp_path / "v.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps({"problem": "<video>What number?", "answer": "7",
                        "videos": ["clip.mp4"]}) + "\n")
  config = data_pipelines.default_config(path=str(tmp_path / "v.jsonl"), batch_size=1,
                                         prefetch_batches=0, max_prompt_length=256)
  config.video.update(fps=2.0, min_pixels=28 * 28, max_pixels=56 * 56)
  batch = next(data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0,
                                                   shard_count=1))
  context = batch["reward_context"][0]
  np.testing.assert_allclose(context["video_timestamps"][0], np.arange(8) * 0.5, atol=1e-6)
  assert context["video_durations"] == [pytest.approx(4.0)]
  np.testing.assert_array_equal(batch["video_grid_thw"], [[4, 4, 4]])  # 8 frames of 56x56
  np.testing.assert_allclose(batch["second_per_grid_ts"], [1.0])
  assert batch["video_counts"].tolist() == [1] and batch["image_counts"].tolist() == [0]


def test_a_dataset_without_usable_records_raises(tmp_path, tokenizer):
  with open(tmp_path / "bad.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps({"problem": "no answer"}) + "\n")
  config = data_pipelines.default_config(path=str(tmp_path / "bad.jsonl"), batch_size=1,
                                         prefetch_batches=0)
  with pytest.raises(ValueError, match="in a row were skipped"):
    next(data_pipelines.make_prompt_iterator(config, tokenizer, shard_index=0, shard_count=1))


def test_buckets():
  assert batching.default_buckets(300) == (64, 128, 256, 300)
  assert batching.bucket_length(65, (64, 128)) == 128
  with pytest.raises(ValueError, match="max_prompt_length=512"):
    batching.check_buckets((64, 256), 512, "max_prompt_length")


def test_config_rejects_unknown_keys_and_registry_names():
  config = data_pipelines.default_config()
  config.num_veiws = 3
  with pytest.raises(ValueError, match="config.data.num_veiws"):
    data_pipelines.from_config(config)
  scene_config = data_pipelines.default_config(name="scene3d")
  scene_config.num_views = 3  # a key the scene3d dataset registered
  assert data_pipelines.from_config(scene_config).options["num_views"] == 3
  with pytest.raises(KeyError, match="unknown dataset"):
    data_pipelines.get_dataset("nope")

  @data_pipelines.register_dataset("test_only_dataset", options={"level": 1})
  def build(cfg):
    return data_pipelines.DatasetSpec(source=[cfg.options["level"]], to_example=None)

  assert data_pipelines.get_dataset("test_only_dataset") is build
  with pytest.raises(ValueError, match="registered twice"):
    data_pipelines.register_dataset("test_only_dataset")(lambda cfg: None)
