"""Xiangqi-R1 data: positions, engine labels, and the records of the three training stages.

One JSONL format, the *position record*, feeds all three stages (one JSON object per line):

    {"id": "xiangqi_r1/train/17",             # optional; else 'file:line'
     "fen": "3k5/9/9/9/9/9/9/9/4R4/4K4 w - - 0 1",  # required: the position (Red uppercase
                                              #   K A B N R C P, side 'w'/'r' Red or 'b' Black)
     "pieces": "K e0 R e1 ; k d9",           # optional: the per-piece list (written from fen)
     "best_move": "e1d1",                     # engine's best move, ICCS (files a-i, ranks 0-9)
     "score": 29950,                          # its centipawns, side to move's view
     "pv": ["e1d1", "d9e9", "d1d9"],          # principal variation, ICCS
     "evaluation": "winning",                 # side to move: winning | equal | losing
     "source": "sparse"}                      # how the position was made (free text)

`fen` is the only required field: a user's own positions without labels still give stage-1
records (the move generator answers them) and GRPO prompts (the judge scores them); stages 2's
records need `best_move` and `evaluation` (`pv` optional). Records whose `fen` is not a valid
position, or whose labels are not legal in it, are skipped and counted by the pipeline
(`errors.BAD_RECORD`, naming the file and line).

From a position record, `to_example` makes, by `mode`:
* 'legal' (stage 1, SFT): the legal moves of one piece (`<answer>a3a4 a3a5 ...</answer>`, sorted)
  or one legal move, chosen per record from (seed, index); the answer is checkable by the move
  generator;
* 'strategy' (stage 2, SFT): the analysis and the move, `<think>evaluation: winning. line: h2e2
  h9g7</think><answer>h2e2</answer>`: the engine's evaluation for the side to move, and a
  rationale written from a template around the principal variation;
* 'grpo' (stage 3): the same prompt as 'strategy', with the engine's best move, score, PV and
  evaluation as ground truth for the `xiangqi_r1` reward.

Positions come from three generators, deduplicated by FEN (`generate_positions`): random legal
playouts from the start, engine self-play at varied depths (the first plies random so games
differ), and sparse endgame-like positions (kings plus a few random pieces on legal squares).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from data_pipelines import errors
from data_pipelines.records import Example
from data_pipelines.sources import RawRecord
from r1jax.rewards import xiangqi_board as xb
from r1jax.rewards import xiangqi_engine

MODES = ("legal", "strategy", "grpo")
PROMPT_STYLES = ("full", "short")
EVALUATIONS = ("winning", "equal", "losing")
SOURCES = ("playout", "selfplay", "sparse")
_KIND_ORDER = (xb.KING, xb.ADVISOR, xb.ELEPHANT, xb.HORSE, xb.CHARIOT, xb.CANNON, xb.PAWN)
_LETTERS = {xb.KING: "K", xb.ADVISOR: "A", xb.ELEPHANT: "B", xb.HORSE: "N", xb.CHARIOT: "R",
            xb.CANNON: "C", xb.PAWN: "P"}
_NAMES = {xb.KING: "king", xb.ADVISOR: "advisor", xb.ELEPHANT: "elephant", xb.HORSE: "horse",
          xb.CHARIOT: "chariot", xb.CANNON: "cannon", xb.PAWN: "pawn"}
SYSTEM_MESSAGE = ("You are a Chinese chess (xiangqi) expert. Think about the position inside "
                  "<think></think>, then give your move in ICCS notation inside <answer></answer>.")
SHORT_SYSTEM_MESSAGE = "xiangqi"  # replaces the chat template's default system text: few tokens


def square_name(sq: int) -> str:
  return f"{'abcdefghi'[xb.file_of(sq)]}{xb.rank_of(sq)}"


def piece_list(board: xb.Board) -> str:
  """Red's pieces (uppercase) then Black's, each `LETTER square`, e.g. 'K e0 R a3 ; k e9 n b7'."""
  sides = []
  for side in (xb.RED, xb.BLACK):
    pieces = sorted((_KIND_ORDER.index(abs(p)), sq) for sq, p in enumerate(board.squares)
                    if p * side > 0)
    sides.append(" ".join(f"{_LETTERS[_KIND_ORDER[k]] if side == xb.RED else _LETTERS[_KIND_ORDER[k]].lower()}"
                          f" {square_name(sq)}" for k, sq in pieces))
  return " ; ".join(sides)


def side_name(board: xb.Board) -> str:
  return "red" if board.side == xb.RED else "black"


def evaluation_label(score: float, equal_margin_cp: float) -> str:
  """'winning' / 'equal' / 'losing' for the side to move from its centipawns."""
  if abs(score) <= equal_margin_cp:
    return "equal"
  return "winning" if score > 0 else "losing"


# ---------------------------------------------------------------------------------------------
# Positions.


def _random_move(board: xb.Board, rng: np.random.Generator) -> xb.Move | None:
  moves = board.legal_moves()
  return moves[rng.integers(len(moves))] if moves else None


def random_playout(rng: np.random.Generator, min_plies: int, max_plies: int) -> list[str]:
  """FENs along one random legal game from the start (after `min_plies` .. `max_plies` plies)."""
  board, fens = xb.Board.from_fen(xb.START_FEN), []
  for ply in range(int(rng.integers(min_plies, max_plies + 1))):
    move = _random_move(board, rng)
    if move is None:
      break
    board.make(move)
    if ply + 1 >= min_plies and board.legal_moves():
      fens.append(board.to_fen())
  return fens


def self_play(rng: np.random.Generator, judge: Any, random_plies: int, max_plies: int) -> list[str]:
  """FENs along one game of `judge` against itself, after `random_plies` random opening plies."""
  board, fens = xb.Board.from_fen(xb.START_FEN), []
  for ply in range(max_plies):
    if not board.legal_moves():
      break
    if ply < random_plies:
      move = _random_move(board, rng)
    else:
      move = xb.iccs_to_move(judge.analyse(board.to_fen(), pv_length=1).best_move)
    board.make(move)
    if ply + 1 >= random_plies and board.legal_moves():
      fens.append(board.to_fen())
  return fens


def _piece_squares(kind: int, side: int) -> list[int]:
  """Squares a piece of `kind` and `side` may ever stand on."""
  squares = []
  for sq in range(xb.NUM_SQUARES):
    file, rank = xb.file_of(sq), xb.rank_of(sq)
    own_rank = rank if side == xb.RED else 9 - rank
    if kind in (xb.KING, xb.ADVISOR) and not (3 <= file <= 5 and own_rank <= 2):
      continue
    if kind == xb.ADVISOR and (file + own_rank) % 2 != 1:  # d0 f0 e1 d2 f2
      continue
    if kind == xb.ELEPHANT and (file, own_rank) not in ((2, 0), (6, 0), (0, 2), (4, 2), (8, 2),
                                                         (2, 4), (6, 4)):
      continue
    if kind == xb.PAWN and (own_rank < 3 or (own_rank < 5 and file % 2)):
      continue
    squares.append(sq)
  return squares


SPARSE_KINDS = "RNCPAB"  # the pieces a sparse position may hold besides the kings (FEN letters)


def sparse_position(rng: np.random.Generator, min_pieces: int, max_pieces: int,
                    kinds: str = SPARSE_KINDS, attempts: int = 100) -> str | None:
  """A legal position with both kings and `min_pieces` .. `max_pieces` other pieces per side
  (random `kinds` on squares they may stand on), the side not to move not in check and the side
  to move with a legal move; None when `attempts` draws all failed."""
  kinds_by_letter = {letter: kind for kind, letter in _LETTERS.items()}
  unknown = sorted(set(kinds) - set(kinds_by_letter) | ({"K"} & set(kinds)))
  if unknown or not kinds:
    raise ValueError(f"sparse position kinds {kinds!r}: expected letters of {SPARSE_KINDS!r}, got {unknown}")
  pool = [kinds_by_letter[letter] for letter in kinds]
  for _ in range(attempts):
    squares = [0] * xb.NUM_SQUARES
    for side in (xb.RED, xb.BLACK):
      kinds_drawn = [xb.KING] + list(rng.choice(pool, size=int(rng.integers(min_pieces, max_pieces + 1))))
      for kind in kinds_drawn:
        free = [sq for sq in _piece_squares(int(kind), side) if not squares[sq]]
        squares[free[rng.integers(len(free))]] = int(kind) * side
    board = xb.Board(squares, xb.RED if rng.random() < 0.5 else xb.BLACK)
    if board.king_attacked(-board.side) or not board.legal_moves():
      continue
    return board.to_fen()
  return None


def _canonical(fen: str) -> str:
  board = xb.Board.from_fen(fen)
  return board.to_fen()


def dedupe(fens: Iterable[str]) -> list[str]:
  """FENs in first-seen order without repeats (compared canonically)."""
  seen, out = set(), []
  for fen in fens:
    key = _canonical(fen)
    if key not in seen:
      seen.add(key)
      out.append(key)
  return out


@dataclasses.dataclass(frozen=True)
class PositionMix:
  """How many positions each generator contributes, and their settings.

  Attributes:
    playout / selfplay / sparse: numbers of positions wanted from each generator.
    playout_plies: (min, max) plies of a random playout.
    selfplay_depths: engine depths, one drawn per self-play game (varied strength).
    selfplay_random_plies, selfplay_max_plies: random opening plies, game length.
    sparse_pieces: (min, max) pieces per side besides the king.
    sparse_kinds: FEN letters of the pieces sparse positions draw from.
  """

  playout: int = 0
  selfplay: int = 0
  sparse: int = 0
  playout_plies: tuple[int, int] = (4, 60)
  selfplay_depths: tuple[int, ...] = (1, 2, 4, 6)
  selfplay_random_plies: int = 4
  selfplay_max_plies: int = 40
  sparse_pieces: tuple[int, int] = (1, 3)
  sparse_kinds: str = SPARSE_KINDS


def generate_positions(mix: PositionMix, rng: np.random.Generator,
                       judge_at_depth: Callable[[int], Any], exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
  """[(fen, source)] deduplicated (also against `exclude`), in the proportions of `mix`.

  `judge_at_depth(d)` gives a judge with `analyse(fen, pv_length)` searching at depth d.
  """
  seen = set(dedupe(exclude))
  out: list[tuple[str, str]] = []

  def take(fens: Iterable[str], source: str, budget: int) -> int:
    taken = 0
    for fen in fens:
      if taken >= budget:
        break
      if fen not in seen:
        seen.add(fen)
        out.append((fen, source))
        taken += 1
    return taken

  # A game's positions are correlated: a quarter of a playout's (at random) and every fourth of a
  # self-play game's are kept, so that many games contribute.
  for source, wanted, draw in (
      ("playout", mix.playout, lambda: [fen for fen in random_playout(rng, *mix.playout_plies)
                                        if rng.random() < 0.25]),
      ("selfplay", mix.selfplay, lambda: self_play(
          rng, judge_at_depth(int(rng.choice(mix.selfplay_depths))), mix.selfplay_random_plies,
          mix.selfplay_max_plies)[int(rng.integers(4))::4]),
      ("sparse", mix.sparse, lambda: [sparse_position(rng, *mix.sparse_pieces, kinds=mix.sparse_kinds)])):
    got, tries = 0, 0
    while got < wanted:
      tries += 1
      if tries > 50 * wanted + 100:
        raise RuntimeError(f"xiangqi_r1: {source} generator found only {got} new positions of "
                           f"{wanted} after {tries} draws")
      got += take([f for f in draw() if f is not None], source, wanted - got)
  return out


def label_position(judge: Any, fen: str, *, pv_plies: int = 3, equal_margin_cp: float = 50.0,
                   source: str = "", id_: str = "") -> dict[str, Any]:
  """The position record of `fen` with the judge's best move, score, PV and evaluation."""
  board = xb.Board.from_fen(fen)
  analysis = judge.analyse(board.to_fen(), pv_length=pv_plies)
  return {"id": id_, "fen": board.to_fen(), "pieces": piece_list(board),
          "best_move": analysis.best_move, "score": analysis.score, "pv": list(analysis.pv),
          "evaluation": evaluation_label(analysis.score, equal_margin_cp), "source": source}


def labelling_judges(engine_depth: int, builtin_depth: int = 2, timeout_s: float = 30.0):
  """(judge_at_depth, description): Fairy-Stockfish judges by depth when installed, else the
  built-in searcher capped at `builtin_depth` (it is slow beyond), with the reason."""
  path = xiangqi_engine.find_fairy_stockfish()
  cache: dict[int, Any] = {}
  if path is not None:
    def engine(depth: int):
      if depth not in cache:
        cache[depth] = xiangqi_engine.fairy_stockfish_judge(path, depth=depth, timeout_s=timeout_s)
      return cache[depth]
    return engine, f"Fairy-Stockfish {path} (labels at depth {engine_depth})"

  def builtin(depth: int):
    depth = min(depth, builtin_depth)
    if depth not in cache:
      cache[depth] = xiangqi_engine.BuiltinJudge(depth=depth)
    return cache[depth]
  return builtin, (f"the built-in searcher at depth <= {builtin_depth}: fairy-stockfish is not "
                   f"installed ({xiangqi_engine.INSTALL_HINT})")


def write_positions(out_dir: str, *, train: PositionMix, test: PositionMix, seed: int = 0,
                    engine_depth: int = 8, pv_plies: int = 3, equal_margin_cp: float = 50.0,
                    log: Callable[[str], None] = print) -> dict[str, str]:
  """Generates, labels and writes train.jsonl and test.jsonl (disjoint) under `out_dir`.

  Reuses the files when `out_dir/manifest.json` records the same settings. Returns
  {"train": path, "test": path}. Says at the start which judge labels the positions.
  """
  settings = dict(train=dataclasses.asdict(train), test=dataclasses.asdict(test), seed=seed,
                  engine_depth=engine_depth, pv_plies=pv_plies, equal_margin_cp=equal_margin_cp)
  settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
  paths = {split: os.path.join(out_dir, f"{split}.jsonl") for split in ("train", "test")}
  manifest_path = os.path.join(out_dir, "manifest.json")
  if os.path.isfile(manifest_path) and all(os.path.isfile(p) for p in paths.values()):
    with open(manifest_path, encoding="utf-8") as f:
      if json.load(f).get("settings") == settings:
        return paths
  judge_at_depth, description = labelling_judges(engine_depth)
  log(f"xiangqi_r1: writing positions to {out_dir}, labelled by {description}")
  os.makedirs(out_dir, exist_ok=True)
  counts = {}
  held_out: list[str] = []
  for split, mix, tag in (("test", test, 1), ("train", train, 0)):
    rng = np.random.default_rng([0x78716901, tag, seed if split == "train" else 0])
    positions = generate_positions(mix, rng, judge_at_depth, exclude=held_out)
    labeller = judge_at_depth(engine_depth)
    with open(paths[split] + ".tmp", "w", encoding="utf-8") as f:
      for index, (fen, source) in enumerate(positions):
        record = label_position(labeller, fen, pv_plies=pv_plies, equal_margin_cp=equal_margin_cp,
                                source=source, id_=f"xiangqi_r1/{split}/{index}")
        f.write(json.dumps(record) + "\n")
    os.replace(paths[split] + ".tmp", paths[split])
    held_out += [fen for fen, _ in positions]
    counts[split] = len(positions)
  with open(manifest_path, "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "counts": counts, "judge": description}, f, indent=2)
  return paths


# ---------------------------------------------------------------------------------------------
# Records -> examples.


def prompt_text(board: xb.Board, fen: str, style: str, question: str) -> str:
  """The user turn: 'full' gives the FEN and the piece list, 'short' (tiny models) the list only."""
  pieces = piece_list(board)
  if style == "short":
    return f"{pieces} ; {side_name(board)} {question}"
  return (f"Xiangqi position (FEN): {fen}\nPieces (Red uppercase, Black lowercase): {pieces}\n"
          f"{side_name(board).capitalize()} to move. {question}")


QUESTIONS = {"piece": "legal moves of {square}?", "move": "a legal move?",
             "strategy": "analysis and best move?"}
FULL_QUESTIONS = {"piece": "List every legal move of the piece on {square}.",
                  "move": "Give one legal move.",
                  "strategy": "Evaluate the position for the side to move (winning, equal or losing) "
                              "and give the best move."}


def strategy_target(evaluation: str, pv: Sequence[str], best_move: str, pv_plies: int,
                    style: str) -> str:
  """The stage-2 answer: evaluation, a PV-based rationale from a template, the move."""
  line = " ".join(list(pv)[:pv_plies]) or best_move
  if style == "short":
    return f"<think>evaluation: {evaluation}. line: {line}</think><answer>{best_move}</answer>"
  return (f"<think>evaluation: {evaluation}. The engine's main line is {line}: after {best_move} "
          f"the side to move is {evaluation}.</think><answer>{best_move}</answer>")


def _bad(where: str, field: str, message: str) -> errors.BadExampleError:
  return errors.BadExampleError(errors.BAD_RECORD, where, f"field {field!r}: {message}")


def _legal_iccs(board: xb.Board, move: Any, where: str, field: str, fen: str) -> str:
  if not isinstance(move, str) or not board.is_legal(xb.iccs_to_move(move)):
    raise _bad(where, field, f"{move!r} is not a legal ICCS move in {fen!r}")
  return move.lower()


def _messages(text: str, style: str) -> list[dict[str, Any]]:
  user = {"role": "user", "content": [{"type": "text", "text": text}]}
  system = SHORT_SYSTEM_MESSAGE if style == "short" else SYSTEM_MESSAGE
  return [{"role": "system", "content": system}, user]


def to_example(raw: Any, *, mode: str, prompt_style: str = "full", seed: int = 0, index: int = 0,
               pv_plies: int = 3, piece_fraction: float = 0.5, piece_max_moves: int = 0) -> Example:
  """A position record (a `sources.RawRecord`) → the Example of `mode` (see the module docstring).

  Stage 1 asks for the legal moves of one piece with probability `piece_fraction` (among the
  pieces with at most `piece_max_moves` moves when > 0, which bounds the answer's length), else
  for one legal move.

  Raises:
    BadExampleError (MISSING_FIELD / BAD_RECORD) naming the record and the field: no or an
      invalid `fen`, labels that are missing (stage 2) or not legal in the position.
  """
  where, fields = raw.where, raw.fields
  if fields is None:
    raise errors.BadExampleError(errors.BAD_RECORD, where, raw.error or "unreadable row")
  fen = fields.get("fen")
  if not isinstance(fen, str) or not fen.strip():
    raise errors.BadExampleError(errors.MISSING_FIELD, where, "field 'fen' (the position) is missing")
  try:
    board = xb.Board.from_fen(fen)
  except ValueError as e:
    raise _bad(where, "fen", str(e)) from e
  fen = board.to_fen()
  if not board.legal_moves():
    raise _bad(where, "fen", f"the side to move has no legal move in {fen!r}")
  id_ = str(fields.get("id") or where)
  if mode == "legal":
    rng = np.random.default_rng([0x78716902, seed, index])
    legal = board.legal_moves()
    counts = {frm: sum(1 for f, _ in legal if f == frm) for frm, _ in legal}
    movable = sorted(sq for sq, n in counts.items() if not piece_max_moves or n <= piece_max_moves)
    if movable and rng.random() < piece_fraction:
      square = movable[rng.integers(len(movable))]
      moves = sorted(xb.move_to_iccs(m) for m in legal if m[0] == square)
      question = (FULL_QUESTIONS if prompt_style == "full" else QUESTIONS)["piece"].format(
          square=square_name(square))
      answer = " ".join(moves)
      think = f"{_NAMES[abs(board.squares[square])]} on {square_name(square)}"
    else:
      answer = xb.move_to_iccs(legal[rng.integers(len(legal))])
      question = (FULL_QUESTIONS if prompt_style == "full" else QUESTIONS)["move"]
      think = f"{side_name(board)} to move"
    return Example(id=id_, where=where, messages=_messages(prompt_text(board, fen, prompt_style, question),
                                                           prompt_style),
                   ground_truth={"answer": answer, "fen": fen}, data_type="text",
                   response=f"<think>{think}</think><answer>{answer}</answer>")
  question = (FULL_QUESTIONS if prompt_style == "full" else QUESTIONS)["strategy"]
  messages = _messages(prompt_text(board, fen, prompt_style, question), prompt_style)
  best = fields.get("best_move")
  best = None if best in (None, "", []) else _legal_iccs(board, best, where, "best_move", fen)
  evaluation = fields.get("evaluation")
  if evaluation is not None and evaluation not in EVALUATIONS:
    raise _bad(where, "evaluation", f"{evaluation!r} is not one of {EVALUATIONS}")
  pv = fields.get("pv") or ([best] if best else [])
  if not isinstance(pv, list) or not all(isinstance(m, str) for m in pv):
    raise _bad(where, "pv", f"expected a list of ICCS moves, got {pv!r}")
  ground_truth = {"answer": best, "fen": fen, "best_move": best, "score": fields.get("score"),
                  "pv": pv, "annotations": {"evaluation": evaluation} if evaluation else {}}
  response = None
  if mode == "strategy":
    if best is None or evaluation is None:
      raise errors.BadExampleError(errors.MISSING_FIELD, where,
                                   "a stage-2 (strategy) record needs 'best_move' and 'evaluation'")
    response = strategy_target(evaluation, pv, best, pv_plies, prompt_style)
  return Example(id=id_, where=where, messages=messages, ground_truth=ground_truth, data_type="text",
                 response=response)


def text_corpus(num_positions: int = 300, seed: int = 0) -> list[str]:
  """Texts to build a tiny tokenizer: prompts and answers of every mode and style over random
  sparse and playout positions (built-in judge, depth 1, for the labels' shape only)."""
  rng = np.random.default_rng([0x78716903, seed])
  judge = xiangqi_engine.BuiltinJudge(depth=1)
  texts = []
  for index in range(num_positions):
    fen = sparse_position(rng, 1, 3) if index % 2 else random_playout(rng, 2, 30)[-1]
    record = label_position(judge, fen)
    raw = RawRecord(record, where=f"corpus/{index}", base_dir="")
    for mode in MODES:
      for style in PROMPT_STYLES:
        example = to_example(raw, mode=mode, prompt_style=style, seed=seed, index=index)
        texts += [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
                  for m in example.messages]
        texts.append(example.response or "")
  texts += [f"evaluation: {e}" for e in EVALUATIONS]
  return [t for t in texts if t]
