"""Record sources (JSON, JSONL, Parquet) and layouts (EasyR1/verl, ms-swift) → Example."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipelines import errors, records, sources
from tests.data_pipelines import media

_OPTIONS = records.LayoutOptions()


def _write_jsonl(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
  return str(path)


def test_jsonl_easyr1_layout_relative_paths_and_extra_columns(tmp_path):
  os.makedirs(tmp_path / "imgs")
  rows = [{"problem": "<image>Find x in <image>", "answer": "3", "images": ["imgs/a.png", "b.png"],
           "solution_steps": ["s1"], "difficulty": 2},
          {"problem": "2+2?", "answer": "4"}]
  source = sources.file_source(_write_jsonl(tmp_path / "train.jsonl", rows))
  assert len(source) == 2
  example = records.to_example(source[0], _OPTIONS)
  assert example.images == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "b.png")]
  assert example.messages == [{"role": "user", "content": [
      {"type": "image"}, {"type": "text", "text": "Find x in "}, {"type": "image"}]}]
  assert example.ground_truth == {"answer": "3", "solution_steps": ["s1"], "difficulty": 2}
  assert example.data_type == "multi_image"
  assert example.where.endswith("train.jsonl:line 1")
  text_only = records.to_example(source[1], _OPTIONS)
  assert text_only.data_type == "text" and text_only.images == []


def test_untagged_media_go_before_text_and_template_and_system_prompt_apply(tmp_path):
  options = records.LayoutOptions(system_prompt="Think first.",
                                  prompt_template="{content} Answer in <answer></answer>.")
  raw = sources.RawRecord({"problem": "What?", "answer": "a", "images": ["/abs/x.jpg"],
                           "videos": ["v.mp4"]}, "f:line 1", str(tmp_path))
  example = records.to_example(raw, options)
  assert example.messages[0] == {"role": "system", "content": "Think first."}
  assert example.messages[1]["content"] == [
      {"type": "image"}, {"type": "video"},
      {"type": "text", "text": "What? Answer in <answer></answer>."}]
  assert example.images == ["/abs/x.jpg"]
  assert example.videos[0].source == str(tmp_path / "v.mp4")
  assert example.data_type == "video"


def test_parquet_with_embedded_image_bytes(tmp_path):
  image_path = media.write_image(str(tmp_path / "a.png"), 10, 12)
  with open(image_path, "rb") as f:
    data = f.read()
  table = pa.table({"problem": ["<image>Q1", "Q2"], "answer": ["1", "2"],
                    "images": [[{"bytes": data, "path": "a.png"}], []],
                    "label": [7, 8]})
  path = str(tmp_path / "train.parquet")
  pq.write_table(table, path, row_group_size=1)
  source = sources.file_source(path)
  assert len(source) == 2
  first, second = (records.to_example(source[i], _OPTIONS) for i in range(2))
  assert first.images == [data]
  assert first.ground_truth == {"answer": "1", "label": 7}
  assert second.ground_truth == {"answer": "2", "label": 8} and second.images == []


def test_json_array_and_verl_style_prompt(tmp_path):
  rows = [{"prompt": [{"role": "user", "content": "<image>How many?"}], "images": ["x.png"],
           "reward_model": {"ground_truth": "5"}, "data_source": "count"}]
  path = tmp_path / "train.json"
  path.write_text(json.dumps(rows))
  options = records.LayoutOptions(prompt_key="prompt")
  example = records.to_example(sources.file_source(str(path))[0], options)
  assert example.ground_truth["answer"] == "5"
  assert example.ground_truth["data_source"] == "count"
  assert example.messages == [{"role": "user", "content": [
      {"type": "image"}, {"type": "text", "text": "How many?"}]}]


def test_swift_messages_layout_splits_off_the_reply(tmp_path):
  row = {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "<image><image>Same object?"},
                      {"role": "assistant", "content": "yes"}],
         "images": ["a.jpg", "b.jpg"], "solution": "yes"}
  source = sources.file_source(_write_jsonl(tmp_path / "swift.jsonl", [row]))
  example = records.to_example(source[0], _OPTIONS)
  assert example.messages == [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                   {"type": "text", "text": "Same object?"}]}]
  assert example.response == "yes"
  assert example.ground_truth == {"answer": "yes", "solution": "yes"}


@pytest.mark.parametrize("row,reason,named", [
    ({"answer": "1"}, errors.MISSING_FIELD, "'problem'"),
    ({"problem": "x"}, errors.MISSING_FIELD, "'answer'"),
    ({"problem": "<image><image>x", "answer": "1", "images": ["a.png"]}, errors.BAD_RECORD,
     "2 <image>"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, errors.MISSING_FIELD, "user"),
    ("{not json", errors.BAD_RECORD, "invalid JSON"),
])
def test_bad_records_raise_naming_the_record(tmp_path, row, reason, named):
  source = sources.file_source(_write_jsonl(tmp_path / "bad.jsonl", [row]))
  with pytest.raises(errors.BadExampleError) as info:
    records.to_example(source[0], _OPTIONS)
  assert info.value.reason == reason
  assert "bad.jsonl:line 1" in str(info.value) and named in str(info.value)


def test_sources_pickle_and_expand_folders(tmp_path):
  import pickle

  _write_jsonl(tmp_path / "a.jsonl", [{"problem": "1", "answer": "1"}])
  _write_jsonl(tmp_path / "b.jsonl", [{"problem": "2", "answer": "2"}] * 2)
  source = sources.file_source(str(tmp_path))
  assert source[0].fields["problem"] == "1"  # opens the file handle
  clone = pickle.loads(pickle.dumps(source))
  assert [clone[i].fields["problem"] for i in range(3)] == ["1", "2", "2"]
  with pytest.raises(FileNotFoundError, match="nope"):
    sources.file_source(str(tmp_path / "nope.jsonl"))


def test_jsonl_records_are_named_by_their_1_based_line_counting_blank_lines(tmp_path):
  path = _write_jsonl(tmp_path / "gaps.jsonl", [{"problem": "1", "answer": "1"}, "", "  ", "{not json"])
  source = sources.file_source(path)
  assert len(source) == 2
  assert source[0].where.endswith("gaps.jsonl:line 1") and source[1].where.endswith("gaps.jsonl:line 4")
  json_path = tmp_path / "rows.json"
  json_path.write_text(json.dumps([{"problem": "1", "answer": "1"}, {"problem": "2", "answer": "2"}]))
  assert sources.file_source(str(json_path))[1].where.endswith("rows.json:record 2")
