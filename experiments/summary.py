"""The end-of-run evaluation table printed by experiments/run.py and experiments/eval.py.

Stage results are the trainer's `{stage: {"eval/<split>/<component>": value}}`. A recipe picks and
names the columns with `config.eval.summary`, (label, reward component) pairs, e.g. STAR-R1's
(("format", "format"), ("TAcc", "exact_set"), ("NDiff", "n_diff"), ("reward", "reward")).
"""
from __future__ import annotations

from typing import Mapping, Sequence

Table = dict[str, dict[str, dict[str, float]]]  # {stage: {split: {column label: value}}}


def eval_table(results: Mapping[str, Mapping[str, float]], columns: Sequence[tuple[str, str]] = ()) -> Table:
  """{stage: {split: {label: value}}} from `eval/<split>/<component>` metrics; every component when
  `columns` is empty."""
  labels = dict((component, label) for label, component in columns)
  table: Table = {}
  for stage, metrics in results.items():
    for key, value in metrics.items():
      prefix, split, component = key.split("/", 2)
      if prefix != "eval" or (labels and component not in labels):
        continue
      table.setdefault(stage, {}).setdefault(split, {})[labels.get(component, component)] = float(value)
  return table


def table_text(table: Table, columns: Sequence[tuple[str, str]] = ()) -> str:
  """A fixed-width table: one row per stage and split, one column per label."""
  labels = [label for label, _ in columns] or sorted(
      {label for splits in table.values() for row in splits.values() for label in row})
  width = max([10] + [len(stage) + 2 for stage in table])  # e.g. Xiangqi-R1's 'strategy_sft'
  lines = [f"{'stage':<{width}}{'split':<14}" + "".join(f"{label:>10}" for label in labels)]
  for stage, splits in table.items():
    for split, row in splits.items():
      lines.append(f"{stage:<{width}}{split:<14}" + "".join(f"{row.get(label, float('nan')):>10.3f}"
                                                            for label in labels))
  return "\n".join(lines)
