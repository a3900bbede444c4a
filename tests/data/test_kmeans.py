import numpy as np
from scipy.cluster.vq import kmeans2

from mdm_jax.data import kmeans


def test_lloyd_matches_scipy_from_the_same_start():
  x = np.random.default_rng(0).normal(size=(3000, 8))
  init = x[:16].copy()
  ours = kmeans.kmeans(x, 16, iters=10, init=init)
  theirs, _ = kmeans2(x, init, iter=10, minit="matrix")
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_assign_is_the_brute_force_nearest_codeword():
  rng = np.random.default_rng(1)
  x, c = rng.normal(size=(20000, 5)), rng.normal(size=(37, 5))  # > one distance chunk
  brute = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(kmeans.assign(x, c), brute)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
  rng = np.random.default_rng(2)
  centres = rng.normal(size=(4, 3)) * 20
  x = np.concatenate([c + rng.normal(size=(250, 3)) * 0.1 for c in centres])
  book = kmeans.kmeans(x, 4, iters=10, seed=3)
  assert np.sort(np.linalg.norm(book[:, None] - centres[None], axis=-1).min(0)).max() < 0.1
  np.testing.assert_array_equal(book, kmeans.kmeans(x, 4, iters=10, seed=3))


def test_residual_vq_stages_reduce_error_and_decode_inverts_encode():
  x = np.random.default_rng(4).normal(size=(4000, 6))
  books = kmeans.residual_kmeans(x, 32, 3, iters=8)
  codes = kmeans.residual_encode(x, books)
  errors = [np.mean((x - kmeans.residual_decode(codes[:, :s], books[:s])) ** 2) for s in (1, 2, 3)]
  assert errors[0] > errors[1] > errors[2]
  manual = books[0][codes[:, 0]] + books[1][codes[:, 1]] + books[2][codes[:, 2]]
  np.testing.assert_allclose(kmeans.residual_decode(codes, books), manual, rtol=1e-6)
  assert abs(kmeans.inertia(x, books[0]) - np.mean(((x - books[0][codes[:, 0]]) ** 2).sum(1))) < 1e-6
