"""k-means vector quantisation in numpy: the codebook learner behind the image and audio tokenizers.

Lloyd iterations from a k-means++ start, with a fixed seed and chunked distance computation so that a few hundred
thousand vectors and a 512-entry codebook train in seconds on two cores. Distances are computed in float64: in float32
BLAS rounding (which depends on memory alignment, so it differs between processes) flipped near-tied assignments,
and the same audio encoded in a worker process gave different codes. Codebooks are returned as float32.
Residual VQ stacks codebooks, each quantising what the previous ones left over.
"""
import numpy as np

_CHUNK = 8192  # rows per distance block: bounds the [chunk, K] matrix to ~16 MB


def assign(x_NxD: np.ndarray, codebook_KxD: np.ndarray) -> np.ndarray:
  """Index of the nearest codeword (squared Euclidean) for each row; int32 [N]."""
  x_NxD = np.asarray(x_NxD, np.float64)
  c_KxD = np.asarray(codebook_KxD, np.float64)
  c_sq_K = (c_KxD * c_KxD).sum(1)
  neg2c_DxK = np.ascontiguousarray(-2.0 * c_KxD.T)
  out = np.empty(len(x_NxD), np.int32)
  for lo in range(0, len(x_NxD), _CHUNK):
    # |x|^2 is the same for every codeword, so argmin needs only |c|^2 - 2 x.c (computed in place)
    d_BxK = x_NxD[lo:lo + _CHUNK] @ neg2c_DxK
    d_BxK += c_sq_K
    out[lo:lo + _CHUNK] = np.argmin(d_BxK, axis=1)
  return out


def _plus_plus_init(x_NxD: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (Arthur & Vassilvitskii 2007), on a subsample to keep it O(k * n_sub)."""
  sub = x_NxD[rng.choice(len(x_NxD), min(len(x_NxD), 20 * k), replace=False)]
  centers = [sub[rng.integers(len(sub))]]
  d2 = ((sub - centers[0]) ** 2).sum(1)
  for _ in range(1, k):
    total = d2.sum()
    i = rng.choice(len(sub), p=d2 / total) if total > 0 else rng.integers(len(sub))
    centers.append(sub[i])
    d2 = np.minimum(d2, ((sub - sub[i]) ** 2).sum(1))
  return np.stack(centers).astype(np.float64)


def _centroid_sums(x_NxD: np.ndarray, a_N: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  counts_K = np.bincount(a_N, minlength=k)
  order = np.argsort(a_N, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts_K)[:-1]])
  sums_KxD = np.zeros((k, x_NxD.shape[1]), np.float64)
  used = counts_K > 0
  sums_KxD[used] = np.add.reduceat(x_NxD[order], starts[used], axis=0)
  return sums_KxD, counts_K


def kmeans(x_NxD: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, init: np.ndarray | None = None,
           max_points: int = 200_000) -> np.ndarray:
  """Lloyd's k-means; returns a float32 [k, D] codebook. Empty clusters restart at the worst-quantised points."""
  rng = np.random.default_rng(seed)
  x_NxD = np.asarray(x_NxD, np.float64)
  if len(x_NxD) > max_points:  # a random subsample estimates the centroids as well and bounds the time
    x_NxD = x_NxD[rng.choice(len(x_NxD), max_points, replace=False)]
  if len(x_NxD) < k:
    raise ValueError(f"k-means needs at least k={k} points, got {len(x_NxD)}")
  codebook_KxD = _plus_plus_init(x_NxD, k, rng) if init is None else np.array(init, np.float64)
  for _ in range(iters):
    a_N = assign(x_NxD, codebook_KxD)
    sums_KxD, counts_K = _centroid_sums(x_NxD, a_N, k)
    used = counts_K > 0
    codebook_KxD[used] = sums_KxD[used] / counts_K[used, None]
    if not used.all():
      err_N = ((x_NxD - codebook_KxD[a_N]) ** 2).sum(1)
      codebook_KxD[~used] = x_NxD[np.argsort(-err_N, kind="stable")[:int((~used).sum())]]
  return codebook_KxD.astype(np.float32)


def residual_kmeans(x_NxD: np.ndarray, k: int, stages: int, *, iters: int = 20, seed: int = 0) -> np.ndarray:
  """Residual VQ: stage s learns a codebook on the residual of stages < s. Returns float32 [stages, k, D]."""
  residual = np.array(x_NxD, np.float64)
  books = []
  for s in range(stages):
    book = kmeans(residual, k, iters=iters, seed=seed + s)
    residual -= book[assign(residual, book)]
    books.append(book)
  return np.stack(books)


def residual_encode(x_NxD: np.ndarray, books_SxKxD: np.ndarray) -> np.ndarray:
  """Codes [N, stages] of a residual VQ."""
  residual = np.array(x_NxD, np.float64)
  codes = np.empty((len(residual), len(books_SxKxD)), np.int32)
  for s, book in enumerate(books_SxKxD):
    codes[:, s] = assign(residual, book)
    residual -= book[codes[:, s]]
  return codes


def residual_decode(codes_NxS: np.ndarray, books_SxKxD: np.ndarray) -> np.ndarray:
  codes_NxS = np.asarray(codes_NxS)
  return sum(books_SxKxD[s][codes_NxS[:, s]] for s in range(codes_NxS.shape[1])).astype(np.float32)


def inertia(x_NxD: np.ndarray, codebook_KxD: np.ndarray) -> float:
  """Mean squared distance of each row to its nearest codeword."""
  x_NxD = np.asarray(x_NxD, np.float64)
  return float(((x_NxD - codebook_KxD[assign(x_NxD, codebook_KxD)]) ** 2).sum(1).mean())
