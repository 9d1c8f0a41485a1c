"""Random-access record sources over JSON, JSONL and Parquet files (grain data sources).

Each source has `__len__` and `__getitem__(index) -> RawRecord`, is cheap to pickle (file
handles and Parquet row-group caches are reopened lazily in each worker process) and never
raises on a malformed row: the row comes back with `error` set, and the record transform turns
it into a counted skip. JSONL and Parquet are read row by row, so a large file with embedded
image bytes is never loaded whole; a JSON file (one array of objects) is parsed once.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One row of a data file, before layout normalisation.

  Attributes:
    fields: the row as a dict (None when the row could not be parsed).
    where: 'path:line N' (JSONL: the 1-based line of the file, as editors number them) or
      'path:record N' (JSON array / Parquet: the 1-based record), used in every error and warning
      about this record.
    base_dir: folder that relative media paths are resolved against.
    error: why the row could not be parsed, or None.
  """
  fields: dict[str, Any] | None
  where: str
  base_dir: str
  error: str | None = None


class JsonSource:
  """A JSON file holding one array of objects (or {"data": [...]})."""

  def __init__(self, path: str):
    self.path = path
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
      data = data["data"]
    if not isinstance(data, list):
      raise ValueError(f"{path}: expected a JSON array of records (or {{'data': [...]}}), "
                       f"got {type(data).__name__}")
    self._rows = data

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> RawRecord:
    row = self._rows[index]
    where = f"{self.path}:record {index + 1}"
    if not isinstance(row, dict):
      return RawRecord(None, where, os.path.dirname(self.path),
                       f"expected an object, got {type(row).__name__}")
    return RawRecord(row, where, os.path.dirname(self.path))


class JsonlSource:
  """A JSON-lines file; blank lines are ignored. Line byte offsets are indexed once."""

  def __init__(self, path: str):
    self.path = path
    offsets, line_numbers = [], []
    with open(path, "rb") as f:
      position = 0
      for number, line in enumerate(f, start=1):
        if line.strip():
          offsets.append(position)
          line_numbers.append(number)
        position += len(line)
    self._offsets = np.asarray(offsets, np.int64)
    self._line_numbers = np.asarray(line_numbers, np.int64)
    self._file = None

  def __getstate__(self):
    return {**self.__dict__, "_file": None}

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, index: int) -> RawRecord:
    if self._file is None:
      self._file = open(self.path, "rb")  # pylint: disable=consider-using-with
    self._file.seek(int(self._offsets[index]))
    line = self._file.readline()
    where = f"{self.path}:line {int(self._line_numbers[index])}"
    base_dir = os.path.dirname(self.path)
    try:
      row = json.loads(line)
    except ValueError as e:
      return RawRecord(None, where, base_dir, f"invalid JSON: {e}")
    if not isinstance(row, dict):
      return RawRecord(None, where, base_dir, f"expected an object, got {type(row).__name__}")
    return RawRecord(row, where, base_dir)


class ParquetSource:
  """A Parquet file read one row group at a time (the last group read is cached)."""

  def __init__(self, path: str):
    import pyarrow.parquet as pq  # Deferred: only Parquet datasets pay for pyarrow.

    self.path = path
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    self._file = None
    self._cached_group = (-1, None)

  def __getstate__(self):
    return {**self.__dict__, "_file": None, "_cached_group": (-1, None)}

  def __len__(self) -> int:
    return int(self._group_starts[-1])

  def __getitem__(self, index: int) -> RawRecord:
    import pyarrow.parquet as pq

    if self._file is None:
      self._file = pq.ParquetFile(self.path)
    group = int(np.searchsorted(self._group_starts, index, side="right") - 1)
    if self._cached_group[0] != group:
      self._cached_group = (group, self._file.read_row_group(group))
    table = self._cached_group[1]
    row = table.slice(index - int(self._group_starts[group]), 1).to_pylist()[0]
    return RawRecord(row, f"{self.path}:record {index + 1}", os.path.dirname(self.path))


def open_source(path: str):
  """Returns the source for one data file, chosen by its suffix."""
  if path.endswith(".jsonl"):
    return JsonlSource(path)
  if path.endswith(".json"):
    return JsonSource(path)
  if path.endswith(".parquet"):
    return ParquetSource(path)
  raise ValueError(f"data file {path!r} has an unsupported suffix; expected one of "
                   f"{SUPPORTED_SUFFIXES}")


def expand_paths(paths: str | Sequence[str]) -> list[str]:
  """Expands a path, a comma-separated list, folders (their data files, sorted) and globs."""
  import glob

  if isinstance(paths, str):
    paths = [p for p in paths.split(",") if p.strip()]
  files = []
  for path in paths:
    path = os.path.expanduser(path.strip())
    if os.path.isdir(path):
      files.extend(sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.endswith(SUPPORTED_SUFFIXES)))
    elif any(c in path for c in "*?["):
      files.extend(sorted(glob.glob(path)))
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise FileNotFoundError(f"data path {path!r} does not exist")
  if not files:
    raise FileNotFoundError(f"no {SUPPORTED_SUFFIXES} data files found under {list(paths)}")
  return files


class ConcatSource:
  """Several sources read as one, in order."""

  def __init__(self, sources: Sequence[Any]):
    self._sources = list(sources)
    self._starts = [0]
    for source in self._sources:
      self._starts.append(self._starts[-1] + len(source))

  def __len__(self) -> int:
    return self._starts[-1]

  def __getitem__(self, index: int):
    if not 0 <= index < len(self):
      raise IndexError(f"record index {index} out of range [0, {len(self)})")
    i = bisect.bisect_right(self._starts, index) - 1
    return self._sources[i][index - self._starts[i]]


def file_source(paths: str | Sequence[str]) -> ConcatSource:
  """One random-access source over all data files named by `paths` (see `expand_paths`)."""
  return ConcatSource([open_source(p) for p in expand_paths(paths)])
