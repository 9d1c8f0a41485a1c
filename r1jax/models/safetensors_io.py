"""Memory-mapped reading of (possibly sharded) safetensors checkpoints, bf16 included.

Tensors are NumPy views of a memory map, so reading one tensor -- or one slice of it -- touches
only those bytes. That is what lets every host read just the slices its devices own.
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class SafetensorsFolder:
  """All tensors of `*.safetensors` files in a folder, by name.

  Uses `model.safetensors.index.json` when present (and checks that the files it names exist).
  Raises ValueError naming the file (and the tensor, with the bytes it needs) for an empty,
  truncated or corrupt file or index.
  """

  def __init__(self, path: str):
    self.path = path
    index_file = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index_file):
      files = _indexed_files(index_file)
    else:
      files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
      raise FileNotFoundError(f"no *.safetensors files in checkpoint folder {path!r}")
    self._entries: dict[str, tuple[str, dict, int]] = {}
    for name in files:
      file = os.path.join(path, name)
      if not os.path.isfile(file):
        raise FileNotFoundError(f"{file!r} is listed in model.safetensors.index.json but missing")
      header, data_start = _read_header(file)
      for tensor_name, meta in header.items():
        self._entries[tensor_name] = (file, meta, data_start)
    self._maps: dict[str, np.memmap] = {}

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name][1]["shape"])

  def get(self, name: str) -> np.ndarray:
    """The tensor as a read-only memory-mapped array (no copy until it is used)."""
    file, meta, data_start = self._entries[name]
    if meta["dtype"] not in _DTYPES:
      raise ValueError(f"tensor {name!r} in {file!r} has unsupported dtype {meta['dtype']}")
    if file not in self._maps:
      self._maps[file] = np.memmap(file, dtype=np.uint8, mode="r")
    begin, end = meta["data_offsets"]
    raw = self._maps[file][data_start + begin:data_start + end]
    return raw.view(_DTYPES[meta["dtype"]]).reshape(meta["shape"])


def _indexed_files(index_file: str) -> list[str]:
  """The file names `model.safetensors.index.json` maps tensors to; errors name the index."""
  try:
    with open(index_file, encoding="utf-8") as f:
      return sorted(set(json.load(f)["weight_map"].values()))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{index_file!r} is not valid JSON ({e}); the index is corrupt") from None
  except (KeyError, TypeError, AttributeError):
    raise ValueError(f"{index_file!r} has no 'weight_map' {{tensor name: file}}; the index is corrupt") from None


def _read_header(file: str) -> tuple[dict[str, dict], int]:
  """({tensor name: {dtype, shape, data_offsets}}, offset of the data) of one safetensors file.

  Checks the layout before anything is mapped, so a truncated, empty or corrupt file is reported
  by name (with the tensor and the sizes) instead of failing later in a reshape.
  """
  size = os.path.getsize(file)
  with open(file, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise ValueError(f"{file!r} has {size} bytes, fewer than the 8-byte header length a safetensors file "
                       "starts with: the file is empty or truncated")
    (header_len,) = struct.unpack("<Q", prefix)
    if 8 + header_len > size:
      raise ValueError(f"{file!r}: the header length says {header_len} bytes but the file has {size} bytes in "
                       "all: truncated, or not a safetensors file")
    try:
      header = json.loads(f.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{file!r}: its {header_len}-byte header is not valid JSON ({e}): the file is corrupt") from None
  if not isinstance(header, dict):
    raise ValueError(f"{file!r}: its header is a JSON {type(header).__name__}, not a {{tensor name: entry}} object")
  header.pop("__metadata__", None)
  data_start = 8 + header_len
  for name, meta in header.items():
    _check_entry(file, name, meta, size - data_start)
  return header, data_start


def _check_entry(file: str, name: str, meta, data_bytes: int) -> None:
  """Raises ValueError naming `file` and tensor `name` when its header entry cannot be read as a tensor
  of `data_bytes` bytes of data (the file after the header)."""
  if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= set(meta):
    raise ValueError(f"{file!r}: header entry of tensor {name!r} needs dtype, shape and data_offsets, got {meta!r}")
  begin, end = meta["data_offsets"]
  if meta["dtype"] in _DTYPES:
    expected = int(np.prod(meta["shape"], dtype=np.int64)) * np.dtype(_DTYPES[meta["dtype"]]).itemsize
    if end - begin != expected:
      raise ValueError(f"{file!r}: tensor {name!r} ({meta['dtype']} {meta['shape']}) needs {expected} bytes but "
                       f"its data_offsets [{begin}, {end}] span {end - begin}: the header is corrupt")
  if not 0 <= begin <= end <= data_bytes:
    raise ValueError(f"{file!r} is truncated: tensor {name!r} ({meta['dtype']} {meta['shape']}) needs data bytes "
                     f"[{begin}, {end}) but the file holds {data_bytes} bytes of data after its header")


def write_safetensors(file: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  """Writes one safetensors file (any dtype in `_DTYPES`, bf16 included)."""
  inverse = {np.dtype(v): k for k, v in _DTYPES.items()}
  header, offset = {}, 0
  arrays = {}
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    nbytes = array.nbytes
    header[name] = {"dtype": inverse[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
    arrays[name] = array
    offset += nbytes
  if metadata:
    header["__metadata__"] = metadata
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned, as the reference writer does
  with open(file, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name in sorted(arrays):
      f.write(arrays[name].tobytes())
