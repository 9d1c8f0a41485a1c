"""Synthetic tasks generated on the fly, registered as datasets when this package is imported.

* 'star_tvr' (tvr.py, tvr_dataset.py): STAR-R1-style transformation reasoning over pairs of
  rendered scenes, in-view and cross-view, with fixed held-out splits.
* 'letters' (letters.py): a text-only sanity task for the learner.
"""
from data_pipelines.tasks import letters, tvr_dataset  # noqa: F401  (registers 'letters', 'star_tvr')
from data_pipelines.tasks.tvr import TvrTask, generate_example, text_corpus  # noqa: F401
from data_pipelines.tasks.tvr_dataset import TvrSource, write_split  # noqa: F401
