"""Test setup: 8 simulated CPU devices, set before JAX is imported anywhere."""
import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One persistent XLA compilation cache for the session (a fresh folder, removed at exit), inherited
# by the subprocesses the tests start: the many short training runs of the letters config (and the
# run.py processes of tests/train/test_interrupts.py) compile the same programs, which XLA then
# compiles once. It only skips recompiling an identical program; every run still traces and runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR, _CACHE_OWNER = tempfile.mkdtemp(prefix="r1jax-tests-xla-cache-"), os.getpid()
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

  @atexit.register
  def _remove_compilation_cache():
    if os.getpid() == _CACHE_OWNER:  # not from a forked child that exits normally
      shutil.rmtree(_CACHE_DIR, ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
  # pytest resets warning filters around each test, undoing the one `r1jax.rewards.parsing` sets
  # for the model outputs it parses (tests/rewards/test_parsing.py checks that one in a subprocess).
  config.addinivalue_line("filterwarnings", "ignore::SyntaxWarning:<model output>")
