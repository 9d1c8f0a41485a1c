"""Bad-data handling: the error a transform raises, the marker the stream carries, the counters.

A record that cannot become a training example (missing or corrupt media, missing fields, a
prompt longer than the limit) must not stop training. The per-record transforms therefore turn
such failures into a `Skipped` marker that travels down the element stream like any example:
every source index still yields exactly one element, so shuffling, sharding, worker slicing and
checkpointed positions stay the same whether or not records are skipped. The batcher, which
runs in the trainer process, drops the markers, counts them by reason (the counts are part of
the checkpointed iterator state) and logs a rate-limited warning naming the file or record.
With `strict=True` the transform raises instead, naming the same thing.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import zlib

import av
import PIL.Image

_log = logging.getLogger("data_pipelines")

# Skip reasons, the keys of the skip counters.
MISSING_FIELD = "missing_field"  # a required record field is absent or empty
BAD_RECORD = "bad_record"  # fields present but inconsistent (e.g. 2 <image> tags, 1 image)
BAD_MEDIA = "bad_media"  # a missing, unreadable or corrupt image / video / scene file
TOO_LONG = "too_long"  # prompt (text + vision tokens) longer than the configured limit
SKIP_REASONS = (MISSING_FIELD, BAD_RECORD, BAD_MEDIA, TOO_LONG)


class BadExampleError(ValueError):
  """A record that cannot become an example; `where` names the file/record, `reason` the kind."""

  def __init__(self, reason: str, where: str, message: str):
    if reason not in SKIP_REASONS:
      raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
    super().__init__(f"{where}: {message}")
    self.reason = reason
    self.where = where
    self.detail = message


# What decoding real-world media raises. PIL reports some truncated PNGs as SyntaxError and
# decompression failures as zlib.error; PyAV's errors do not derive from OSError.
MEDIA_ERRORS = (OSError, EOFError, SyntaxError, zlib.error, PIL.Image.DecompressionBombError,
                av.error.FFmpegError)


def field_error(reason: str, where: str, field: str, message: str) -> BadExampleError:
  """A record's `field` is missing or wrong: the error names the record (`where`) and the field."""
  return BadExampleError(reason, where, f"field {field!r}: {message}")


def is_finite_number(value) -> bool:
  """An int or float (not a bool) that is finite: what a coordinate or a box corner must be."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def media_error(where: str, error: BaseException) -> BadExampleError:
  """Wraps a decoding exception as a BAD_MEDIA error naming the file."""
  return BadExampleError(BAD_MEDIA, where, f"{type(error).__name__}: {error}")


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Stands in the element stream for a record that was skipped.

  Attributes:
    reason: one of SKIP_REASONS.
    where: the file / record that failed (e.g. 'train.jsonl:17' or an image path).
    message: the error text.
  """
  reason: str
  where: str
  message: str

  @classmethod
  def from_error(cls, error: BadExampleError) -> "Skipped":
    return cls(error.reason, error.where, error.detail)


class SkipCounter:
  """Counts skipped records by reason and logs a rate-limited warning for each.

  A warning is logged for the 1st, 2nd, 4th, 8th, ... skip of each reason, so a dataset where
  every record is broken stays readable in the log while the first failures are all named.
  The counts are plain ints, saved and restored with the iterator state.
  """

  def __init__(self, counts: dict[str, int] | None = None):
    self.counts = {reason: 0 for reason in SKIP_REASONS}
    if counts:
      self.counts.update({k: int(v) for k, v in counts.items()})

  def add(self, skipped: Skipped) -> None:
    n = self.counts[skipped.reason] = self.counts[skipped.reason] + 1
    if n & (n - 1) == 0:  # a power of two
      _log.warning("skipped record (%s #%d, further ones logged at powers of two): %s: %s",
                   skipped.reason, n, skipped.where, skipped.message)
