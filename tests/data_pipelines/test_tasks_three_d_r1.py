"""3D-R1 records (data_pipelines/tasks/three_d_r1.py): ScanQA / ScanRefer / Scene-30K fixtures over
point clouds in ScanRefer's preprocessed arrays and ScanNet PLYs; bad records skipped, counted, named."""
import io
import json
import os

import numpy as np
import PIL.Image
import pytest

from data_pipelines import errors
from data_pipelines.sources import file_source
from data_pipelines.tasks import three_d_r1, three_d_r1_synthetic

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "three_d_r1")
SCENES = os.path.join(FIXTURES, "scenes")


def _records(name):
  source = file_source(os.path.join(FIXTURES, name))
  return [source[i] for i in range(len(source))]


def _example(raw, mode="fixed", **kwargs):
  return three_d_r1.to_example(raw, scene_dir=SCENES, selector=three_d_r1.ViewSelector(mode=mode), **kwargs)


def test_scanqa_records_render_views_and_look_boxes_up_by_object_id():
  records = _records("ScanQA_v1.0_val.json")
  first = _example(records[0])
  assert first.id == "val-scene0000-0" and first.data_type == "multi_image" and first.response is None
  assert first.ground_truth["answer"] == ["brown cabinet"]
  np.testing.assert_allclose(first.ground_truth["boxes"], [[0.2, 3.0, 0.0, 1.0, 3.8, 1.0]], atol=1e-6)
  assert first.ground_truth["view_names"] == ["top", "front", "side", "orbit0"]
  image = np.asarray(PIL.Image.open(io.BytesIO(first.images[0])))
  assert image.shape == (56, 56, 3) and image.any()
  assert [m["role"] for m in first.messages] == ["system", "user"]
  assert first.messages[1]["content"][-1]["text"] == "What is in the corner by the window?"
  # The second scene is a ScanNet binary PLY with its _bbox.npy; several answers are kept.
  second = _example(records[1])
  assert second.ground_truth["answer"] == ["blue chair", "chair"] and len(second.images) == 4
  with pytest.raises(errors.BadExampleError, match="degenerate point cloud") as info:
    _example(records[2])
  assert info.value.reason == errors.BAD_MEDIA and "scene0002_00" in str(info.value) and "record 3" in str(info.value)
  with pytest.raises(errors.BadExampleError, match="'answers': missing or empty") as info:
    _example(records[3])
  assert info.value.reason == errors.MISSING_FIELD and "record 4" in info.value.where
  with pytest.raises(errors.BadExampleError, match="object 42 is not among the 2 boxes") as info:
    _example(records[4])
  assert info.value.reason == errors.BAD_RECORD


def test_scanrefer_record_asks_which_object_is_described():
  (raw,) = _records("ScanRefer_filtered_val.json")
  example = _example(raw)
  assert example.messages[1]["content"][-1]["text"] == "this is a blue chair. it is next to the cabinet."
  assert example.ground_truth["answer"] == ["office chair"]
  np.testing.assert_allclose(example.ground_truth["boxes"], [[2.5, 1.0, 0.0, 3.0, 1.5, 0.8]], atol=1e-6)


def test_scene30k_cot_is_the_sft_target_and_a_cot_without_tags_is_refused():
  good, bad = _records("Scene30K_cot.json")
  assert _example(good).response.startswith("<think>The cabinet stands")
  with pytest.raises(errors.BadExampleError, match="'cot'"):
    _example(bad)


@pytest.mark.parametrize("boxes, message", [
    ([[1, 0, 0, 0, 1, 1]], "x2 < x1"),
    ([[0, 0, 0, 1, 1]], "not 6 finite numbers"),
    ([[0, 0, 0, 1, 1, float("nan")]], "not 6 finite numbers"),
])
def test_invalid_inline_boxes_are_bad_records(boxes, message):
  raw = _records("ScanQA_v1.0_val.json")[0]
  raw = type(raw)(dict(raw.fields, boxes=boxes), raw.where, raw.base_dir, None)
  with pytest.raises(errors.BadExampleError, match=message) as info:
    _example(raw)
  assert info.value.reason == errors.BAD_RECORD


def test_learned_selection_uses_the_embedding_model_and_is_deterministic(tmp_path):
  out = three_d_r1_synthetic.write_split(str(tmp_path), "test", 3, test_size=3)
  source = file_source(out["path"])

  class LabelEmbedder:  # "ball" and "box" directions: a view showing the ball is relevant to the question
    calls = 0

    def embed(self, texts):
      LabelEmbedder.calls += 1
      return np.array([[t.count("ball") + 0.1, t.count("box") + 0.1] for t in texts], np.float64)

  selector = three_d_r1.ViewSelector(mode="learned", embed=LabelEmbedder().embed, weights=(1.0, 0.0, 1.0))
  views = [three_d_r1.to_example(source[i], scene_dir=out["scene_dir"], selector=selector).ground_truth["view_names"]
           for i in range(3)]
  again = [three_d_r1.to_example(source[i], scene_dir=out["scene_dir"], selector=selector).ground_truth["view_names"]
           for i in range(3)]
  assert views == again and all(len(v) == 4 for v in views)
  rendered = three_d_r1.render_scene(os.path.join(out["scene_dir"], "synth_test_00000.npy"), 56, 5)
  s_text, s_cov, s_img = selector.scores(rendered, three_d_r1_synthetic.QUESTION,
                                         three_d_r1_synthetic.scene_objects(out["items"][0]))
  assert s_text.shape == s_cov.shape == s_img.shape == (8,) and np.ptp(s_cov) > 0
  calls = LabelEmbedder.calls
  selector.scores(rendered, three_d_r1_synthetic.QUESTION, three_d_r1_synthetic.scene_objects(out["items"][0]))
  assert LabelEmbedder.calls == calls  # descriptions already embedded are cached


def test_synthetic_rooms_write_scanqa_records_with_scene30k_cot(tmp_path):
  out = three_d_r1_synthetic.write_split(str(tmp_path), "train", 8, test_size=4, teacher_error=0.5)
  with open(out["path"]) as f:
    records = json.load(f)
  assert {r["teacher"] for r in records} == {"right", "neighbour"}
  for record, item in zip(records, out["items"]):
    assert record["answers"] == [item.name(item.ball)] and record["boxes"] == [item.box(item.ball)]
    assert record["cot"].startswith("<think>") and "box: [" in record["cot"]
  test_layouts = {i.layout for i in three_d_r1_synthetic.split_items("test", 4)}
  assert not test_layouts & {i.layout for i in out["items"]}
  assert three_d_r1_synthetic.write_split(str(tmp_path), "train", 8, test_size=4)["seconds"] == 0.0  # reused


def test_bad_records_and_degenerate_clouds_are_skipped_and_counted_by_the_pipeline(tmp_path):
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from r1jax import tokenization  # pylint: disable=g-import-not-at-top
  tokenizer = tokenization.load_tokenizer(tokenization.build_tokenizer(
      str(tmp_path / "tok"), three_d_r1_synthetic.text_corpus(num_items=16), vocab_size=600))
  config = data_pipelines.default_config(name="three_d_r1", path=os.path.join(FIXTURES, "ScanQA_v1.0_val.json"),
                                         batch_size=1, num_epochs=2, shuffle=False, read_threads=1,
                                         prefetch_batches=0, max_prompt_length=512)
  config.update(dict(scene_dir=SCENES, view_selection="fixed"))
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer, shard_index=0, shard_count=1)
  try:
    batches = list(iterator)
  finally:
    iterator.close()
  assert len(batches) == 4  # the two good records of five, two epochs; the last batch follows epoch 1's skips
  assert batches[-1]["data_stats"] == {"examples": 4, "skipped_missing_field": 1, "skipped_bad_record": 1,
                                       "skipped_bad_media": 1, "skipped_too_long": 0}
