"""Xiangqi (Chinese chess) rules: board, FEN/ICCS codecs, legal moves, perft and a small searcher.

Coordinates follow ICCS: files a–i left to right from Red's side, ranks 0–9 from Red's back
rank. A square is the int `rank * 9 + file` (a0 = 0, i9 = 89); a move is a (from, to) tuple of
squares, written `h2e2` in ICCS.

Pieces are ints, Red positive and Black negative (FEN letters: Red uppercase):
  KING 1 (K), ADVISOR 2 (A), ELEPHANT 3 (B, also E), HORSE 4 (N, also H), CHARIOT 5 (R),
  CANNON 6 (C), PAWN 7 (P).

Move generation is pseudo-legal from precomputed per-square tables (no off-board tests), then
each move is made, the mover's king is tested for attack and the move is unmade. The attack test
looks outward from the king: chariots and the facing enemy king on the four lines (the flying-
general rule), cannons behind exactly one screen, horses whose leg is free, and pawns. Advisors
and elephants never leave their own side, so they never attack the enemy king. A move that
places a piece between an enemy cannon and one's own king creates a screen and is illegal.

Not modelled: repetition and perpetual-check/chase rules (they need game history), and the
60-move rule. A side with no legal move has lost (stalemate is a loss in xiangqi).

Perft from the start position: 44, 1,920, 79,666, 3,290,240 at depths 1–4.
"""
from __future__ import annotations

import dataclasses
FILES = 9
RANKS = 10
NUM_SQUARES = FILES * RANKS

RED, BLACK = 1, -1
KING, ADVISOR, ELEPHANT, HORSE, CHARIOT, CANNON, PAWN = range(1, 8)

START_FEN = "rnbakabnr/9/1c5c1/p1p1p1p1p/9/9/P1P1P1P1P/1C5C1/9/RNBAKABNR w - - 0 1"

Move = tuple[int, int]

_PIECE_LETTERS = {KING: "k", ADVISOR: "a", ELEPHANT: "b", HORSE: "n", CHARIOT: "r", CANNON: "c",
                  PAWN: "p"}
# Input letters, including the common alternatives E (elephant) and H (horse).
_LETTER_KINDS = {**{letter: kind for kind, letter in _PIECE_LETTERS.items()}, "e": ELEPHANT,
                 "h": HORSE}
_SIDE_LETTERS = {"w": RED, "r": RED, "b": BLACK}


def square(file: int, rank: int) -> int:
  return rank * FILES + file


def file_of(sq: int) -> int:
  return sq % FILES


def rank_of(sq: int) -> int:
  return sq // FILES


def _on_board(file: int, rank: int) -> bool:
  return 0 <= file < FILES and 0 <= rank < RANKS


def _in_palace(file: int, rank: int, side: int) -> bool:
  return 3 <= file <= 5 and (rank <= 2 if side == RED else rank >= 7)


def _own_half(rank: int, side: int) -> bool:
  return rank <= 4 if side == RED else rank >= 5


# ----------------------------------------------------------------------------------------------
# Precomputed move tables. Side-dependent tables are dicts keyed by RED / BLACK.


def _build_rays() -> tuple[tuple[tuple[int, ...], ...], ...]:
  """RAYS[sq]: four lines of squares (up, down, left, right), nearest first."""
  rays = []
  for sq in range(NUM_SQUARES):
    f, r = file_of(sq), rank_of(sq)
    lines = []
    for df, dr in ((0, 1), (0, -1), (-1, 0), (1, 0)):
      line, ff, rr = [], f + df, r + dr
      while _on_board(ff, rr):
        line.append(square(ff, rr))
        ff, rr = ff + df, rr + dr
      lines.append(tuple(line))
    rays.append(tuple(lines))
  return tuple(rays)


def _build_horse() -> tuple[tuple[tuple[int, int], ...], ...]:
  """HORSE_MOVES[sq]: (to, leg) pairs; the leg is the orthogonal neighbour the horse steps over."""
  table = []
  for sq in range(NUM_SQUARES):
    f, r = file_of(sq), rank_of(sq)
    moves = []
    for df, dr in ((1, 2), (-1, 2), (1, -2), (-1, -2), (2, 1), (2, -1), (-2, 1), (-2, -1)):
      if _on_board(f + df, r + dr):
        leg = square(f, r + dr // 2) if abs(dr) == 2 else square(f + df // 2, r)
        moves.append((square(f + df, r + dr), leg))
    table.append(tuple(moves))
  return tuple(table)


def _invert_horse(moves: tuple) -> tuple[tuple[tuple[int, int], ...], ...]:
  """HORSE_ATTACKERS[sq]: (from, leg) pairs of horses that attack `sq` when `leg` is empty."""
  attackers = [[] for _ in range(NUM_SQUARES)]
  for frm in range(NUM_SQUARES):
    for to, leg in moves[frm]:
      attackers[to].append((frm, leg))
  return tuple(tuple(a) for a in attackers)


def _build_elephant(side: int) -> tuple[tuple[tuple[int, int], ...], ...]:
  """(to, eye) pairs: two diagonal steps, never across the river; the eye must be empty."""
  table = []
  for sq in range(NUM_SQUARES):
    f, r = file_of(sq), rank_of(sq)
    moves = []
    for df, dr in ((2, 2), (2, -2), (-2, 2), (-2, -2)):
      if _on_board(f + df, r + dr) and _own_half(r + dr, side):
        moves.append((square(f + df, r + dr), square(f + df // 2, r + dr // 2)))
    table.append(tuple(moves))
  return tuple(table)


def _build_steps(side: int, steps: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], ...]:
  """Targets of single steps that stay inside `side`'s palace (king and advisor)."""
  table = []
  for sq in range(NUM_SQUARES):
    f, r = file_of(sq), rank_of(sq)
    table.append(tuple(square(f + df, r + dr) for df, dr in steps
                       if _on_board(f + df, r + dr) and _in_palace(f + df, r + dr, side)))
  return tuple(table)


def _build_pawn(side: int) -> tuple[tuple[int, ...], ...]:
  """Forward one step; sideways too once the pawn stands across the river."""
  table = []
  for sq in range(NUM_SQUARES):
    f, r = file_of(sq), rank_of(sq)
    targets = []
    if _on_board(f, r + side):
      targets.append(square(f, r + side))
    if not _own_half(r, side):
      targets.extend(square(f + df, r) for df in (-1, 1) if _on_board(f + df, r))
    table.append(tuple(targets))
  return tuple(table)


def _invert(table: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
  inverse = [[] for _ in range(NUM_SQUARES)]
  for frm in range(NUM_SQUARES):
    for to in table[frm]:
      inverse[to].append(frm)
  return tuple(tuple(i) for i in inverse)


_ORTHOGONAL = ((0, 1), (0, -1), (1, 0), (-1, 0))
_DIAGONAL = ((1, 1), (1, -1), (-1, 1), (-1, -1))

RAYS = _build_rays()
HORSE_MOVES = _build_horse()
HORSE_ATTACKERS = _invert_horse(HORSE_MOVES)
ELEPHANT_MOVES = {side: _build_elephant(side) for side in (RED, BLACK)}
ADVISOR_MOVES = {side: _build_steps(side, _DIAGONAL) for side in (RED, BLACK)}
KING_MOVES = {side: _build_steps(side, _ORTHOGONAL) for side in (RED, BLACK)}
PAWN_MOVES = {side: _build_pawn(side) for side in (RED, BLACK)}
PAWN_ATTACKERS = {side: _invert(PAWN_MOVES[side]) for side in (RED, BLACK)}


# ----------------------------------------------------------------------------------------------
# ICCS codec.


def move_to_iccs(move: Move) -> str:
  """(from, to) squares as ICCS, e.g. (25, 22) -> 'h2e2'."""
  frm, to = move
  return (f"{'abcdefghi'[file_of(frm)]}{rank_of(frm)}"
          f"{'abcdefghi'[file_of(to)]}{rank_of(to)}")


def iccs_to_move(text: str) -> Move | None:
  """'h2e2' (any case) -> (from, to) squares; None unless `text` is exactly four ICCS chars."""
  if not isinstance(text, str) or len(text) != 4:
    return None
  text = text.lower()
  squares = []
  for file_char, rank_char in (text[0:2], text[2:4]):
    if file_char not in "abcdefghi" or rank_char not in "0123456789":
      return None
    squares.append(square("abcdefghi".index(file_char), int(rank_char)))
  return squares[0], squares[1]


# ----------------------------------------------------------------------------------------------
# Board.


class Board:
  """A xiangqi position: 90 squares, the side to move and both king squares.

  `make`/`unmake` mutate in place (cheap search); `copy` gives an independent board.
  """

  __slots__ = ("squares", "side", "kings")

  def __init__(self, squares: list[int], side: int):
    self.squares = squares
    self.side = side
    self.kings = {RED: squares.index(KING), BLACK: squares.index(-KING)}

  @classmethod
  def from_fen(cls, fen: str) -> Board:
    """Parses FEN (top row = rank 9). Side 'w'/'r' is Red, 'b' Black; a missing side means Red.

    Raises:
      ValueError naming the FEN and the problem (wrong row count or width, unknown letter,
        missing or extra king, king outside its palace).
    """
    if not isinstance(fen, str) or not fen.strip():
      raise ValueError(f"xiangqi FEN must be a non-empty string, got {fen!r}")
    fields = fen.split()
    rows = fields[0].split("/")
    if len(rows) != RANKS:
      raise ValueError(f"xiangqi FEN {fen!r} has {len(rows)} rows, expected {RANKS}")
    squares = [0] * NUM_SQUARES
    for row_index, row in enumerate(rows):
      rank, file = RANKS - 1 - row_index, 0
      for char in row:
        if char.isdigit():
          file += int(char)
          continue
        kind = _LETTER_KINDS.get(char.lower())
        if kind is None:
          raise ValueError(f"xiangqi FEN {fen!r}: unknown piece letter {char!r} in row {row!r}")
        if file >= FILES:
          raise ValueError(f"xiangqi FEN {fen!r}: row {row!r} is wider than {FILES} files")
        squares[square(file, rank)] = kind if char.isupper() else -kind
        file += 1
      if file != FILES:
        raise ValueError(f"xiangqi FEN {fen!r}: row {row!r} covers {file} files, expected {FILES}")
    side_letter = fields[1].lower() if len(fields) > 1 else "w"
    if side_letter not in _SIDE_LETTERS:
      raise ValueError(f"xiangqi FEN {fen!r}: side to move {fields[1]!r} is not w, r or b")
    for side, name in ((RED, "Red"), (BLACK, "Black")):
      count = squares.count(side * KING)
      if count != 1:
        raise ValueError(f"xiangqi FEN {fen!r} has {count} {name} kings, expected 1")
      king_sq = squares.index(side * KING)
      if not _in_palace(file_of(king_sq), rank_of(king_sq), side):
        raise ValueError(f"xiangqi FEN {fen!r}: the {name} king stands outside its palace")
    return cls(squares, _SIDE_LETTERS[side_letter])

  def to_fen(self) -> str:
    """FEN with canonical letters (K A B N R C P), 'w'/'b' side and '- - 0 1' counters."""
    rows = []
    for rank in range(RANKS - 1, -1, -1):
      row, empty = "", 0
      for file in range(FILES):
        piece = self.squares[square(file, rank)]
        if piece == 0:
          empty += 1
          continue
        if empty:
          row, empty = row + str(empty), 0
        letter = _PIECE_LETTERS[abs(piece)]
        row += letter.upper() if piece > 0 else letter
      rows.append(row + (str(empty) if empty else ""))
    return f"{'/'.join(rows)} {'w' if self.side == RED else 'b'} - - 0 1"

  def copy(self) -> Board:
    return Board(list(self.squares), self.side)

  def make(self, move: Move) -> int:
    """Plays `move` (assumed pseudo-legal) and returns the captured piece (0 if none)."""
    frm, to = move
    squares = self.squares
    piece, captured = squares[frm], squares[to]
    squares[to], squares[frm] = piece, 0
    if piece == KING or piece == -KING:
      self.kings[self.side] = to
    self.side = -self.side
    return captured

  def unmake(self, move: Move, captured: int) -> None:
    """Takes back `move`, restoring `captured` on the destination square."""
    frm, to = move
    squares = self.squares
    piece = squares[to]
    squares[frm], squares[to] = piece, captured
    self.side = -self.side
    if piece == KING or piece == -KING:
      self.kings[self.side] = frm

  def king_attacked(self, side: int) -> bool:
    """True if `side`'s king is attacked, counting the kings facing on an open file."""
    squares = self.squares
    king = self.kings[side]
    enemy_chariot, enemy_cannon, enemy_king = -side * CHARIOT, -side * CANNON, -side * KING
    for line in RAYS[king]:
      screened = False
      for sq in line:
        piece = squares[sq]
        if piece == 0:
          continue
        if screened:
          if piece == enemy_cannon:
            return True
          break
        if piece == enemy_chariot or piece == enemy_king:
          return True
        screened = True
    enemy_horse = -side * HORSE
    for frm, leg in HORSE_ATTACKERS[king]:
      if squares[frm] == enemy_horse and squares[leg] == 0:
        return True
    enemy_pawn = -side * PAWN
    for frm in PAWN_ATTACKERS[-side][king]:
      if squares[frm] == enemy_pawn:
        return True
    return False

  def in_check(self) -> bool:
    return self.king_attacked(self.side)

  def pseudo_legal_moves(self, captures_only: bool = False) -> list[Move]:
    """Moves that follow each piece's movement rule, even if they leave the own king attacked."""
    squares, side = self.squares, self.side
    moves: list[Move] = []
    add = moves.append
    elephant_moves, advisor_moves = ELEPHANT_MOVES[side], ADVISOR_MOVES[side]
    king_moves, pawn_moves = KING_MOVES[side], PAWN_MOVES[side]
    for frm in range(NUM_SQUARES):
      piece = squares[frm] * side
      if piece <= 0:
        continue
      if piece == CHARIOT:
        for line in RAYS[frm]:
          for to in line:
            target = squares[to]
            if target == 0:
              if not captures_only:
                add((frm, to))
              continue
            if target * side < 0:
              add((frm, to))
            break
      elif piece == CANNON:
        for line in RAYS[frm]:
          screened = False
          for to in line:
            target = squares[to]
            if not screened:
              if target == 0:
                if not captures_only:
                  add((frm, to))
              else:
                screened = True
            elif target != 0:
              if target * side < 0:
                add((frm, to))
              break
      elif piece == HORSE or piece == ELEPHANT:
        for to, blocker in (HORSE_MOVES[frm] if piece == HORSE else elephant_moves[frm]):
          if squares[blocker] == 0:
            target = squares[to] * side
            if target < 0 or (target == 0 and not captures_only):
              add((frm, to))
      else:
        table = pawn_moves if piece == PAWN else king_moves if piece == KING else advisor_moves
        for to in table[frm]:
          target = squares[to] * side
          if target < 0 or (target == 0 and not captures_only):
            add((frm, to))
    return moves

  def legal_moves(self, captures_only: bool = False) -> list[Move]:
    """All legal moves of the side to move (captures only if asked), in generation order."""
    side = self.side
    legal = []
    for move in self.pseudo_legal_moves(captures_only):
      captured = self.make(move)
      if not self.king_attacked(side):
        legal.append(move)
      self.unmake(move, captured)
    return legal

  def is_legal(self, move: Move | None) -> bool:
    """True if `move` is legal for the side to move (False for None, e.g. an unparsed move)."""
    return move is not None and move in self.legal_moves()

  def perft(self, depth: int) -> int:
    """Leaf count of the legal move tree `depth` plies deep (bulk-counted at the last ply)."""
    if depth <= 0:
      return 1
    moves = self.legal_moves()
    if depth == 1:
      return len(moves)
    nodes = 0
    for move in moves:
      captured = self.make(move)
      nodes += self.perft(depth - 1)
      self.unmake(move, captured)
    return nodes

  def __str__(self) -> str:
    """Text diagram, rank 9 on top, with ICCS file letters."""
    lines = []
    for rank in range(RANKS - 1, -1, -1):
      cells = []
      for file in range(FILES):
        piece = self.squares[square(file, rank)]
        letter = _PIECE_LETTERS[abs(piece)] if piece else "."
        cells.append(letter.upper() if piece > 0 else letter)
      lines.append(f"{rank} {' '.join(cells)}")
    lines.append("  a b c d e f g h i")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Evaluation and search. Scores are centipawns from the side to move's point of view.

MATE_SCORE = 30_000
# Scores beyond this are forced mates (MATE_SCORE minus the distance in plies).
MATE_THRESHOLD = MATE_SCORE - 1_000

PIECE_VALUES = {KING: 0, ADVISOR: 200, ELEPHANT: 200, HORSE: 400, CHARIOT: 900, CANNON: 450,
                PAWN: 100}
_CROSSED_PAWN_BONUS = 100  # a pawn across the river also moves sideways: roughly doubled value
_CENTRAL_FILE_BONUS = 10  # per file closer to the centre, for horses, cannons and crossed pawns


def _build_piece_square() -> dict[int, tuple[int, ...]]:
  """PIECE_SQUARE[signed piece][sq]: material plus a small positional bonus, from the owner's view.

  Crossed pawns gain `_CROSSED_PAWN_BONUS` and, like horses and cannons, `_CENTRAL_FILE_BONUS`
  per file of centrality (e-file best). Other pieces count material only.
  """
  table = {}
  for side in (RED, BLACK):
    for kind, value in PIECE_VALUES.items():
      row = []
      for sq in range(NUM_SQUARES):
        f, r = file_of(sq), rank_of(sq)
        bonus = 0
        centrality = (4 - abs(f - 4)) * _CENTRAL_FILE_BONUS
        if kind in (HORSE, CANNON):
          bonus = centrality
        elif kind == PAWN and not _own_half(r, side):
          bonus = _CROSSED_PAWN_BONUS + centrality
        row.append(value + bonus)
      table[side * kind] = tuple(row)
  return table


PIECE_SQUARE = _build_piece_square()


def evaluate(board: Board) -> int:
  """Material + piece-square score in centipawns from the side to move's point of view."""
  score = 0
  for sq, piece in enumerate(board.squares):
    if piece > 0:
      score += PIECE_SQUARE[piece][sq]
    elif piece < 0:
      score -= PIECE_SQUARE[piece][sq]
  return score * board.side


class SearchBudgetExceeded(RuntimeError):
  """The search visited more nodes than its budget allowed."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """Outcome of `search`: the best move (None when the side to move has no legal move), its score
  in centipawns for the side to move, and the number of nodes visited."""

  best_move: Move | None
  score: int
  nodes: int


class _Searcher:
  """Fixed-depth negamax alpha-beta with a capture-only quiescence search.

  Deterministic: moves are ordered by a stable sort (captures by most-valuable-victim first),
  there is no clock, hash table or randomness, so the same position gives the same result.
  """

  def __init__(self, board: Board, quiescence_depth: int, max_nodes: int):
    self.board = board
    self.quiescence_depth = quiescence_depth
    self.max_nodes = max_nodes
    self.nodes = 0

  def _count_node(self) -> None:
    self.nodes += 1
    if self.nodes > self.max_nodes:
      raise SearchBudgetExceeded(f"search exceeded max_nodes={self.max_nodes}")

  def _ordered(self, moves: list[Move]) -> list[Move]:
    squares = self.board.squares
    # Most valuable victim first, then least valuable attacker; quiet moves keep their order.
    return sorted(moves, key=lambda m: (-PIECE_VALUES.get(abs(squares[m[1]]), 0) * 16
                                        + PIECE_VALUES[abs(squares[m[0]])] // 100
                                        if squares[m[1]] else 0))

  def alphabeta(self, depth: int, alpha: int, beta: int, ply: int) -> int:
    if depth <= 0:
      return self.quiescence(alpha, beta, ply, self.quiescence_depth)
    self._count_node()
    board = self.board
    moves = board.legal_moves()
    if not moves:
      return -MATE_SCORE + ply  # checkmated or stalemated: both lose in xiangqi
    for move in self._ordered(moves):
      captured = board.make(move)
      score = -self.alphabeta(depth - 1, -beta, -alpha, ply + 1)
      board.unmake(move, captured)
      if score >= beta:
        return score
      alpha = max(alpha, score)
    return alpha

  def quiescence(self, alpha: int, beta: int, ply: int, depth_left: int) -> int:
    """Captures only, unless in check: then every evasion is searched and no move means mate."""
    self._count_node()
    board = self.board
    if board.in_check():
      moves = board.legal_moves()
      if not moves:
        return -MATE_SCORE + ply
      if depth_left <= 0:
        return evaluate(board)
    else:
      stand_pat = evaluate(board)
      if stand_pat >= beta or depth_left <= 0:
        return stand_pat
      alpha = max(alpha, stand_pat)
      moves = board.legal_moves(captures_only=True)
    for move in self._ordered(moves):
      captured = board.make(move)
      score = -self.quiescence(-beta, -alpha, ply + 1, depth_left - 1)
      board.unmake(move, captured)
      if score >= beta:
        return score
      alpha = max(alpha, score)
    return alpha

  def root(self, depth: int) -> SearchResult:
    board = self.board
    moves = board.legal_moves()
    if not moves:
      return SearchResult(None, -MATE_SCORE, self.nodes)
    best_move, alpha = None, -MATE_SCORE - 1
    for move in self._ordered(moves):
      captured = board.make(move)
      score = -self.alphabeta(depth - 1, -MATE_SCORE - 1, -alpha, 1)
      board.unmake(move, captured)
      if score > alpha:
        best_move, alpha = move, score
    return SearchResult(best_move, alpha, self.nodes)


def search(board: Board, depth: int, quiescence_depth: int = 4,
           max_nodes: int = 200_000) -> SearchResult:
  """Best move and score of `board` at `depth` plies (+ up to `quiescence_depth` capture plies).

  The board is left unchanged. Raises SearchBudgetExceeded past `max_nodes` visited nodes.
  """
  if depth < 1:
    raise ValueError(f"search depth must be >= 1, got {depth}")
  return _Searcher(board.copy(), quiescence_depth, max_nodes).root(depth)


def score_move(board: Board, move: Move, depth: int, quiescence_depth: int = 4,
               max_nodes: int = 200_000) -> int:
  """Exact score of the legal `move` for the side to move, searched like `search` at `depth`.

  Equals `search(board, depth).score` when `move` is a best move.
  """
  searcher = _Searcher(board.copy(), quiescence_depth, max_nodes)
  searcher.board.make(move)
  return -searcher.alphabeta(depth - 1, -MATE_SCORE - 1, MATE_SCORE + 1, 1)

