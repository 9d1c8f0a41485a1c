"""Xiangqi-R1 reward: format, move legality, engine-judged move quality and annotated analysis.

The paper (arXiv 2507.12215) trains its GRPO stage with "multi-dimensional rewards" for the
move, the analysis and the format, and does not publish their weights; this is r1jax's design
(shared/specs/rewards.md). The weights put the move first, as the paper's headline metrics do
(legality and move quality together 0.8: a legal move is the precondition of any quality), the
analysis and the format as smaller shaping terms (0.1 each); all four are configurable.

Completion: `<think>…</think><answer>MOVE</answer>`. MOVE is ICCS (files a–i, ranks 0–9 from
Red's side, from-square then to-square, e.g. `h2e2`), case-insensitive, optionally split by a
dash and/or up to two spaces (`H2-E2`, `h2 e2`). Other words may surround it, but the answer
must name exactly one distinct move: an answer listing several moves names none, so hedging
earns nothing. Chinese notation (炮二平五) is not read.

Ground truth (a mapping; a missing `fen` raises KeyError and an invalid value ValueError, naming
the key — they are dataset bugs):
  fen (str, required): the position. Red uppercase K A B N R C P (E and H are read as elephant
    and horse); side to move 'w'/'r' (Red) or 'b' (Black), Red when missing.
  best_move (str or list of str, optional): the reference best move(s) in ICCS, legal in `fen`.
  annotations (mapping, optional): `evaluation`, who stands better in `fen`: "red", "black",
    "equal", or centipawns from Red's point of view; or "winning" / "losing" for the side to
    move.

Context (unknown keys are ignored):
  xiangqi_judge / judge / engine: a `MoveJudge` (e.g. `UciEngineJudge` running Pikafish with a
    depth or time limit and its own per-search timeout), looked up in that order. Without one,
    `xiangqi_engine.default_judge` judges: Fairy-Stockfish at `engine_depth` when installed,
    else the deterministic built-in searcher at `builtin_depth` (it logs which).
  judge_timeout_s: limit for one judge call (default `judges.DEFAULT_TIMEOUT_S`), enforced by
    `judges.call_judge` for every judge; a judge past it is abandoned and counts as failed.

Components (all floats, the same keys for every completion):
  format: 1 if the completion is think-then-answer (`parsing.is_think_answer`), else 0.
  move_parsed: 1 if the answer names exactly one ICCS move.
  legality: 1 if that move is legal in `fen`.
  quality: the judged move against the judge's best move, through win probabilities:
      wp(cp) = 1 / (1 + exp(-cp / cp_scale))
      drop = max(0, wp(best_cp) - wp(move_cp))  in [0, 1]
      quality = (exp(-k · drop) - exp(-k)) / (1 - exp(-k)),  k = accuracy_decay = 4.354
    cp_scale = 271.6 is lichess's 0.00368208 per cp: +100 cp ≈ 59 %, +300 cp ≈ 75 %,
    +600 cp ≈ 90 %, a mate ≈ 100 %. The quality curve is lichess's move accuracy
    (exp(-0.04354 per win-% point)) rescaled so that the best move scores exactly 1 and a drop
    from certain win to certain loss scores 0; a drop of 10 % scores 0.64, of 30 % 0.26.
    Scores are clipped to ±MATE_SCORE first. 0 when the move is illegal or the judge failed.
  analysis: mean of the checks the ground truth allows, else 0:
      - best-move match: 1 if the answered move is one of `best_move`;
      - evaluation sign: 1 if the completion states who stands better and that agrees with
        `annotations["evaluation"]`. The statement is the last `evaluation: X` (also `eval`,
        `评估`, `形势`; separator `:`, `：` or `=`) anywhere in the completion, X one of red /
        black / equal (even, balanced, draw; 红优, 黑优, 均势), winning / losing (for the side
        to move) or centipawns from Red's view. Centipawns within ±equal_margin_cp count as
        equal.
  analysis_available: 1 if the ground truth allows at least one analysis check.
  judge_failed: 1 if the judge raised, timed out or answered non-finite scores (its status and
    error are in `info`); quality is then 0.
  Metrics for the held-out table (not in the total):
  top1: 1 if the answered move is one of `best_move` (0 when the ground truth has none).
  evaluation: 1 if the stated evaluation agrees with the annotation (the paper's analysis
    accuracy; 0 when there is none).
  cp_loss: the judged move's centipawn loss, max(0, best - move) clipped to CP_LOSS_CAP; an
    unparsed, illegal or unjudged move (judge_failed says which) counts CP_LOSS_CAP.

Total: the weighted mean of the components that apply,
    total = (Σ w_k · c_k) / (Σ w_k),  k over format, legality, quality (+ analysis if available),
so total ∈ [0, 1] and a legal best move with a correct analysis scores 1. With `require_format`
(the default) a completion that fails the format check scores 0 in every component.
Default weights: format 0.1, legality 0.2, quality 0.6, analysis 0.1 (`xiangqi_r1`);
`xiangqi_r1_legal_first`: format 0.1, legality 0.5, quality 0.3, analysis 0.1 (see its comment).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

from r1jax.rewards import judges
from r1jax.rewards import parsing
from r1jax.rewards import schema
from r1jax.rewards import xiangqi_board as xb
from r1jax.rewards import xiangqi_engine
from r1jax.rewards.base import RewardResult, register

# Separators are bounded (at most two spaces around an optional dash): unbounded `\s*` runs on
# both sides of the dash backtrack quadratically on long runs of spaces.
_MOVE_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])([a-iA-I][0-9])\s{0,2}(?:[-–]\s{0,2})?([a-iA-I][0-9])(?![A-Za-z0-9])")
_EVALUATION_WORDS = {
    "red": "red", "红优": "red", "black": "black", "黑优": "black", "equal": "equal",
    "even": "equal", "balanced": "equal", "draw": "equal", "均势": "equal",
}
_EVALUATION_PATTERN = re.compile(
    r"(?:evaluation|eval|评估|形势)\s{0,3}[:：=]\s{0,3}"
    r"(red|black|equal|even|balanced|draw|winning|losing|红优|黑优|均势|胜势|败势|[+-]?\d+(?:\.\d+)?)",
    re.IGNORECASE)
_JUDGE_KEYS = ("xiangqi_judge", "judge", "engine")
_SIDE_WORDS = {"winning": 1, "losing": -1, "胜势": 1, "败势": -1}
COMPONENTS = ("format", "move_parsed", "legality", "quality", "analysis", "analysis_available",
              "judge_failed", "top1", "evaluation", "cp_loss")
CP_LOSS_CAP = 1000.0


def parse_answer_move(answer: str | None) -> str | None:
  """The one ICCS move the answer names (lowercase, e.g. 'h2e2'), or None if none or several."""
  if not isinstance(answer, str):
    return None
  moves = set()
  for match in _MOVE_PATTERN.finditer(answer):
    moves.add((match.group(1) + match.group(2)).lower())
    if len(moves) > 1:
      return None
  return moves.pop() if moves else None


def _side_from_centipawns(cp: float, equal_margin_cp: float) -> str:
  if abs(cp) <= equal_margin_cp:
    return "equal"
  return "red" if cp > 0 else "black"


def _side_word(word: str, side_to_move: int) -> str:
  """'red' / 'black' for 'winning' / 'losing' said by the side to move (xb.RED or xb.BLACK)."""
  return "red" if _SIDE_WORDS[word] * side_to_move > 0 else "black"


def parse_stated_evaluation(completion: str, equal_margin_cp: float,
                            side_to_move: int = xb.RED) -> str | None:
  """Who the completion says stands better ('red', 'black', 'equal'), or None if it never says.

  'winning' / 'losing' are read for `side_to_move`."""
  if not isinstance(completion, str):
    return None
  last = None
  for last in _EVALUATION_PATTERN.finditer(completion):
    pass
  if last is None:
    return None
  value = last.group(1).lower()
  if value in _EVALUATION_WORDS:
    return _EVALUATION_WORDS[value]
  if value in _SIDE_WORDS:
    return _side_word(value, side_to_move)
  return _side_from_centipawns(float(value), equal_margin_cp)


def win_probability(cp: float, cp_scale: float) -> float:
  """Logistic win probability of a centipawn score (clipped to ±MATE_SCORE)."""
  cp = min(max(cp, -xb.MATE_SCORE), xb.MATE_SCORE)
  return 1.0 / (1.0 + math.exp(-cp / cp_scale))


def move_quality(best_cp: float, move_cp: float, cp_scale: float, accuracy_decay: float) -> float:
  """Quality in [0, 1] of a move scored `move_cp` when the best move scores `best_cp` (finite)."""
  drop = max(0.0, win_probability(best_cp, cp_scale) - win_probability(move_cp, cp_scale))
  floor = math.exp(-accuracy_decay)
  return min(1.0, max(0.0, (math.exp(-accuracy_decay * drop) - floor) / (1.0 - floor)))


@dataclasses.dataclass(frozen=True)
class _Target:
  """The validated ground truth."""

  board: xb.Board
  fen: str
  best_moves: frozenset[str]
  evaluation: str | None


def _parse_ground_truth(ground_truth: Mapping[str, Any], equal_margin_cp: float) -> _Target:
  fen = schema.field("xiangqi", ground_truth, "fen", "the position as a FEN string")
  try:
    board = xb.Board.from_fen(fen)
  except ValueError as e:
    raise schema.malformed("xiangqi", "fen", f"a valid position ({e})", fen) from e
  best = parsing.plain(ground_truth.get("best_move"))
  best = [] if best is None else [best] if isinstance(best, str) else best
  if not isinstance(best, (list, tuple)):
    raise schema.malformed("xiangqi", "best_move", "an ICCS move or a list of them", best)
  for move in best:
    iccs = xb.iccs_to_move(move)
    if iccs is None or not board.is_legal(iccs):
      raise schema.malformed("xiangqi", "best_move", f"legal ICCS moves in FEN {fen!r}", move)
  annotations = ground_truth.get("annotations") or {}
  if not isinstance(annotations, Mapping):
    raise schema.malformed("xiangqi", "annotations", "a mapping", annotations)
  evaluation = annotations.get("evaluation")
  if isinstance(evaluation, str) and evaluation.lower() in ("red", "black", "equal"):
    evaluation = evaluation.lower()
  elif isinstance(evaluation, str) and evaluation.lower() in ("winning", "losing"):
    evaluation = _side_word(evaluation.lower(), board.side)
  elif isinstance(evaluation, (int, float)) and not isinstance(evaluation, bool) \
      and math.isfinite(evaluation):
    evaluation = _side_from_centipawns(evaluation, equal_margin_cp)
  elif evaluation is not None:
    raise schema.malformed("xiangqi", "annotations.evaluation", "'red', 'black', 'equal', 'winning', 'losing' or finite centipawns",
                           evaluation)
  return _Target(board, board.to_fen(), frozenset(m.lower() for m in best), evaluation)


def _checked_verdict(verdict: Any) -> xiangqi_engine.MoveEvaluation:
  """The judge's answer with float scores; raises unless both scores are finite numbers."""
  best_score, move_score = float(verdict.best_score), float(verdict.move_score)
  if not (math.isfinite(best_score) and math.isfinite(move_score)):
    raise ValueError(f"judge gave non-finite scores best={best_score}, move={move_score}")
  return xiangqi_engine.MoveEvaluation(str(verdict.best_move), best_score, move_score,
                                       str(getattr(verdict, "source", "")))


@dataclasses.dataclass(frozen=True)
class XiangqiReward:
  """The Xiangqi-R1 reward with configurable weights (see the module docstring)."""

  format_weight: float = 0.1
  legality_weight: float = 0.2
  quality_weight: float = 0.6
  analysis_weight: float = 0.1
  require_format: bool = True
  cp_scale: float = 1.0 / 0.00368208
  accuracy_decay: float = 4.354
  equal_margin_cp: float = 50.0
  engine_depth: int = 8
  builtin_depth: int = 2

  def __post_init__(self):
    for name in ("format_weight", "legality_weight", "quality_weight", "analysis_weight",
                 "equal_margin_cp"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"XiangqiReward.{name} must be finite and >= 0, got {value}")
    if self.format_weight + self.legality_weight + self.quality_weight <= 0:
      raise ValueError("XiangqiReward needs a positive format, legality or quality weight")
    for name in ("cp_scale", "accuracy_decay"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f"XiangqiReward.{name} must be finite and > 0, got {value}")
    for name in ("engine_depth", "builtin_depth"):
      if getattr(self, name) < 1:
        raise ValueError(f"XiangqiReward.{name} must be >= 1, got {getattr(self, name)}")

  @property
  def default_judge_spec(self) -> xiangqi_engine.DefaultJudgeSpec:
    return xiangqi_engine.DefaultJudgeSpec(engine_depth=self.engine_depth,
                                           builtin_depth=self.builtin_depth)

  def _judge(self, context: Mapping[str, Any]) -> tuple[str, Any]:
    """(context key, judge) of the injected judge, else the default judge."""
    for key in _JUDGE_KEYS:
      if context.get(key) is not None:
        return key, context[key]
    return "default", xiangqi_engine.default_judge(self.default_judge_spec)

  def __call__(self, completion: str, ground_truth: Mapping[str, Any],
               **context: Any) -> RewardResult:
    target = _parse_ground_truth(ground_truth, self.equal_margin_cp)
    components = dict.fromkeys(COMPONENTS, 0.0)
    components["cp_loss"] = CP_LOSS_CAP
    info: dict[str, Any] = {}
    analysis_checks = int(bool(target.best_moves)) + int(target.evaluation is not None)
    components["analysis_available"] = float(analysis_checks > 0)
    components["format"] = float(parsing.is_think_answer(completion))
    if components["format"] or not self.require_format:
      self._score_answer(completion, target, context, components, info)
    weights = {"format": self.format_weight, "legality": self.legality_weight,
               "quality": self.quality_weight}
    if analysis_checks:
      weights["analysis"] = self.analysis_weight
    total = sum(w * components[k] for k, w in weights.items()) / sum(weights.values())
    return RewardResult(total=float(total), components=components, info=info)

  def _score_answer(self, completion: str, target: _Target, context: Mapping[str, Any],
                    components: dict[str, float], info: dict[str, Any]) -> None:
    """Fills move_parsed, legality, quality, judge_failed and analysis."""
    move = parse_answer_move(parsing.extract_tag(completion, "answer"))
    info["move"] = move
    components["move_parsed"] = float(move is not None)
    legal = move is not None and target.board.is_legal(xb.iccs_to_move(move))
    components["legality"] = float(legal)
    if legal:
      key, judge = self._judge(context)
      if isinstance(judge, xiangqi_engine.MoveJudge):
        call = judges.call_judge(judge.evaluate_move, target.fen, move, validate=_checked_verdict,
                                 timeout_s=float(context.get("judge_timeout_s",
                                                             judges.DEFAULT_TIMEOUT_S)))
      else:
        call = judges.JudgeCall(judges.JUDGE_INVALID, error=(
            f"context {key!r} holds a {type(judge).__name__}, which has no "
            f"evaluate_move(fen, move)"))
      info["judge_status"] = call.status
      if call.ok:
        verdict = call.value
        components["quality"] = move_quality(verdict.best_score, verdict.move_score,
                                             self.cp_scale, self.accuracy_decay)
        components["cp_loss"] = min(CP_LOSS_CAP, max(0.0, verdict.best_score - verdict.move_score))
        info.update(best_move=verdict.best_move, best_score=verdict.best_score,
                    move_score=verdict.move_score, judge=verdict.source)
      else:
        components["judge_failed"] = 1.0
        info["judge_error"] = call.error
    checks = []
    if target.best_moves:
      components["top1"] = float(move in target.best_moves)
      checks.append(components["top1"])
    if target.evaluation is not None:
      stated = parse_stated_evaluation(completion, self.equal_margin_cp, target.board.side)
      info["stated_evaluation"] = stated
      components["evaluation"] = float(stated == target.evaluation)
      checks.append(components["evaluation"])
    if checks:
      components["analysis"] = sum(checks) / len(checks)


# Registered under the module name, like every recipe; "xiangqi_r1" is kept as an alias.
# The default judge is built at start-up (`rewards.startup`), so a run says at once which judge it has.
xiangqi_r1 = register("xiangqi_r1", judges=("xiangqi_judge",))(
    register("xiangqi", judges=("xiangqi_judge",))(XiangqiReward()))
# Legality first, for a policy that still plays illegal moves half the time (the embedded default's
# GRPO stage): a legal move scores >= 0.6 (format + legality), an illegal one <= 0.15 (format + half
# the analysis), so a poor legal move stays above a group mean that illegal samples pull down; with
# the weights above it (0.3) falls below the mean of any group holding a good move, and GRPO pushed
# legal moves down as often as up (tests/rewards/test_xiangqi.py).
xiangqi_r1_legal_first = register("xiangqi_r1_legal_first", judges=("xiangqi_judge",))(
    XiangqiReward(format_weight=0.1, legality_weight=0.5, quality_weight=0.3, analysis_weight=0.1))
