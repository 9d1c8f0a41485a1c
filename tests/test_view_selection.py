"""3D-R1's dynamic view selection (r1jax/view_selection.py) over views rendered from a point cloud."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import scenes
from r1jax import view_selection as vs


def _scores(seed=0, rows=16, views=8):
  rng = np.random.default_rng(seed)
  return [rng.random((rows, views)).astype(np.float32) for _ in range(3)]


def test_utility_follows_the_formula_with_normalised_weights():
  weights = {"text": jnp.float32(0.5), "coverage": jnp.float32(0.2), "image": jnp.float32(0.6)}
  s_text, s_cov, s_img = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0])
  np.testing.assert_allclose(vs.utility(weights, s_text, s_cov, s_img), [0.5 + 0.75, 0.25 + 0.75], rtol=1e-6)
  assert {k: float(v) for k, v in vs.init_weights().items()} == pytest.approx({"text": 0.3, "coverage": 0.35,
                                                                                "image": 0.35})


def test_selection_is_deterministic_for_fixed_weights_and_breaks_ties_by_index():
  s_text, s_cov, s_img = _scores()
  weights = vs.init_weights()
  first = vs.select(weights, s_text, s_cov, s_img)
  assert first.shape == (16, 4)
  for _ in range(3):
    np.testing.assert_array_equal(vs.select(weights, s_text, s_cov, s_img), first)
  # Best first: the utilities of the kept views are non-increasing and beat every dropped view.
  u = np.asarray(vs.utility(weights, s_text, s_cov, s_img))
  kept = np.take_along_axis(u, first, 1)
  assert (np.diff(kept, axis=1) <= 0).all()
  chosen = np.zeros(u.shape, bool)
  np.put_along_axis(chosen, first, True, 1)
  assert (kept[:, -1] >= np.where(chosen, -np.inf, u).max(1)).all()
  flat = np.full(8, 0.5, np.float32)
  np.testing.assert_array_equal(vs.select(weights, flat, flat, flat), [0, 1, 2, 3])
  # Other weights, another (still fixed) choice.
  text_only = {"text": jnp.float32(1.0), "coverage": jnp.float32(0.5), "image": jnp.float32(0.5)}
  np.testing.assert_array_equal(vs.select(text_only, s_text, 0 * s_cov, 0 * s_img), np.argsort(-s_text, 1)[:, :4])
  with pytest.raises(ValueError, match="k=9"):
    vs.select(weights, s_text, s_cov, s_img, k=9)


def test_gradients_reach_every_weight_and_fitting_learns_which_score_matters():
  s_text, s_cov, s_img = _scores(rows=64)
  target = np.zeros_like(s_cov)
  target[np.arange(64), s_cov.argmax(1)] = 1.0  # the useful view is the one that covers most
  grads = jax.grad(vs.selection_loss)(vs.init_weights(), s_text, s_cov, s_img, target)
  assert all(np.isfinite(g) and abs(float(g)) > 1e-4 for g in grads.values()), grads
  weights, losses = vs.fit(s_text, s_cov, s_img, target, steps=150)
  assert losses[-1] < 0.7 * losses[0]
  _, w_cov, w_img = vs.normalised(weights)
  assert float(w_cov) > 0.8 > float(w_img)
  hits = (vs.select(weights, s_text, s_cov, s_img, k=1)[:, 0] == s_cov.argmax(1)).mean()
  baseline = (vs.select(vs.init_weights(), s_text, s_cov, s_img, k=1)[:, 0] == s_cov.argmax(1)).mean()
  assert hits > baseline + 0.3


def test_the_text_weight_is_pulled_toward_its_prior():
  weights = dict(vs.init_weights(), text=jnp.float32(1.3))
  assert float(vs.regulariser(weights)) == pytest.approx(0.05)
  assert float(jax.grad(vs.regulariser)(weights)["text"]) == pytest.approx(0.1)
  zero = np.zeros((4, 8), np.float32)
  target = np.full((4, 8), 1 / 8, np.float32)  # no signal: only the pull moves w_t
  fitted, _ = vs.fit(zero, zero, zero, target, steps=100, weights=weights)
  assert abs(float(fitted["text"]) - 0.3) < abs(1.3 - 0.3)


def test_scores_from_features():
  q = np.array([1.0, 0.0])
  np.testing.assert_allclose(vs.text_relevance(q, np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])),
                             [1.0, 0.0, 2 ** -0.5], rtol=1e-5)
  views = jnp.stack([jnp.ones((3, 4)), -jnp.ones((3, 4))])
  np.testing.assert_allclose(vs.image_text_similarity(views, jnp.ones((5, 4))), [1.0, -1.0], rtol=1e-5)


def test_selection_over_rendered_views_of_a_room():
  """Views rendered from a point cloud: coverage from the z-buffer, the top view sees the most."""
  rng = np.random.default_rng(0)
  floor = np.concatenate([rng.uniform(0, 4, (4000, 2)), np.zeros((4000, 1))], 1)
  box = rng.uniform([0.5, 0.5, 0.0], [1.5, 1.5, 1.0], (2000, 3))
  cloud = scenes.PointCloud(np.concatenate([floor, box]).astype(np.float32),
                            np.concatenate([np.full((4000, 3), 90), np.tile([[200, 30, 30]], (2000, 1))]).astype(np.uint8))
  cameras = scenes.candidate_cameras(cloud)
  assert [c.name for c in cameras[:3]] == ["top", "front", "side"] and len(cameras) == 8
  radius = 1.5 * np.linalg.norm(cloud.size)
  for camera in cameras:
    assert np.linalg.norm(np.subtract(camera.position, camera.target)) == pytest.approx(radius)
  rendered = [scenes.render_view(cloud, c, image_size=56) for c in cameras]
  coverage = np.array([cov for _, cov in rendered])
  assert coverage.argmax() == 0 and (coverage > 0).all() and (coverage <= 1).all()
  image, _ = rendered[0]
  assert image.shape == (56, 56, 3) and ((image == [200, 30, 30]).all(-1)).any()  # the red box, seen from above
  again = scenes.render_view(cloud, cameras[3], image_size=56)
  np.testing.assert_array_equal(again[0], rendered[3][0])
  zero = np.zeros(8, np.float32)
  assert vs.select(vs.init_weights(), zero, coverage, zero, k=1)[0] == 0
