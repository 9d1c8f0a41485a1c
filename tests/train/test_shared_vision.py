"""The learner encodes each prompt's images once for its G rows, with the same result as per row."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import star_r1
from r1jax import models, processing
from r1jax.train import learner
from r1jax.train.sequences import SequenceBuilder

VOCAB, START, END, IMAGE, VIDEO = 64, 60, 61, 62, 63


@functools.lru_cache(maxsize=None)
def _model_and_host_params():
  hf = star_r1.tiny_qwen2_5_vl().to_dict()
  hf.update(vocab_size=VOCAB, image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
            vision_end_token_id=END, eos_token_id=1, pad_token_id=0)
  hf["text_config"].update(vocab_size=VOCAB, eos_token_id=1, pad_token_id=0)
  model = models.build_model(models.config_from_hf(hf))
  # Jitted: an eager init runs the dummy forward op by op (~3x slower on CPU).
  params = jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  return model, jax.tree_util.tree_map(np.array, params)


def _model():
  """(tiny Qwen2.5-VL, random params). The init runs once per process (this module's tests and
  tests/train/test_freeze.py, test_dynamic_sampling_vision.py share it); each call gets its own
  device copies, which a caller may donate."""
  model, host_params = _model_and_host_params()
  return model, jax.tree_util.tree_map(jnp.array, host_params)


def _rows(group: int, size: int = 56):
  """2 prompts x `group` rows; prompt 0 has two images, prompt 1 one, of size x size pixels;
  vision repeated per row."""
  rng = np.random.default_rng(0)
  prompts = []
  for num_images in (2, 1):
    images = processing.process_images([rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                        for _ in range(num_images)])
    ids = []
    for grid in images.grid_thw:
      ids += [START] + [IMAGE] * (int(np.prod(grid)) // 4) + [END]
    ids += list(rng.integers(2, 50, max(20 - len(ids), 4)))
    prompts.append((np.array(ids, np.int32), images))
  length = max(len(ids) for ids, _ in prompts)
  batch = {"input_ids": [], "attention_mask": [], "pixel_values": [], "image_grid_thw": [], "image_counts": [],
           "prompt_id": []}
  for index, (ids, images) in enumerate(prompts):
    for _ in range(group):
      batch["input_ids"].append(np.pad(ids, (length - len(ids), 0)))
      batch["attention_mask"].append(np.arange(length) >= length - len(ids))
      batch["pixel_values"].append(images.pixel_values)
      batch["image_grid_thw"].append(images.grid_thw)
      batch["image_counts"].append(len(images.grid_thw))
      batch["prompt_id"].append(index)
  return {k: np.concatenate(v) if k in ("pixel_values", "image_grid_thw") else np.asarray(v)
          for k, v in batch.items()}


def test_shared_vision_equals_per_row_vision_in_outputs_and_gradients():
  model, params = _model()
  builder = SequenceBuilder(model)
  batch = builder.with_positions(_rows(group=3))
  shared = builder.shared_vision(batch)
  assert len(shared["pixel_values"]) == len(batch["pixel_values"]) // 3  # each prompt's patches once
  assert len(shared["image_embed_index"]) == sum(int(np.prod(g)) // 4 for g in batch["image_grid_thw"])

  def device(b):
    b = builder.device_vision({k: v for k, v in b.items() if k not in ("prompt_id", "image_counts")})
    return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in b.items()}

  weights = jax.random.normal(jax.random.PRNGKey(1), (6, batch["input_ids"].shape[1], 128))

  def loss(p, b):
    return jnp.sum(learner.hidden_states(model, p, b) * weights)

  value_and_grad = jax.jit(jax.value_and_grad(loss))  # as the learner runs it; eager takes ~4x longer on CPU
  per_row, per_row_grads = value_and_grad(params, device({k: v for k, v in batch.items() if k != "prompt_id"}))
  once, once_grads = value_and_grad(params, device(shared))
  np.testing.assert_allclose(once, per_row, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(once_grads), jax.tree_util.tree_leaves(per_row_grads)):
    # fp32 sums in another order (one gather-transpose instead of three encodings): relative to the leaf's scale.
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * max(1.0, np.abs(np.asarray(b)).max())
  merger = [g for path, g in jax.tree_util.tree_flatten_with_path(once_grads)[0] if "merger" in jax.tree_util.keystr(path)]
  assert merger and any(np.abs(np.asarray(g)).max() > 0 for g in merger)  # the vision path is exercised


def test_padded_vision_inputs_leave_the_learner_hidden_states_unchanged():
  """`device_vision` pads the patches with a blank item and the vision-token index with zeros, to
  buckets; the rows' hidden states equal those of the unpadded inputs (fp32)."""
  from r1jax.models import vision  # pylint: disable=g-import-not-at-top
  model, params = _model()
  builder = SequenceBuilder(model)
  shared = builder.shared_vision(builder.with_positions(_rows(group=2, size=84)))
  host = {k: v for k, v in shared.items() if k not in ("image_counts",)}
  padded = builder.device_vision(host)
  exact = dict(host, image_grid_thw=vision.vision_grid(model.config.vision, host["image_grid_thw"]))
  # 3 images of 36 patches (27 merged tokens): bucket 32 tokens; 2 rows each of both prompts: 54 -> 64.
  assert (len(exact["pixel_values"]), len(padded["pixel_values"])) == (108, 128)
  assert (len(exact["image_embed_index"]), len(padded["image_embed_index"])) == (54, 64)
  hidden = jax.jit(lambda p, b: learner.hidden_states(model, p, b))
  as_device = lambda b: {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in b.items()}
  ours, reference = (np.asarray(hidden(params, as_device(b))) for b in (padded, exact))
  real = shared["attention_mask"].astype(bool)
  np.testing.assert_allclose(ours[real], reference[real], rtol=1e-5, atol=1e-6)
