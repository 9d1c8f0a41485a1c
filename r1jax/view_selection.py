"""3D-R1's dynamic view selection with learnable weights: pure JAX functions over per-view scores.

Source: 3D-R1 (AIGeeksGroup/3D-R1, `models/3dr1/dynamic_view_selection.py`) and issue 22. For each
of V candidate views of a scene (rendered from its point cloud, `data_pipelines.scenes`):

    U(v) = w_t * S_text(v) + ŵ_c * S_cov(v) + ŵ_img * S_img(v),  (ŵ_c, ŵ_img) = (w_c, w_img) / (w_c + w_img)

* S_text: text-view relevance from the embedding model: the cosine between the question and a
  description of the view (the labels of the objects it shows), `text_relevance`;
* S_cov: the share of the scene's points the view sees (`scenes.render_view`'s coverage);
* S_img: image-text similarity from the policy's vision tower: the cosine between the view's
  mean vision feature and the mean of the question's token embeddings, `image_text_similarity`.

The weights are learnable (`init_weights`: 0.3 / 0.35 / 0.35); training adds an L2 pull of w_t
toward 0.3 with weight 0.05 (`regulariser`). `select` keeps the top `k` (4) views, best first,
ties to the lower index, so the selection is a deterministic function of the weights and scores.
Selection itself is not differentiable; `selection_loss` trains the weights through a softmax over
U (the soft choice of one view) against a target distribution over views (e.g. the views that show
the question's object), the relaxation the learned selector optimises.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

INITIAL_WEIGHTS = {"text": 0.3, "coverage": 0.35, "image": 0.35}
TEXT_WEIGHT_TARGET, TEXT_WEIGHT_PULL = 0.3, 0.05
NUM_SELECTED = 4
_EPS = 1e-8


def init_weights() -> dict[str, jax.Array]:
  """{'text', 'coverage', 'image'}: float32 scalars at 3D-R1's initial 0.3 / 0.35 / 0.35."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in INITIAL_WEIGHTS.items()}


def normalised(weights: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(w_t, ŵ_c, ŵ_img): coverage and image weights scaled to sum to 1 (their magnitudes, so a
  weight driven below 0 cannot flip the sum's sign)."""
  c, i = jnp.abs(weights["coverage"]), jnp.abs(weights["image"])
  total = c + i + _EPS
  return weights["text"], c / total, i / total


def utility(weights: Mapping[str, jax.Array], s_text: jax.Array, s_cov: jax.Array, s_img: jax.Array) -> jax.Array:
  """U per view: scores `[..., V]` each -> `[..., V]`."""
  w_t, w_c, w_i = normalised(weights)
  return w_t * s_text + w_c * s_cov + w_i * s_img


def select(weights: Mapping[str, jax.Array], s_text, s_cov, s_img, k: int = NUM_SELECTED) -> np.ndarray:
  """Indices `[..., k]` of the k views of highest U, best first; ties: the lower index first."""
  u = np.asarray(utility(weights, jnp.asarray(s_text, jnp.float32), jnp.asarray(s_cov, jnp.float32),
                         jnp.asarray(s_img, jnp.float32)))
  if not 1 <= k <= u.shape[-1]:
    raise ValueError(f"view selection: k={k} must be in [1, {u.shape[-1]}] (the candidate views)")
  return np.argsort(-u, axis=-1, kind="stable")[..., :k]


def regulariser(weights: Mapping[str, jax.Array]) -> jax.Array:
  """0.05 * (w_t - 0.3)^2: keeps the text term near its prior while the others move."""
  return TEXT_WEIGHT_PULL * (weights["text"] - TEXT_WEIGHT_TARGET) ** 2


def selection_loss(weights: Mapping[str, jax.Array], s_text: jax.Array, s_cov: jax.Array, s_img: jax.Array,
                   target: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Cross-entropy of softmax(U / temperature) over views against `target` (`[B, V]`, rows summing
  to 1: which views are the useful ones), averaged over rows, plus `regulariser`. A scalar."""
  logits = utility(weights, s_text, s_cov, s_img) / temperature
  ce = -(target * jax.nn.log_softmax(logits, axis=-1)).sum(-1).mean()
  return ce + regulariser(weights)


def fit(s_text, s_cov, s_img, target, *, steps: int = 200, learning_rate: float = 0.05,
        temperature: float = 0.1, weights: Mapping[str, jax.Array] | None = None) -> tuple[dict, list[float]]:
  """Adam on `selection_loss` over all rows at once; returns (weights, loss per step)."""
  weights = dict(weights or init_weights())
  arrays = [jnp.asarray(x, jnp.float32) for x in (s_text, s_cov, s_img, target)]
  optimizer = optax.adam(learning_rate)
  state = optimizer.init(weights)

  @jax.jit
  def step(weights, state):
    loss, grads = jax.value_and_grad(selection_loss)(weights, *arrays, temperature)
    updates, state = optimizer.update(grads, state, weights)
    return optax.apply_updates(weights, updates), state, loss

  losses = []
  for _ in range(steps):
    weights, state, loss = step(weights, state)
    losses.append(float(loss))
  return weights, losses


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity over the last axis (0 for a zero vector)."""
  return (a * b).sum(-1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + _EPS)


def text_relevance(question_embedding: np.ndarray, view_description_embeddings: np.ndarray) -> np.ndarray:
  """S_text `[V]`: cosine of the question's embedding `[D]` with each view description's `[V, D]`."""
  return np.asarray(cosine(jnp.asarray(view_description_embeddings), jnp.asarray(question_embedding)[None]))


def image_text_similarity(view_features: jax.Array, text_embeddings: jax.Array) -> jax.Array:
  """S_img `[V]`: cosine between each view's mean vision-tower feature (`[V, tokens, D]`) and the
  mean of the question's token embeddings in the policy's embedding table (`[length, D]`)."""
  return cosine(view_features.mean(1), text_embeddings.mean(0)[None])
