"""Fairy-Stockfish as the Xiangqi judge: notation, discovery, fallback, determinism, timeouts, and the
move generator cross-checked against pyffish (Fairy-Stockfish's rules) on random reachable positions."""
import logging
import os
import time

import numpy as np
import pytest

from r1jax.rewards import xiangqi
from r1jax.rewards import xiangqi_board as xb
from r1jax.rewards import xiangqi_engine as xe

ENGINE = xe.find_fairy_stockfish()
needs_engine = pytest.mark.skipif(ENGINE is None, reason="fairy-stockfish is not installed "
                                  "(apt-get install -y fairy-stockfish; .ci/run installs it)")
# Red's chariot on b0 can take the horse on b7 for free.
HANGING_FEN = "3k5/9/1n7/9/9/9/9/9/9/1R2K4 w - - 0 1"


def _completion(move, thinking="analysis"):
  return f"<think>{thinking}</think><answer>{move}</answer>"


@pytest.mark.parametrize("engine, iccs", [("h1g3", "h0g2"), ("b10c8", "b9c7"), ("a10a1", "a9a0"),
                                          ("i1i10", "i0i9"), ("e2e1", "e1e0")])
def test_engine_notation_converts_both_ways(engine, iccs):
  assert xe.from_engine_move(engine, "ranks1") == iccs
  assert xe.to_engine_move(iccs, "ranks1") == engine
  assert xe.from_engine_move(iccs, "iccs") == iccs and xe.to_engine_move(iccs, "iccs") == iccs


def test_engine_notation_round_trips_every_square_and_rejects_garbage():
  for frm in range(xb.NUM_SQUARES):
    iccs = xb.move_to_iccs((frm, (frm + 37) % xb.NUM_SQUARES))
    assert xe.from_engine_move(xe.to_engine_move(iccs, "ranks1"), "ranks1") == iccs
  for text in ("h0g2", "b11c8", "j1a1", "h1g", "", "h10g11", "a01a2"):
    assert xe.from_engine_move(text, "ranks1") is None, text
  with pytest.raises(ValueError, match="not an ICCS move"):
    xe.to_engine_move("b10c8", "ranks1")
  with pytest.raises(ValueError, match="notation"):
    xe.UciEngineJudge("x", notation="san")


def test_find_fairy_stockfish_looks_beyond_path(monkeypatch, tmp_path):
  games = tmp_path / "games"
  games.mkdir()
  binary = games / "fairy-stockfish"
  binary.write_text("#!/bin/sh\n")
  binary.chmod(0o755)
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # neither on PATH nor dpkg reachable
  monkeypatch.setattr(xe, "_GAMES_DIRS", (str(games),))
  assert xe.find_fairy_stockfish() == str(binary)
  monkeypatch.setattr(xe, "_GAMES_DIRS", (str(tmp_path / "nowhere"),))
  assert xe.find_fairy_stockfish() is None


def test_missing_engine_falls_back_to_the_builtin_searcher_with_a_start_up_message(monkeypatch, caplog):
  monkeypatch.setattr(xe, "find_fairy_stockfish", lambda: None)
  spec = xe.DefaultJudgeSpec(engine_depth=5, builtin_depth=1)  # a spec no other test caches
  with caplog.at_level(logging.WARNING):
    judge = xe.default_judge(spec)
  assert isinstance(judge, xe.BuiltinJudge) and judge.depth == 1
  assert "fairy-stockfish not found" in caplog.text and "apt-get install -y fairy-stockfish" in caplog.text
  # The reward judges with it instead of crashing.
  reward = xiangqi.XiangqiReward(engine_depth=5, builtin_depth=1)
  result = reward(_completion("b0b7"), {"fen": HANGING_FEN})
  assert result.components["judge_failed"] == 0.0 and result.info["judge"].startswith("builtin")
  xe.default_judge.cache_clear()


@needs_engine
def test_default_judge_is_fairy_stockfish_when_installed():
  judge = xe.default_judge()
  assert isinstance(judge, xe.UciEngineJudge) and judge.notation == "ranks1" and judge.deterministic
  assert judge.options["Threads"] == 1 and judge.options["UCI_Variant"] == "xiangqi"
  result = xiangqi.xiangqi_r1(_completion("b0b7"), {"fen": HANGING_FEN})
  assert result.info["judge"].startswith("uci:") and result.components["quality"] == 1.0


@needs_engine
def test_fairy_stockfish_judge_is_deterministic_and_sees_the_hanging_horse():
  fen = "rnbakabnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNR w - - 0 1"
  first = xe.fairy_stockfish_judge(ENGINE, depth=6)
  second = xe.fairy_stockfish_judge(ENGINE, depth=6)
  try:
    verdicts = [first.evaluate_move(fen, "h0g2"), first.evaluate_move(fen, "a0a1")]
    second.evaluate_move(HANGING_FEN, "b0b1")  # other searches first: the hash is cleared per search
    assert [second.evaluate_move(fen, "h0g2"), second.evaluate_move(fen, "a0a1")] == verdicts
    assert xb.Board.from_fen(fen).is_legal(xb.iccs_to_move(verdicts[0].best_move))
    take = first.evaluate_move(HANGING_FEN, "b0b7")
    assert take.best_move == "b0b7" and take.best_score > 300
    quiet = first.evaluate_move(HANGING_FEN, "b0b1")
    assert quiet.move_score < take.best_score - 300
    analysis = first.analyse(fen, pv_length=4)
    board = xb.Board.from_fen(fen)
    for move in analysis.pv:  # the PV comes back in ICCS and is legal move by move
      assert board.is_legal(xb.iccs_to_move(move))
      board.make(xb.iccs_to_move(move))
    assert analysis.pv[0] == analysis.best_move == verdicts[0].best_move and 2 <= len(analysis.pv) <= 4
  finally:
    first.close()
    second.close()


@needs_engine
def test_hung_or_killed_engine_is_a_judge_failure_and_restarts():
  judge = xe.fairy_stockfish_judge(ENGINE, depth=60, timeout_s=0.3)  # depth 60 never ends in time
  start = time.perf_counter()
  result = xiangqi.xiangqi_r1(_completion("h2e2"), {"fen": xb.START_FEN}, judge=judge)
  assert time.perf_counter() - start < 5
  assert result.components["judge_failed"] == 1.0 and "timed out" in result.info["judge_error"]
  assert judge._process is None  # killed, not left searching
  judge.go_limit = "go depth 4"
  judge.timeout_s = 10.0
  assert judge.evaluate_move(xb.START_FEN, "h2e2").best_move  # a fresh engine answers
  os.kill(judge._process.pid, 9)  # crashed between queries: the next query restarts it
  judge._process.wait()
  ok = xiangqi.xiangqi_r1(_completion("b0b7"), {"fen": HANGING_FEN}, judge=judge)
  assert ok.components["legality"] == 1.0 and ok.components["judge_failed"] == 0.0
  judge.close()


def _reachable_positions(count, seed=0):
  """{fen: our legal moves in ICCS} of distinct positions along random legal games from the start
  (every ply, up to 120 plies a game); each position's moves are generated once."""
  rng = np.random.default_rng(seed)
  positions = {}
  while len(positions) < count:
    board = xb.Board.from_fen(xb.START_FEN)
    for _ in range(120):
      moves = board.legal_moves()
      fen = board.to_fen()
      if fen not in positions and fen != xb.START_FEN:
        positions[fen] = {xb.move_to_iccs(m) for m in moves}
      if not moves or len(positions) == count:
        break
      board.make(moves[rng.integers(len(moves))])
  return positions


def test_move_generator_matches_pyffish_on_1000_random_reachable_positions():
  pyffish = pytest.importorskip("pyffish")
  positions = _reachable_positions(1000)
  assert len(positions) == 1000
  for fen, ours in positions.items():
    theirs = {xe.from_engine_move(m, "ranks1") for m in pyffish.legal_moves("xiangqi", fen, [])}
    assert ours == theirs, (fen, sorted(ours - theirs), sorted(theirs - ours))
  assert sum(map(len, positions.values())) > 20_000  # the positions are not trivial


@pytest.mark.parametrize("answer", [
    "b0b8",            # illegal: the chariot cannot jump the horse
    "b0b7 or b0b1",    # ambiguous: two moves name none
    "b0b7 b0b1 e0d0",  # a list of moves
    "chariot takes",   # no move
    "b0-b10", "z9z9", "\x00\ufffd", "炮二平五", "",
])
def test_bad_answers_score_legality_zero_without_an_exception(answer):
  calls = []

  class Recording(xe.BuiltinJudge):
    def evaluate_move(self, fen, move):
      calls.append(move)
      return super().evaluate_move(fen, move)

  result = xiangqi.xiangqi_r1(_completion(answer), {"fen": HANGING_FEN, "best_move": "b0b7"},
                              judge=Recording(depth=1))
  assert result.components["legality"] == 0.0 and result.components["quality"] == 0.0
  assert result.components["cp_loss"] == xiangqi.CP_LOSS_CAP and result.components["judge_failed"] == 0.0
  assert result.total == pytest.approx(0.1)  # the format alone
  assert calls == []  # nothing illegal reaches the judge
