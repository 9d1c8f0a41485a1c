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
  """

  def __init__(self, path: str):
    self.path = path
    index_file = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index_file):
      with open(index_file, encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    else:
      files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
      raise FileNotFoundError(f"no *.safetensors files in checkpoint folder {path!r}")
    self._entries: dict[str, tuple[str, dict, int]] = {}
    for name in files:
      file = os.path.join(path, name)
      if not os.path.isfile(file):
        raise FileNotFoundError(f"{file!r} is listed in model.safetensors.index.json but missing")
      with open(file, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
      header.pop("__metadata__", None)
      for tensor_name, meta in header.items():
        self._entries[tensor_name] = (file, meta, 8 + header_len)
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
