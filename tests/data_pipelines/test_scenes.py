"""Multi-view 3D scenes: loading, view selection strategies, the multi-image prompt."""
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors, scenes
from tests.data_pipelines import media

# 12 cameras on a ring, 30 degrees apart, stored so that capture indices 0, 4, 7, 11 (the ones
# uniform selection of 4 takes) sit next to each other at 0..90 degrees.
_ANGLES_DEG = [0, 120, 150, 180, 30, 210, 240, 60, 270, 300, 330, 90]
_LAMP = {"label": "lamp", "box": [-3.6, -0.1, 0.9, -3.4, 0.1, 1.1]}  # just outside camera 180
_TABLE = {"label": "table", "box": [-0.5, -0.5, 0.5, 0.5, 0.5, 1.5]}  # centre, seen by all


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("scenes")
  path = media.write_scene(str(root / "scene0000_00"), np.deg2rad(_ANGLES_DEG), [_LAMP, _TABLE],
                           [{"question": "Where is the lamp?", "answer": "by the wall", "id": "q0"},
                            {"question": "What is in the middle?", "answer": "a table"}])
  return path


def _angles(scene, indices):
  centers = scene.camera_centers[indices]
  return np.rad2deg(np.arctan2(centers[:, 1], centers[:, 0])) % 360


def _min_gap(angles):
  a = np.sort(angles)
  return np.min(np.diff(np.concatenate([a, [a[0] + 360]])))


def test_load_scene_reads_views_poses_and_annotations(scene_dir):
  scene = scenes.load_scene(scene_dir)
  assert scene.num_views == 12 and scene.image_size == (24, 32)
  np.testing.assert_allclose(_angles(scene, np.arange(12)), np.array(_ANGLES_DEG) % 360,
                             atol=1e-6)
  assert scene.intrinsics.shape == (3, 3) and len(scene.qa) == 2


def test_farthest_camera_spreads_views_where_uniform_does_not(scene_dir):
  scene = scenes.load_scene(scene_dir)
  farthest = scenes.select_views(scene, 4, "farthest")
  uniform = scenes.select_views(scene, 4, "uniform")
  np.testing.assert_array_equal(uniform, [0, 4, 7, 11])
  assert _min_gap(_angles(scene, uniform)) == pytest.approx(30)
  assert _min_gap(_angles(scene, farthest)) == pytest.approx(90)  # the best possible for 4 of 12


def test_scored_selection_keeps_top_k_of_candidates(scene_dir):
  scene = scenes.load_scene(scene_dir)
  seen = {}

  def scorer(scene_, candidates, question):
    seen["candidates"], seen["question"] = candidates.copy(), question
    return -_angles(scene_, candidates)  # prefer small angles

  chosen = scenes.select_views(scene, 3, "scored", question="q?", num_candidates=6,
                               scorer=scorer)
  candidates = seen["candidates"]
  assert len(candidates) == 6 and seen["question"] == "q?"
  np.testing.assert_array_equal(candidates, scenes.select_farthest(scene, 6))
  expected = np.sort(candidates[np.argsort(_angles(scene, candidates))[:3]])
  np.testing.assert_array_equal(chosen, expected)


def test_3d_r1_scorer_prefers_views_that_see_the_asked_object(scene_dir):
  scene = scenes.load_scene(scene_dir)
  lamp_center = scenes.box_centers([_LAMP])
  candidates = scenes.select_farthest(scene, 8)
  sees_lamp = scenes.visible(scene, candidates, lamp_center)[:, 0]
  assert 0 < sees_lamp.sum() < len(candidates) - 2
  chosen = scenes.select_views(scene, 2, "scored", question="Where is the lamp?",
                               num_candidates=8, scorer=scenes.get_view_scorer("3d_r1"))
  assert scenes.visible(scene, chosen, lamp_center).all()


def test_scene_example_is_a_multi_image_prompt(scene_dir):
  scene = scenes.load_scene(scene_dir)
  example = scenes.scene_example(scene, 0, [1, 5, 9])
  content = example.messages[0]["content"]
  assert content[:3] == [{"type": "image"}] * 3
  assert content[3] == {"type": "text", "text": "Where is the lamp?"}
  assert example.images == [scene.image_paths[i] for i in (1, 5, 9)]
  assert example.ground_truth["answer"] == "by the wall"
  assert example.ground_truth["boxes"] == [_LAMP, _TABLE]
  assert example.context["view_indices"] == [1, 5, 9]
  assert example.id == "q0"


def test_scene3d_dataset_from_config(scene_dir):
  config = data_pipelines.default_config(name="scene3d", path=os.path.dirname(scene_dir))
  config.num_views = 4
  config.view_strategy = "farthest"
  cfg, spec = data_pipelines.registry.build(config)
  assert len(spec.source) == 2
  example = spec.to_example(spec.source[1])
  assert len(example.images) == 4 and example.ground_truth["answer"] == "a table"


def test_invalid_pose_drops_view_and_missing_folder_is_bad_media(tmp_path):
  path = media.write_scene(str(tmp_path / "s"), np.deg2rad([0, 90, 180]), [], [])
  np.savetxt(os.path.join(path, "pose", "000001.txt"), np.full((4, 4), -np.inf))
  assert scenes.load_scene(path).num_views == 2
  with pytest.raises(errors.BadExampleError, match="color/"):
    scenes.load_scene(str(tmp_path / "missing"))


def test_scene_prompts_batch_as_multi_image_prompts(scene_dir, tokenizer):
  config = data_pipelines.default_config(name="scene3d", path=scene_dir, batch_size=2,
                                         shuffle=False, prefetch_batches=0,
                                         max_prompt_length=512)
  config.num_views = 3
  config.view_strategy = "scored"
  config.num_candidate_views = 6
  batch = next(data_pipelines.make_prompt_iterator(config, tokenizer, shard_index=0,
                                                   shard_count=1))
  assert batch["image_counts"].tolist() == [3, 3]
  assert [len(c["view_indices"]) for c in batch["reward_context"]] == [3, 3]
  assert batch["reward_context"][0]["camera_to_world"].shape == (3, 4, 4)
  assert batch["ground_truth"][1]["answer"] == "a table"
