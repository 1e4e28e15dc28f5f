"""Exact mean silhouette with cosine distance in O(N·K·D) time instead of O(N²·D).

For unit vectors the mean cosine distance from x to the members of cluster C is
1 - x·S_C / |C|, with S_C the sum of C's members. For x's own cluster, x itself is left out:
a(x) = 1 - (x·S_C - x·x) / (|C| - 1), with x·x = 1. Members of singleton clusters score 0, as in
scikit-learn. Sums and dot products are accumulated in float64.
"""

import torch

from .validation import ArrayLike, check_features, check_labels

DEFAULT_CHUNK_SIZE = 4096


def cosine_silhouette(
    features: ArrayLike, labels: ArrayLike, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Mean silhouette coefficient of a clustering under cosine distance 1 - cos.

    features: (N, D) float, any non-zero norms (rows are normalised here). labels: (N,) integer
    cluster ids, any values. Equals sklearn.metrics.silhouette_score(features, labels,
    metric="cosine") up to float rounding. Extra memory: float64 buffers of (chunk_size, D + K)
    and the (K, D) cluster sums; never an (N, N) or (N, K) matrix.
    """
    x = check_features(features)
    n = x.shape[0]
    clusters = torch.unique(check_labels(labels, n, x.device), return_inverse=True)[1]
    k = int(clusters.max()) + 1
    if not 2 <= k <= n - 1:
        raise ValueError(
            f"the silhouette needs 2 <= number of distinct labels <= N-1, got {k} labels for "
            f"N={n} samples: cluster into between 2 and N-1 groups"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")

    chunks = [slice(start, start + chunk_size) for start in range(0, n, chunk_size)]
    rows_buffer = x.new_empty((min(chunk_size, n), x.shape[1]), dtype=torch.float64)
    inverse_norms = x.new_empty(n, dtype=torch.float64)
    sums = x.new_zeros((k, x.shape[1]), dtype=torch.float64)
    for chunk in chunks:
        rows = rows_buffer[: x[chunk].shape[0]].copy_(x[chunk])
        inverse_norms[chunk] = torch.linalg.vector_norm(rows, dim=1).reciprocal_()
        sums.index_add_(0, clusters[chunk], rows.mul_(inverse_norms[chunk, None]))
    sizes = torch.bincount(clusters, minlength=k).to(torch.float64)

    dots_buffer = sums.new_empty((min(chunk_size, n), k))
    total = sums.new_zeros(())
    for chunk in chunks:
        rows = rows_buffer[: x[chunk].shape[0]].copy_(x[chunk]).mul_(inverse_norms[chunk, None])
        dots = torch.matmul(rows, sums.T, out=dots_buffer[: rows.shape[0]])
        own = clusters[chunk, None]
        own_size = sizes[clusters[chunk]]
        a = 1.0 - (dots.gather(1, own)[:, 0] - 1.0) / (own_size - 1.0).clamp_min(1.0)
        b = 1.0 - dots.div_(sizes).scatter_(1, own, float("-inf")).amax(dim=1)
        scale = torch.maximum(a, b)
        score = torch.where((own_size > 1) & (scale > 0), (b - a) / scale.clamp_min(1e-300), 0.0)
        total += score.sum()
    return float(total) / n
