"""Tests for diffkit.data: the data-module contract, and each distribution against exact quantities.

References are written plainly here (scipy densities, brute-force enumeration, moment formulas),
and statistical checks use tolerances of several standard errors at fixed seeds.
"""

from __future__ import annotations

import itertools
import math

import lightning
import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from diffkit.data import (
    TOY2D,
    GaussianMixture,
    GaussianMixtureDataModule,
    MarkovChain,
    MarkovTokensDataModule,
    TableDataModule,
    Toy2DDataModule,
    categorical_fields,
    checkerboard,
    eight_gaussians,
    numeric_fields,
    sample_table,
    swiss_roll,
    table_class_marginals,
    two_moons,
)
from diffkit.data.tables import BUCKET_DIRECTION, BUCKET_THRESHOLDS

SMALL = dict(num_train=300, num_val=50, batch_size=64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ data-module contract

MODULES = {
    "toy2d": lambda **kw: Toy2DDataModule("eight_gaussians", **{**SMALL, **kw}),
    "mixture": lambda **kw: GaussianMixtureDataModule(dim=3, num_components=5, **{**SMALL, **kw}),
    "tokens": lambda **kw: MarkovTokensDataModule(num_classes=5, seq_len=7, **{**SMALL, **kw}),
    "table": lambda **kw: TableDataModule(**{**SMALL, **kw}),
}


def expected_example(dm) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Field -> (shape of one example, dtype); the Tensor-batch modules use the key None."""
    if isinstance(dm, TableDataModule):
        return {"num": ((3,), torch.float32), "cluster": ((), torch.int64), "bucket": ((), torch.int64)}
    dtype = torch.int64 if isinstance(dm, MarkovTokensDataModule) else torch.float32
    return {None: (dm.data_shape, dtype)}


def fields(batch) -> dict:
    return batch if isinstance(batch, dict) else {None: batch}


def rows(batch) -> list[tuple]:
    """Each example as a tuple of Python numbers (all fields), to compare splits as multisets."""
    flat = [v.reshape(len(v), -1).double() for v in fields(batch).values()]
    return [tuple(r) for r in torch.cat(flat, dim=1).tolist()]


def concat(batches: list) -> object:
    if isinstance(batches[0], dict):
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    return torch.cat(batches)


def equal(a, b) -> bool:
    fa, fb = fields(a), fields(b)
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.fixture(params=list(MODULES))
def make(request):
    return MODULES[request.param]


def test_batches_have_documented_type_shape_and_dtype(make) -> None:
    dm = make()
    dm.setup("fit")
    spec = expected_example(dm)
    for loader, total in [(dm.train_dataloader(), 300), (dm.val_dataloader(), 50), (dm.test_dataloader(), 50)]:
        seen = 0
        for batch in loader:
            assert isinstance(batch, dict) == (None not in spec)
            assert isinstance(batch, (Tensor, dict))
            got = fields(batch)
            assert got.keys() == spec.keys()
            size = len(next(iter(got.values())))
            for name, (shape, dtype) in spec.items():
                assert got[name].shape == (size, *shape) and got[name].dtype == dtype
            assert size <= 64
            seen += size
        assert seen == total


def test_setup_draws_once(make) -> None:
    dm = make()
    dm.setup("fit")
    first = dm.split("train")
    dm.setup("validate")
    assert dm.split("train") is first
    with pytest.raises(ValueError, match="^name: expected one of \\['train', 'val', 'test'\\], got 'dev'"):
        dm.split("dev")


def test_same_seed_gives_same_splits_and_order(make) -> None:
    a, b = make(seed=3), make(seed=3)
    for split in ["train", "val", "test"]:
        assert equal(a.split(split), b.split(split))
    assert equal(next(iter(a.train_dataloader())), next(iter(b.train_dataloader())))


def test_different_seeds_and_splits_differ(make) -> None:
    a, b = make(seed=0), make(seed=1)
    assert not equal(a.split("train"), b.split("train"))
    assert set(rows(a.split("val"))) != set(rows(a.split("test")))
    assert not set(rows(a.split("val"))) <= set(rows(a.split("train")))


def test_val_split_does_not_depend_on_num_train(make) -> None:
    assert equal(make().split("val"), make(num_train=100).split("val"))


def test_train_loader_shuffles_and_val_loader_keeps_order(make) -> None:
    dm = make()
    loader = dm.train_dataloader()
    epoch1, epoch2 = concat(list(loader)), concat(list(loader))
    assert sorted(rows(epoch1)) == sorted(rows(dm.split("train")))  # a permutation of the split
    assert not equal(epoch1, dm.split("train"))
    assert not equal(epoch1, epoch2)  # a new order each epoch
    assert equal(concat(list(dm.val_dataloader())), dm.split("val"))
    assert equal(concat(list(dm.test_dataloader())), dm.split("test"))


def test_sample_reference_is_fresh_and_seeded(make) -> None:
    dm = make()
    ref = dm.sample_reference(40, seed=dm.seed)
    assert equal(ref, dm.sample_reference(40, seed=dm.seed))
    assert not equal(ref, dm.sample_reference(40, seed=dm.seed + 1))
    for split in ["train", "val", "test"]:  # a stream of its own, even with the module's seed
        assert not equal(ref, {k: v[:40] for k, v in fields(dm.split(split)).items()})
    spec = expected_example(dm)
    for name, value in fields(ref).items():
        assert value.shape == (40, *spec[name][0]) and value.dtype == spec[name][1]


def test_data_module_runs_in_a_trainer(tmp_path) -> None:
    class Mean(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.mu = nn.Parameter(torch.zeros(2))
            self.shapes: list[tuple[int, ...]] = []

        def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
            self.shapes.append(tuple(batch.shape))
            return (batch - self.mu).pow(2).mean()

        def validation_step(self, batch: Tensor, batch_idx: int) -> None:
            self.shapes.append(("val", *batch.shape))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Mean()
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=Toy2DDataModule("two_moons", **SMALL))
    assert model.shapes == [(64, 2)] * 4 + [(300 - 4 * 64, 2)] + [("val", 50, 2)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_train=0), ValueError, "^num_train: expected a positive int, got 0"),
        (dict(num_val=-5), ValueError, "^num_val: expected a positive int, got -5"),
        (dict(batch_size=2.5), TypeError, "^batch_size: expected an int, got float"),
        (dict(seed=-1), ValueError, "^seed: expected a non-negative int"),
        (dict(num_workers=-1), ValueError, "^num_workers: expected a non-negative int, got -1"),
    ],
)
def test_bad_common_arguments_raise(make, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_sample_reference_rejects_bad_n(make) -> None:
    with pytest.raises(ValueError, match="^n: expected a positive int, got 0"):
        make().sample_reference(0, seed=0)
    with pytest.raises(ValueError, match="^seed: expected a non-negative int, got -2"):
        make().sample_reference(5, seed=-2)


# ------------------------------------------------------------------------------------------------ toy 2-D


@pytest.mark.parametrize("name", list(TOY2D))
def test_toy2d_is_standardized_float32_and_seeded(name: str) -> None:
    n = 40_000
    x = TOY2D[name](n, gen(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 5 / math.sqrt(n)
    assert (x.std(0) - 1).abs().max() < 0.03
    assert torch.equal(TOY2D[name](50, gen(1)), TOY2D[name](50, gen(1)))
    assert not torch.equal(TOY2D[name](50, gen(1)), TOY2D[name](50, gen(2)))


def test_eight_gaussians_has_eight_equal_modes_on_a_circle() -> None:
    x = eight_gaussians(8000, gen(0)).double()
    scale = math.sqrt(2.0**2 / 2 + 0.2**2)  # raw radius 2, raw std 0.2
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    centers = (2.0 / scale) * torch.stack([angles.cos(), angles.sin()], -1)  # (8, 2)
    dist = torch.cdist(x, centers)  # (n, 8)
    assert dist.min(-1).values.max() < 5 * 0.2 / scale * math.sqrt(2)
    freq = torch.bincount(dist.argmin(-1), minlength=8) / len(x)
    assert (freq - 1 / 8).abs().max() < 5 * math.sqrt((1 / 8) * (7 / 8) / len(x))


def test_checkerboard_fills_only_black_cells_evenly() -> None:
    raw = checkerboard(8000, gen(0)).double() * math.sqrt(4 / 3)  # back to [-2, 2]^2
    assert raw.abs().max() <= 2 + 1e-5
    cells = torch.floor(raw).long()
    assert ((cells.sum(-1) % 2) == 0).all()
    _, counts = torch.unique(cells, dim=0, return_counts=True)
    assert len(counts) == 8
    assert (counts / len(raw) - 1 / 8).abs().max() < 5 * math.sqrt((1 / 8) * (7 / 8) / len(raw))


def test_two_moons_lie_on_two_half_circles() -> None:
    x = two_moons(4000, gen(0)).double()
    var_y = 9 / 16 - 1 / math.pi + 0.01
    raw = x * torch.tensor([math.sqrt(0.76), math.sqrt(var_y)]) + torch.tensor([0.5, 0.25])
    u = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    upper_arc = torch.stack([u.cos(), u.sin()], -1)  # (G, 2)
    lower_arc = torch.stack([1 - u.cos(), 0.5 - u.sin()], -1)
    to_upper = torch.cdist(raw, upper_arc).min(-1).values
    to_lower = torch.cdist(raw, lower_arc).min(-1).values
    assert torch.minimum(to_upper, to_lower).max() < 0.5  # 5 noise stds
    assert abs((to_upper < to_lower).double().mean().item() - 0.5) < 0.05


def test_swiss_roll_lies_near_the_spiral() -> None:
    x = swiss_roll(2000, gen(0)).double()
    # raw moments by a plain Riemann sum over t ~ U[1.5 pi, 4.5 pi], independent of the quadrature in the code
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 200_001, dtype=torch.float64)
    curve = torch.stack([t * t.cos(), t * t.sin()], -1)  # (G, 2)
    mean, var = curve.mean(0), curve.var(0, unbiased=False) + 0.25
    raw = x * var.sqrt() + mean
    dist = torch.cdist(raw, curve[::50]).min(-1).values
    assert dist.max() < 2.5  # 5 noise stds
    assert dist.mean() < 0.5


# ---------------------------------------------------------------------------------------- Gaussian mixture


def small_mixture() -> GaussianMixture:
    means = torch.tensor([[0.0, 1.0, -1.0], [2.0, -1.0, 0.5], [-1.5, 0.0, 2.0]])
    stds = torch.tensor([[0.5, 1.0, 0.8], [1.2, 0.3, 0.6], [0.7, 0.7, 1.5]])
    return GaussianMixture(means, stds, torch.tensor([0.2, 0.5, 0.3]))


def test_mixture_log_prob_matches_scipy() -> None:
    gmm = small_mixture()
    x = torch.randn(2, 5, 3, generator=gen(0), dtype=torch.float64) * 2
    got = gmm.log_prob(x)
    assert got.shape == (2, 5) and got.dtype == torch.float64
    flat = x.reshape(-1, 3).numpy()
    per_component = [
        np.log(w) + stats.multivariate_normal(mean=m, cov=np.diag(s**2)).logpdf(flat)
        for w, m, s in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.stds.numpy(), strict=True)
    ]
    expected = np.logaddexp.reduce(np.stack(per_component), axis=0).reshape(2, 5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gmm.log_prob(x.float()), got, atol=1e-4)  # float32 input, float64 output


def test_mixture_density_integrates_to_one_in_1d() -> None:
    means, stds, weights = (
        torch.tensor([[-2.0], [1.0], [4.0]]),
        torch.tensor([0.5, 1.0, 0.3]),
        torch.tensor([0.3, 0.3, 0.4]),
    )
    gmm = GaussianMixture(means, stds, weights)
    grid = torch.linspace(-10, 10, 20_001, dtype=torch.float64)
    mass = torch.trapezoid(gmm.log_prob(grid.unsqueeze(-1)).exp(), grid)
    assert abs(mass.item() - 1) < 1e-8


def test_mixture_sample_matches_exact_mean_and_covariance() -> None:
    gmm = small_mixture()
    x = gmm.sample(100_000, gen(1))
    assert x.shape == (100_000, 3) and x.dtype == torch.float32
    w, mu, s = gmm.weights.numpy(), gmm.means.numpy(), gmm.stds.numpy()
    mean = w @ mu
    cov = sum(wk * (np.diag(sk**2) + np.outer(mk, mk)) for wk, mk, sk in zip(w, mu, s, strict=True)) - np.outer(
        mean, mean
    )
    np.testing.assert_allclose(gmm.mean().numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(gmm.covariance().numpy(), cov, atol=1e-12)
    np.testing.assert_allclose(x.double().mean(0).numpy(), mean, atol=5 * np.sqrt(np.diag(cov).max() / len(x)))
    np.testing.assert_allclose(np.cov(x.double().numpy().T), cov, atol=0.05)


def test_mixture_std_shapes_are_equivalent() -> None:
    means = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    x = torch.randn(10, 2, generator=gen(0))
    scalar = GaussianMixture(means, 0.7).log_prob(x)
    per_component = GaussianMixture(means, torch.tensor([0.7, 0.7])).log_prob(x)
    diagonal = GaussianMixture(means, torch.full((2, 2), 0.7)).log_prob(x)
    assert torch.allclose(scalar, per_component) and torch.allclose(scalar, diagonal)


def test_single_gaussian_entropy_matches_closed_form() -> None:
    stds = torch.tensor([[0.5, 2.0, 1.0]])
    estimate, stderr = GaussianMixture(torch.zeros(1, 3), stds).entropy(num_samples=50_000, seed=0)
    exact = 0.5 * 3 * math.log(2 * math.pi * math.e) + stds.log().sum().item()
    assert 0 < stderr < 0.02
    assert abs(estimate - exact) < 5 * stderr


def test_well_separated_mixture_entropy_is_component_entropies_plus_label_entropy() -> None:
    weights = torch.tensor([0.1, 0.6, 0.3])
    stds = torch.tensor([0.5, 1.0, 2.0])
    gmm = GaussianMixture(torch.tensor([[-100.0, 0.0], [0.0, 0.0], [100.0, 0.0]]), stds, weights)
    result = gmm.entropy(num_samples=50_000, seed=1)
    component = 0.5 * 2 * math.log(2 * math.pi * math.e) + 2 * stds.log()
    exact = -(weights * weights.log()).sum().item() + (weights * component).sum().item()
    assert abs(result.estimate - exact) < 5 * result.stderr
    assert result == gmm.entropy(num_samples=50_000, seed=1)


def test_default_mixture_module_is_well_separated_and_standardized() -> None:
    dm = GaussianMixtureDataModule(**SMALL)
    gmm = dm.mixture
    assert dm.data_shape == (2,) and gmm.num_components == 4
    assert torch.allclose(gmm.weights, torch.full((4,), 0.25, dtype=torch.float64))
    gaps = torch.pdist(gmm.means)
    assert gaps.min() >= 8 * gmm.stds.max() - 1e-9
    assert gmm.mean().abs().max() < 1e-12
    assert abs(torch.trace(gmm.covariance()).item() - 2) < 1e-9
    other = GaussianMixtureDataModule(**SMALL, seed=1).mixture
    assert not torch.allclose(gmm.means, other.means)


def test_mixture_module_entropy_floor_matches_its_data() -> None:
    dm = GaussianMixtureDataModule(num_train=20, num_val=20_000, batch_size=8)
    val = dm.split("val")
    log_p = dm.mixture.log_prob(val)
    empirical = -log_p.mean().item() / 2
    stderr = log_p.std().item() / math.sqrt(len(val)) / 2
    assert abs(dm.true_entropy_nats_per_dim() - empirical) < 5 * stderr + 0.005


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (dict(means=torch.zeros(3)), "^means: expected shape \\(M, D\\)"),
        (dict(means=torch.zeros(2, 3), stds=torch.tensor([1.0, -1.0])), "^stds: expected values > 0"),
        (
            dict(means=torch.zeros(2, 3), stds=torch.ones(3)),
            "^stds: expected shape \\(\\), \\(2,\\) or \\(2, 3\\), got \\(3,\\)",
        ),
        (
            dict(means=torch.zeros(2, 3), weights=torch.tensor([0.5, 0.6])),
            "^weights: expected values >= 0 summing to 1",
        ),
        (dict(means=torch.zeros(2, 3), weights=torch.ones(3) / 3), "^weights: expected shape \\(2,\\)"),
    ],
)
def test_mixture_rejects_bad_parameters(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**args)


def test_mixture_log_prob_and_module_reject_bad_input() -> None:
    gmm = small_mixture()
    with pytest.raises(ValueError, match="^x: expected shape \\(..., 3\\), got \\(4, 2\\)"):
        gmm.log_prob(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="^x: expected a float Tensor"):
        gmm.log_prob(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="^separation: expected a value > 0"):
        GaussianMixtureDataModule(separation=0.0)
    with pytest.raises(ValueError, match="^dim: expected a positive int"):
        GaussianMixtureDataModule(dim=0)


# ------------------------------------------------------------------------------------------- Markov tokens


def test_stationary_distribution_of_a_two_state_chain() -> None:
    a, b = 0.2, 0.7
    chain = MarkovChain(torch.tensor([[1 - a, a], [b, 1 - b]], dtype=torch.float64))
    assert torch.allclose(chain.stationary, torch.tensor([b, a], dtype=torch.float64) / (a + b), atol=1e-12)


def test_random_chain_exact_quantities_are_consistent() -> None:
    chain = MarkovChain.random(6, concentration=0.5, seed=3)
    pi, P, B = chain.stationary, chain.transition, chain.bigram()
    assert pi.dtype == torch.float64 and pi.shape == (6,)
    assert torch.allclose(pi @ P, pi, atol=1e-12) and abs(pi.sum().item() - 1) < 1e-12
    assert torch.allclose(P.sum(-1), torch.ones(6, dtype=torch.float64))
    assert B.shape == (6, 6) and abs(B.sum().item() - 1) < 1e-12
    assert torch.allclose(B.sum(1), pi, atol=1e-12) and torch.allclose(B.sum(0), pi, atol=1e-12)
    assert torch.equal(chain.unigram(), pi)


def test_markov_log_prob_is_a_distribution_whose_mean_nll_is_the_entropy() -> None:
    chain = MarkovChain.random(3, concentration=0.5, seed=2)
    every = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 sequences of length 4
    lp = chain.log_prob(every)
    assert lp.shape == (81,) and lp.dtype == torch.float64
    assert abs(float(lp.exp().sum()) - 1) < 1e-12
    # E[-log p(x)] over the sequences, weighted by p itself, is the exact entropy of L tokens
    assert abs(float(-(lp.exp() * lp).sum()) - chain.sequence_entropy(4)) < 1e-12
    x = chain.sample(4, 4, gen(0))  # by hand: pi(x_1) P(x_1, x_2) P(x_2, x_3) P(x_3, x_4)
    pi, P = chain.stationary, chain.transition
    by_hand = torch.stack([pi[r[0]] * P[r[0], r[1]] * P[r[1], r[2]] * P[r[2], r[3]] for r in x]).log()
    assert torch.allclose(chain.log_prob(x), by_hand, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="x: expected an integer Tensor"):
        chain.log_prob(x.double())
    with pytest.raises(ValueError, match=r"x: found class id 3, expected ids in \[0, 3\)"):
        chain.log_prob(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="x: expected shape"):
        chain.log_prob(torch.tensor([0, 1]))


def test_empirical_bigram_and_unigram_match_exact() -> None:
    chain = MarkovChain.random(4, concentration=0.7, seed=1)
    n = 20_000
    x = chain.sample(n, 6, gen(0))
    assert x.shape == (n, 6) and x.dtype == torch.int64 and x.min() >= 0 and x.max() < 4
    exact_b, exact_u = chain.bigram(), chain.unigram()
    b_tol = 5 * (exact_b * (1 - exact_b) / n).sqrt() + 1e-12
    u_tol = 5 * (exact_u * (1 - exact_u) / n).sqrt()
    for pos in [0, 4]:  # one pair per sequence: independent across sequences
        counts = torch.bincount(x[:, pos] * 4 + x[:, pos + 1], minlength=16).reshape(4, 4)
        assert ((counts / n - exact_b).abs() <= b_tol).all()
    for pos in range(6):  # stationary: the same marginal at every position
        assert ((torch.bincount(x[:, pos], minlength=4) / n - exact_u).abs() <= u_tol).all()


def brute_force_entropy(chain: MarkovChain, length: int) -> tuple[float, float]:
    """(total probability, entropy) of all K^L sequences, each p = pi[x1] prod P[x_l, x_{l+1}]."""
    pi, P = chain.stationary.tolist(), chain.transition.tolist()
    total, entropy = 0.0, 0.0
    for seq in itertools.product(range(chain.num_states), repeat=length):
        p = pi[seq[0]]
        for i, j in zip(seq, seq[1:], strict=False):
            p *= P[i][j]
        total += p
        entropy -= p * math.log(p) if p > 0 else 0.0
    return total, entropy


def test_sequence_entropy_matches_brute_force_enumeration() -> None:
    chain = MarkovChain.random(3, concentration=0.5, seed=7)
    total4, h4 = brute_force_entropy(chain, 4)
    _, h5 = brute_force_entropy(chain, 5)
    assert abs(total4 - 1) < 1e-12
    assert abs(chain.sequence_entropy(4) - h4) < 1e-10
    assert abs(chain.entropy_rate() - (h5 - h4)) < 1e-10
    assert abs(chain.sequence_entropy(1) - brute_force_entropy(chain, 1)[1]) < 1e-12


def test_entropy_rate_limits() -> None:
    uniform = MarkovChain(torch.full((5, 5), 0.2, dtype=torch.float64))
    assert abs(uniform.entropy_rate() - math.log(5)) < 1e-12
    cycle = MarkovChain(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert cycle.entropy_rate() == 0.0 and abs(cycle.sequence_entropy(10) - math.log(2)) < 1e-12
    peaked = MarkovChain.random(8, concentration=0.5, seed=0).entropy_rate()
    flat = MarkovChain.random(8, concentration=100.0, seed=0).entropy_rate()
    assert peaked < 0.9 * math.log(8) < 0.95 * math.log(8) < flat


def test_markov_sampling_is_seeded() -> None:
    chain = MarkovChain.random(5, seed=0)
    assert torch.equal(chain.sample(30, 9, gen(4)), chain.sample(30, 9, gen(4)))
    assert not torch.equal(chain.sample(30, 9, gen(4)), chain.sample(30, 9, gen(5)))


def test_markov_module_exposes_exact_marginals_and_entropy() -> None:
    dm = MarkovTokensDataModule(num_classes=6, seq_len=5, **SMALL, seed=2)
    marginals = dm.class_marginals()
    assert marginals.shape == (6,) and marginals.dtype == torch.float64
    assert torch.allclose(marginals, dm.chain.stationary) and abs(marginals.sum().item() - 1) < 1e-12
    assert dm.data_shape == (5,)
    assert abs(dm.true_entropy_nats_per_token() * 5 - dm.chain.sequence_entropy(5)) < 1e-12
    assert dm.chain.entropy_rate() < 0.9 * math.log(6)  # default concentration gives real structure
    other = MarkovTokensDataModule(num_classes=6, seq_len=5, **SMALL, seed=3)
    assert not torch.allclose(dm.chain.transition, other.chain.transition)


@pytest.mark.parametrize(
    ("transition", "match"),
    [
        (torch.ones(2, 3) / 3, "^transition: expected shape \\(K, K\\)"),
        (torch.tensor([[1.5, -0.5], [0.5, 0.5]]), "non-negative"),
        (torch.tensor([[0.5, 0.4], [0.5, 0.5]]), "^transition: expected rows summing to 1"),
        (torch.eye(3), "unique stationary distribution"),
    ],
)
def test_markov_chain_rejects_bad_transition(transition: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MarkovChain(transition)


def test_markov_module_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="^concentration: expected a value > 0, got 0.0"):
        MarkovTokensDataModule(concentration=0.0)
    with pytest.raises(ValueError, match="^num_classes: expected an int >= 2, got 1"):
        MarkovTokensDataModule(num_classes=1)
    with pytest.raises(ValueError, match="^seq_len: expected a positive int, got 0"):
        MarkovTokensDataModule(seq_len=0)
    with pytest.raises(ValueError, match="^length: expected a positive int, got 0"):
        MarkovChain.random(3).sequence_entropy(0)


# -------------------------------------------------------------------------------------------------- tables


@pytest.fixture(scope="module")
def table() -> dict[str, Tensor]:
    return sample_table(40_000, gen(0))


def test_table_fields_shapes_and_dtypes(table) -> None:
    n = 40_000
    assert set(table) == set(numeric_fields()) | set(categorical_fields())
    for name, width in numeric_fields().items():
        assert table[name].shape == (n, width) and table[name].dtype == torch.float32
    for name, k in categorical_fields().items():
        assert table[name].shape == (n,) and table[name].dtype == torch.int64
        assert table[name].min() >= 0 and table[name].max() < k
    assert table["num"].mean(0).abs().max() < 5 / math.sqrt(n)  # standardized with exact moments
    assert (table["num"].std(0) - 1).abs().max() < 0.03


def test_table_class_marginals_match_frequencies(table) -> None:
    n = len(table["cluster"])
    for name, k in categorical_fields().items():
        exact = table_class_marginals(name)
        assert exact.shape == (k,) and exact.dtype == torch.float64 and abs(exact.sum().item() - 1) < 1e-12
        freq = torch.bincount(table[name], minlength=k) / n
        assert ((freq - exact).abs() <= 5 * (exact * (1 - exact) / n).sqrt()).all()
        assert exact.min() > 0.05  # every class is common enough to learn


def test_table_numeric_columns_depend_on_cluster(table) -> None:
    num, cluster = table["num"].double(), table["cluster"]
    means = torch.stack([num[cluster == k].mean(0) for k in range(4)])  # (4, 3)
    stderr = torch.stack([num[cluster == k].std(0) / math.sqrt((cluster == k).sum()) for k in range(4)])
    for a, b in itertools.combinations(range(4), 2):
        z = (means[a] - means[b]).abs() / (stderr[a] ** 2 + stderr[b] ** 2).sqrt()
        assert z.max() > 20


def test_table_bucket_depends_on_numeric_columns_and_cluster(table) -> None:
    num, bucket = table["num"].double(), table["bucket"]
    contingency = torch.zeros(4, 3)
    contingency.index_put_((table["cluster"], bucket), torch.ones(len(bucket)), accumulate=True)
    assert stats.chi2_contingency(contingency.numpy()).pvalue < 1e-12
    # the bucket is a noisy threshold of a combination of the numeric columns
    score = num @ torch.tensor(BUCKET_DIRECTION, dtype=torch.float64)
    low, high = BUCKET_THRESHOLDS
    means = torch.stack([score[bucket == b].mean() for b in range(3)])
    assert means[0] < low < means[1] < high < means[2]
    assert (score[bucket == 0] < low).double().mean() > 0.8 and (score[bucket == 2] > high).double().mean() > 0.8


def test_table_sampling_is_seeded() -> None:
    a, b, c = sample_table(20, gen(1)), sample_table(20, gen(1)), sample_table(20, gen(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["num"], c["num"])


def test_table_module_metadata_and_errors() -> None:
    dm = TableDataModule(**SMALL)
    assert dm.categorical_fields() == {"cluster": 4, "bucket": 3}
    assert dm.numeric_fields() == {"num": 3}
    assert torch.equal(dm.class_marginals("bucket"), table_class_marginals("bucket"))
    with pytest.raises(ValueError, match="^field: expected one of \\['bucket', 'cluster'\\], got 'age'"):
        dm.class_marginals("age")


def test_toy2d_module_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="^name: expected one of .*'swiss_roll'.*, got 'spiral'"):
        Toy2DDataModule("spiral")
    assert Toy2DDataModule(**SMALL).data_shape == (2,)
