"""Test setup: 8 simulated CPU devices, set before JAX is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
  # pytest resets warning filters around each test, undoing the one `r1jax.rewards.parsing` sets
  # for the model outputs it parses (tests/rewards/test_parsing.py checks that one in a subprocess).
  config.addinivalue_line("filterwarnings", "ignore::SyntaxWarning:<model output>")
