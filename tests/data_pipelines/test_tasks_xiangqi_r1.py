"""Xiangqi-R1 data: position generators, labels, the JSONL position records and the three stages' examples."""
import json
import logging
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import errors
from data_pipelines.sources import RawRecord
from data_pipelines.tasks import xiangqi_r1
from r1jax import tokenization
from r1jax.rewards import xiangqi
from r1jax.rewards import xiangqi_board as xb
from r1jax.rewards import xiangqi_engine as xe

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "xiangqi_r1")
TRAIN = os.path.join(FIXTURES, "train.jsonl")
TEST = os.path.join(FIXTURES, "test.jsonl")


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _raw(fields, where="fixture:line 1"):
  return RawRecord(fields, where=where, base_dir="")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tok")
  with open(TRAIN) as f:  # the fixture's own text: enough for a tokenizer, and quick to train
    corpus = f.read().splitlines() + [xiangqi_r1.SYSTEM_MESSAGE, "evaluation: winning. line:"]
  return tokenization.load_tokenizer(tokenization.build_tokenizer(str(folder), corpus, vocab_size=600))


def test_piece_list_lists_red_uppercase_then_black():
  board = xb.Board.from_fen("3k5/9/1n7/9/9/9/9/9/9/1R2K4 b - - 0 1")
  assert xiangqi_r1.piece_list(board) == "K e0 R b0 ; k d9 n b7"
  assert xiangqi_r1.side_name(board) == "black"


def test_generators_give_legal_distinct_positions():
  rng = np.random.default_rng(0)
  judge = xe.BuiltinJudge(depth=1)
  mix = xiangqi_r1.PositionMix(playout=6, selfplay=6, sparse=12, selfplay_depths=(1,), selfplay_max_plies=16)
  positions = xiangqi_r1.generate_positions(mix, rng, lambda depth: judge)
  assert [source for _, source in positions] == ["playout"] * 6 + ["selfplay"] * 6 + ["sparse"] * 12
  fens = [fen for fen, _ in positions]
  assert len(set(fens)) == len(fens) == 24
  for fen, source in positions:
    board = xb.Board.from_fen(fen)
    assert board.legal_moves() and not board.king_attacked(-board.side)
    if source == "sparse":
      assert 4 <= sum(1 for p in board.squares if p) <= 8
  again = xiangqi_r1.generate_positions(mix, np.random.default_rng(1), lambda depth: judge, exclude=fens)
  assert not set(fens) & {fen for fen, _ in again}  # a held-out split never reappears
  assert xiangqi_r1.dedupe([fens[0], fens[0].replace(" w ", " r "), fens[1]]) == fens[:2]


def test_written_positions_follow_the_documented_format_and_are_reused(tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(xe, "find_fairy_stockfish", lambda: None)  # the built-in fallback labels
  messages = []
  mix = xiangqi_r1.PositionMix(playout=3, sparse=5)
  paths = xiangqi_r1.write_positions(str(tmp_path), train=mix, test=xiangqi_r1.PositionMix(sparse=3),
                                     engine_depth=2, log=messages.append)
  assert len(messages) == 1 and "built-in searcher" in messages[0] and "apt-get install" in messages[0]
  train, test = _rows(paths["train"]), _rows(paths["test"])
  assert len(train) == 8 and len(test) == 3
  assert not {r["fen"] for r in train} & {r["fen"] for r in test}
  for record in train:
    board = xb.Board.from_fen(record["fen"])
    assert record["pieces"] == xiangqi_r1.piece_list(board)
    assert board.is_legal(xb.iccs_to_move(record["best_move"])) and record["pv"][0] == record["best_move"]
    assert record["evaluation"] == xiangqi_r1.evaluation_label(record["score"], 50.0)
  xiangqi_r1.write_positions(str(tmp_path), train=mix, test=xiangqi_r1.PositionMix(sparse=3), engine_depth=2,
                             log=messages.append)
  assert len(messages) == 1  # same settings: the files are reused


def test_fixture_is_labelled_by_fairy_stockfish_format():
  good = [r for r in _rows(TRAIN) if not r["id"].startswith("bad/")]
  assert {r["source"] for r in good} == set(xiangqi_r1.SOURCES)
  for record in good + _rows(TEST):
    board = xb.Board.from_fen(record["fen"])
    assert board.is_legal(xb.iccs_to_move(record["best_move"]))
    assert record["evaluation"] in xiangqi_r1.EVALUATIONS


def test_stage_one_answers_are_checked_by_the_move_generator():
  rows = [r for r in _rows(TRAIN) if not r["id"].startswith("bad/")]
  kinds = set()
  for index in range(40):
    record = rows[index % len(rows)]
    example = xiangqi_r1.to_example(_raw(record), mode="legal", index=index, prompt_style="short",
                                    piece_max_moves=8)
    board = xb.Board.from_fen(record["fen"])
    answer = example.response.split("<answer>")[1].split("</answer>")[0].split()
    assert all(board.is_legal(xb.iccs_to_move(m)) for m in answer)
    if "legal moves of" in example.messages[-1]["content"][0]["text"]:
      kinds.add("piece")
      square = answer[0][:2]
      assert sorted(answer) == sorted(xb.move_to_iccs(m) for m in board.legal_moves()
                                      if xb.move_to_iccs(m)[:2] == square) and len(answer) <= 8
    else:
      kinds.add("move")
      assert len(answer) == 1
  assert kinds == {"piece", "move"}


def test_stage_two_target_and_grpo_ground_truth_score_the_maximum():
  record = _rows(TEST)[0]
  strategy = xiangqi_r1.to_example(_raw(record), mode="strategy", prompt_style="full", pv_plies=2)
  assert strategy.messages[0]["role"] == "system" and record["fen"] in strategy.messages[1]["content"][0]["text"]
  line = " ".join(record["pv"][:2])
  assert f"evaluation: {record['evaluation']}" in strategy.response and line in strategy.response
  assert strategy.response.endswith(f"<answer>{record['best_move']}</answer>")
  grpo = xiangqi_r1.to_example(_raw(record), mode="grpo", prompt_style="full")
  assert grpo.response is None and grpo.messages == strategy.messages
  assert grpo.ground_truth["best_move"] == record["best_move"]
  result = xiangqi.xiangqi_r1(strategy.response, grpo.ground_truth)
  assert result.components["top1"] == result.components["evaluation"] == result.components["legality"] == 1.0
  assert result.total == pytest.approx(1.0)


@pytest.mark.parametrize("fields, reason, named", [
    ({"fen": "rnbakabnr/9/1c5c1 w - - 0 1"}, errors.BAD_RECORD, "has 3 rows"),
    ({"fen": "4k4/9/9/9/9/9/9/9/9/3KK4 w - - 0 1"}, errors.BAD_RECORD, "2 Red kings"),
    ({"fen": 17}, errors.MISSING_FIELD, "'fen'"),
    ({}, errors.MISSING_FIELD, "'fen'"),
    ({"fen": xb.START_FEN, "best_move": "a0a9", "evaluation": "equal"}, errors.BAD_RECORD, "'best_move'"),
    ({"fen": xb.START_FEN, "best_move": "h2e2", "evaluation": "great"}, errors.BAD_RECORD, "'evaluation'"),
    ({"fen": xb.START_FEN}, errors.MISSING_FIELD, "needs 'best_move' and 'evaluation'"),
])
def test_bad_records_raise_naming_record_and_field(fields, reason, named):
  with pytest.raises(errors.BadExampleError) as info:
    xiangqi_r1.to_example(_raw(fields), mode="strategy")
  assert info.value.reason == reason and info.value.where == "fixture:line 1" and named in str(info.value)


def test_unlabelled_positions_still_give_stage_one_and_grpo_examples():
  for mode in ("legal", "grpo"):
    example = xiangqi_r1.to_example(_raw({"fen": xb.START_FEN}), mode=mode)
    assert example.ground_truth["fen"] == xb.START_FEN


def test_invalid_records_are_skipped_and_counted_by_the_pipeline(tokenizer, caplog):
  config = data_pipelines.default_config(name="xiangqi_r1", path=TRAIN, mode="strategy", batch_size=1,
                                         num_epochs=1, shuffle=False, read_threads=1, prefetch_batches=0,
                                         max_prompt_length=1024, max_seq_length=1024)
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    iterator = data_pipelines.make_sft_iterator(config, tokenizer, shard_index=0, shard_count=1)
    batches = list(iterator)
    iterator.close()
  assert len(batches) == 6  # 6 good records of 9
  assert batches[-1]["data_stats"] == {"examples": 6, "skipped_missing_field": 1, "skipped_bad_record": 2,
                                       "skipped_bad_media": 0, "skipped_too_long": 0}
  assert f"{TRAIN}:line 4" in caplog.text and "has 3 rows" in caplog.text


def test_dataset_options_are_checked():
  with pytest.raises(ValueError, match="config.data.mode='rl'"):
    data_pipelines.registry.build(data_pipelines.default_config(name="xiangqi_r1", path=TRAIN, mode="rl"))
  with pytest.raises(ValueError, match="needs config.data.path"):
    data_pipelines.registry.build(data_pipelines.default_config(name="xiangqi_r1"))
