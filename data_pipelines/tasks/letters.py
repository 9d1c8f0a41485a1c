"""The 'letters' dataset: a text-only sanity task for the learner.

Each prompt asks for one target letter as often as possible; the `target_letter_rate` reward
(r1jax/rewards/sanity.py) scores the fraction of characters that are that letter. A policy
trained from scratch raises it within a few dozen GRPO steps, which makes it the smallest
end-to-end check that sampling, rewards, advantages and updates point the right way.
"""
from __future__ import annotations

import dataclasses
import functools
import string

import numpy as np

from data_pipelines import records
from data_pipelines.config import DataConfig
from data_pipelines.registry import DatasetSpec, register_dataset
from data_pipelines.sources import RawRecord

SIZE = 2 ** 31 - 1


def prompt_text(letter: str) -> str:
  return f"Write the letter {letter} as many times as you can."


def corpus(letters: str = string.ascii_lowercase) -> list[str]:
  """Texts to build a tiny tokenizer for this task."""
  return [prompt_text(c) for c in letters] + [" ".join(c * n for n in range(1, 9)) for c in letters]


class LettersSource:
  """Record i: a letter drawn from (seed, i) alone; `response` (for SFT) repeats it."""

  def __init__(self, letters: str, seed: int):
    if not letters:
      raise ValueError("config.data.letters must not be empty")
    self.letters, self.seed = letters, seed

  def __len__(self) -> int:
    return SIZE

  def __getitem__(self, index: int) -> RawRecord:
    letter = self.letters[np.random.default_rng([self.seed, index]).integers(len(self.letters))]
    fields = {"problem": prompt_text(letter), "answer": letter, "response": " ".join([letter] * 8),
              "id": f"letters/{index}"}
    return RawRecord(fields, where=f"letters/{index}", base_dir="")


@register_dataset("letters", options=dict(letters="abc"))
def build_letters(cfg: DataConfig) -> DatasetSpec:
  """Options: letters (the target alphabet, one drawn per prompt)."""
  layout = dataclasses.replace(cfg.layout, layout="easyr1", prompt_key="problem", answer_key="answer")
  return DatasetSpec(source=LettersSource(cfg.options["letters"], cfg.seed),
                     to_example=functools.partial(records.to_example, options=layout))
