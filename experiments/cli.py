"""Command-line pieces of experiments/run.py and experiments/eval.py.

Both call `app.run(main, flags_parser=parse_flags)`. ml_collections rejects an override
`--config.<key>=value` whose key the recipe's config lacks while absl parses the flags, before `main`
runs, with a 50-line chained traceback ending in `AttributeError: "'key'"`; `parse_flags` turns that
into one line naming the key and the closest valid ones, and exit code 2 (a usage error).
"""
from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from absl import app, flags

# --config.a.b=1, -config.a.b 1 and --noconfig.a.b (a boolean), as ml_collections reads them.
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=\s]+)")
_CONFIG_FILE = re.compile(r"^--?config(?:=(.*))?$")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing of `argv`; an override naming a key the config lacks exits with one line (code 2)."""
  try:
    return app.parse_flags_with_usage(argv)  # absl's own: a bad flag value exits with a usage message
  except (AttributeError, KeyError) as error:  # what ml_collections raises for such a key
    failure = error
  message = _unknown_override(argv)
  if message is None:  # some other failure: keep its own traceback
    raise failure
  print(f"{os.path.basename(argv[0])}: {message}", file=sys.stderr)
  sys.exit(2)


def _unknown_override(argv: Sequence[str]) -> str | None:
  """'unknown config key ...' for the first `--config.<key>` of `argv` that the `--config` file's config
  lacks (with the closest valid keys); None when every override names an existing key."""
  config_file = _config_file(argv)
  if config_file is None:
    return None
  config = flags.FLAGS["config"].parser.parse(config_file)  # the recipe's config, before any override
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match:
      message = missing_key_message(config, match.group(1).split("."))
      if message is not None:
        return f"{message} (from {arg})"
  return None


def missing_key_message(config: Any, path: Sequence[str]) -> str | None:
  """'unknown config key a.b; did you mean ...?' for the first key of `path` (e.g. ["train", "stepz"])
  missing from `config` (a ConfigDict or dict), or below a value that is not a section; None when the
  whole path exists."""
  node = config
  for depth, key in enumerate(path):
    if isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
      node = node[int(key)]  # ml_collections indexes sequences too
      continue
    if not hasattr(node, "keys"):
      return (f"config key {'.'.join(path[:depth])!r} holds a value of type {type(node).__name__}, not a "
              f"section: it has no key {key!r}")
    keys = sorted(node.keys())
    if key not in keys:
      parent = list(path[:depth])
      close = difflib.get_close_matches(key, keys, n=3)
      if close:
        hint = "did you mean " + " or ".join(repr(".".join(parent + [c])) for c in close) + "?"
      else:
        section = f"under {'.'.join(parent)!r}" if parent else "at the top level"
        hint = f"valid keys {section}: {', '.join(keys)}"
      return f"unknown config key {'.'.join(path[:depth + 1])!r}; {hint}"
    node = node[key]
  return None


def _config_file(argv: Sequence[str]) -> str | None:
  """The value of `--config=FILE` (or `--config FILE`) in `argv`, the last one if given twice."""
  found = None
  for i, arg in enumerate(argv[1:], 1):
    match = _CONFIG_FILE.match(arg)
    if match:
      found = match.group(1) if match.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else None)
  return found


def eval_output_dir(checkpoint_dir: str) -> str:
  """eval.py's default --output_dir: `<parent>/eval_<name>` of the checkpoint folder. Results stay out of
  the folder being read (an HF export stays a model folder, a `checkpoints` folder holds only orbax's
  entries) and out of the stage folder, where the run's own eval_samples.json lies."""
  checkpoint_dir = os.path.abspath(checkpoint_dir)
  return os.path.join(os.path.dirname(checkpoint_dir), f"eval_{os.path.basename(checkpoint_dir)}")
