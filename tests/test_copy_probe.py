"""experiments/copy_probe.py: the probe's task layout, and the tiny policy learning the copy on its own."""
import numpy as np

from experiments import copy_probe


def test_batch_layout_supervises_the_answer_and_names_the_word_in_half_the_prompts():
  batch, words = copy_probe.make_batch(np.random.default_rng(0), 64, answer_tokens=8, noisy_every=4, loss_on="answer")
  length = copy_probe.PROMPT_LENGTH + 1 + 8 + 1
  assert batch["input_ids"].shape == (64, length) and batch["positions"].shape == (3, 64, length)
  first = copy_probe.PROMPT_LENGTH
  np.testing.assert_array_equal(batch["loss_mask"][:, :first], 0)
  np.testing.assert_array_equal(batch["loss_mask"][:, first:], 1)
  named = words >= 0
  assert 16 < named.sum() < 48
  word_slot = 1 + len(copy_probe.SYSTEM) + 1
  np.testing.assert_array_equal(batch["input_ids"][named, word_slot], words[named])  # the prompt names it
  np.testing.assert_array_equal(batch["input_ids"][~named, word_slot], copy_probe.KEY)
  assert np.isin(batch["input_ids"][:, first], copy_probe.WORDS).all()  # the answer starts with a word
  word_only, _ = copy_probe.make_batch(np.random.default_rng(0), 4, answer_tokens=8, noisy_every=4, loss_on="word")
  np.testing.assert_array_equal(word_only["loss_mask"].sum(1), 1)
  assert (word_only["loss_mask"][:, first] == 1).all()


def test_the_tiny_policy_learns_the_copy_when_only_the_word_is_supervised():
  """Capacity is not what stops the embedded defaults: this copy is learned in 100 steps
  (a broken attention mask, position or loss mask leaves it at chance, 0.25)."""
  history = copy_probe.train(100, answer_tokens=4, loss_on="word", eval_every=100, log=lambda _: None)
  step, _, accuracy, distinct = history[-1]
  assert step == 100 and accuracy > 0.9 and distinct == 4
