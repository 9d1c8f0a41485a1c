"""Synthetic STAR-R1 TVR task: answers read back from pixels, views, splits, the grain dataset."""
import collections
import dataclasses
import io
import json
import os

import numpy as np
import PIL.Image
import pytest
import scipy.ndimage

import data_pipelines
from data_pipelines import registry
from data_pipelines.tasks import tvr, tvr_dataset
from r1jax import processing, tokenization
from r1jax.rewards import star_r1

_TASK = tvr.TvrTask()
# Harder settings: moves, more colours, three changes, small extra turns of the camera.
_RICH_TASK = tvr.TvrTask(attributes=("color", "shape", "size", "position"), num_colors=6,
                         max_objects=4, change_counts=(0.4, 0.3, 0.3), max_jitter_deg=8.0)
_VISION = processing.VisionProcessorConfig()


def _pixels(png: bytes) -> np.ndarray:
  with PIL.Image.open(io.BytesIO(png)) as image:
    return np.asarray(image.convert("RGB"))


def _code(rgb) -> np.ndarray:
  """One int per colour: [..., 3] -> [...]."""
  rgb = np.asarray(rgb, np.int64)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _centroid(mask: np.ndarray) -> np.ndarray:
  ys, xs = np.nonzero(mask)
  return np.array([xs.mean(), ys.mean()]) + 0.5  # pixel centres, (x, y)


def _read_scene(pixels: np.ndarray, task: tvr.TvrTask):
  """Reads the camera and the objects back from an image, using only the drawing conventions.

  Returns:
    ({slot: (color, shape, size)} in canonical cells, A [2, 2] world->image axes, floor centre).
  """
  codes = _code(pixels)
  palette = {int(_code(rgb)): name for name, rgb in tvr.COLORS.items()}
  objects_mask = np.isin(codes, list(palette))
  center = _centroid((codes == _code(tvr.FLOOR)) | objects_mask)
  front = _centroid(codes == _code(tvr.FRONT_EDGE)) - center  # world +row direction
  left = _centroid(codes == _code(tvr.LEFT_EDGE)) - center  # world -column direction
  axes = np.stack([-left / np.linalg.norm(left), front / np.linalg.norm(front)], 1)
  size_threshold = np.mean(list(tvr.SIZE_RADII.values())) * task.cell
  labels, count = scipy.ndimage.label(objects_mask, structure=np.ones((3, 3)))
  scene = {}
  for label in range(1, count + 1):
    ys, xs = np.nonzero(labels == label)
    (color,) = {palette[int(c)] for c in codes[ys, xs]}
    points = np.stack([xs, ys], 1) + 0.5
    middle = points.mean(0)
    size = "small" if np.linalg.norm(points - middle, axis=1).max() < size_threshold else "large"
    r = tvr.SIZE_RADII[size] * task.cell  # the circumradius: areas of the shapes differ by >= 1.5x
    areas = {"circle": np.pi * r ** 2, "square": 2 * r ** 2, "triangle": 3 ** 1.5 / 4 * r ** 2}
    shape = min(areas, key=lambda s: abs(np.log(len(points) / areas[s])))
    col, row = task.grid_size / 2 + np.linalg.solve(axes, middle - center) / task.cell
    slot = int(row) * task.grid_size + int(col)
    assert slot not in scene
    scene[slot] = (color, shape, size)
  return scene, axes, center


def _answer_from_pixels(record, task):
  """The set of triplets that explains the two images, objects numbered in reading order."""
  before, _, _ = _read_scene(_pixels(record["images"][0]), task)
  after, _, _ = _read_scene(_pixels(record["images"][1]), task)
  index = {slot: i + 1 for i, slot in enumerate(sorted(before))}
  found = set()
  for slot in set(before) & set(after):
    for attribute, old, new in zip(("color", "shape", "size"), before[slot], after[slot]):
      if old != new:
        found.add(f"{index[slot]}.{attribute}.{new}")
  arrived = set(after) - set(before)
  for slot in set(before) - set(after):
    (target,) = [t for t in arrived if after[t] == before[slot]]
    found.add(f"{index[slot]}.position.{tvr.slot_name(target, task.grid_size)}")
  return found


@pytest.mark.parametrize("task", [_TASK, _RICH_TASK], ids=["default", "rich"])
def test_answer_is_what_the_rendering_changed(task):
  rng = np.random.default_rng(7)
  attributes_seen = collections.Counter()
  for i in range(40):
    record = tvr.generate_example(rng, cross_view=bool(i % 2), task=task)
    assert _answer_from_pixels(record, task) == set(record["answer"]), record["answer"]
    attributes_seen.update(t.split(".")[1] for t in record["answer"])
    # The initial image is canonical; so is an in-view final image.
    for image in record["images"][:1 + (not record["cross_view"])]:
      _, axes, center = _read_scene(_pixels(image), task)
      np.testing.assert_allclose(axes, np.eye(2), atol=1e-6)
      np.testing.assert_allclose(center, [task.image_size / 2] * 2, atol=1e-6)
  assert set(attributes_seen) == set(task.attributes)


def test_cross_view_pairs_differ_in_viewpoint_and_answer_is_invariant():
  rng = np.random.default_rng(3)
  transformation = tvr.sample_transformation(rng, _TASK, cross_view=False)
  finals, expected = set(), set(transformation.answer)
  for name, (turns, mirror) in tvr.VIEWS.items():
    for shift in [(0, 0), (3, -2)]:
      camera = tvr.Camera(turns, mirror, shift=shift)
      record = tvr.example_record(dataclasses.replace(transformation, camera=camera), _TASK)
      assert record["view"] == name and set(record["answer"]) == expected
      assert _answer_from_pixels(record, _TASK) == expected, name
      final = _pixels(record["images"][1])
      _, axes, center = _read_scene(final, _TASK)
      np.testing.assert_allclose(axes, camera.linear(), atol=1e-6)  # the stripes show the view
      np.testing.assert_allclose(center - _TASK.image_size / 2, shift, atol=1e-6)
      # The view is exactly the in-view final image mirrored, turned clockwise and shifted.
      in_view = _pixels(tvr.example_record(transformation, _TASK)["images"][1])
      in_view = np.rot90(in_view[:, ::-1] if mirror else in_view, k=-turns)
      np.testing.assert_array_equal(final, np.roll(in_view, shift[::-1], axis=(0, 1)))
      finals.add(record["images"][1])
  assert len(finals) == 2 * len(tvr.VIEWS)
  # Generated cross-view pairs always change the camera (in-view ones never do, tested above).
  for i in range(20):
    record = tvr.generate_example(i, cross_view=True)
    _, axes, center = _read_scene(_pixels(record["images"][1]), _TASK)
    moved = not np.allclose(axes, np.eye(2)) or not np.allclose(center, _TASK.image_size / 2)
    assert moved and record["view"] in _TASK.views and "<think>view " in record["response"]


def test_generation_is_seeded_and_statistics_follow_the_task():
  assert tvr.generate_example(5, cross_view=True) == tvr.generate_example(5, cross_view=True)
  assert tvr.generate_example(5, cross_view=True) != tvr.generate_example(6, cross_view=True)
  rng = np.random.default_rng(0)
  counts = collections.Counter()
  new_values = collections.defaultdict(set)
  for _ in range(600):
    t = tvr.sample_transformation(rng, _TASK, cross_view=False)
    counts[len(t.changes)] += 1
    slots = [o.slot for o in t.initial]
    assert slots == sorted(slots) and 2 <= len(slots) <= 3
    assert len({index for index, _, _ in t.changes}) == len(t.changes)  # one per object
    for index, attribute, value in t.changes:
      assert t.initial[index - 1].value(attribute, _TASK.grid_size) != value
      new_values[attribute].add(value)
  assert counts[1] / 600 == pytest.approx(0.8, abs=0.06) and set(counts) == {1, 2}
  assert {a: set(_TASK.values(a)) for a in _TASK.attributes} == dict(new_values)


def test_sft_target_earns_the_full_star_r1_reward():
  record = tvr.generate_example(np.random.default_rng(11), cross_view=True)
  result = star_r1.star_r1_reward(record["response"], {"answer": record["answer"]})
  assert result.components["exact_set"] == 1.0
  assert result.total == 1 + 5 * len(record["answer"])
  assert record["problem"].count("<image>") == 2 and len(record["images"]) == 2


def test_held_out_splits_are_fixed_and_never_drawn_for_training():
  # A task this small repeats pairs often: the held-out ones must still never reach training.
  tiny = tvr.TvrTask(grid_size=2, min_objects=1, max_objects=1, attributes=("size",),
                     num_colors=2, views=("mirror",), max_shift=0)
  train = tvr_dataset.TvrSource("train", task=tiny, test_size=10, cross_view_fraction=0.5)
  held_out = {tvr_dataset.TvrSource(s, task=tiny, test_size=10).transformation(i).key
              for s in ("test_in_view", "test_cross_view") for i in range(10)}
  train_keys = {train.transformation(i).key for i in range(600)}
  space = 2 * 4 * 2 * 3 * 2  # views x cells x colours x shapes x sizes (the change is forced)
  assert len(held_out) > 5 and not held_out & train_keys
  assert len(train_keys) == space - len(held_out)
  # Held-out records ignore the seed and the split size; training records follow the seed.
  a = tvr_dataset.TvrSource("test_cross_view", seed=0, test_size=5)
  b = tvr_dataset.TvrSource("test_cross_view", seed=9, test_size=50)
  assert all(a[i].fields == b[i].fields for i in range(5)) and len(b) == 50
  assert all(a[i].fields["cross_view"] for i in range(5))
  assert not tvr_dataset.TvrSource("test_in_view", test_size=5)[0].fields["cross_view"]
  assert (tvr_dataset.TvrSource("train", seed=0)[3].fields
          != tvr_dataset.TvrSource("train", seed=1)[3].fields)


@pytest.fixture(scope="module")
def task_tokenizer(tmp_path_factory):
  corpus = tvr.text_corpus(tvr.TvrTask(prompt_style="short"), num_examples=256)
  path = tokenization.build_tokenizer(str(tmp_path_factory.mktemp("tvr_tokenizer")), corpus,
                                      vocab_size=1024)
  return tokenization.load_tokenizer(path)


def test_star_tvr_batches_for_sft_and_rl(task_tokenizer):
  tokenizer = task_tokenizer
  config = data_pipelines.default_config(
      name="star_tvr", batch_size=16, read_threads=1, prefetch_batches=0, max_seq_length=128,
      max_prompt_length=512, views=("mirror", "turn2"), prompt_style="short")
  batch = next(data_pipelines.make_sft_iterator(config, tokenizer, _VISION, shard_index=0,
                                                shard_count=1))
  image_pad = tokenizer.convert_tokens_to_ids(processing.IMAGE_PAD)
  np.testing.assert_array_equal(batch["image_grid_thw"], [[1, 6, 6]] * 32)  # 84 x 84, unresized
  np.testing.assert_array_equal((batch["input_ids"] == image_pad).sum(1), [18] * 16)
  assert batch["data_stats"]["skipped_too_long"] == 0  # all fit in 128 tokens
  for row, truth in enumerate(batch["ground_truth"]):
    response = batch["input_ids"][row][batch["loss_mask"][row] == 1]
    assert tokenizer.decode(response) == truth["response"] + "<|im_end|>"
    assert len(response) <= (24 if len(truth["answer"]) == 1 else 32)  # short for a tiny model
    assert truth["view"] in ("same", "mirror", "turn2")
    assert batch["reward_context"][row]["resized_image_sizes"] == [(84, 84)] * 2
  config.update(split="test_cross_view", shuffle=False, num_epochs=1, test_size=6,
                prompt_style="full", batch_size=4)
  prompts = list(data_pipelines.make_prompt_iterator(config, tokenizer, _VISION, shard_index=0,
                                                     shard_count=1))
  assert [i for b in prompts for i in b["example_id"]] == [
      f"star_tvr/test_cross_view/{i}" for i in range(4)]  # 6 records: one full batch of 4
  assert "viewpoint" in prompts[0]["messages"][0][0]["content"][-1]["text"]
  assert prompts[0]["ground_truth"][0]["answer"] == (
      tvr_dataset.TvrSource("test_cross_view", test_size=6)[0].fields["answer"])


def test_options_are_validated_naming_the_key():
  with pytest.raises(ValueError, match="config.data.split"):
    registry.build(data_pipelines.default_config(name="star_tvr", split="validation"))
  with pytest.raises(ValueError, match="image_size=90"):
    registry.build(data_pipelines.default_config(name="star_tvr", image_size=90))
  with pytest.raises(ValueError, match="max_jitter_deg"):
    tvr.TvrTask(max_jitter_deg=30)
  with pytest.raises(ValueError, match="views"):
    tvr.TvrTask(views=("upside down",))


def test_write_split_reads_back_with_the_files_dataset(tmp_path):
  path = tvr_dataset.write_split(str(tmp_path), "test_in_view", 3)
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  source = tvr_dataset.TvrSource("test_in_view", test_size=3)
  _, files = registry.build(data_pipelines.default_config(name="files", path=path))
  _, star = registry.build(data_pipelines.default_config(name="star_tvr", split="test_in_view",
                                                         test_size=3))
  for i, row in enumerate(rows):
    generated = source[i].fields
    for name, png in zip(row["images"], generated["images"]):
      with open(os.path.join(tmp_path, name), "rb") as f:
        assert f.read() == png
    from_file, from_star = files.to_example(files.source[i]), star.to_example(star.source[i])
    assert from_file.messages == from_star.messages and from_file.id == from_star.id
    assert from_file.response == from_star.response == generated["response"]
    assert from_file.ground_truth["answer"] == generated["answer"]
