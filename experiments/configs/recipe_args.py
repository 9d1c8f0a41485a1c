"""The `:arg` of a recipe config: '' for the embedded default, 'real,key=value,...' for a real run."""
from __future__ import annotations

from typing import Callable, Sequence

import ml_collections


def select(arg: str, embedded: Callable[[], ml_collections.ConfigDict],
           real: Callable[..., ml_collections.ConfigDict], options: Sequence[str]) -> ml_collections.ConfigDict:
  """`embedded()` for '', `real(**{key: value})` for 'real[,key=value]...' with keys from `options`.

  Raises:
    ValueError naming the argument and the accepted form for anything else.
  """
  name, *given = [part.strip() for part in arg.split(",")] if arg else [""]
  usage = "real" + "".join(f"[,{key}=...]" for key in options)
  if name == "":
    if given:
      raise ValueError(f"config arg {arg!r}: the embedded default takes no options (use --config.<key>=...)")
    return embedded()
  if name != "real":
    raise ValueError(f"config arg {arg!r}: expected '' (embedded default) or '{usage}'")
  kwargs = {}
  for option in given:
    key, sep, value = option.partition("=")
    if not sep or key not in options:
      raise ValueError(f"config arg {arg!r}: options are {', '.join(f'{k}=' for k in options)}; got {option!r}")
    kwargs[key] = value
  return real(**kwargs)
