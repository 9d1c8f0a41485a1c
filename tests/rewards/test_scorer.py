"""Tests for r1jax.rewards.scorer."""
import math
import threading
import time

import numpy as np
import pytest

from r1jax.rewards import scorer, star_r1
from r1jax.rewards.base import RewardResult


def _toy_reward(completion, ground_truth, **context):
  if completion == "sleep":
    time.sleep(context.get("sleep_s", 1.0))
  elif completion == "spin":
    while True:
      pass
  elif completion == "raise":
    raise RuntimeError("judge crashed")
  elif completion == "nan":
    return RewardResult(math.nan, {"a": 1.0})
  elif completion == "not a result":
    return 1.0
  elif completion == "huge":
    return RewardResult(1e39)  # finite in float64, inf in the float32 totals
  extra = {"bonus": context["bonus"]} if "bonus" in context else {}
  return RewardResult(float(len(completion)) + ground_truth["offset"], {"length": float(len(completion)), **extra})


def test_failures_score_zero_and_are_counted():
  completions = ["ab", "sleep", "raise", "nan", "not a result", "abcd", "spin", "huge"]
  truths = [{"offset": 1.0}] * len(completions)
  start = time.monotonic()
  scores = scorer.score_batch(_toy_reward, completions, truths, {"sleep_s": 2.0}, timeout_s=0.3, num_workers=2)
  assert time.monotonic() - start < 1.5  # nobody waited for the 2 s sleep
  np.testing.assert_array_equal(scores.totals, [3, 0, 0, 0, 0, 5, 0, 0])
  assert scores.totals.dtype == np.float32
  np.testing.assert_array_equal(scores.status, [scorer.OK, scorer.TIMEOUT, scorer.ERROR, scorer.ERROR,
                                                scorer.ERROR, scorer.OK, scorer.TIMEOUT, scorer.ERROR])
  assert (scores.num_errors, scores.num_timeouts, scores.num_abandoned) == (4, 2, 2)
  assert [index for index, _ in scores.errors] == [2, 3, 4, 7]
  assert "judge crashed" in scores.errors[0][1]
  np.testing.assert_array_equal(scores.components["length"], [2, 0, 0, 0, 0, 4, 0, 0])


def test_per_sample_contexts_and_missing_components_filled_with_zero():
  contexts = [{"bonus": 0.5}, {}, {"bonus": 2.0}]
  scores = scorer.score_batch(_toy_reward, ["a", "bb", "ccc"], [{"offset": 0.0}] * 3, contexts, num_workers=3)
  np.testing.assert_array_equal(scores.components["bonus"], np.array([0.5, 0.0, 2.0], np.float32))
  np.testing.assert_array_equal(scores.totals, [1, 2, 3])
  assert scores.num_errors == scores.num_timeouts == 0


def test_spinning_thread_is_interrupted_not_leaked():
  threads_before = set(threading.enumerate())
  scores = scorer.score_batch(_toy_reward, ["spin", "a"], [{"offset": 0.0}] * 2, timeout_s=0.1, num_workers=1)
  assert scores.num_timeouts == 1 and scores.totals[1] == 1.0  # the replacement worker took sample 1
  deadline = time.monotonic() + 2.0
  while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert not set(threading.enumerate()) - threads_before


def test_argument_errors_name_the_counts():
  with pytest.raises(ValueError, match="2 completions but 1 ground truths"):
    scorer.score_batch(_toy_reward, ["a", "b"], [{"offset": 0.0}])
  with pytest.raises(ValueError, match="2 completions but 3 contexts"):
    scorer.score_batch(_toy_reward, ["a", "b"], [{"offset": 0.0}] * 2, [{}] * 3)


def test_empty_batch():
  scores = scorer.score_batch(_toy_reward, [], [])
  assert scores.totals.shape == (0,) and scores.num_errors == 0


def test_call_with_timeout():
  assert scorer.call_with_timeout(lambda x: x + 1, 1.0, 1) == (scorer.OK, 2)
  status, error = scorer.call_with_timeout(lambda: 1 / 0, 1.0)
  assert status == scorer.ERROR and isinstance(error, ZeroDivisionError)
  assert scorer.call_with_timeout(time.sleep, 0.05, 0.5) == (scorer.TIMEOUT, None)


def test_throughput_over_10k_star_r1_completions():
  n = 10_000
  completions = [f"<think>step {i}</think><answer>{i % 3}.color.red, 2.size.{'large' if i % 2 else 'small'}</answer>"
                 for i in range(n)]
  truths = [{"answer": ["1.color.red", "2.size.large"]}] * n
  start = time.perf_counter()
  scores = scorer.score_batch(star_r1.star_r1_reward, completions, truths, num_workers=2)
  elapsed = time.perf_counter() - start
  print(f"\nstar_r1 batch scoring: {n / elapsed:.0f} completions/s ({n} in {elapsed:.2f} s, 2 workers)")
  assert scores.num_errors == scores.num_timeouts == 0
  # i % 3 == 1 and i odd: both exact (1 + 10); the other cases are checked in test_star_r1.
  assert scores.totals[1] == 11.0 and scores.totals.shape == (n,)
