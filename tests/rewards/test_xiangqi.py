"""Tests of the Xiangqi-R1 reward, its board (perft, checks, pins) and its engine judges."""
import json
import math
import os
import sys
import textwrap
import time

import hypothesis
import hypothesis.strategies as st
import pytest

from r1jax.rewards import base
from r1jax.rewards import xiangqi
from r1jax.rewards import xiangqi_board as xb
from r1jax.rewards import xiangqi_engine

# Depth-4 perft (~7 s) runs only with R1JAX_SLOW=1; a skipif needs no marker registration.
slow = pytest.mark.skipif(os.environ.get("R1JAX_SLOW") != "1", reason="set R1JAX_SLOW=1 to run")

# Published perft counts, https://www.chessprogramming.org/Chinese_Chess_Perft_Results.
PUBLISHED_PERFT = {
    xb.START_FEN: (44, 1920, 79666),
    "r1ba1a3/4kn3/2n1b4/pNp1p1p1p/4c4/6P2/P1P2R2P/1CcC5/9/2BAKAB2 w": (38, 1128, 43929),
    "1cbak4/9/n2a5/2p1p3p/5cp2/2n2N3/6PCP/3AB4/2C6/3A1K1N1 w": (7, 281, 8620),
    "5a3/3k5/3aR4/9/5r3/5n3/9/3A1A3/5K3/2BC2B2 w": (25, 424, 9850),
    "CRN1k1b2/3ca4/4ba3/9/2nr5/9/9/4B4/4A4/4KA3 w": (28, 516, 14808),
    "C1nNk4/9/9/9/9/9/n1pp5/B3C4/9/3A1K3 w": (28, 222, 6241),
    "4ka3/4a4/9/9/4N4/p8/9/4C3c/7n1/2BK5 w": (23, 345, 8124),
    "1C2ka3/9/C1Nab1n2/p3p3p/6p2/9/P3P3P/3AB4/3p2c2/c1BAK4 w": (30, 830, 22787),
}

# Hand-built positions with their legal moves counted by hand.
HAND_COUNTED = {
    # Flying general: Kd0-e0 would face the black king on the open e-file; only Kd1 is left.
    "flying_general": ("4k4/9/9/9/9/9/9/9/9/3K5 w", {"d0d1"}),
    # The horse between the kings is pinned by the flying-general rule: only king moves remain.
    "pinned_by_facing_kings": ("4k4/9/9/9/9/4N4/9/9/9/4K4 w", {"e0d0", "e0e1", "e0f0"}),
    # Chariot to e3 would screen the cannon e7 against the king (illegal); Kd0 faces the king d9.
    "screen_creation_and_facing": (
        "3k5/9/4c4/9/9/9/R8/9/9/4K4 w",
        {f"a3a{r}" for r in (0, 1, 2, 4, 5, 6, 7, 8, 9)}
        | {f"a3{f}3" for f in "bcdfghi"} | {"e0e1", "e0f0"}),
    # Cannon check through the advisor screen: the advisor steps off, the chariot captures,
    # Kd0 escapes; Kf0 would face the black king.
    "cannon_check": ("5k3/9/9/R3c4/9/9/9/9/4A4/4K4 w",
                     {"a6e6", "e0d0", "e1d0", "e1d2", "e1f0", "e1f2"}),
    # Horse check d2->e0 is parried only by blocking its leg d1 or stepping the king away.
    "horse_check_leg_block": ("5k3/9/9/9/9/9/9/3n5/R8/4K4 w", {"a1d1", "e0d0", "e0e1"}),
    # A crossed pawn also moves sideways; an uncrossed one only forward; the elephant stays home.
    "red_pawns_and_elephant": ("5k3/9/9/9/4P4/2B6/P8/9/9/3K5 w",
                               {"a3a4", "c4a2", "c4e2", "d0d1", "d0e0", "e5d5", "e5e6", "e5f5"}),
    "black_pawns": ("3k5/9/9/p8/9/4p4/9/9/9/5K3 b",
                    {"a6a5", "d9d8", "d9e9", "e4d4", "e4e3", "e4f4"}),
    # Checkmated: the chariot e8 checks, d0 faces the king d9, f0 is covered by the chariot f8.
    "checkmate": ("3k5/4rr3/9/9/9/9/9/9/9/4K4 w", set()),
}

MATE_IN_ONE_FEN = "4k4/R8/9/9/9/9/9/9/9/1R1K5 w"  # b0b9 mates: e8 covered, d9 faces Kd0


def _completion(move: str, thinking: str = "consider the threats") -> str:
  return f"<think>{thinking}</think>\n<answer>{move}</answer>"


# -- board ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fen", list(PUBLISHED_PERFT))
def test_perft_matches_published_counts(fen):
  board = xb.Board.from_fen(fen)
  assert tuple(board.perft(depth) for depth in (1, 2, 3)) == PUBLISHED_PERFT[fen]
  assert board.to_fen() == xb.Board.from_fen(fen).to_fen()  # make/unmake restored everything


@slow
def test_perft_depth_4_from_start():
  assert xb.Board.from_fen(xb.START_FEN).perft(4) == 3_290_240


@pytest.mark.parametrize("name", list(HAND_COUNTED))
def test_legal_moves_of_hand_counted_positions(name):
  fen, expected = HAND_COUNTED[name]
  board = xb.Board.from_fen(fen)
  assert {xb.move_to_iccs(m) for m in board.legal_moves()} == expected
  assert board.in_check() == (name in ("cannon_check", "horse_check_leg_block", "checkmate"))


def test_fen_reads_alternative_letters_and_round_trips():
  alternative = "rheakaehr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RHEAKAEHR r"
  board = xb.Board.from_fen(alternative)
  assert board.to_fen() == xb.START_FEN
  assert xb.Board.from_fen(board.to_fen()).squares == board.squares
  diagram = str(board).splitlines()
  assert diagram[0] == "9 r n b a k a b n r" and diagram[7] == "2 . C . . . . . C ."
  assert xb.Board.from_fen("4k4/9/9/9/9/9/9/9/9/3K5").side == xb.RED
  assert xb.Board.from_fen("4k4/9/9/9/9/9/9/9/9/3K5 b").side == xb.BLACK


@pytest.mark.parametrize("fen, message", [
    ("rnbakabnr/9/1c5c1", "3 rows"),
    ("rnbakabnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNRR w", "wider"),
    ("rnbakabnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABN w", "covers 8 files"),
    ("rnbakabnr/9/1c5c1/p1p1p1p1x/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNR w", "unknown piece letter 'x'"),
    ("rnbakabnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNR x", "side to move"),
    ("rnba1abnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNR w", "0 Black kings"),
    ("4k4/9/9/9/9/9/9/9/9/K8 w", "Red king stands outside its palace"),
])
def test_fen_errors_name_the_problem(fen, message):
  with pytest.raises(ValueError, match=message):
    xb.Board.from_fen(fen)


def test_iccs_codec():
  assert xb.iccs_to_move("h2e2") == (xb.square(7, 2), xb.square(4, 2))
  assert xb.iccs_to_move("H2E2") == xb.iccs_to_move("h2e2")
  assert xb.move_to_iccs(xb.iccs_to_move("a0i9")) == "a0i9"
  for bad in ("j2e2", "h2e", "h2e22", "", "h-e2"):
    assert xb.iccs_to_move(bad) is None


def test_search_finds_mate_and_scores_moves_consistently():
  board = xb.Board.from_fen(MATE_IN_ONE_FEN)
  result = xb.search(board, depth=2)
  assert xb.move_to_iccs(result.best_move) == "b0b9"
  assert result.score == xb.MATE_SCORE - 1
  assert xb.score_move(board, result.best_move, depth=2) == result.score
  assert xb.score_move(board, xb.iccs_to_move("b0b1"), depth=2) < result.score
  assert board.to_fen() == xb.Board.from_fen(MATE_IN_ONE_FEN).to_fen()
  start = xb.search(xb.Board.from_fen(xb.START_FEN), depth=2)
  assert start == xb.search(xb.Board.from_fen(xb.START_FEN), depth=2)  # deterministic
  with pytest.raises(xb.SearchBudgetExceeded):
    xb.search(xb.Board.from_fen(xb.START_FEN), depth=3, max_nodes=100)


def test_builtin_judge_sees_a_hanging_horse():
  # After a0a1 the black cannon b7 takes the horse b0 over the screen b2 (the chariot left a0).
  verdict = xiangqi_engine.BuiltinJudge(depth=2).evaluate_move(xb.START_FEN, "a0a1")
  assert verdict.move_score <= verdict.best_score - xb.PIECE_VALUES[xb.HORSE] + 100
  with pytest.raises(ValueError, match="not a legal ICCS move"):
    xiangqi_engine.BuiltinJudge(depth=1).evaluate_move(xb.START_FEN, "a0a5")


# -- reward --------------------------------------------------------------------------------------


class _FixedJudge:
  """A judge with given scores, recording its calls."""

  def __init__(self, best_move, best_score, move_score):
    self.verdict = xiangqi_engine.MoveEvaluation(best_move, best_score, move_score, "fixed")
    self.calls = []

  def evaluate_move(self, fen, move):
    self.calls.append((fen, move))
    return self.verdict


class _BrokenJudge:

  def evaluate_move(self, fen, move):
    raise RuntimeError("engine on fire")


def test_reward_legal_best_move_with_correct_analysis_scores_the_maximum():
  ground_truth = {"fen": MATE_IN_ONE_FEN, "best_move": "b0b9", "annotations": {"evaluation": "red"}}
  result = xiangqi.xiangqi_r1(_completion("b0b9", "evaluation: red, the chariot mates"),
                              ground_truth)
  assert result.total == pytest.approx(1.0)
  assert result.components == {"format": 1.0, "move_parsed": 1.0, "legality": 1.0, "quality": 1.0,
                                "analysis": 1.0, "analysis_available": 1.0, "judge_failed": 0.0,
                                "top1": 1.0, "evaluation": 1.0, "cp_loss": 0.0}
  assert result.info["best_move"] == "b0b9"
  assert base.get("xiangqi_r1") is xiangqi.xiangqi_r1


def test_reward_legal_but_worse_move_is_scored_below_the_best():
  ground_truth = {"fen": MATE_IN_ONE_FEN}
  # The built-in searcher at depth 2 does not see a8a9's later mate (Fairy-Stockfish does: both
  # moves then win with certainty and score 1).
  judge = xiangqi_engine.BuiltinJudge(depth=2)
  best = xiangqi.xiangqi_r1(_completion("b0b9"), ground_truth, judge=judge)
  worse = xiangqi.xiangqi_r1(_completion("a8a9"), ground_truth, judge=judge)
  assert best.total == pytest.approx(1.0)  # no analysis check: weights of the other three only
  assert worse.components["legality"] == 1.0
  assert 0.0 <= worse.components["quality"] < 1.0
  assert worse.total < best.total


def test_reward_illegal_move_gets_no_legality_or_quality():
  judge = _FixedJudge("b0b9", 100.0, 100.0)
  result = xiangqi.xiangqi_r1(_completion("b0c2"), {"fen": MATE_IN_ONE_FEN, "best_move": "b0b9"},
                              judge=judge)
  assert result.components["move_parsed"] == 1.0
  assert result.components["legality"] == 0.0
  assert result.components["quality"] == 0.0
  assert result.components["analysis"] == 0.0
  assert result.total == pytest.approx(0.1)  # format only: 0.1 / (0.1 + 0.2 + 0.6 + 0.1)
  assert judge.calls == []  # an illegal move is never sent to the judge


@pytest.mark.parametrize("completion", [
    "b0b9",
    "<answer>b0b9</answer>",
    "<think>x</think><answer>b0b9</answer> trailing text",
    "<think><think>x</think><answer>b0b9</answer>",
])
def test_reward_bad_format_scores_zero(completion):
  result = xiangqi.xiangqi_r1(completion, {"fen": MATE_IN_ONE_FEN})
  assert result.total == 0.0
  assert all(result.components[k] == 0.0 for k in ("format", "legality", "quality", "analysis"))


def test_reward_without_format_gate_still_scores_the_move():
  reward = xiangqi.XiangqiReward(require_format=False)
  result = reward("<answer>b0b9</answer>", {"fen": MATE_IN_ONE_FEN})
  assert result.components["format"] == 0.0
  assert result.components["legality"] == 1.0
  assert result.total == pytest.approx(0.8 / 0.9)


@pytest.mark.parametrize("answer, move", [
    ("h2e2", "h2e2"), ("H2-E2", "h2e2"), ("Cannon h2 e2 to the centre", "h2e2"),
    ("h2e2, i.e. h2e2", "h2e2"), ("h2e2 or b2e2", None), ("炮二平五", None), ("ah2e2", None),
    ("", None),
])
def test_parse_answer_move(answer, move):
  assert xiangqi.parse_answer_move(answer) == move


def test_quality_follows_the_documented_curve():
  scale = xiangqi.XiangqiReward().cp_scale
  # wp(0) = 0.5 and wp(-scale * ln 3) = 0.25: a win-probability drop of 0.25, which the
  # rescaled exp(-4.354 * drop) curve maps to (e^-1.0885 - e^-4.354) / (1 - e^-4.354) = 0.3281.
  judge = _FixedJudge("h2e2", 0.0, -scale * math.log(3.0))
  result = xiangqi.xiangqi_r1(_completion("b2e2"), {"fen": xb.START_FEN}, judge=judge)
  assert result.components["quality"] == pytest.approx(0.3281, abs=1e-4)
  assert result.total == pytest.approx((0.1 + 0.2 + 0.6 * 0.3281) / 0.9, abs=1e-4)
  assert judge.calls == [(xb.START_FEN, "b2e2")]
  assert xiangqi.move_quality(500.0, 500.0, scale, 4.354) == 1.0
  assert xiangqi.move_quality(xb.MATE_SCORE, -xb.MATE_SCORE, scale, 4.354) == pytest.approx(0.0)
  assert xiangqi.move_quality(0.0, 300.0, scale, 4.354) == 1.0  # a judge's noise never exceeds 1


def test_reward_judge_failure_is_a_component():
  result = xiangqi.xiangqi_r1(_completion("b0b9"), {"fen": MATE_IN_ONE_FEN}, engine=_BrokenJudge())
  assert result.components["judge_failed"] == 1.0
  assert result.components["quality"] == 0.0
  assert result.components["legality"] == 1.0
  assert "engine on fire" in result.info["judge_error"]
  # A context object that is not a move judge at all is a judge failure too.
  result = xiangqi.xiangqi_r1(_completion("b0b9"), {"fen": MATE_IN_ONE_FEN}, judge=object())
  assert result.components["judge_failed"] == 1.0
  assert "context 'judge' holds a object" in result.info["judge_error"]


class _SlowJudge:

  def evaluate_move(self, fen, move):
    time.sleep(0.6)
    return xiangqi_engine.MoveEvaluation(move, 0.0, 0.0, "slow")


class _NanJudge:

  def evaluate_move(self, fen, move):
    return xiangqi_engine.MoveEvaluation(move, math.nan, 0.0, "nan")


def test_reward_bounds_any_judge_by_judge_timeout_s():
  start = time.perf_counter()
  result = xiangqi.xiangqi_r1(_completion("b0b9"), {"fen": MATE_IN_ONE_FEN}, judge=_SlowJudge(),
                              judge_timeout_s=0.1)
  assert time.perf_counter() - start < 0.5
  assert result.components["judge_failed"] == 1.0
  assert result.info["judge_status"] == "timeout"
  result = xiangqi.xiangqi_r1(_completion("b0b9"), {"fen": MATE_IN_ONE_FEN}, judge=_NanJudge())
  assert result.components["judge_failed"] == 1.0
  assert result.info["judge_status"] == "invalid"


def test_reward_prefers_the_xiangqi_judge_context_key():
  chosen = _FixedJudge("b0b9", 10.0, 10.0)
  result = xiangqi.xiangqi_r1(_completion("b0b9"), {"fen": MATE_IN_ONE_FEN},
                              xiangqi_judge=chosen, judge=_BrokenJudge())
  assert result.components["judge_failed"] == 0.0
  assert len(chosen.calls) == 1


@pytest.mark.parametrize("stated, annotation, expected", [
    ("evaluation: red", "red", 1.0), ("Eval = -320", "black", 1.0), ("evaluation: 30", 10, 1.0),
    ("评估：均势", "equal", 1.0), ("evaluation: black", 400, 0.0),
    ("no statement", "red", 0.0),
    ("evaluation: red ... on reflection evaluation: equal", "equal", 1.0),
])
def test_reward_analysis_checks_the_stated_evaluation(stated, annotation, expected):
  ground_truth = {"fen": xb.START_FEN, "annotations": {"evaluation": annotation}}
  result = xiangqi.xiangqi_r1(_completion("h2e2", stated), ground_truth,
                              judge=_FixedJudge("h2e2", 0.0, 0.0))
  assert result.components["analysis"] == expected
  assert result.components["analysis_available"] == 1.0


@pytest.mark.parametrize("ground_truth, error, message", [
    ({}, KeyError, "needs 'fen'"),
    ({"fen": "rnbakabnr/9/1c5c1"}, ValueError, r"\['fen'\] must be a valid position \(.*3 rows"),
    ({"fen": None}, ValueError, r"\['fen'\] must be a valid position"),
    ({"fen": xb.START_FEN, "best_move": "h2h8"}, ValueError, r"\['best_move'\] must be legal ICCS moves.*'h2h8'"),
    ({"fen": xb.START_FEN, "best_move": "zz"}, ValueError, r"\['best_move'\] must be legal ICCS moves.*'zz'"),
    ({"fen": xb.START_FEN, "best_move": 5}, ValueError, r"\['best_move'\] must be an ICCS move"),
    ({"fen": xb.START_FEN, "annotations": {"evaluation": "winnable"}}, ValueError, "annotations.evaluation"),
    ({"fen": xb.START_FEN, "annotations": ["red"]}, ValueError, r"\['annotations'\] must be a mapping"),
])
def test_reward_bad_ground_truth_names_the_key(ground_truth, error, message):
  with pytest.raises(error, match="xiangqi: ground_truth.*" + message):
    xiangqi.xiangqi_r1(_completion("h2e2"), ground_truth)


@pytest.mark.parametrize("field, value", [("quality_weight", -1.0), ("cp_scale", 0.0),
                                          ("analysis_weight", math.nan), ("builtin_depth", 0)])
def test_reward_config_errors_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    xiangqi.XiangqiReward(**{field: value})


_FRAGMENTS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "h2e2", "H2-E2", "b2e2", "a0a9", "e9e8",
    "evaluation: red", "eval=-99999999999999999999", "评估：均势", " ", "\n", "\ufffd", "NaN",
    "{\"move\": NaN}", "<think></think><answer>",
])


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=12).map("".join)))
def test_reward_never_raises_and_stays_in_range(completion):
  ground_truth = {"fen": xb.START_FEN, "best_move": ["h2e2", "b2e2"],
                  "annotations": {"evaluation": "equal"}}
  result = xiangqi.xiangqi_r1(completion, ground_truth)
  assert math.isfinite(result.total) and 0.0 <= result.total <= 1.0
  assert set(result.components) == set(xiangqi.COMPONENTS)
  cp_loss = result.components.pop("cp_loss")
  assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in result.components.values())
  assert 0.0 <= cp_loss <= xiangqi.CP_LOSS_CAP


@pytest.mark.parametrize("thinking, answer", [
    ("x" * 100_000 + "evaluation: equal" * 1000, "h2e2"),
    ("evaluation" + " " * 100_000 + ":" + "evaluation: equal", "a1" + " " * 100_000 + "h2e2"),
    ("evaluation: equal", "h2 e2 " * 20_000),
], ids=["long_thinking", "long_whitespace_runs", "repeated_move"])
def test_reward_handles_huge_completions_quickly(thinking, answer):
  ground_truth = {"fen": xb.START_FEN, "annotations": {"evaluation": "equal"}}
  start = time.perf_counter()
  result = xiangqi.xiangqi_r1(_completion(answer, thinking), ground_truth)
  assert time.perf_counter() - start < 2.0
  assert result.components["analysis"] == 1.0
  assert result.info["move"] == "h2e2"


# -- UCI / UCCI engine subprocess ----------------------------------------------------------------

_FAKE_ENGINE = textwrap.dedent("""
    import json, os, sys, time
    config = json.loads(sys.argv[1])
    scores = config["scores"]  # ICCS move -> centipawns for the side to move at the root
    best = max(scores, key=scores.get)
    with open(config["pid_file"], "w") as f:
      f.write(str(os.getpid()))
    played = []
    def say(line):
      print(line, flush=True)
    def score(cp):
      return f"score cp {cp}" if config["protocol"] == "uci" else f"score {cp}"
    for line in sys.stdin:
      tokens = line.split()
      if not tokens:
        continue
      if tokens[0] in ("uci", "ucci"):
        say("id name fake")
        say(tokens[0] + "ok")
      elif tokens[0] == "isready":
        say("readyok")
      elif tokens[0] == "position":
        played = tokens[tokens.index("moves") + 1:] if "moves" in tokens else []
      elif tokens[0] == "go":
        if config["mode"] == "hang":
          time.sleep(3600)
        if config["mode"] == "crash":
          sys.exit(3)
        if "searchmoves" in tokens:
          move = tokens[tokens.index("searchmoves") + 1]
          cp = scores[move]
        elif played:
          move, cp = "a9a8", -scores[played[0]]  # the reply is irrelevant; the score is the mover's
        else:
          move, cp = best, scores[best]
        say("info string thinking")
        say(f"info depth 1 {score(cp + 999)} upperbound pv {move}")
        say(f"info depth 2 {score(cp)} pv {move}")
        say(f"bestmove {move}")
      elif tokens[0] == "quit":
        break
""")


def _fake_engine(tmp_path, mode="ok", protocol="uci", **judge_kwargs):
  script = tmp_path / "fake_engine.py"
  script.write_text(_FAKE_ENGINE)
  config = {"scores": {"h2e2": 40, "b2e2": 35, "a0a1": -400}, "mode": mode, "protocol": protocol,
            "pid_file": str(tmp_path / "engine.pid")}
  judge = xiangqi_engine.UciEngineJudge([sys.executable, str(script), json.dumps(config)],
                                        protocol=protocol, **judge_kwargs)
  return judge, tmp_path / "engine.pid"


def _process_gone(pid_file):
  pid = int(pid_file.read_text())
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


@pytest.mark.parametrize("protocol, use_searchmoves", [("uci", None), ("uci", False),
                                                       ("ucci", None)])
def test_engine_judge_scores_best_and_answered_moves(tmp_path, protocol, use_searchmoves):
  judge, pid_file = _fake_engine(tmp_path, protocol=protocol, use_searchmoves=use_searchmoves,
                                 depth=3, timeout_s=5.0)
  with judge:
    verdict = judge.evaluate_move(xb.START_FEN, "a0a1")
    assert (verdict.best_move, verdict.best_score, verdict.move_score) == ("h2e2", 40.0, -400.0)
    assert judge.evaluate_move(xb.START_FEN, "h2e2").move_score == 40.0
    result = xiangqi.xiangqi_r1(_completion("b2e2"), {"fen": xb.START_FEN}, engine=judge)
    assert result.components["judge_failed"] == 0.0
    assert result.info["move_score"] == 35.0
    assert 0.9 < result.components["quality"] < 1.0
  assert _process_gone(pid_file)


@pytest.mark.parametrize("mode", ["hang", "crash"])
def test_engine_failure_is_reported_not_raised(tmp_path, mode):
  judge, pid_file = _fake_engine(tmp_path, mode=mode, depth=3, timeout_s=0.5)
  start = time.perf_counter()
  result = xiangqi.xiangqi_r1(_completion("h2e2"), {"fen": xb.START_FEN}, judge=judge)
  assert time.perf_counter() - start < 5.0
  assert result.components["judge_failed"] == 1.0
  assert result.components["quality"] == 0.0
  assert result.components["legality"] == 1.0
  assert _process_gone(pid_file)  # a hung engine is killed, not left running
  with pytest.raises(xiangqi_engine.JudgeError):
    judge.evaluate_move(xb.START_FEN, "h2e2")  # the next query restarts it and fails again
  judge.close()


def test_engine_missing_binary_is_a_judge_failure(tmp_path):
  judge = xiangqi_engine.UciEngineJudge([str(tmp_path / "no-such-engine")], timeout_s=1.0)
  result = xiangqi.xiangqi_r1(_completion("h2e2"), {"fen": xb.START_FEN}, judge=judge)
  assert result.components["judge_failed"] == 1.0
  assert "cannot start engine" in result.info["judge_error"]


@pytest.mark.parametrize("line, score", [
    ("info depth 9 seldepth 12 score cp -37 nodes 100 pv h2e2", -37),
    ("info depth 9 score mate 2 pv h2e2", xb.MATE_SCORE - 3),  # mate in 2 moves = 3 plies
    ("info depth 9 score mate -1 pv h2e2", -xb.MATE_SCORE + 2),
    ("info depth 9 score 25 pv h2e2", 25),  # UCCI
    ("info depth 9 score cp 80 lowerbound", None),
    ("info depth 9 multipv 2 score cp 10", None),
    ("info depth 9 score cp", None),
])
def test_engine_score_parsing(line, score):
  assert xiangqi_engine._parse_score(line.split()) == score


def test_engine_judge_config_errors():
  with pytest.raises(ValueError, match="protocol"):
    xiangqi_engine.UciEngineJudge("pikafish", protocol="xboard")
  with pytest.raises(ValueError, match="depth or movetime_ms"):
    xiangqi_engine.UciEngineJudge("pikafish", depth=None)
  with pytest.raises(ValueError, match="searchmoves"):
    xiangqi_engine.UciEngineJudge("eleeye", protocol="ucci", use_searchmoves=True)


def test_legal_first_reward_keeps_a_poor_legal_move_above_its_group_mean():
  """Why the embedded default's GRPO uses it: in a group {best, poor legal, illegal}, the default
  weights put the poor legal move below the group's mean (a negative advantage), these above."""
  ground_truth = {"fen": MATE_IN_ONE_FEN, "best_move": "b0b9", "annotations": {"evaluation": "red"}}
  judge = _FixedJudge("b0b9", 30000.0, -30000.0)  # the poor move throws the win away: quality 0
  group = [_completion("b0b9", "evaluation: red"), _completion("a8a9", "evaluation: black"),
           _completion("b0c2", "evaluation: red")]
  for reward, poor_above_mean in ((xiangqi.xiangqi_r1, False), (xiangqi.xiangqi_r1_legal_first, True)):
    totals = [reward(c, ground_truth, judge=_FixedJudge("b0b9", 30000.0, 30000.0) if i == 0 else judge).total
              for i, c in enumerate(group)]
    assert totals[0] == pytest.approx(1.0) and totals[1] > totals[2]
    assert (totals[1] > sum(totals) / 3) == poor_above_mean, (reward, totals)
  assert base.get("xiangqi_r1_legal_first") is xiangqi.xiangqi_r1_legal_first
