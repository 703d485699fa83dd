"""Sample-quality distances as pure functions on tensors.

Two-sample distances between point clouds (``mmd_rbf``, ``wasserstein_1d``,
``sliced_wasserstein``) and distances between categorical distributions (``total_variation``,
``kl_divergence``) with the histograms that feed them (``token_histogram``, ``bigram_histogram``).

Sample distances are computed in float64 and returned in the inputs' floating dtype; histograms
are float64. Every function checks its inputs and raises TypeError / ValueError naming the argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit._checks import (
    check_bandwidth,
    check_columns,
    check_ids,
    check_order,
    check_points,
    check_positive_int,
    check_probabilities,
    check_same_features,
    check_sequences,
)

__all__ = [
    "mmd_rbf",
    "median_pairwise_distance",
    "wasserstein_1d",
    "sliced_wasserstein",
    "token_counts",
    "bigram_counts",
    "token_histogram",
    "bigram_histogram",
    "total_variation",
    "kl_divergence",
]


# ---------------------------------------------------------------------------------------------
# MMD


def _squared_distances(z: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of z: (P, D) float64 -> (P, P)."""
    sq_norms = (z * z).sum(-1)  # (P,)
    return (sq_norms[:, None] + sq_norms[None, :] - 2.0 * z @ z.T).clamp_min(0.0)  # (P, P)


def _median_of_pairs(sq_dist: Tensor) -> Tensor:
    """Median over pairs i < j of sqrt(sq_dist[i, j]); an even count takes the mean of the middle two.

    Each pair appears twice off the diagonal, so with K pairs the K-th and (K+1)-th smallest
    off-diagonal entries are the pairs' middle value (K odd) or two middle values (K even).
    """
    size = sq_dist.shape[0]
    off_diagonal = sq_dist[~torch.eye(size, dtype=torch.bool, device=sq_dist.device)]  # (P (P - 1),)
    num_pairs = off_diagonal.numel() // 2
    low, high = off_diagonal.kthvalue(num_pairs).values, off_diagonal.kthvalue(num_pairs + 1).values
    return 0.5 * (low.sqrt() + high.sqrt())


def median_pairwise_distance(x: Tensor, y: Tensor) -> Tensor:
    """The median heuristic bandwidth: median ||a - b|| over distinct pairs of the pooled sample.

    Pairs are all i < j of cat(x, y); an even count of pairs takes the mean of the two middle values.

    Args:
        x: (N, D) float samples.
        y: (M, D) float samples; N + M >= 2.

    Returns:
        () float64 median distance.
    """
    check_points("x", x)
    check_points("y", y)
    check_same_features("x", x, "y", y)
    return _median_of_pairs(_squared_distances(torch.cat([x, y]).double()))


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None) -> Tensor:
    """Unbiased squared MMD between two samples with a Gaussian kernel.

    MMD_u^2 = 1/(N(N-1)) sum_{i != j} k(x_i, x_j) + 1/(M(M-1)) sum_{i != j} k(y_i, y_j)
              - 2/(N M) sum_{i, j} k(x_i, y_j),
    k(a, b) = exp(-||a - b||^2 / (2 h^2)), Gretton et al. 2012 (JMLR), eq. 3 / Lemma 6.
    Its expectation is exactly MMD^2 >= 0, so between two samples of one distribution it is
    centred on 0 and can be negative.

    Args:
        x: (N, D) float samples, N >= 2.
        y: (M, D) float samples, M >= 2.
        bandwidth: h > 0. None takes the median heuristic: h = the median distance between
            distinct points of the pooled sample cat(x, y) (Gretton et al. 2012, sec. 8).

    Returns:
        () MMD_u^2 in the inputs' promoted dtype, computed in float64.

    Raises:
        TypeError: if x or y is not a floating tensor.
        ValueError: on a wrong rank, too few rows, different D, a non-positive bandwidth, or a
            median distance of 0 (more than half the pooled points coincide) with bandwidth=None.
    """
    check_points("x", x, min_rows=2)
    check_points("y", y, min_rows=2)
    check_same_features("x", x, "y", y)
    check_bandwidth(bandwidth)
    n, m = x.shape[0], y.shape[0]
    sq_dist = _squared_distances(torch.cat([x, y]).double())  # (N + M, N + M)
    if bandwidth is None:
        h = _median_of_pairs(sq_dist)
        if h == 0:
            raise ValueError(
                "The median pairwise distance of cat(x, y) is 0 (most points coincide): pass `bandwidth` explicitly."
            )
    else:
        h = torch.tensor(float(bandwidth), dtype=torch.float64)
    kernel = torch.exp(-sq_dist / (2.0 * h**2))  # (N + M, N + M)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    # The diagonals k(a, a) = 1 exactly; leaving them out makes the within-sample terms unbiased.
    term_xx = (k_xx.sum() - n) / (n * (n - 1))
    term_yy = (k_yy.sum() - m) / (m * (m - 1))
    return (term_xx + term_yy - 2.0 * k_xy.mean()).to(torch.promote_types(x.dtype, y.dtype))


# ---------------------------------------------------------------------------------------------
# Wasserstein


def _wasserstein_pow(x_sorted: Tensor, y_sorted: Tensor, p: float) -> Tensor:
    """W_p^p between 1-D empirical measures, column by column: (N, C), (M, C) sorted -> (C,).

    W_p^p = int_0^1 |F^-1(u) - G^-1(u)|^p du with F^-1, G^-1 the empirical quantile functions,
    step functions that jump at u = i / N and u = j / M. Between consecutive jumps of either, both
    are constant, so the integral is an exact finite sum. For N = M it is mean_i |x_(i) - y_(i)|^p.
    """
    n, m = x_sorted.shape[0], y_sorted.shape[0]
    steps_x = torch.arange(1, n + 1, dtype=torch.float64, device=x_sorted.device) / n
    steps_y = torch.arange(1, m + 1, dtype=torch.float64, device=x_sorted.device) / m
    ends = torch.cat([steps_x, steps_y]).sort().values  # (N + M,)
    widths = torch.diff(ends, prepend=ends.new_zeros(1))  # (N + M,)
    mids = ends - widths / 2  # zero-width pieces (shared jumps) carry no weight
    idx_x = (mids * n).floor().long().clamp_max(n - 1)  # (N + M,)
    idx_y = (mids * m).floor().long().clamp_max(m - 1)  # (N + M,)
    gaps = (x_sorted[idx_x] - y_sorted[idx_y]).abs().pow(p)  # (N + M, C)
    return (widths[:, None] * gaps).sum(0)  # (C,)


def wasserstein_1d(x: Tensor, y: Tensor, p: float = 1) -> Tensor:
    """Exact Wasserstein-p distance between 1-D samples, for each trailing column separately.

    W_p = (int_0^1 |F^-1(u) - G^-1(u)|^p du)^(1/p), the quantile coupling of sorted samples
    (Villani 2009, remark 2.30; Peyre & Cuturi 2019, remark 2.30). Sizes may differ. For p = 1
    it equals scipy.stats.wasserstein_distance.

    Args:
        x: (N,) or (N, C) float samples, N >= 1.
        y: (M,) or (M, C) float samples, same trailing shape as x.
        p: order, p >= 1.

    Returns:
        () for 1-D inputs, else (C,): W_p per column, in the inputs' promoted dtype.

    Raises:
        TypeError: if x or y is not a floating tensor.
        ValueError: on a rank other than 1 or 2, an empty sample, different C, or p < 1.
    """
    check_order(p)
    check_columns("x", x)
    check_columns("y", y)
    check_same_features("x", x, "y", y)
    x_cols = x.double().reshape(x.shape[0], -1)  # (N, C)
    y_cols = y.double().reshape(y.shape[0], -1)  # (M, C)
    w_pow = _wasserstein_pow(x_cols.sort(0).values, y_cols.sort(0).values, p)  # (C,)
    return w_pow.pow(1.0 / p).reshape(x.shape[1:]).to(torch.promote_types(x.dtype, y.dtype))


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 128,
    p: float = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced Wasserstein-p distance: exact 1-D W_p^p along random unit directions, averaged.

    SW_p = (1/P sum_k W_p^p(<x, theta_k>, <y, theta_k>))^(1/p), theta_k uniform on the unit sphere
    (normalised Gaussian draws); Bonneel et al. 2015, eq. 20. Each 1-D term is exact (see
    ``wasserstein_1d``), so the only randomness is the directions: the result is invariant to the
    order of the samples and deterministic given the generator's state.

    Args:
        x: (N, D) float samples, N >= 1.
        y: (M, D) float samples, M >= 1; sizes may differ.
        num_projections: P >= 1 directions.
        p: order, p >= 1.
        generator: draws the directions (on the generator's device); None uses the global RNG
            on x's device.

    Returns:
        () SW_p in the inputs' promoted dtype, computed in float64.

    Raises:
        TypeError: if x or y is not a floating tensor or num_projections not an int.
        ValueError: on a wrong rank, an empty sample, different D, num_projections < 1 or p < 1.
    """
    check_points("x", x)
    check_points("y", y)
    check_same_features("x", x, "y", y)
    check_positive_int("num_projections", num_projections)
    check_order(p)
    device = x.device if generator is None else generator.device
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64, device=device)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)  # (D, P)
    x_proj = (x.double() @ theta).sort(0).values  # (N, P)
    y_proj = (y.double() @ theta).sort(0).values  # (M, P)
    w_pow = _wasserstein_pow(x_proj, y_proj, p)  # (P,)
    return w_pow.mean().pow(1.0 / p).to(torch.promote_types(x.dtype, y.dtype))


# ---------------------------------------------------------------------------------------------
# Categorical distributions


def _token_counts(ids: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(ids.reshape(-1), minlength=num_classes)  # (K,)


def _bigram_counts(ids: Tensor, num_classes: int) -> Tensor:
    pair_ids = ids[:, :-1] * num_classes + ids[:, 1:]  # (N, L - 1)
    counts = torch.bincount(pair_ids.reshape(-1), minlength=num_classes**2)  # (K * K,)
    return counts.reshape(num_classes, num_classes)


def token_counts(ids: Tensor, num_classes: int) -> Tensor:
    """How often each class occurs in ids.

    Args:
        ids: (...) int64 class ids in [0, K), at least one.
        num_classes: K >= 1.

    Returns:
        (K,) int64 counts summing to ids.numel().
    """
    check_positive_int("num_classes", num_classes)
    check_ids("ids", ids, num_classes, nonempty=True, always=True)
    return _token_counts(ids, num_classes)


def bigram_counts(ids: Tensor, num_classes: int) -> Tensor:
    """How often each consecutive pair (ids[n, l], ids[n, l + 1]) occurs, within each sequence.

    Args:
        ids: (N, L) int64 class ids in [0, K), L >= 2.
        num_classes: K >= 1.

    Returns:
        (K, K) int64 counts; entry [a, b] counts a followed by b; they sum to N (L - 1).
    """
    check_positive_int("num_classes", num_classes)
    check_sequences("ids", ids, num_classes)
    return _bigram_counts(ids, num_classes)


def token_histogram(ids: Tensor, num_classes: int) -> Tensor:
    """Empirical class frequencies: ``token_counts(ids, K) / ids.numel()``.

    Args:
        ids: (...) int64 class ids in [0, K), at least one.
        num_classes: K >= 1.

    Returns:
        (K,) float64 probabilities.
    """
    counts = token_counts(ids, num_classes).double()
    return counts / counts.sum()


def bigram_histogram(ids: Tensor, num_classes: int) -> Tensor:
    """Empirical frequencies of consecutive pairs: ``bigram_counts(ids, K) / (N (L - 1))``.

    Args:
        ids: (N, L) int64 class ids in [0, K), L >= 2.
        num_classes: K >= 1.

    Returns:
        (K, K) float64 probabilities of (a, b) = (ids[n, l], ids[n, l + 1]), summing to 1 over both dims.
    """
    counts = bigram_counts(ids, num_classes).double()
    return counts / counts.sum()


def _check_distribution_pair(p: Tensor, q: Tensor) -> None:
    check_probabilities("p", p)
    check_probabilities("q", q)
    if p.shape != q.shape:
        raise ValueError(f"q: expected the shape of p {tuple(p.shape)}, got {tuple(q.shape)}")


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance TV(p, q) = 0.5 * sum_k |p_k - q_k| over the last dim, in [0, 1].

    Args:
        p: (..., K) float probabilities (non-negative, summing to 1 over K).
        q: (..., K) float probabilities, same shape.

    Returns:
        (...) TV distances in the inputs' promoted dtype.

    Raises:
        TypeError: if p or q is not a floating tensor.
        ValueError: on different shapes, negative entries or rows not summing to 1.
    """
    _check_distribution_pair(p, q)
    return 0.5 * (p - q).abs().sum(-1)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Kullback-Leibler divergence KL(p || q) = sum_k p_k log(p_k / q_k) over the last dim, in nats.

    Terms with p_k = 0 are 0 (0 log 0 = 0). Where q_k = 0 < p_k the divergence is +inf: it is
    returned as inf, not raised, so a sample that misses a class the reference has scores inf.

    Args:
        p: (..., K) float probabilities (non-negative, summing to 1 over K).
        q: (..., K) float probabilities, same shape.

    Returns:
        (...) KL divergences >= 0 (possibly inf) in the inputs' promoted dtype, computed in float64.

    Raises:
        TypeError: if p or q is not a floating tensor.
        ValueError: on different shapes, negative entries or rows not summing to 1.
    """
    _check_distribution_pair(p, q)
    p64, q64 = p.double(), q.double()
    kl = (torch.xlogy(p64, p64) - torch.xlogy(p64, q64)).sum(-1)
    return kl.to(torch.promote_types(p.dtype, q.dtype))
