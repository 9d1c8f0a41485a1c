"""The 'embodied_r1' dataset: Embodied-Points-200K Parquet rows, or the synthetic tabletop task, as a grain source.

    config.data = data_pipelines.default_config(name="embodied_r1", path="/data/points/robopoint/train.parquet")
    config.data.split = "train"                      # or the synthetic task instead of `path`
    config.data.task_types = ("point_rec",)           # any embodied_r1_synthetic.TabletopTask field

`path` takes what the 'files' dataset takes (a file, comma-separated files, a folder or a glob); every
row goes through embodied_r1.to_example's checks. Synthetic splits (`config.data.split`):
* 'train': 2**31 - 1 records; record i is drawn from (config.data.seed, i) alone, so any order, shard
  or worker count sees the same records;
* 'test': the first `test_size` records of a fixed sequence that does not depend on config.data.seed
  (evaluate with shuffle=False, num_epochs=1). Train and test draw from disjoint seed streams; with
  continuous jitter, colour-to-cell layouts and shapes a test scene recurs in train with negligible
  probability, so no explicit exclusion is kept.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from data_pipelines import sources
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.sources import RawRecord
from data_pipelines.tasks import embodied_r1, embodied_r1_synthetic as synthetic

SPLITS = ("train", "test")
TRAIN_SIZE = 2 ** 31 - 1
_SPLIT_TAGS = {"train": 0x656D_6200, "test": 0x656D_6201}  # disjoint seed streams per split
_TEST_SEED = 0  # the held-out split ignores config.data.seed


class TabletopSource:
  """Random-access synthetic records of one split (picklable; records are rendered on access)."""

  def __init__(self, split: str, *, task: synthetic.TabletopTask = synthetic.TabletopTask(), seed: int = 0,
               test_size: int = 100):
    if split not in SPLITS:
      raise ValueError(f"config.data.split={split!r} must be one of {SPLITS} (or '' to read config.data.path)")
    if test_size < 1:
      raise ValueError(f"config.data.test_size={test_size} must be >= 1")
    self.split, self.task, self.test_size = split, task, test_size
    self.seed = seed if split == "train" else _TEST_SEED

  def __len__(self) -> int:
    return TRAIN_SIZE if self.split == "train" else self.test_size

  def __getitem__(self, index: int) -> RawRecord:
    if not 0 <= index < len(self):
      raise IndexError(f"embodied_r1 {self.split} index {index} out of range [0, {len(self)})")
    example_id = f"embodied_r1/{self.split}/{index}"
    rng = np.random.default_rng([_SPLIT_TAGS[self.split], self.seed, index])
    return RawRecord(synthetic.generate_record(rng, self.task, example_id=example_id), where=example_id,
                     base_dir="")


_TASK_FIELDS = {field.name: field.default for field in dataclasses.fields(synthetic.TabletopTask)}
# The row keys are the released ones; only the prompt's wrapping is configurable.
_LAYOUT_KEYS = dict(layout="easyr1", prompt_key="problem", answer_key="answer", image_key="images")


@register_dataset("embodied_r1", options=dict(split="", test_size=100, **_TASK_FIELDS))
def build_embodied_r1(cfg: DataConfig) -> DatasetSpec:
  """Embodied-R1 rows from `config.data.path`, or the synthetic task (see the module docstring).

  Options: split ('' | 'train' | 'test'), test_size (held-out records), and every
  `embodied_r1_synthetic.TabletopTask` field (image_size, grid_size, num_colors, radius, jitter,
  task_types, teacher_confusions, teacher_confusion, prompt_style).
  """
  options = dict(cfg.options)
  task = synthetic.TabletopTask(**{name: options.pop(name) for name in _TASK_FIELDS})
  if options["split"]:
    source = TabletopSource(options["split"], task=task, seed=cfg.seed, test_size=options["test_size"])
  elif cfg.path:
    source = sources.file_source(cfg.path)
  else:
    raise ValueError("dataset 'embodied_r1' needs config.data.path (Embodied-Points-200K Parquet files) or "
                     "config.data.split='train' | 'test' (the synthetic tabletop task)")
  layout = dataclasses.replace(cfg.layout, **_LAYOUT_KEYS)
  return DatasetSpec(source=source, to_example=functools.partial(embodied_r1.to_example, layout=layout))


RELEASED_COLUMNS = ("problem", "answer", "images", "data_type")


def write_rows(path: str, rows) -> str:
  """Writes rows in Embodied-Points-200K's Parquet schema (e.g. the synthetic task, for another trainer).

  Columns: problem, answer, data_type (strings) and images (a list of {'bytes': binary, 'path': string}
  structs, as HF `datasets` stores an image sequence); other keys of the rows are left out.

  Returns:
    `path`.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
  schema = pa.schema([("problem", pa.string()), ("answer", pa.string()), ("images", pa.list_(image)),
                      ("data_type", pa.string())])
  table = pa.Table.from_pylist([{key: row.get(key) for key in RELEASED_COLUMNS} for row in rows], schema=schema)
  pq.write_table(table, path)
  return path
