"""The learner's device batch checks each row's vision pad tokens against its grids on the host."""
import numpy as np
import pytest

from r1jax import sharding
from r1jax.train import loop, rows
from tests.multihost_worker import vl_model, vl_prompt_batch

GROUP = 2


def _learner_rows(model) -> dict[str, np.ndarray]:
  """4 prompts (one image each, 4 to 9 pad tokens) x G rows, vision repeated per row, as
  `SequenceBuilder.learner_batch` lays them out (only the fields the vision path reads)."""
  return rows.repeat_rows(vl_prompt_batch(model.config, range(4)), GROUP)


def test_device_batch_names_the_row_whose_image_tokens_disagree_with_its_grid():
  model = vl_model()
  updater = loop._Updater(None, model, sharding.make_mesh({"fsdp": -1}), None, None)  # pylint: disable=protected-access
  batch = _learner_rows(model)
  placed = updater.device_batch(batch)
  assert placed["input_ids"].shape == batch["input_ids"].shape and "pixel_values" in placed

  # One pad token moved from row 3 to row 2 (both prompt 1's): the batch's totals hold, so only a
  # per-row check sees it; the jitted scatter would clip its index and train on shifted features
  # without a word.
  image = model.config.image_token_id
  ids = batch["input_ids"].copy()
  ids[2, -1] = image  # was text
  ids[3, np.flatnonzero(ids[3] == image)[0]] = 5
  with pytest.raises(ValueError, match=r"row 2: image features and image tokens do not match: input_ids hold 7 "
                                       r"<\|image_pad\|> tokens .* but the image inputs give 6 features"):
    updater.device_batch(dict(batch, input_ids=ids))


def test_learner_rows_take_the_bucketed_width_of_the_longest_completion():
  """Completions of at most 5 tokens out of a 40-token budget: 16 completion columns, not 40;
  rounds of other widths are right-padded to the widest when their rows are concatenated."""
  from r1jax.sampling import SampleOutput  # pylint: disable=g-import-not-at-top
  from r1jax.sampling.prompts import batch_prompts  # pylint: disable=g-import-not-at-top
  from r1jax.train.sequences import SequenceBuilder  # pylint: disable=g-import-not-at-top
  model = vl_model()
  builder = SequenceBuilder(model)
  data = vl_prompt_batch(model.config, range(2))
  prompts = batch_prompts(builder.prompts(data), model.config, pad_id=builder.pad_id)

  def output(lengths):
    rows_, budget = len(lengths), 40
    tokens = np.where(np.arange(budget) < np.array(lengths)[:, None], 7, builder.pad_id).astype(np.int32)
    logprobs = np.where(tokens == 7, -0.5, 0.0).astype(np.float32)
    return SampleOutput(tokens=tokens, logprobs=logprobs, lengths=np.array(lengths, np.int32),
                        finished=np.ones(rows_, bool), truncated=np.zeros(rows_, bool), entropy=None,
                        prompts=prompts, num_samples=GROUP, pad_id=builder.pad_id, temperature=1.0)

  short = builder.learner_batch(data, output([5, 3, 1, 4]), GROUP)
  long = builder.learner_batch(data, output([20, 3, 1, 4]), GROUP)
  assert short["completion_mask"].shape == (4, 16) and long["completion_mask"].shape == (4, 32)
  assert short["input_ids"].shape[1] == prompts.length + 16
  assert short["completion_mask"].sum() == 13 and (short["sampler_logprobs"][short["completion_mask"]] == -0.5).all()

  both = rows.concat_rows([short, long], builder.pad_id)
  assert both["completion_mask"].shape == (8, 32) and both["input_ids"].shape == (8, prompts.length + 32)
  np.testing.assert_array_equal(both["completion_mask"][:4, :16], short["completion_mask"])
  assert not both["completion_mask"][:4, 16:].any() and not both["attention_mask"][:4, -16:].any()
  assert (both["completion_ids"][:4, 16:] == builder.pad_id).all()
  # Padding positions continue after each row's last, on every M-RoPE axis.
  np.testing.assert_array_equal(both["positions"][:, :4, -16:],
                                short["positions"][:, :, -1:] + 1 + np.arange(16))
