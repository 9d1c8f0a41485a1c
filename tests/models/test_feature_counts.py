"""Host-side per-row check of vision pad tokens against grids (`vlm.check_row_feature_counts`)."""
import jax
import numpy as np
import pytest

from r1jax import models, sharding
from r1jax.models import vlm
from tests.multihost_worker import host_params, vl_model, vl_prompt_batch


def _moved_pad_token(config, batch: dict[str, np.ndarray]) -> np.ndarray:
  """input_ids with one image pad token moved from row 1 to row 0: the batch's totals still match."""
  ids = batch["input_ids"].copy()
  ids[0, -1] = config.image_token_id  # was text
  ids[1, np.flatnonzero(ids[1] == config.image_token_id)[0]] = 5
  return ids


@pytest.mark.parametrize("counts", ["given", "inferred"])
@pytest.mark.parametrize("kind", ["image", "video"])
def test_names_the_row_and_both_counts(kind, counts):
  config = vl_model().config
  batch = vl_prompt_batch(config, [0, 1])  # 4 and 6 pad tokens
  token_id = getattr(config, f"{kind}_token_id")
  ids, moved = (np.where(x == config.image_token_id, token_id, x) for x in (batch["input_ids"],
                                                                              _moved_pad_token(config, batch)))
  vision = {f"{kind}_grid_thw": batch["image_grid_thw"], f"{kind}_counts": batch["image_counts"] if counts == "given"
            else None}
  vlm.check_row_feature_counts(config, ids, **vision)
  with pytest.raises(ValueError, match=rf"^row 0: {kind} features and {kind} tokens do not match: input_ids hold 5 "
                                       rf"<\|{kind}_pad\|> tokens \({kind}_token_id={token_id}\) but the {kind} "
                                       r"inputs give 4 features$"):
    vlm.check_row_feature_counts(config, moved, **vision)


def test_counts_that_do_not_cover_the_grids_are_named():
  config = vl_model().config
  batch = vl_prompt_batch(config, [0, 1])
  with pytest.raises(ValueError, match=r"image_counts \[2, 1\] must give one count per row \(2 rows\) summing to "
                                       r"the 2 items of image_grid_thw"):
    vlm.check_row_feature_counts(config, batch["input_ids"], batch["image_grid_thw"], image_counts=[2, 1])


def test_forward_logits_checks_each_row_before_its_jitted_call():
  model = vl_model()
  params = host_params(model, sharding.make_mesh({"fsdp": 1}, devices=jax.devices()[:1]))
  batch = vl_prompt_batch(model.config, [0, 1])
  # Given positions (as the sampler's learner inputs pass them), get_rope_index does not run.
  positions, _ = vlm.get_rope_index(model.config, batch["input_ids"], batch["image_grid_thw"],
                                    attention_mask=batch["attention_mask"])
  with pytest.raises(ValueError, match=r"^row 0: image features and image tokens do not match: input_ids hold 5 "):
    models.forward_logits(model, params, _moved_pad_token(model.config, batch), batch["attention_mask"], positions,
                          pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
