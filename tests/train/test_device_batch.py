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
