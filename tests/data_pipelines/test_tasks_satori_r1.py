"""SATORI-R1 data: the VQA-Verify reader, its bad-record handling, the synthetic ring task.

Fixture (tests/data_pipelines/fixtures/satori_r1/records.jsonl) in VQA-Verify's ms-swift layout:
record 1 a 320 x 240 JPEG (kite; one box, two accepted answers, an assistant turn), record 2 a
200 x 150 PNG (cups; its own system turn, no assistant turn, `possible_answers` a string, a box
overhanging the right border), then one record per kind of bad input: 3 a missing image, 4 a
corrupt image, 5 a box of 3 numbers, 6 a box wholly outside the image, 7 no `possible_answers`,
8 `width`/`height` that are not the image's.
"""
import collections
import json
import logging
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors, registry
from data_pipelines.tasks import satori_r1, satori_r1_synthetic as synthetic
from r1jax import processing
from r1jax.rewards import satori as reward

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "satori_r1")
RECORDS = os.path.join(FIXTURES, "records.jsonl")
SMALL = synthetic.SatoriTask()
_VISION = processing.VisionProcessorConfig()


def _example(index, path=RECORDS, **options):
  _, spec = registry.build(data_pipelines.default_config(name="satori_r1", path=path, **options))
  return spec.to_example(spec.source[index])


def test_reads_the_released_layout():
  kite = _example(0)
  assert kite.messages[0] == {"role": "system", "content": satori_r1.SYSTEM_PROMPT}
  assert kite.messages[1]["content"] == [{"type": "image"}, {"type": "text", "text": "What is the man flying?"}]
  assert kite.images == [os.path.join(FIXTURES, "images", "kite.jpg")]
  assert kite.response.startswith("<caption>") and kite.response.endswith("<answer>kite</answer>")
  truth = kite.ground_truth
  assert truth["possible_answers"] == ["kite", "a kite"] and truth["answer"] == "kite"
  assert (truth["width"], truth["height"], truth["bboxs"]) == (320, 240, [[200.0, 30.0, 260.0, 90.0]])
  assert truth["image_caption"].startswith("A man on a beach")

  cups = _example(1, prompt_style="short")
  assert cups.messages[0] == {"role": "system", "content": "You are a careful annotator."}  # the record's own
  assert cups.response is None and cups.ground_truth["possible_answers"] == ["2"]
  # The second box overhangs the right border (x2 = 215 > 200): clipped to the image.
  assert cups.ground_truth["bboxs"] == [[20.0, 60.0, 60.0, 100.0], [170.0, 55.0, 200.0, 100.0]]


def test_image_dir_resolves_relative_paths(tmp_path):
  path = tmp_path / "train.jsonl"
  with open(RECORDS) as f:
    path.write_text(f.readline())
  with pytest.raises(errors.BadExampleError, match="does not exist"):
    _example(0, path=str(path))  # images/kite.jpg is not next to this copy
  assert _example(0, path=str(path), image_dir=FIXTURES).images == [os.path.join(FIXTURES, "images", "kite.jpg")]


@pytest.mark.parametrize("index, reason, named", [
    (2, errors.BAD_MEDIA, "missing.jpg does not exist"),
    (3, errors.BAD_MEDIA, "corrupt.jpg"),
    (4, errors.BAD_RECORD, "'bboxs': box [200, 30, 260] is not 4 numbers"),
    (5, errors.BAD_RECORD, "'bboxs': box [-40, 10, -5, 50] has no area inside the 200x150 image"),
    (6, errors.MISSING_FIELD, "'possible_answers': missing"),
    (7, errors.BAD_RECORD, "'width/height': the record says 640x480 but the image is 320x240"),
])
def test_bad_records_raise_naming_record_and_field(index, reason, named):
  with pytest.raises(errors.BadExampleError) as info:
    _example(index)
  assert info.value.reason == reason
  assert info.value.where == f"{RECORDS}:line {index + 1}" and named in str(info.value)


def test_bad_records_are_skipped_counted_and_named_by_the_pipeline(tokenizer, caplog):
  config = data_pipelines.default_config(name="satori_r1", path=RECORDS, batch_size=1, num_epochs=2, shuffle=False,
                                         read_threads=1, prefetch_batches=0, max_prompt_length=4096)
  config.image.min_pixels, config.image.max_pixels = satori_r1.MIN_PIXELS, satori_r1.MAX_PIXELS
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    iterator = data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0, shard_count=1)
    batches = list(iterator)
    iterator.close()
  assert len(batches) == 4  # 2 good records x 2 epochs; the last batch follows epoch 1's skips
  assert batches[-1]["data_stats"] == {"examples": 4, "skipped_missing_field": 1, "skipped_bad_record": 3,
                                       "skipped_bad_media": 2, "skipped_too_long": 0}
  assert "missing.jpg" in caplog.text and "corrupt.jpg" in caplog.text and f"{RECORDS}:line 5" in caplog.text
  # SATORI's resize: 320 x 240 is scaled up into [200,704, 401,408] pixels, in multiples of 28.
  context = batches[0]["reward_context"][0]
  assert context["original_image_sizes"] == [(240, 320)] and context["resized_image_sizes"] == [(392, 532)]
  # A prediction in resized-input pixels is scaled back to the original before the IoU.
  sx, sy = 532 / 320, 392 / 240
  box = [round(200 * sx), round(30 * sy), round(260 * sx), round(90 * sy)]
  completion = f"<caption>A man flies a red kite.</caption><bbox>[{box}]</bbox><answer>a kite</answer>"
  result = reward.satori_reward(completion, batches[0]["ground_truth"][0], **context)
  assert result.components["format"] == 1 and result.components["vqa"] == 1
  assert result.components["bbox"] == pytest.approx(1.0, abs=0.02)
  original = reward.satori_reward(completion.replace(str(box), "[200, 30, 260, 90]"), batches[0]["ground_truth"][0],
                                  **context)
  assert original.components["bbox"] < 0.5  # the original-pixel box is not what the model sees


def test_strict_mode_raises_naming_the_file_and_field(tokenizer):
  config = data_pipelines.default_config(name="satori_r1", path=RECORDS, batch_size=1, num_epochs=1, shuffle=False,
                                         read_threads=1, prefetch_batches=0, strict=True, max_prompt_length=4096)
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0, shard_count=1)
  with pytest.raises(errors.BadExampleError, match=r"records.jsonl:line 3: field 'images': image file .*missing.jpg"):
    list(iterator)
  iterator.close()


def test_options_are_validated():
  with pytest.raises(ValueError, match="config.data.path"):
    registry.build(data_pipelines.default_config(name="satori_r1"))
  with pytest.raises(ValueError, match="config.data.prompt_style"):
    registry.build(data_pipelines.default_config(name="satori_r1", path=RECORDS, prompt_style="long"))
  with pytest.raises(ValueError, match="synthetic_dir"):
    registry.build(data_pipelines.default_config(name="satori_r1", synthetic="train", synthetic_items=4))
  with pytest.raises(ValueError, match="num_colors"):
    synthetic.SatoriTask(num_objects=4, num_colors=3)


def _ring_center(pixels):
  ring = np.all(pixels == synthetic.RING, axis=-1)
  ys, xs = np.nonzero(ring)
  return (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2


def test_rendered_scene_answers_only_from_the_ringed_region():
  rng = np.random.default_rng(0)
  for _ in range(20):
    item = synthetic.sample_item(rng, SMALL)
    pixels = synthetic.render(item, SMALL)
    assert pixels.shape == (84, 84, 3)
    x1, y1, x2, y2 = synthetic.ring_box(item, item.ringed, SMALL)
    assert 0 <= x1 < x2 <= 84 and 0 <= y1 < y2 <= 84
    assert _ring_center(pixels) == pytest.approx(item.shapes[item.ringed].center, abs=0.5)
    # Inside the box: the answer's colour, and no other shape's.
    inside = pixels[y1:y2, x1:x2].reshape(-1, 3)
    colors = {name for name, rgb in synthetic.COLORS.items() if np.all(inside == rgb, axis=-1).any()}
    assert colors == {item.answer}
    assert len({s.color for s in item.shapes}) == SMALL.num_objects  # every distractor has another colour
    # The caption names every shape, in palette order of the colours, and not which one is ringed.
    named = synthetic.caption(item)[:-len(" and a ring")].split(", ")
    assert sorted(named) == sorted(f"{s.color} {s.shape}" for s in item.shapes)
    assert [list(synthetic.COLORS).index(n.split()[0]) for n in named] == sorted(
        list(synthetic.COLORS).index(s.color) for s in item.shapes)


def test_teacher_grounds_the_neighbour_at_the_configured_rate(tmp_path):
  out = synthetic.write_split(str(tmp_path), "train", 120, test_size=50, teacher_error=0.5)
  with open(out["path"]) as f:
    rows = [json.loads(line) for line in f]
  teachers = collections.Counter(row["teacher"] for row in rows)
  assert 40 <= teachers["neighbour"] <= 80 and teachers["right"] + teachers["neighbour"] == 120
  for row, item in zip(rows, out["items"]):
    truth = {k: row[k] for k in ("bboxs", "possible_answers", "image_caption", "width", "height")}
    scores = reward.satori_reward(row["messages"][-1]["content"], truth, resized_image_sizes=[(84, 84)]).components
    assert scores["format"] == 1 and scores["caption"] == pytest.approx(1.0)
    if row["teacher"] == "right":
      assert scores["vqa"] == 1 and scores["bbox"] == 1
    else:  # the neighbour's box and colour: both wrong, and consistent with each other
      assert scores["vqa"] == 0 and scores["bbox"] < 0.05  # jittered rings of adjacent cells may touch
      assert f"<answer>{item.shapes[item.neighbour].color}</answer>" in row["messages"][-1]["content"]
  # Reused when the arguments match; the images are where the records say.
  assert synthetic.write_split(str(tmp_path), "train", 120, test_size=50, teacher_error=0.5)["seconds"] == 0.0
  assert os.path.isfile(tmp_path / rows[0]["images"][0])


def test_splits_are_deterministic_and_held_out_scenes_never_trained():
  test = synthetic.split_items("test", 30)
  assert test == synthetic.split_items("test", 30)
  train = synthetic.split_items("train", 300, seed=1, test_size=30)
  assert train == synthetic.split_items("train", 300, seed=1, test_size=30)
  assert train != synthetic.split_items("train", 300, seed=2, test_size=30)
  assert not {t.layout for t in test} & {t.layout for t in train}


def test_synthetic_split_reads_back_through_the_reader(tmp_path):
  config = data_pipelines.default_config(name="satori_r1", synthetic="test", synthetic_items=5,
                                         synthetic_dir=str(tmp_path), prompt_style="short")
  _, spec = registry.build(config)
  example = spec.to_example(spec.source[4])
  assert example.messages[0]["content"] == satori_r1.SHORT_SYSTEM_PROMPT and example.response is None
  assert example.ground_truth["possible_answers"] == [synthetic.split_items("test", 5)[4].answer]
  assert example.images == [str(tmp_path / "images" / "test_00004.png")]


def test_text_corpus_covers_prompts_and_responses():
  corpus = " ".join(synthetic.text_corpus(num_items=16))
  for text in (satori_r1.SYSTEM_PROMPT, satori_r1.SHORT_SYSTEM_PROMPT, synthetic.QUESTION, "<bbox>[[", "</caption>"):
    assert text in corpus


def test_parquet_rows_with_embedded_image_bytes(tmp_path):
  """HF `datasets` exports store images as {'bytes', 'path'} structs in Parquet; they read the same."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  with open(RECORDS) as f:
    row = json.loads(f.readline())
  with open(os.path.join(FIXTURES, "images", "kite.jpg"), "rb") as f:
    row["images"] = [{"bytes": f.read(), "path": "kite.jpg"}]
  pq.write_table(pa.Table.from_pylist([row]), tmp_path / "train.parquet")
  example = _example(0, path=str(tmp_path / "train.parquet"))
  assert isinstance(example.images[0], bytes) and example.ground_truth["bboxs"] == [[200.0, 30.0, 260.0, 90.0]]
  assert example.ground_truth["possible_answers"] == ["kite", "a kite"]
