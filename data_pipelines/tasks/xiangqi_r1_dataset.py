"""The 'xiangqi_r1' dataset: Xiangqi-R1 position records (xiangqi_r1.py) for any of the three stages.

    config.data = data_pipelines.default_config(name="xiangqi_r1", path="/data/xiangqi/train.jsonl")
    config.data.mode = "legal"            # 'legal' (stage 1 SFT), 'strategy' (stage 2 SFT), 'grpo'
    config.data.prompt_style = "full"     # 'full': FEN + piece list; 'short': piece list (tiny models)

`config.data.path` takes what the 'files' dataset takes (a file, comma-separated files, a folder
or a glob) of position records. With `config.data.synthetic = 'train' | 'test'` the positions are
generated and labelled on first use under `synthetic_dir` (Fairy-Stockfish when installed, else the
built-in searcher, said at start-up) and read back by the same reader.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.tasks import xiangqi_r1

OPTIONS = dict(mode="grpo", prompt_style="full", pv_plies=3, piece_fraction=0.5, piece_max_moves=0,
               # The synthetic positions, written on first use into synthetic_dir.
               synthetic="", synthetic_dir="", synthetic_playout=0, synthetic_selfplay=0,
               synthetic_sparse=0, synthetic_test_size=200, synthetic_sparse_pieces=(1, 3),
               synthetic_sparse_kinds=xiangqi_r1.SPARSE_KINDS,
               synthetic_engine_depth=8, equal_margin_cp=50.0)


class _Indexed:
  """Pairs each raw record with its index (stage 1 draws its question from (seed, index))."""

  def __init__(self, records):
    self._records = records

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[int, Any]:
    return index, self._records[index]


def _to_example(item: tuple[int, Any], **kwargs) -> Any:
  index, raw = item
  return xiangqi_r1.to_example(raw, index=index, **kwargs)


@register_dataset("xiangqi_r1", options=OPTIONS)
def build_xiangqi_r1(cfg: DataConfig) -> DatasetSpec:
  """Position records from `config.data.path`, or the synthetic positions (see the module docstring).

  Options: mode, prompt_style, pv_plies (plies of the stage-2 rationale's line), piece_fraction
  (stage 1: share of 'legal moves of one piece' questions, the rest 'a legal move'),
  piece_max_moves (stage 1: only pieces with at most this many moves are asked; 0: any), synthetic*,
  equal_margin_cp (|score| within it is 'equal').
  """
  options: dict[str, Any] = dict(cfg.options)
  if options["mode"] not in xiangqi_r1.MODES:
    raise ValueError(f"config.data.mode={options['mode']!r} must be one of {xiangqi_r1.MODES}")
  if options["prompt_style"] not in xiangqi_r1.PROMPT_STYLES:
    raise ValueError(f"config.data.prompt_style={options['prompt_style']!r} must be one of "
                     f"{xiangqi_r1.PROMPT_STYLES}")
  path = cfg.path
  if options["synthetic"]:
    path = _write_synthetic(cfg, options)
  elif not path:
    raise ValueError("dataset 'xiangqi_r1' needs config.data.path (position records, JSONL) or "
                     "config.data.synthetic='train' | 'test' (generated positions)")
  return DatasetSpec(source=_Indexed(sources.file_source(path)), to_example=functools.partial(
      _to_example, mode=options["mode"], prompt_style=options["prompt_style"], seed=cfg.seed,
      pv_plies=options["pv_plies"], piece_fraction=options["piece_fraction"],
      piece_max_moves=options["piece_max_moves"]))


def _write_synthetic(cfg: DataConfig, options: dict[str, Any]) -> str:
  split = options["synthetic"]
  counts = {k: options[f"synthetic_{k}"] for k in xiangqi_r1.SOURCES}
  if split not in ("train", "test") or sum(counts.values()) < 1 or not options["synthetic_dir"]:
    raise ValueError(f"config.data.synthetic={split!r} needs 'train' or 'test', synthetic_playout + "
                     f"synthetic_selfplay + synthetic_sparse >= 1 (got {counts}) and synthetic_dir "
                     f"(got {options['synthetic_dir']!r})")
  total = sum(counts.values())
  test_counts = {k: round(options["synthetic_test_size"] * v / total) for k, v in counts.items()}
  sparse = dict(sparse_pieces=tuple(options["synthetic_sparse_pieces"]),
                sparse_kinds=options["synthetic_sparse_kinds"])
  paths = xiangqi_r1.write_positions(
      options["synthetic_dir"], train=xiangqi_r1.PositionMix(**counts, **sparse),
      test=xiangqi_r1.PositionMix(**test_counts, **sparse), seed=cfg.seed,
      engine_depth=options["synthetic_engine_depth"], pv_plies=max(options["pv_plies"], 3),
      equal_margin_cp=options["equal_margin_cp"], log=logging.getLogger("data_pipelines").warning)
  return paths[split]
