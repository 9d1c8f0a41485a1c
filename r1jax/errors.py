"""The base of errors that stop a run with a message that says everything a user needs.

`experiments/run.py` prints such an error as one line (no traceback) and exits non-zero: a full
disk, rewards failing on most samples, a missing judge, consecutive non-finite updates.
"""


class RunStoppedError(RuntimeError):
  """A run cannot go on; the message names the thing (file, config key, recipe) and the way out."""
