"""Tests for diffkit.metrics against independent references written out here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffkit.metrics import (
    MMD,
    ColumnwiseDistances,
    SlicedWasserstein,
    TokenTotalVariation,
    bigram_counts,
    bigram_histogram,
    kl_divergence,
    median_pairwise_distance,
    metric_floor,
    mmd_rbf,
    sliced_wasserstein,
    token_counts,
    token_histogram,
    total_variation,
    wasserstein_1d,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed), dtype=torch.float64) + shift


# ---------------------------------------------------------------------------------------------
# Independent references


def _mmd_double_loop(x: np.ndarray, y: np.ndarray, h: float) -> float:
    """Gretton et al. 2012 eq. 3, term by term."""

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * h * h))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def _median_distance_loop(z: np.ndarray) -> float:
    return float(np.median([np.linalg.norm(a - b) for a, b in itertools.combinations(z, 2)]))


def _wasserstein_p_by_assignment(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """Exact 1-D W_p by optimal assignment: replicate both samples to lcm(N, M) equal-mass atoms."""
    size = math.lcm(len(x), len(y))
    xs, ys = np.repeat(x, size // len(x)), np.repeat(y, size // len(y))
    cost = np.abs(xs[:, None] - ys[None, :]) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean() ** (1 / p))


# ---------------------------------------------------------------------------------------------
# mmd_rbf


@pytest.mark.parametrize("bandwidth", [None, 0.7, 3.0])
@pytest.mark.parametrize("sizes", [(5, 7), (6, 6), (2, 3)])
def test_mmd_rbf_equals_double_loop(bandwidth, sizes):
    x = _gaussian(sizes[0], 3, seed=1)
    y = _gaussian(sizes[1], 3, seed=2, shift=0.5)
    pooled = np.concatenate([x.numpy(), y.numpy()])
    h = _median_distance_loop(pooled) if bandwidth is None else bandwidth
    expected = _mmd_double_loop(x.numpy(), y.numpy(), h)
    assert float(mmd_rbf(x, y, bandwidth)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_median_pairwise_distance_equals_numpy_median():
    for n, m in [(4, 5), (3, 3)]:  # 36 (even) and 15 (odd) pairs
        x, y = _gaussian(n, 2, seed=3), _gaussian(m, 2, seed=4)
        expected = _median_distance_loop(np.concatenate([x.numpy(), y.numpy()]))
        assert float(median_pairwise_distance(x, y)) == pytest.approx(expected, rel=1e-12)


def test_mmd_rbf_is_unbiased_near_zero_for_same_distribution_and_large_for_shift():
    def mmd_of_draw(i: int, shift: float) -> torch.Tensor:
        return mmd_rbf(_gaussian(100, 2, 2 * i), _gaussian(100, 2, 2 * i + 1, shift=shift))

    same = torch.stack([mmd_of_draw(i, shift=0.0) for i in range(20)])
    shifted = torch.stack([mmd_of_draw(i, shift=1.0) for i in range(20)])
    # The unbiased estimate takes negative values (its mean is exactly 0 under equal distributions).
    assert (same < 0).any()
    assert abs(float(same.mean())) < 0.05 * float(shifted.mean())
    assert float(shifted.min()) > float(same.max())


def test_mmd_rbf_symmetric_and_permutation_invariant_and_dtype():
    x, y = _gaussian(30, 4, 5), _gaussian(40, 4, 6, shift=0.3)
    value = mmd_rbf(x, y)
    assert torch.allclose(value, mmd_rbf(y, x), rtol=1e-12)
    assert torch.allclose(value, mmd_rbf(x[torch.randperm(30, generator=_gen(0))], y), rtol=1e-12)
    assert mmd_rbf(x.float(), y.float()).dtype == torch.float32
    assert value.shape == ()


def test_mmd_rbf_input_errors():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="same trailing shape"):
        mmd_rbf(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"^x: expected shape \(N, D\)"):
        mmd_rbf(torch.randn(5), x)
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd_rbf(x, torch.randn(1, 2))
    with pytest.raises(TypeError, match="^y: expected a floating dtype"):
        mmd_rbf(x, torch.ones(5, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="pass `bandwidth`"):
        mmd_rbf(torch.zeros(4, 2), torch.zeros(4, 2))


# ---------------------------------------------------------------------------------------------
# Wasserstein


@pytest.mark.parametrize("sizes", [(40, 40), (37, 53), (1, 9)])
def test_wasserstein_1d_p1_equals_scipy(sizes):
    x = torch.randn(sizes[0], generator=_gen(7), dtype=torch.float64)
    y = torch.randn(sizes[1], generator=_gen(8), dtype=torch.float64) * 2 + 0.5
    assert float(wasserstein_1d(x, y)) == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-12)


@pytest.mark.parametrize("p", [1, 1.5, 2, 3])
@pytest.mark.parametrize("sizes", [(4, 6), (5, 5), (3, 7)])
def test_wasserstein_1d_equals_optimal_assignment(p, sizes):
    x = torch.randn(sizes[0], generator=_gen(9), dtype=torch.float64)
    y = torch.rand(sizes[1], generator=_gen(10), dtype=torch.float64) * 3
    expected = _wasserstein_p_by_assignment(x.numpy(), y.numpy(), p)
    assert float(wasserstein_1d(x, y, p=p)) == pytest.approx(expected, rel=1e-10)


def test_wasserstein_1d_columnwise():
    x, y = _gaussian(20, 3, 11), _gaussian(25, 3, 12, shift=1.0)
    w = wasserstein_1d(x, y)
    assert w.shape == (3,)
    for j in range(3):
        assert float(w[j]) == pytest.approx(scipy.stats.wasserstein_distance(x[:, j], y[:, j]), rel=1e-12)


@pytest.mark.parametrize("sizes", [(50, 50), (31, 64)])
def test_sliced_wasserstein_in_one_dimension_equals_scipy(sizes):
    x = torch.randn(sizes[0], 1, generator=_gen(13), dtype=torch.float64)
    y = torch.randn(sizes[1], 1, generator=_gen(14), dtype=torch.float64) + 0.7
    value = sliced_wasserstein(x, y, num_projections=8, p=1, generator=_gen(0))
    assert float(value) == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-12)


def test_sliced_wasserstein_invariances():
    x, y = _gaussian(60, 3, 15), _gaussian(45, 3, 16, shift=0.5)
    value = sliced_wasserstein(x, y, generator=_gen(1))
    perm_x, perm_y = torch.randperm(60, generator=_gen(2)), torch.randperm(45, generator=_gen(3))
    assert torch.allclose(sliced_wasserstein(x[perm_x], y[perm_y], generator=_gen(1)), value, rtol=1e-12)
    assert torch.allclose(sliced_wasserstein(2.5 * x, 2.5 * y, generator=_gen(1)), 2.5 * value, rtol=1e-12)
    assert float(sliced_wasserstein(x, x, generator=_gen(1))) == 0.0
    assert not torch.equal(sliced_wasserstein(x, y, generator=_gen(99)), value)  # directions are random


def test_sliced_wasserstein_of_a_translation():
    # Shifting every point by c moves each projection by <c, theta>, so SW_2^2 = mean_k <c, theta_k>^2,
    # whose expectation over uniform unit theta in D dims is |c|^2 / D.
    x = _gaussian(200, 4, 17)
    c = torch.tensor([1.0, -2.0, 0.5, 2.0], dtype=torch.float64)
    value = sliced_wasserstein(x, x + c, num_projections=4000, p=2, generator=_gen(4))
    assert float(value) == pytest.approx(float(c.norm()) / 2.0, rel=0.03)


def test_wasserstein_input_errors():
    with pytest.raises(ValueError, match="^p: expected the order to be a number >= 1, got 0.5"):
        wasserstein_1d(torch.randn(3), torch.randn(3), p=0.5)
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, C\)"):
        wasserstein_1d(torch.randn(3, 2, 2), torch.randn(3, 2, 2))
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(torch.randn(3, 2), torch.randn(3, 2), num_projections=0)
    with pytest.raises(ValueError, match="same trailing shape"):
        sliced_wasserstein(torch.randn(3, 2), torch.randn(3, 4))


# ---------------------------------------------------------------------------------------------
# Histograms, TV, KL


def test_token_and_bigram_histograms_by_hand():
    ids = torch.tensor([[0, 1, 1], [2, 0, 1]])
    assert token_counts(ids, 4).tolist() == [2, 3, 1, 0]
    assert torch.equal(token_histogram(ids, 4), torch.tensor([2, 3, 1, 0], dtype=torch.float64) / 6)
    # pairs: (0, 1), (1, 1), (2, 0), (0, 1)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 1], expected[1, 1], expected[2, 0] = 2, 1, 1
    assert torch.equal(bigram_counts(ids, 3), expected)
    assert torch.equal(bigram_histogram(ids, 3), expected.double() / 4)
    assert token_histogram(ids, 4).dtype == torch.float64


def test_histogram_input_errors():
    with pytest.raises(TypeError, match="^ids: expected int64 class ids, got dtype torch.int32"):
        token_histogram(torch.tensor([0, 1], dtype=torch.int32), 2)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        token_histogram(torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="L >= 2"):
        bigram_histogram(torch.tensor([[0], [1]]), 2)
    with pytest.raises(ValueError, match="2 dims"):
        bigram_histogram(torch.tensor([0, 1]), 2)


def test_total_variation_and_kl_by_hand():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert float(total_variation(p, q)) == pytest.approx(0.5)
    # KL(p || q) = 2 * 0.5 * log(0.5 / 0.25); the 0 * log(0 / 0.5) term is 0.
    assert float(kl_divergence(p, q)) == pytest.approx(math.log(2))
    assert float(kl_divergence(q, p)) == math.inf  # q puts mass where p has none
    assert float(kl_divergence(p, p)) == 0.0
    # Batched over leading dims.
    batch_p, batch_q = torch.stack([p, q]), torch.stack([q, q])
    assert torch.allclose(total_variation(batch_p, batch_q), torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_distribution_input_errors():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"^q: expected the shape of p \(2,\), got \(3,\)"):
        total_variation(p, torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="^q: expected rows summing to 1"):
        kl_divergence(p, torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="non-negative"):
        total_variation(p, torch.tensor([1.5, -0.5]))
    with pytest.raises(TypeError, match="floating"):
        total_variation(torch.tensor([1, 0]), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------
# Metric classes


def _batches(shift: float = 0.0):
    """Three (samples, reference) pairs of unequal sizes."""
    sizes = [(10, 12), (7, 9), (15, 6)]
    return [(_gaussian(n, 3, 100 + i, shift), _gaussian(m, 3, 200 + i)) for i, (n, m) in enumerate(sizes)]


@pytest.mark.parametrize(
    ("make", "functional"),
    [
        (lambda: MMD(), lambda x, y: mmd_rbf(x, y)),
        (lambda: MMD(bandwidth=1.5), lambda x, y: mmd_rbf(x, y, 1.5)),
        (lambda: SlicedWasserstein(64, p=2, seed=3), lambda x, y: sliced_wasserstein(x, y, 64, 2, _gen(3))),
    ],
)
def test_two_sample_metric_equals_functional_on_concatenated_data_and_resets(make, functional):
    metric = make()
    batches = _batches(shift=0.4)
    for samples, reference in batches:
        metric.update(samples, reference)
    all_samples = torch.cat([s for s, _ in batches])
    all_reference = torch.cat([r for _, r in batches])
    assert torch.allclose(metric.compute(), functional(all_samples, all_reference), rtol=1e-12)
    metric.reset()
    samples, reference = _batches(shift=-1.0)[0]
    metric.update(samples, reference)
    assert torch.allclose(metric.compute(), functional(samples, reference), rtol=1e-12)


def test_sliced_wasserstein_metric_is_deterministic_given_seed():
    values = []
    for _ in range(2):
        metric = SlicedWasserstein(seed=5)
        metric.update(*_batches()[0])
        values.append(metric.compute())
    assert torch.equal(values[0], values[1])


def test_two_sample_metric_errors():
    metric = MMD()
    with pytest.warns(UserWarning, match="before the ``update``"):
        with pytest.raises(RuntimeError, match="at least one update"):
            metric.compute()
    metric.update(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="earlier samples"):
        metric.update(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="^samples, reference: expected the same trailing shape"):
        metric.update(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        MMD(bandwidth=-1.0)


def _token_reference(num_classes: int = 4):
    unigram = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)[:num_classes]
    bigram = torch.outer(unigram, unigram)
    return unigram, bigram


def _token_sampler(n: int, seed: int) -> torch.Tensor:
    """n sequences of length 6 with i.i.d. tokens from _token_reference's unigram."""
    unigram, _ = _token_reference()
    return torch.multinomial(unigram, n * 6, replacement=True, generator=_gen(seed)).reshape(n, 6)


def test_token_total_variation_equals_functional():
    unigram, bigram = _token_reference()
    metric = TokenTotalVariation(4, reference_unigram=unigram, reference_bigram=bigram)
    batches = [_token_sampler(n, seed) for seed, n in enumerate([5, 3, 8])]
    for batch in batches:
        metric.update(batch)
    result = metric.compute()
    ids = torch.cat(batches)
    assert set(result) == {"unigram_tv", "unigram_kl", "bigram_tv"}
    assert torch.allclose(result["unigram_tv"], total_variation(token_histogram(ids, 4), unigram))
    assert torch.allclose(result["unigram_kl"], kl_divergence(unigram, token_histogram(ids, 4)))
    expected_bigram_tv = total_variation(bigram_histogram(ids, 4).flatten(), bigram.flatten())
    assert torch.allclose(result["bigram_tv"], expected_bigram_tv)
    metric.reset()
    metric.update(batches[0])
    expected_after_reset = total_variation(token_histogram(batches[0], 4), unigram)
    assert torch.allclose(metric.compute()["unigram_tv"], expected_after_reset)


def test_token_total_variation_by_hand_and_missing_class_kl():
    metric = TokenTotalVariation(3, reference_unigram=torch.tensor([0.5, 0.25, 0.25]))
    metric.update(torch.tensor([[0, 0, 1, 1]]))  # frequencies (0.5, 0.5, 0)
    result = metric.compute()
    assert set(result) == {"unigram_tv", "unigram_kl"}
    assert float(result["unigram_tv"]) == pytest.approx(0.25)
    assert float(result["unigram_kl"]) == math.inf  # the samples never produce class 2


def test_token_total_variation_errors():
    with pytest.raises(ValueError, match="neither"):
        TokenTotalVariation(3)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        TokenTotalVariation(3, reference_bigram=torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="^reference_unigram: expected rows summing to 1"):
        TokenTotalVariation(2, reference_unigram=torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"^samples: expected shape \(N, L\) with L >= 2"):
        TokenTotalVariation(2, reference_bigram=torch.full((2, 2), 0.25)).update(torch.tensor([[0], [1]]))
    metric = TokenTotalVariation(2, reference_unigram=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"^samples: expected ids in \[0, 2\)"):
        metric.update(torch.tensor([[0, 2]]))
    with pytest.raises(RuntimeError, match="at least one update"):  # the failed update added nothing
        metric.compute()


def _table_sampler(n: int, seed: int, shift: float = 0.0) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {
        "age": 40 + 10 * torch.randn(n, generator=g, dtype=torch.float64) + shift,
        "pos": torch.randn(n, 2, generator=g, dtype=torch.float64),
        "colour": torch.multinomial(torch.tensor([0.2, 0.3, 0.5]), n, replacement=True, generator=g),
        "flag": torch.randint(0, 2, (n,), generator=g),
    }


def test_columnwise_distances_equal_functionals():
    metric = ColumnwiseDistances(categorical={"colour": 3, "flag": 2}, numeric=["age", "pos"])
    samples = [_table_sampler(n, seed, shift=5.0) for seed, n in [(1, 20), (2, 13)]]
    references = [_table_sampler(m, seed) for seed, m in [(3, 17), (4, 30)]]
    for s, r in zip(samples, references, strict=True):
        metric.update(s, r)
    result = metric.compute()
    x = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
    y = {k: torch.cat([r[k] for r in references]) for k in references[0]}
    assert set(result) == {"w1/age", "w1/pos/0", "w1/pos/1", "tv/colour", "tv/flag", "mmd"}
    expected_age = scipy.stats.wasserstein_distance(x["age"], y["age"])
    assert float(result["w1/age"]) == pytest.approx(expected_age, rel=1e-12)
    for j in range(2):
        expected = scipy.stats.wasserstein_distance(x["pos"][:, j], y["pos"][:, j])
        assert float(result[f"w1/pos/{j}"]) == pytest.approx(expected, rel=1e-12)
    for name, k in [("colour", 3), ("flag", 2)]:
        expected = total_variation(token_histogram(x[name], k), token_histogram(y[name], k))
        assert torch.allclose(result[f"tv/{name}"], expected)
    # MMD on the numeric columns, each divided by the reference's standard deviation.
    block_x = torch.cat([x["age"][:, None], x["pos"]], 1)
    block_y = torch.cat([y["age"][:, None], y["pos"]], 1)
    scale = block_y.std(0)
    assert torch.allclose(result["mmd"], mmd_rbf(block_x / scale, block_y / scale), rtol=1e-12)
    metric.reset()
    metric.update(samples[0], references[0])
    assert float(metric.compute()["w1/age"]) == pytest.approx(
        scipy.stats.wasserstein_distance(samples[0]["age"], references[0]["age"]), rel=1e-12
    )


def test_columnwise_distances_errors():
    with pytest.raises(ValueError, match="at least one field"):
        ColumnwiseDistances()
    with pytest.raises(ValueError, match="distinct"):
        ColumnwiseDistances(categorical={"a": 2}, numeric=["a"])
    metric = ColumnwiseDistances(categorical={"colour": 3}, numeric=["age"])
    table = _table_sampler(5, 0)
    with pytest.raises(ValueError, match=r"^reference: missing field\(s\) \['colour'\]"):
        metric.update(table, {"age": table["age"]})
    with pytest.raises(ValueError, match="same number of rows"):
        metric.update({**table, "age": table["age"][:3]}, table)
    with pytest.raises(TypeError, match=r"^samples\['colour'\]: expected int64 class ids"):
        metric.update({**table, "colour": table["colour"].float()}, table)


def test_metric_floor_two_sample():
    metric = MMD()
    metric.update(*_batches(shift=3.0)[0])
    before = metric.compute()

    def sampler(n, seed):
        return _gaussian(n, 3, seed)

    floor = metric_floor(metric, sampler, n=50, seed=1)
    assert torch.allclose(floor, mmd_rbf(sampler(50, 2), sampler(50, 3)), rtol=1e-12)
    assert torch.equal(metric.compute(), before)  # the metric passed in is untouched
    floors = torch.stack([metric_floor(metric, sampler, n=50, seed=s) for s in range(10)])
    assert abs(float(floors.mean())) < 0.1 * float(before)


def test_metric_floor_one_sample_and_tables():
    unigram, bigram = _token_reference()
    tokens = TokenTotalVariation(4, reference_unigram=unigram, reference_bigram=bigram)
    floor = metric_floor(tokens, _token_sampler, n=200, seed=0)
    expected = total_variation(token_histogram(_token_sampler(200, 0), 4), unigram)
    assert torch.allclose(floor["unigram_tv"], expected)
    assert float(floor["unigram_tv"]) < 0.05

    table = ColumnwiseDistances(categorical={"colour": 3}, numeric=["age"])
    floor = metric_floor(table, _table_sampler, n=100, seed=2)
    expected_age = scipy.stats.wasserstein_distance(_table_sampler(100, 4)["age"], _table_sampler(100, 5)["age"])
    assert float(floor["w1/age"]) == pytest.approx(expected_age, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Two processes (gloo): each rank updates half the data; compute() must equal the one-process value.


def _all_metrics():
    unigram, bigram = _token_reference()
    return {
        "mmd": MMD(),
        "sw": SlicedWasserstein(32, seed=1),
        "tokens": TokenTotalVariation(4, reference_unigram=unigram, reference_bigram=bigram),
        "table": ColumnwiseDistances(categorical={"colour": 3, "flag": 2}, numeric=["age", "pos"]),
    }


def _feed(metrics, part: slice) -> None:
    """Update every metric with the rows `part` of fixed data sets (uneven halves across ranks)."""
    x, y = _gaussian(41, 3, 30, shift=0.3), _gaussian(36, 3, 31)
    metrics["mmd"].update(x[part], y[part])
    metrics["sw"].update(x[part], y[part])
    metrics["tokens"].update(_token_sampler(21, 32)[part])
    tx, ty = _table_sampler(41, 33, shift=4.0), _table_sampler(36, 34)
    metrics["table"].update({k: v[part] for k, v in tx.items()}, {k: v[part] for k, v in ty.items()})


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metrics = _all_metrics()
        _feed(metrics, slice(0, 17) if rank == 0 else slice(17, None))
        results = {name: metric.compute() for name, metric in metrics.items()}
        results["floor"] = metric_floor(metrics["mmd"], lambda n, seed: _gaussian(n, 3, seed), n=30, seed=0)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is unavailable"
)
def test_metrics_under_two_processes_equal_single_process(tmp_path):
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file)

    metrics = _all_metrics()
    _feed(metrics, slice(None))
    single = {name: metric.compute() for name, metric in metrics.items()}
    single["floor"] = metric_floor(metrics["mmd"], lambda n, seed: _gaussian(n, 3, seed), n=30, seed=0)
    rank0_alone = _all_metrics()
    _feed(rank0_alone, slice(0, 17))
    assert not torch.allclose(distributed["mmd"], rank0_alone["mmd"].compute())  # the ranks did sync
    for name in ("mmd", "sw", "floor"):
        assert torch.allclose(distributed[name], single[name], rtol=1e-10), name
    for name in ("tokens", "table"):
        assert distributed[name].keys() == single[name].keys()
        for key in single[name]:
            assert torch.allclose(distributed[name][key], single[name][key], rtol=1e-10), (name, key)
