"""Embodied-R1 data: the released Parquet rows (fixtures in the released folder layout), bad rows, and the
synthetic tabletop task."""
import io
import json
import os

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest

import data_pipelines
from data_pipelines import errors, records, sources
from data_pipelines.tasks import embodied_r1, embodied_r1_dataset, embodied_r1_synthetic as synthetic
from experiments.configs import embodied_r1 as recipe
from r1jax import rewards
from r1jax.rewards import embodied_r1 as reward_module, geometry

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "embodied_r1")
LAYOUT = records.LayoutOptions(layout="easyr1")
FOLDERS = recipe.STAGE1_FILES + recipe.STAGE2_FILES


def _png(width=112, height=84, color=(150, 120, 90)) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.new("RGB", (width, height), color).save(buffer, format="PNG")
  return buffer.getvalue()


def _row(answer, images=None, problem="<image>Point at the red block."):
  return {"problem": problem, "answer": answer, "data_type": "image",
          "images": [{"bytes": _png(), "path": None}] if images is None else images}


def test_fixtures_are_the_released_folders_with_the_released_columns():
  for folder in FOLDERS:
    table = pq.read_table(os.path.join(FIXTURES, folder, "train.parquet"))
    assert table.column_names == list(embodied_r1_dataset.RELEASED_COLUMNS)
    images = table.schema.field("images").type
    assert images.value_type.names == ["bytes", "path"], folder
    assert all(reward_module.parse_answer(a) for a in table.column("answer").to_pylist()), folder
  for folder in recipe.STAGE1_EVAL + recipe.STAGE2_EVAL:
    assert os.path.isfile(os.path.join(FIXTURES, folder, "test.parquet"))


def test_reader_reads_every_released_task_type_and_the_reward_scores_a_perfect_answer():
  source = sources.file_source(",".join(os.path.join(FIXTURES, f, "train.parquet") for f in FOLDERS))
  reward = rewards.get("embodied_r1")
  seen = set()
  for index in range(len(source)):
    example = embodied_r1.to_example(source[index], layout=LAYOUT)
    assert example.messages[0]["content"][0] == {"type": "image"} and isinstance(example.images[0], bytes)
    assert "<point>[[x1, y1]" in example.messages[0]["content"][1]["text"] or \
        example.context["task_type"].endswith("qa")
    seen.add(example.context["task_type"])
    _, kind, payload = reward_module.parse_answer(example.ground_truth["answer"])
    if kind == "qa":
      answer = payload
    elif kind == "region":
      answer = "<point>" + json.dumps([list(np.mean(payload, axis=0))]) + "</point>"
    elif kind == "free_point":
      answer = "<point>" + json.dumps([list(p) for p in payload[1]]) + "</point>"
    else:
      answer = "<point>" + json.dumps([list(p) for p in payload]) + "</point>"
    result = reward(f"<think>look</think><answer>{answer}</answer>", example.ground_truth)
    assert result.total == pytest.approx(1.0), (example.where, result)
  assert seen == {"spatial_qa", "general_qa", "point_ref", "fsd_free_point", "fsd_visual_trace", "point_rec",
                  "grounding_rec"}


@pytest.mark.parametrize("row, reason, names", [
    (_row("<type>point_rec</type>{\"segmentation\": [[1, 1], [9, 1], [9, 9]]}", images=[]), errors.MISSING_FIELD,
     "field 'images'"),
    (_row("<type>point_rec</type>{\"segmentation\": [[1, 1], [9, 1], [9, 9]]}",
          images=[{"bytes": b"not an image", "path": None}]), errors.BAD_MEDIA, "images[0]"),
    (_row("<type>point_rec</type>[1, 2"), errors.BAD_RECORD, "field 'answer'"),
    (_row("<type>pointing</type>[[1, 2]]"), errors.BAD_RECORD, "field 'answer'"),
    (_row("<type>fsd_visual_trace</type>{\"trajectory\": [[10, 10], [200, 10]]}"), errors.BAD_RECORD,
     "outside the 112x84 image"),
    (_row("<type>fsd_free_point</type>{\"bbox\": [0, 0, 120, 20], \"free_points\": [[5, 5]]}"), errors.BAD_RECORD,
     "outside the 112x84 image"),
], ids=["no_image", "corrupt_image", "unparsable_truth", "unknown_type", "trace_outside", "box_outside"])
def test_bad_rows_raise_a_named_skip(tmp_path, row, reason, names):
  path = embodied_r1_dataset.write_rows(str(tmp_path / "bad.parquet"), [row])
  with pytest.raises(errors.BadExampleError) as info:
    embodied_r1.to_example(sources.file_source(path)[0], layout=LAYOUT)
  assert info.value.reason == reason and names in str(info.value) and "bad.parquet:record 1" in str(info.value)


def test_missing_image_file_is_bad_media_naming_the_file(tmp_path):
  path = embodied_r1_dataset.write_rows(str(tmp_path / "rows.parquet"), [
      _row("<type>spatial_qa</type>yes", images=[{"bytes": None, "path": "images/gone.png"}])])
  with pytest.raises(errors.BadExampleError, match="gone.png") as info:
    embodied_r1.to_example(sources.file_source(path)[0], layout=LAYOUT)
  assert info.value.reason == errors.BAD_MEDIA


def _iterate(config, tokenizer):
  iterator = data_pipelines.make_prompt_iterator(config, tokenizer)
  try:
    batches = list(iterator)
  finally:
    iterator.close()
  return batches


def test_pipeline_skips_counts_and_names_bad_rows_and_strict_mode_raises(tmp_path, tokenizer, caplog):
  good = _row("<type>point_rec</type>{\"segmentation\": [[10, 10], [40, 10], [40, 40]]}")
  rows = [good, _row("<type>point_rec</type>oops"), _row("<type>spatial_qa</type>no", images=[]),
          _row("<type>point_ref</type>[[500, 5]]"), good]
  path = embodied_r1_dataset.write_rows(str(tmp_path / "mixed.parquet"), rows)
  config = dict(data=data_pipelines.default_config(name="embodied_r1", path=path, batch_size=2, shuffle=False,
                                                   num_epochs=1, read_threads=1, max_prompt_length=512))
  with caplog.at_level("WARNING", logger="data_pipelines"):
    batches = _iterate(config, tokenizer)
  assert sum(len(b["example_id"]) for b in batches) == 2
  stats = batches[-1]["data_stats"]
  assert (stats["skipped_bad_record"], stats["skipped_missing_field"]) == (2, 1)
  assert all(f"mixed.parquet:record {n}" in caplog.text for n in (2, 3, 4))
  assert batches[0]["reward_context"][0]["task_type"] == "point_rec"
  config["data"].strict = True
  with pytest.raises(errors.BadExampleError, match=r"mixed.parquet:record 2: field 'answer'"):
    _iterate(config, tokenizer)


def test_predicted_points_outside_the_image_are_misses_not_clipped():
  reward = rewards.get("embodied_r1")
  truth = {"answer": "<type>point_rec</type>{\"segmentation\": [[0, 0], [20, 0], [20, 20], [0, 20]]}"}
  inside = reward("<think>a</think><answer><point>[[10, 10]]</point></answer>", truth)
  outside = reward("<think>a</think><answer><point>[[-5, 10], [10, 10]]</point></answer>", truth)
  assert inside.components["in_region"] == 1.0 and outside.components["in_region"] == 0.5


# --- The synthetic task. ----------------------------------------------------------------------------------


def _scene_pixels(record):
  return np.asarray(PIL.Image.open(io.BytesIO(record["images"][0]["bytes"])).convert("RGB"))


@pytest.mark.parametrize("task_type", synthetic.TASK_TYPES)
def test_synthetic_ground_truth_matches_the_rendered_scene(task_type):
  task = synthetic.TabletopTask()
  rng = np.random.default_rng(7)
  for _ in range(10):
    record = synthetic.generate_record(rng, task, task_type)
    pixels = _scene_pixels(record)
    type_name, kind, payload = reward_module.parse_answer(record["answer"])
    assert type_name == task_type and record["problem"].startswith("<image>")
    colors = [c for c in task.colors if f"the {c} object" in record["problem"]]
    if kind == "region":  # the polygon's centroid shows the named colour
      x, y = np.mean(payload, axis=0)
      assert tuple(pixels[int(y), int(x)]) == synthetic.COLORS[colors[0]]
    elif kind == "free_point":  # the box is an empty cell of the table, next to the named object
      x1, y1, x2, y2 = (int(v) for v in payload[0])
      tile = synthetic.tile_color((y1 // 28, x1 // 28), task.grid_size)
      assert (pixels[y1:y2, x1:x2] == tile).all()
      assert all(geometry.point_in_box(p, payload[0]) for p in payload[1]) and len(payload[1]) == 8
    elif kind == "visual_trace":  # 8 points from the first named object to the second
      assert len(payload) == 8
      order = sorted(colors, key=record["problem"].index)
      for end, color in ((payload[0], order[0]), (payload[-1], order[1])):
        assert tuple(pixels[int(end[1]), int(end[0])]) == synthetic.COLORS[color]
    else:
      assert payload in ("yes", "no")


def test_synthetic_teacher_is_right_without_confusion_and_mixes_up_colours_at_the_set_rate():
  reward = rewards.get("embodied_r1")
  rng = np.random.default_rng(0)
  exact = synthetic.TabletopTask()
  for task_type in synthetic.TASK_TYPES:
    for _ in range(10):
      record = synthetic.generate_record(rng, exact, task_type)
      result = reward(record["response"], {"answer": record["answer"]})
      assert result.components["format"] == 1.0
      assert result.components.get("in_region", 1.0) == 1.0 and result.components["accuracy"] > 0.85, record
  confused = synthetic.TabletopTask(teacher_confusion=0.65, task_types=("point_rec",))
  asked_confused, wrong = 0, 0
  for _ in range(400):
    record = synthetic.generate_record(rng, confused)
    if "blue" in record["problem"] or "yellow" in record["problem"]:
      asked_confused += 1
      wrong += reward(record["response"], {"answer": record["answer"]}).components["in_region"] == 0.0
    else:  # red and green are never mixed up
      assert reward(record["response"], {"answer": record["answer"]}).components["in_region"] == 1.0
  assert 0.55 < wrong / asked_confused < 0.75


def test_synthetic_scenes_with_min_objects_vary_in_size_and_ask_only_about_objects_they_hold():
  task = synthetic.TabletopTask(min_objects=1, teacher_confusion=1.0)
  rng = np.random.default_rng(3)
  sizes, kinds = set(), []
  for _ in range(200):
    scene = synthetic.sample_scene(rng, task)
    sizes.add(len(scene.objects))
    assert len(set(scene.colors)) == len(scene.colors) and len(scene.occupied()) == len(scene.objects)
  assert sizes == {1, 2, 3, 4}
  reward = rewards.get("embodied_r1")
  for _ in range(200):
    record = synthetic.generate_record(rng, task)
    kinds.append(reward_module.parse_answer(record["answer"])[0])
    named = [c for c in task.colors if f"the {c} object" in record["problem"]]
    pixels = _scene_pixels(record)
    assert all((pixels == synthetic.COLORS[c]).all(axis=-1).any() for c in named), record["problem"]
    if kinds[-1] == "point_rec" and named[0] in ("blue", "yellow"):
      # teacher_confusion 1: the teacher takes the other colour's object when the scene shows it, else the named one.
      other = dict(task.teacher_confusions)[named[0]]
      shown = (pixels == synthetic.COLORS[other]).all(axis=-1).any()
      hit = reward(record["response"], {"answer": record["answer"]}).components["in_region"]
      assert hit == (0.0 if shown else 1.0), record
  # Task types stay uniform although one-object scenes hold no trace or QA (the scene is redrawn, not the type).
  assert min(kinds.count(t) for t in synthetic.TASK_TYPES) > 30
  with pytest.raises(ValueError, match="min_objects"):
    synthetic.TabletopTask(min_objects=5)


def test_synthetic_instruction_first_puts_the_image_tag_last_and_the_reader_keeps_that_order():
  task = synthetic.TabletopTask(instruction_first=True, prompt_style="short", task_types=("point_rec",))
  record = synthetic.generate_record(np.random.default_rng(0), task)
  assert record["problem"].endswith("<image>") and record["problem"].startswith("Point at the ")
  example = embodied_r1.to_example(sources.RawRecord(record, where="r", base_dir=""), layout=LAYOUT)
  assert [item["type"] for item in example.messages[0]["content"]] == ["text", "image"]


def test_synthetic_splits_are_seeded_and_the_held_out_split_ignores_the_seed():
  task = synthetic.TabletopTask(task_types=("point_rec",))
  train0 = embodied_r1_dataset.TabletopSource("train", task=task, seed=0)
  train1 = embodied_r1_dataset.TabletopSource("train", task=task, seed=1)
  assert train0[3].fields["answer"] == embodied_r1_dataset.TabletopSource("train", task=task, seed=0)[3].fields[
      "answer"]
  assert train0[3].fields["answer"] != train1[3].fields["answer"]
  tests = [embodied_r1_dataset.TabletopSource("test", task=task, seed=s, test_size=5) for s in (0, 1)]
  assert [tests[0][i].fields["answer"] for i in range(5)] == [tests[1][i].fields["answer"] for i in range(5)]
  with pytest.raises(IndexError):
    tests[0][5]
  with pytest.raises(ValueError, match="task_types"):
    synthetic.TabletopTask(task_types=("pointing",))
  with pytest.raises(ValueError, match="config.data.split"):
    embodied_r1_dataset.TabletopSource("valid")


def test_reward_reports_the_paper_s_pixel_metrics_and_the_diagonal_for_an_unparsed_answer():
  reward = rewards.get("embodied_r1")
  trace = [[10 * i, 0] for i in range(8)]
  truth = {"answer": "<type>fsd_visual_trace</type>" + json.dumps({"trajectory": trace})}
  shifted = json.dumps([[x, y + 3] for x, y in trace])
  result = reward(f"<think>t</think><answer><point>{shifted}</point></answer>", truth,
                  original_image_sizes=[(30, 40)])
  assert result.components["rmse_px"] == pytest.approx(3.0) and result.components["frechet_px"] == pytest.approx(3.0)
  unparsed = reward("<think>t</think><answer>no points</answer>", truth, original_image_sizes=[(30, 40)])
  assert unparsed.components["rmse_px"] == unparsed.components["frechet_px"] == pytest.approx(50.0)
  assert "rmse_px" not in reward("<answer>none</answer>", truth).components  # no size known: left out
  free = {"answer": "<type>fsd_free_point</type>" + json.dumps({"bbox": [0, 0, 10, 10], "free_points": [[2, 2], [8, 8]]})}
  result = reward("<think>f</think><answer><point>[[2, 6], [20, 8]]</point></answer>", free)
  assert result.components["in_region"] == 0.5 and result.components["nearest_px"] == pytest.approx((4 + 12) / 2)
