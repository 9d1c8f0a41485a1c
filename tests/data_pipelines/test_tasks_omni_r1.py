"""Omni-R1's data: the ReVOS / MeViS reader (fixtures in the released layout), RefAVS refused, the synthetic task."""
import json
import os

import numpy as np
import pytest

from data_pipelines import errors, registry
from data_pipelines.sources import RawRecord
from data_pipelines.tasks import omni_r1, omni_r1_synthetic as synthetic
from data_pipelines.video import sample_video
from r1jax.rewards import omni_r1 as reward

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "omni_r1")
REVOS, MEVIS, REFAVS = (os.path.join(FIXTURES, name) for name in ("revos", "mevis", "refavs"))


def coco_string(runs):
  """pycocotools' rleToString, written from its C source: the compressed RLE counts."""
  out = []
  for i, x in enumerate(runs):
    if i > 2:
      x -= runs[i - 2]
    more = True
    while more:
      c = x & 0x1F
      x >>= 5
      more = (x != -1) if c & 0x10 else (x != 0)
      out.append(chr((c | 0x20 if more else c) + 48))
  return "".join(out)


@pytest.mark.parametrize("seed", range(5))
def test_rle_decodes_both_coco_forms(seed):
  mask = np.random.default_rng(seed).random((13, 29)) > 0.6
  mask[:2, :3] = seed % 2  # starting with ones or zeros
  runs = omni_r1.rle_encode(mask)
  assert (omni_r1.rle_decode(runs) == mask).all()
  compressed = dict(runs, counts=coco_string(runs["counts"]))
  assert (omni_r1.rle_decode(compressed) == mask).all()
  assert not omni_r1.rle_decode(None, (3, 4)).any()
  with pytest.raises(ValueError, match="cover"):
    omni_r1.rle_decode({"size": [2, 2], "counts": [1, 1]})


def test_revos_record_becomes_the_global_prompt_with_per_frame_boxes():
  source = omni_r1.ExpressionSource(REVOS)
  assert len(source) == 2 and source[0].where.endswith("meta_expressions_train_.json:cat/0")
  example = omni_r1.to_example(source[0], max_frames=6, policy_max_pixels=56 * 56, detail_max_pixels=112 * 112)
  boxes = example.ground_truth["bboxs"]  # one object, 6 frames, [x1, y1, x2, y2] with the last pixel included
  assert np.asarray(boxes).shape == (1, 6, 4)
  assert boxes[0][0] == [-1] * 4 and boxes[0][1] == [4, 8, 19, 23] and boxes[0][3] == [20, 8, 35, 23]
  assert example.context["frame_hw"] == [48, 64] and len(example.context["frames"]) == 6
  assert example.messages[0]["content"][0] == {"type": "video"}
  assert "[the red square moving right]" in example.messages[0]["content"][1]["text"]
  assert "3.0 seconds" in example.messages[0]["content"][1]["text"]
  clip = sample_video(example.videos[0].source, example.videos[0].sampling)
  assert clip.frames.shape[0] == 6 and clip.sample_fps == 2.0 and clip.frames.shape[1] % 28 == 0
  # The reward reads these boxes: a keyframe interval over frames 1-3 is fully covered.
  text = omni_r1.answer_text([(0.5, 1.5, "red square")], "red")
  assert reward.omni_r1(text, example.ground_truth).components["keyframe_hit"] == 1.0


def test_time_labels_make_one_second_clips_each_followed_by_its_start_second():
  example = omni_r1.to_example(omni_r1.ExpressionSource(REVOS)[0], max_frames=5, policy_max_pixels=56 * 56,
                               time_labels=True)
  content = example.messages[0]["content"]
  assert content[:-1] == [{"type": "video"}, {"type": "text", "text": "0s"}, {"type": "video"},
                          {"type": "text", "text": "1s"}, {"type": "video"}, {"type": "text", "text": "2s"}]
  assert "[the red square moving right]" in content[-1]["text"]
  # Frames 0-1, 2-3 and the last one alone; the reward and the detail step still index all five frames.
  assert [len(v.source.paths) for v in example.videos] == [2, 2, 1]
  assert [p for v in example.videos for p in v.source.paths] == example.context["frames"]
  assert np.asarray(example.ground_truth["bboxs"]).shape == (1, 5, 4)


def test_frames_are_picked_uniformly_up_to_max_frames():
  assert omni_r1.frame_indices(6, 4) == [0, 1, 3, 5]
  example = omni_r1.to_example(omni_r1.ExpressionSource(REVOS)[0], max_frames=4)
  assert [os.path.basename(p) for p in example.context["frames"]] == ["00000.jpg", "00001.jpg", "00003.jpg",
                                                                       "00005.jpg"]
  assert np.asarray(example.ground_truth["bboxs"]).shape == (1, 4, 4)


def test_mevis_layout_reads_too():
  example = omni_r1.to_example(omni_r1.ExpressionSource(MEVIS)[0])
  assert example.ground_truth["bboxs"][0][:2] == [[-1] * 4] * 2 and example.ground_truth["bboxs"][0][2] == [30, 20, 45, 35]


def test_bad_records_are_named():
  source = omni_r1.ExpressionSource(REVOS)
  with pytest.raises(errors.BadExampleError, match=r"dog/0: field 'anno_id'.*anno_id '7'") as caught:
    omni_r1.to_example(source[1])
  assert caught.value.reason == errors.BAD_RECORD
  with pytest.raises(errors.BadExampleError, match="field 'answer'"):
    omni_r1.to_example(source[0], mode="sft")  # the released records carry no teacher completion
  bad = RawRecord(dict(source[0].fields, frames=["00000", "09999"]), "x.json:cat/0", REVOS)
  with pytest.raises(errors.BadExampleError, match=r"1 of 2 frame files missing.*09999\.jpg"):
    omni_r1.to_example(bad)
  with pytest.raises(errors.BadExampleError, match="field 'exp'"):
    omni_r1.to_example(RawRecord(dict(source[0].fields, exp=""), "x.json:cat/0", REVOS))


def test_audio_records_name_the_missing_audio_tower():
  with pytest.raises(ValueError, match=r"metadata\.csv:row 1 \(uid vid1_0_1\).*audio tower"):
    omni_r1.ExpressionSource(REFAVS)
  record = omni_r1.ExpressionSource(REVOS)[0]
  with pytest.raises(ValueError, match="cat/0: an audio-visual record.*audio tower"):
    omni_r1.to_example(RawRecord(dict(record.fields, audio="media/cat/audio.wav"), record.where, REVOS))


def test_dataset_builds_from_config_and_checks_detail_bounds():
  import data_pipelines  # pylint: disable=g-import-not-at-top
  config = data_pipelines.default_config(name="omni_r1", path=REVOS)
  _, spec = registry.build(config)
  assert len(spec.source) == 2
  config.update(dict(mode="detail"))
  with pytest.raises(ValueError, match="config.data.image .* must equal the detail bounds"):
    registry.build(config)


def test_synthetic_split_is_readable_and_held_out(tmp_path):
  task = synthetic.ShapesTask()
  train = synthetic.write_split(str(tmp_path), "train", 40, test_size=20, imperfect_fraction=0.5)
  test = synthetic.write_split(str(tmp_path), "test", 20)
  assert not set(train["items"]) & set(test["items"])
  assert synthetic.write_split(str(tmp_path), "test", 20)["seconds"] == 0.0  # reused
  source = omni_r1.ExpressionSource(train["dir"])
  teachers, hits = [], []
  for index in range(len(source)):
    example = omni_r1.to_example(source[index], mode="sft", max_frames=task.num_frames)
    item = train["items"][index]
    target = item.shapes[item.target]
    present = [f for f, box in enumerate(example.ground_truth["bboxs"][0]) if box != [-1] * 4]
    assert present == list(range(target.first_frame, target.first_frame + task.window_frames))
    if item.by_motion:  # the motion names one shape only
      assert [s.motion for s in item.shapes].count(target.motion) == 1
    teachers.append(source[index].fields["teacher"])
    hits.append(reward.omni_r1(example.response, example.ground_truth).components["keyframe_hit"])
  # The perfect teacher's keyframes always show the target; some imperfect ones do not.
  assert all(h == 1.0 for h, t in zip(hits, teachers) if t in ("perfect", "motion"))
  assert 0.2 < teachers.count("perfect") / len(teachers) < 0.8 and min(hits) < 1.0
  with open(train["detail"]) as f:
    detail = json.load(f)
  assert len(detail) == 40
  example = omni_r1.detail_example(RawRecord(detail[0], "detail.json:record 1", train["dir"]),
                                   detail_max_pixels=112 * 112)
  assert example.messages[0]["content"][0] == {"type": "image"}
  assert json.loads(example.response)["bbox_2d"] == detail[0]["bbox"]  # 112 px frames are not resized


@pytest.mark.parametrize("shape_name", synthetic.SHAPES)
def test_rendered_masks_match_the_boxes(shape_name):
  task = synthetic.ShapesTask()
  shape = synthetic.Shape("green", shape_name, "right", first_frame=4, start=(1, 2))
  item = synthetic.Item((shape,), target=0, by_motion=True)
  for frame in range(task.num_frames):
    image, (mask,) = synthetic.render(item, frame, task)
    if not 4 <= frame < 8:
      assert not mask.any() and (image == synthetic.BACKGROUND).all()
      continue
    x, y = (1 + frame - 4) * task.grid, 2 * task.grid  # one grid step right per frame
    assert omni_r1.mask_box(mask) == [x, y, x + task.object_size - 1, y + task.object_size - 1]
    assert (image[mask] == synthetic.COLORS["green"]).all() and (image[~mask] == synthetic.BACKGROUND).all()
