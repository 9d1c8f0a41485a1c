"""Move judges for the Xiangqi-R1 reward: a UCI/UCCI engine subprocess and the built-in searcher.

A judge answers one question: in this position, which move is best, and how do the best move and
a given legal move score? Scores are centipawns from the side to move's point of view; forced
mates map to ±(`xiangqi_board.MATE_SCORE` − distance), so both judges share one scale.

Judges raise `JudgeError` (or anything else) on failure; the reward turns any exception into its
`judge_failed` component and never lets it escape.

`UciEngineJudge` drives an engine speaking UCI (Pikafish, Fairy-Stockfish) or UCCI (ElephantEye)
over pipes, with FEN (`w`/`b` side) and ICCS-style moves: ranks 0–9 as Pikafish writes them, or
ranks 1–10 (`notation="ranks1"`) as Fairy-Stockfish writes them (`h1g3`, `b10c8`); the judge
converts both ways, so everything outside it speaks r1jax's ICCS. Every query has a hard
wall-clock `timeout_s`; a hung, crashed or garbled engine is killed, reported as a `JudgeError`,
and started afresh on the next query. With a `depth` limit, one search thread and the hash
cleared per position (`clear_hash`, `ucinewgame`), the engine is deterministic; a `movetime_ms`
limit is not.

`default_judge()` is the judge a run gets when none is injected: Fairy-Stockfish when it is
installed (found on PATH, in the Debian games directory or through `dpkg -L fairy-stockfish`),
else the built-in searcher, with a start-up log line that says which and how to install the
engine.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import threading
import time
import weakref
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from r1jax.rewards import xiangqi_board as xb


class JudgeError(RuntimeError):
  """A judge could not evaluate a move (engine missing, crashed, timed out or unparseable)."""


@dataclasses.dataclass(frozen=True)
class MoveEvaluation:
  """A judge's verdict on one move.

  Attributes:
    best_move: the judge's best move in ICCS.
    best_score: centipawns of the best move, side to move's view.
    move_score: centipawns of the judged move, same view and search limit (equal to best_score
      when the judged move is the best move).
    source: which judge produced it (for logs).
  """

  best_move: str
  best_score: float
  move_score: float
  source: str


@dataclasses.dataclass(frozen=True)
class Analysis:
  """A judge's analysis of one position.

  Attributes:
    best_move: the best move in ICCS.
    score: its centipawns, side to move's view.
    pv: the principal variation in ICCS, starting with `best_move` (at least one move).
  """

  best_move: str
  score: float
  pv: tuple[str, ...]


@runtime_checkable
class MoveJudge(Protocol):
  """Anything that can score a legal ICCS `move` in the canonical FEN `fen` (`Board.to_fen()`)."""

  def evaluate_move(self, fen: str, move: str) -> MoveEvaluation:
    ...


def _legal_move(board: xb.Board, move: str, fen: str) -> xb.Move:
  parsed = xb.iccs_to_move(move)
  if parsed is None or not board.is_legal(parsed):
    raise ValueError(f"move {move!r} is not a legal ICCS move in FEN {fen!r}")
  return parsed


NOTATIONS = ("iccs", "ranks1")
_RANKS1_MOVE = re.compile(r"^([a-i])(10|[1-9])([a-i])(10|[1-9])$")


def from_engine_move(text: str, notation: str) -> str | None:
  """An engine's move in ICCS ('h2e2'), or None when it is not a move of that notation.

  'iccs': ranks 0–9 (Pikafish, ElephantEye); 'ranks1': ranks 1–10 (Fairy-Stockfish: `h1g3` is
  ICCS `h0g2`, `b10c8` is `b9c7`).
  """
  text = text.lower()
  if notation == "iccs":
    return text if xb.iccs_to_move(text) is not None else None
  match = _RANKS1_MOVE.match(text)
  if match is None:
    return None
  a, r1, b, r2 = match.groups()
  return f"{a}{int(r1) - 1}{b}{int(r2) - 1}"


def to_engine_move(move: str, notation: str) -> str:
  """An ICCS move in the engine's notation (see `from_engine_move`)."""
  move = move.lower()
  if xb.iccs_to_move(move) is None:
    raise ValueError(f"{move!r} is not an ICCS move")
  if notation == "iccs":
    return move
  return f"{move[0]}{int(move[1]) + 1}{move[2]}{int(move[3]) + 1}"


class BuiltinJudge:
  """The pure-Python alpha-beta searcher of `xiangqi_board` as a judge (tests, CPU demos).

  Deterministic. Root searches and move scores are memoised per (FEN, move), so a GRPO group of
  completions for one position searches the position once.

  Args:
    depth: full-width plies; 2 takes tens of milliseconds per position, 3 a few tenths of a second.
    quiescence_depth: capture plies searched past `depth`.
    max_nodes: node budget per search; beyond it the query fails with JudgeError.
    cache_size: memoised positions and moves.
  """

  def __init__(self, depth: int = 2, quiescence_depth: int = 4, max_nodes: int = 200_000,
               cache_size: int = 4096):
    if depth < 1:
      raise ValueError(f"BuiltinJudge depth must be >= 1, got {depth}")
    self.depth = depth
    self.quiescence_depth = quiescence_depth
    self.max_nodes = max_nodes
    self._root = functools.lru_cache(maxsize=cache_size)(self._search_root)
    self._move_score = functools.lru_cache(maxsize=cache_size)(self._search_move)

  @property
  def source(self) -> str:
    return f"builtin(depth={self.depth}, quiescence={self.quiescence_depth})"

  def _search_root(self, fen: str) -> tuple[str, int]:
    try:
      result = xb.search(xb.Board.from_fen(fen), self.depth, self.quiescence_depth, self.max_nodes)
    except xb.SearchBudgetExceeded as e:
      raise JudgeError(f"{self.source} on {fen!r}: {e}") from e
    if result.best_move is None:
      raise JudgeError(f"no legal move in FEN {fen!r}")
    return xb.move_to_iccs(result.best_move), result.score

  def _search_move(self, fen: str, move: str) -> int:
    board = xb.Board.from_fen(fen)
    try:
      return xb.score_move(board, _legal_move(board, move, fen), self.depth,
                           self.quiescence_depth, self.max_nodes)
    except xb.SearchBudgetExceeded as e:
      raise JudgeError(f"{self.source} on {fen!r} {move}: {e}") from e

  def analyse(self, fen: str, pv_length: int = 3) -> Analysis:
    """Best move, score and a principal variation of up to `pv_length` plies (each ply the
    searcher's best reply at the same depth)."""
    best_move, score = self._root(fen)
    board, pv = xb.Board.from_fen(fen), [best_move]
    while len(pv) < pv_length:
      board.make(xb.iccs_to_move(pv[-1]))
      if not board.legal_moves():
        break
      pv.append(self._root(board.to_fen())[0])
    return Analysis(best_move, float(score), tuple(pv))

  def evaluate_move(self, fen: str, move: str) -> MoveEvaluation:
    move = move.lower()
    best_move, best_score = self._root(fen)
    move_score = best_score if move == best_move else self._move_score(fen, move)
    return MoveEvaluation(best_move, float(best_score), float(move_score), self.source)


def _parse_score(tokens: list[str]) -> int | None:
  """Score of a UCI `info` line (`score cp N` / `score mate N`) or UCCI line (`score N`).

  Bounds (`lowerbound`/`upperbound`) and secondary multipv lines are not exact scores: None.
  """
  if "score" not in tokens or "lowerbound" in tokens or "upperbound" in tokens:
    return None
  if "multipv" in tokens:
    index = tokens.index("multipv")
    if index + 1 >= len(tokens) or tokens[index + 1] != "1":
      return None
  rest = tokens[tokens.index("score") + 1:]
  try:
    if rest[0] == "cp":
      return int(rest[1])
    if rest[0] == "mate":
      # UCI counts mates in moves: mating in N takes 2N - 1 plies, being mated in N takes 2N.
      moves = int(rest[1])
      return xb.MATE_SCORE - (2 * moves - 1) if moves > 0 else -xb.MATE_SCORE - 2 * moves
    return int(rest[0])
  except (IndexError, ValueError):
    return None


def _parse_pv(tokens: list[str]) -> list[str]:
  """The raw moves after `pv` in an info line (empty when there is none)."""
  return tokens[tokens.index("pv") + 1:] if "pv" in tokens else []


def _kill(process: subprocess.Popen) -> None:
  if process.poll() is None:
    process.kill()
  try:
    process.wait(timeout=5)
  except subprocess.TimeoutExpired:
    pass
  for stream in (process.stdin, process.stdout):
    try:
      stream.close()
    except OSError:
      pass


class UciEngineJudge:
  """A UCI or UCCI engine binary as a judge, with a hard timeout per query.

  Evaluation: one root search gives the best move and its score. The judged move is then scored
    - with `searchmoves` (UCI default): `go <limit> searchmoves <move>` from the same position,
      the same search with the root restricted to that move; or
    - by playing it (UCCI, or `use_searchmoves=False`): both the best and the judged move are
      played and the resulting positions searched; scores are negated back to the mover's view.
      A move that leaves the opponent without legal moves scores as mate without asking.

  Args:
    command: the engine command line (a string is split like a shell would).
    depth: search depth limit (`go depth N`); deterministic with one thread.
    movetime_ms: time limit (`go movetime N`), UCI only; used when `depth` is None.
    timeout_s: wall-clock limit for each search query, from sending `go` to `bestmove`.
    startup_timeout_s: wall-clock limit for the handshake.
    protocol: "uci" or "ucci".
    use_searchmoves: score the move with `searchmoves`; defaults to True for UCI, and UCCI has no
      `searchmoves`.
    options: `setoption` values sent after the handshake, e.g. {"Threads": 1, "Hash": 16}.
    notation: the engine's move notation, "iccs" (ranks 0–9) or "ranks1" (ranks 1–10,
      Fairy-Stockfish); moves are converted both ways.
    clear_hash: send `ucinewgame` (UCI; clears the hash table) before each search, so that a
      result never depends on the searches before it. With a depth limit the judge is then
      deterministic and memoises its searches (`cache_size` positions and moves), so a GRPO
      group of completions for one position searches its root once.
    cache_size: memoised root searches and move scores (each).
  """

  def __init__(self, command: str | Sequence[str], *, depth: int | None = 8,
               movetime_ms: int | None = None, timeout_s: float = 10.0,
               startup_timeout_s: float = 10.0, protocol: str = "uci",
               use_searchmoves: bool | None = None, options: Mapping[str, Any] | None = None,
               notation: str = "iccs", clear_hash: bool = False, cache_size: int = 4096):
    if protocol not in ("uci", "ucci"):
      raise ValueError(f"engine protocol must be 'uci' or 'ucci', got {protocol!r}")
    if notation not in NOTATIONS:
      raise ValueError(f"engine notation must be one of {NOTATIONS}, got {notation!r}")
    if depth is None and movetime_ms is None:
      raise ValueError("UciEngineJudge needs a search limit: set depth or movetime_ms")
    if depth is None and protocol == "ucci":
      raise ValueError("UciEngineJudge with protocol='ucci' supports only a depth limit")
    if use_searchmoves and protocol == "ucci":
      raise ValueError("UCCI has no searchmoves; use use_searchmoves=False with protocol='ucci'")
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, "
                       f"startup_timeout_s={startup_timeout_s}")
    self.command = shlex.split(command) if isinstance(command, str) else list(command)
    self.go_limit = f"go depth {depth}" if depth is not None else f"go movetime {movetime_ms}"
    self.timeout_s = timeout_s
    self.startup_timeout_s = startup_timeout_s
    self.protocol = protocol
    self.use_searchmoves = protocol == "uci" if use_searchmoves is None else use_searchmoves
    self.options = dict(options or {})
    self.notation = notation
    self.clear_hash = clear_hash and protocol == "uci"
    self.cache_size = cache_size
    self._roots: dict[str, tuple[str, int]] = {}
    self._move_scores: dict[tuple[str, str], int] = {}
    self._lock = threading.Lock()
    self._process: subprocess.Popen | None = None
    self._lines: queue.Queue[str | None] = queue.Queue()
    self._finalizer: weakref.finalize | None = None

  @property
  def source(self) -> str:
    return f"{self.protocol}:{' '.join(self.command)} ({self.go_limit})"

  # -- process management ------------------------------------------------------------------

  def _start(self) -> None:
    try:
      process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, bufsize=1)
    except OSError as e:
      raise JudgeError(f"cannot start engine {self.command}: {e}") from e
    self._process = process
    self._lines = queue.Queue()
    threading.Thread(target=self._read_lines, args=(process, self._lines), daemon=True).start()
    self._finalizer = weakref.finalize(self, _kill, process)
    handshake_ok = "uciok" if self.protocol == "uci" else "ucciok"
    deadline = time.monotonic() + self.startup_timeout_s
    self._send(self.protocol)
    self._read_until(lambda line: line == handshake_ok, deadline, "handshake")
    for name, value in self.options.items():
      self._send(f"setoption name {name} value {value}")
    self._send("isready")
    self._read_until(lambda line: line == "readyok", deadline, "isready")

  @staticmethod
  def _read_lines(process: subprocess.Popen, lines: queue.Queue) -> None:
    try:
      for line in process.stdout:
        lines.put(line.strip())
    except (OSError, ValueError):  # the pipe was closed under us when the engine was killed
      pass
    lines.put(None)

  def close(self) -> None:
    """Stops the engine process (a later query starts a new one)."""
    if self._finalizer is not None:
      self._finalizer()
    self._process, self._finalizer = None, None

  def __enter__(self) -> UciEngineJudge:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  def _send(self, line: str) -> None:
    try:
      self._process.stdin.write(line + "\n")
      self._process.stdin.flush()
    except (OSError, ValueError) as e:
      raise JudgeError(f"engine {self.command} closed its input: {e}") from e

  def _read_until(self, done: Callable[[str], bool], deadline: float, what: str) -> list[str]:
    """Lines up to and including the first one with `done(line)`; JudgeError on timeout or exit."""
    seen = []
    while True:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        raise JudgeError(f"engine {self.command} timed out waiting for {what}")
      try:
        line = self._lines.get(timeout=remaining)
      except queue.Empty:
        continue  # the loop re-checks the deadline
      if line is None:
        raise JudgeError(f"engine {self.command} exited while waiting for {what}")
      seen.append(line)
      if done(line):
        return seen

  # -- queries -------------------------------------------------------------------------------

  def _search(self, position: str, go: str) -> tuple[str, int, list[str]]:
    """(bestmove, score, pv) of one search in ICCS; the score and pv are the last exact ones the
    engine printed (the pv may be empty)."""
    while not self._lines.empty():  # stale output of an earlier query
      if self._lines.get_nowait() is None:
        raise JudgeError(f"engine {self.command} has exited")
    self._send(position)
    self._send(go)
    deadline = time.monotonic() + self.timeout_s
    lines = self._read_until(lambda line: line.startswith(("bestmove", "nobestmove")), deadline,
                             f"bestmove after {go!r} (timeout_s={self.timeout_s})")
    tokens = lines[-1].split()
    best = from_engine_move(tokens[1], self.notation) if len(tokens) >= 2 else None
    if tokens[0] == "nobestmove" or best is None:
      raise JudgeError(f"engine {self.command} returned no move: {lines[-1]!r}")
    info_lines = [line.split() for line in lines
                  if line.startswith("info") and not line.startswith("info string")]
    scored = [(s, tokens) for s, tokens in zip(map(_parse_score, info_lines), info_lines)
              if s is not None]
    if not scored:
      raise JudgeError(f"engine {self.command} printed no score for {position!r}")
    score, info = scored[-1]
    pv = [from_engine_move(move, self.notation) for move in _parse_pv(info)]
    return best, score, pv if pv and None not in pv and pv[0] == best else [best]

  def _position(self, fen: str, moves: Sequence[str] = ()) -> str:
    played = " ".join(to_engine_move(m, self.notation) for m in moves)
    return f"position fen {fen}" + (f" moves {played}" if played else "")

  def _new_position(self) -> None:
    """Clears the engine's hash (UCI `ucinewgame`) when configured, and waits until it is ready."""
    if self.clear_hash:
      self._send("ucinewgame")
      self._send("isready")
      self._read_until(lambda line: line == "readyok", time.monotonic() + self.timeout_s,
                       "readyok after ucinewgame")

  def _ensure_started(self) -> None:
    if self._process is None or self._process.poll() is not None:
      self.close()
      self._start()

  def _played_score(self, board: xb.Board, fen: str, move: str) -> int:
    """Score of `move` for the mover, by searching the position after it."""
    after = board.copy()
    after.make(xb.iccs_to_move(move))
    if not after.legal_moves():
      return xb.MATE_SCORE - 1
    _, score, _ = self._fresh_search(self._position(fen, [move]), self.go_limit)
    return -score

  def _locked(self, query: Callable[[], Any]) -> Any:
    """Runs `query` on a started engine under the lock; any failure kills the engine."""
    with self._lock:
      try:
        self._ensure_started()
        return query()
      except BaseException:
        self.close()  # the engine's state is unknown: never reuse it
        raise

  def _fresh_search(self, position: str, go: str) -> tuple[str, int, list[str]]:
    """`_search` after clearing the hash (when configured): a function of its arguments alone."""
    self._new_position()
    return self._search(position, go)

  def _root(self, board: xb.Board, fen: str) -> tuple[str, int]:
    """(best move, score) of `fen`, memoised when the result is deterministic."""
    if fen in self._roots:
      return self._roots[fen]
    best_move, score, _ = self._locked(lambda: self._fresh_search(self._position(fen), self.go_limit))
    if xb.iccs_to_move(best_move) not in board.legal_moves():
      raise JudgeError(f"engine {self.command} proposed illegal move {best_move!r} in {fen!r}")
    self._remember(self._roots, fen, (best_move, score))
    return best_move, score

  def _searchmoves_score(self, fen: str, move: str) -> int:
    key = (fen, move)
    if key in self._move_scores:
      return self._move_scores[key]
    go = f"{self.go_limit} searchmoves {to_engine_move(move, self.notation)}"
    score = self._locked(lambda: self._fresh_search(self._position(fen), go))[1]
    self._remember(self._move_scores, key, score)
    return score

  def _remember(self, cache: dict, key: Any, value: Any) -> None:
    if not self.deterministic:
      return
    if len(cache) >= self.cache_size:
      cache.pop(next(iter(cache)))  # oldest first
    cache[key] = value

  @property
  def deterministic(self) -> bool:
    """Depth-limited with the hash cleared per search: the same query gives the same answer."""
    return self.clear_hash and self.go_limit.startswith("go depth")

  def evaluate_move(self, fen: str, move: str) -> MoveEvaluation:
    board = xb.Board.from_fen(fen)
    move = move.lower()
    _legal_move(board, move, fen)
    fen = board.to_fen()
    best_move, best_score = self._root(board, fen)
    if self.use_searchmoves:
      move_score = best_score if move == best_move else self._searchmoves_score(fen, move)
    else:
      best_score = self._locked(lambda: self._played_score(board, fen, best_move))
      move_score = best_score if move == best_move else self._locked(
          lambda: self._played_score(board, fen, move))
    return MoveEvaluation(best_move, float(best_score), float(move_score), self.source)

  def analyse(self, fen: str, pv_length: int = 3) -> Analysis:
    """Best move, score and the engine's principal variation (up to `pv_length` legal plies)."""
    board = xb.Board.from_fen(fen)
    fen = board.to_fen()
    best_move, score, pv = self._locked(lambda: self._fresh_search(self._position(fen), self.go_limit))
    if xb.iccs_to_move(best_move) not in board.legal_moves():
      raise JudgeError(f"engine {self.command} proposed illegal move {best_move!r} in {fen!r}")
    line = []
    for move in pv[:pv_length]:  # keep the legal prefix: engines may print a pv cut by repetition
      parsed = xb.iccs_to_move(move)
      if not board.is_legal(parsed):
        break
      board.make(parsed)
      line.append(move)
    return Analysis(best_move, float(score), tuple(line or [best_move]))


# ----------------------------------------------------------------------------------------------
# The default judge: Fairy-Stockfish when installed, else the built-in searcher.

FAIRY_STOCKFISH = "fairy-stockfish"
INSTALL_HINT = "apt-get install -y fairy-stockfish (Debian/Ubuntu; the binary goes to /usr/games)"
_GAMES_DIRS = ("/usr/games", "/usr/local/games")


def find_fairy_stockfish() -> str | None:
  """Path of an installed Fairy-Stockfish binary: on PATH, in the games directory, or listed by
  `dpkg -L fairy-stockfish`; None when there is none."""
  found = shutil.which(FAIRY_STOCKFISH)
  if found:
    return found
  candidates = [os.path.join(folder, FAIRY_STOCKFISH) for folder in _GAMES_DIRS]
  if shutil.which("dpkg"):
    try:
      listing = subprocess.run(["dpkg", "-L", FAIRY_STOCKFISH], capture_output=True, text=True,
                               timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
      listing = ""
    candidates += [line.strip() for line in listing.splitlines()
                   if os.path.basename(line.strip()) == FAIRY_STOCKFISH]
  for path in candidates:
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  return None


def fairy_stockfish_judge(path: str, depth: int = 8, timeout_s: float = 10.0,
                          hash_mb: int = 16) -> UciEngineJudge:
  """Fairy-Stockfish playing xiangqi, deterministic: fixed depth, one thread, hash cleared per
  position; moves converted from its ranks 1–10."""
  return UciEngineJudge([path], depth=depth, timeout_s=timeout_s, protocol="uci",
                        options={"UCI_Variant": "xiangqi", "Threads": 1, "Hash": hash_mb},
                        notation="ranks1", clear_hash=True)


@dataclasses.dataclass(frozen=True)
class DefaultJudgeSpec:
  """How `default_judge` judges: the engine's depth, the built-in fallback's depth."""

  engine_depth: int = 8
  builtin_depth: int = 2
  timeout_s: float = 10.0


@functools.lru_cache(maxsize=None)
def default_judge(spec: DefaultJudgeSpec = DefaultJudgeSpec()) -> MoveJudge:
  """Fairy-Stockfish at `spec.engine_depth` when installed, else the built-in searcher; logs
  which (once per spec) so that a run says at start-up what judges it."""
  path = find_fairy_stockfish()
  if path is not None:
    judge = fairy_stockfish_judge(path, depth=spec.engine_depth, timeout_s=spec.timeout_s)
    logging.info("xiangqi judge: Fairy-Stockfish %s at depth %d (1 thread, hash cleared per "
                 "position)", path, spec.engine_depth)
    return judge
  logging.warning("xiangqi judge: fairy-stockfish not found (PATH, %s, dpkg -L %s); judging with "
                  "the built-in searcher at depth %d, much weaker than an engine. Install the "
                  "engine with: %s", ", ".join(_GAMES_DIRS), FAIRY_STOCKFISH, spec.builtin_depth,
                  INSTALL_HINT)
  return BuiltinJudge(depth=spec.builtin_depth)
