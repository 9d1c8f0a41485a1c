"""Counting jit compilations in tests, through jax.monitoring (no private jit cache APIs)."""
import collections
import contextlib

import jax

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # one event per jit lowering (a compilation)


@contextlib.contextmanager
def count_lowerings():
  """A Counter of jit lowerings (each a compilation) by function name, while the block runs."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == LOWERING:
      counts[kwargs.get("fun_name", "")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
