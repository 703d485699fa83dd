"""Numerics at the edges: every loss kind and ELBO term stays finite (values and gradients) and
every posterior / reverse row stays a distribution at the extremes a user can reach with valid
arguments:

* t = 1 (the decoder term) and t = T (the prior end); T = 1 and T = 4000;
* alpha_bar near 1 (tiny betas) and near 0 (the end of a cosine schedule, hand-made tables);
* K = 2 and K = 1024; absorbing and data-marginal noise, whose rows hold exact zeros;
* float32, and bfloat16 autocast around the denoiser (by hand and through Lightning's
  ``precision="bf16-mixed"``);
* network outputs of +-1e4 (logits far beyond where softmax underflows).

Schedules no float32 computation can handle (alpha_bar_T below float32's smallest normal) are
refused when a Gaussian process is built, with a message naming the value and the limit.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers.reliability import RowsDataModule, make_trainer, quiet_lightning

from diffkit import CategoricalProcess, GaussianProcess, NoiseSchedule, nll_bound
from diffkit.models import MLPDenoiser, TokenTransformer
from diffkit.module import DiffusionModule

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ("simple", "kl", "hybrid")


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(x).all()) for x in tensors)


# ------------------------------------------------------------------------------ gaussian
def gaussian_edge_checks(proc: GaussianProcess, dtype=torch.float32, scale: float = 1.0) -> None:
    """Every parametrization x loss kind at t = 1, 2, T: finite loss, finite gradient; finite
    prior term and vlb; posterior variance finite and >= 0."""
    g = torch.Generator().manual_seed(0)
    B, D, T = 4, 3, proc.num_steps
    x0 = torch.randn(B, D, generator=g, dtype=dtype)
    assert _all_finite(proc.prior_term(x0)), "prior term"
    for t_i in sorted({1, min(2, T), T}):
        t = torch.full((B,), t_i)
        noised = proc.q_sample(x0, t, generator=g)
        post = proc.posterior(noised.x_t, x0, t)
        assert _all_finite(post.mean, post.variance) and bool((post.variance >= 0).all()), (t_i, post)
        for name in proc.parametrizations:
            out = (scale * torch.randn(B, D, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)
            for kind in KINDS:
                loss = proc.loss(out, x0, noised.x_t, t, noised.noise, name, kind=kind)
                (grad,) = torch.autograd.grad(loss.sum(), out)
                assert _all_finite(loss, grad), f"t={t_i} {name}/{kind}: loss {loss}, grad finite {_all_finite(grad)}"
            assert _all_finite(proc.vlb(out.detach(), x0, noised.x_t, t, name)), f"t={t_i} {name} vlb"


@pytest.mark.parametrize("T", [1, 4000])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["outputs~1", "outputs~1e4"])
def test_gaussian_losses_and_elbo_terms_are_finite_at_the_ends(T, schedule, scale) -> None:
    gaussian_edge_checks(GaussianProcess(T, schedule), scale=scale)


def test_gaussian_alpha_bar_near_1_and_near_0_within_float32_range() -> None:
    # Betas down to ~float32 eps (1 - alpha_bar_1 is still representable in float32).
    gaussian_edge_checks(GaussianProcess(5, [1e-6] * 5))
    # alpha_bar_T = 1e-30: x0 = (x_t - ...) / sqrt(alpha_bar_T) amplifies by 1e15, still finite.
    gaussian_edge_checks(GaussianProcess(3, NoiseSchedule.from_alpha_bar([1.0, 0.5, 1e-20, 1e-30])))
    # The end of a long cosine schedule: alpha_bar_T ~ 1e-12 in float32 and float64.
    proc = GaussianProcess(4000, "cosine")
    assert 0 < float(proc.alpha_bar[-1]) < 1e-9
    gaussian_edge_checks(proc, dtype=torch.float64)


def test_gaussian_alpha_bar_within_float32_eps_of_1() -> None:
    gaussian_edge_checks(GaussianProcess(5, [1e-8] * 5))


def test_gaussian_alpha_bar_below_float32_range() -> None:
    """alpha_bar_T = 1e-50 is 0 in float32, where x0_from_eps divides by sqrt(alpha_bar_T): no float32
    computation can give finite eps-losses at t = T, so the schedule is refused when the process is
    built, naming the value and the limit; the smallest float32 normal itself is accepted and finite."""
    with pytest.raises(
        ValueError, match=r"schedule: alpha_bar_T = 1e-50 is below float32's smallest normal number 1\.18e-38"
    ):
        GaussianProcess(3, NoiseSchedule.from_alpha_bar([1.0, 0.5, 1e-20, 1e-50]))
    gaussian_edge_checks(GaussianProcess(3, NoiseSchedule.from_alpha_bar([1.0, 0.5, 1e-20, 1.2e-38])))


# ------------------------------------------------------------------------------ categorical
def categorical_process(K: int, T: int, kind: str) -> CategoricalProcess:
    if kind == "marginal":
        # Frequencies with exact zeros: the data-marginal analogue of absorbing's zero rows.
        m = torch.ones(K, dtype=torch.float64)
        m[1::3] = 0.0
        return CategoricalProcess(K, T, kind, marginals=m)
    return CategoricalProcess(K, T, kind)


def categorical_edge_checks(proc: CategoricalProcess, scale: float, check_reverse: bool = True) -> None:
    g = torch.Generator().manual_seed(0)
    B, L, K, T = 2, 3, proc.num_classes, proc.num_steps
    x0 = torch.randint(0, K, (B, L), generator=g)
    assert _all_finite(proc.prior_term(x0)), "prior term"
    for t_i in sorted({1, min(2, T), T}):
        t = torch.full((B,), t_i)
        noised = proc.q_sample(x0, t, generator=g)
        assert int(noised.x_t.min()) >= 0 and int(noised.x_t.max()) < proc.num_states
        post = proc.posterior(noised.x_t, x0, t)
        assert bool((post >= 0).all())
        torch.testing.assert_close(post.sum(-1), torch.ones(B, L), rtol=0, atol=1e-5)
        for name in proc.parametrizations:
            shape = proc.get_parametrization(name).output_shape(proc, noised.x_t)
            # Logits of +-scale: with scale = 1e4 softmax underflows to exact 0 / 1.
            signs = torch.randint(0, 2, shape, generator=g) * 2 - 1
            out = (scale * signs * torch.rand(shape, generator=g)).float().requires_grad_(True)
            for kind in KINDS:
                loss = proc.loss(out, x0, noised.x_t, t, noised.noise, name, kind=kind)
                (grad,) = torch.autograd.grad(loss.sum(), out)
                assert _all_finite(loss, grad), f"t={t_i} {name}/{kind}: {loss}"
            assert _all_finite(proc.vlb(out.detach(), x0, noised.x_t, t, name)), f"t={t_i} {name} vlb"
            if check_reverse and name == "x0":
                rev = proc.reverse(out.detach(), noised.x_t, t)
                torch.testing.assert_close(
                    rev.sum(-1), torch.ones(B, L), rtol=0, atol=1e-5, msg=f"t={t_i}: reverse rows"
                )


EDGE_CASES = list(itertools.product([2, 1024], [1, 4000], ["uniform", "absorbing", "marginal"]))


@pytest.mark.parametrize("K, T, kind", EDGE_CASES, ids=[f"K{k}-T{t}-{c}" for k, t, c in EDGE_CASES])
def test_categorical_losses_elbo_terms_and_posteriors_at_the_edges(K, T, kind) -> None:
    categorical_edge_checks(categorical_process(K, T, kind), scale=1.0)


@pytest.mark.parametrize("K, T, kind", EDGE_CASES, ids=[f"K{k}-T{t}-{c}" for k, t, c in EDGE_CASES])
def test_categorical_extreme_logits_keep_losses_finite(K, T, kind) -> None:
    # Reverse rows with extreme logits for kernels with zeros (absorbing, marginal with zero
    # frequencies): test_reverse_rows_with_extreme_logits_for_kernels_with_zeros.
    categorical_edge_checks(categorical_process(K, T, kind), scale=1e4, check_reverse=kind == "uniform")


@pytest.mark.parametrize(
    "K, T, kind",
    [
        (2, 4000, "absorbing"),
        (1024, 4000, "absorbing"),
        (8, 100, "absorbing"),
        (2, 4000, "marginal"),
        (1024, 100, "marginal"),
    ],
)
def test_reverse_rows_with_extreme_logits_for_kernels_with_zeros(K, T, kind) -> None:
    proc = categorical_process(K, T, kind)
    B, L = 2, 6
    # x_t = b with pi[b] = 0 can only come from x0 = b: absorbing's data ids, marginal's zero-frequency ids.
    candidates = torch.arange(K) if kind == "absorbing" else torch.nonzero(proc.kernel.pi[:K] == 0).flatten()
    x_t = candidates[torch.arange(B * L) % candidates.numel()].reshape(B, L)
    logits = torch.full((B, L, K), 1e4)
    logits.scatter_(-1, x_t.unsqueeze(-1), -1e4)  # confident that x0 != x_t
    t = torch.full((B,), 2)
    rev = proc.reverse(logits, x_t, t)
    torch.testing.assert_close(rev.sum(-1), torch.ones(B, L), rtol=0, atol=1e-5)
    # q(x_s | x_t = b) is the point mass at b whatever p(x0 | x_t) says: the step must keep b.
    assert torch.equal(proc.step(logits, x_t, t, generator=torch.Generator().manual_seed(0)), x_t)


def test_nll_bound_is_finite_for_the_smallest_and_largest_cases() -> None:
    """The full ELBO (prior + diffusion + decoder) for T = 1 and K = 2, and for K = 1024."""
    g = torch.Generator().manual_seed(0)
    for proc in (
        CategoricalProcess(2, 1, "uniform"),
        CategoricalProcess(2, 1, "absorbing"),
        CategoricalProcess(1024, 3, "absorbing"),
    ):
        x0 = torch.randint(0, proc.num_classes, (2, 4), generator=g)
        net = lambda x_t, t, K=proc.num_classes: torch.zeros(*x_t.shape, K)  # noqa: E731
        bound = nll_bound(proc, net, x0, "x0", generator=g)
        assert _all_finite(bound.total) and bool((bound.total >= 0).all()), bound
    proc = GaussianProcess(1)
    bound = nll_bound(proc, lambda x_t, t: torch.zeros_like(x_t), torch.randn(3, 2, generator=g), "eps", generator=g)
    assert _all_finite(bound.total), bound


# ------------------------------------------------------------------------------ bfloat16 autocast
class AutocastDenoiser(torch.nn.Module):
    """Runs the wrapped denoiser under CPU bfloat16 autocast (what bf16 training does to it)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.output_dtypes: list[torch.dtype] = []

    def forward(self, x_t, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.inner(x_t, t)
        self.output_dtypes.append(out.dtype)
        return out


def _bf16_models():
    T = 50
    yield (
        "gaussian-eps",
        DiffusionModule(
            GaussianProcess(T), AutocastDenoiser(MLPDenoiser(2, T, hidden=32, depth=2)), "eps", num_eval_samples=0
        ),
        torch.randn(16, 2),
    )
    yield (
        "gaussian-v",
        DiffusionModule(
            GaussianProcess(T), AutocastDenoiser(MLPDenoiser(2, T, hidden=32, depth=2)), "v", num_eval_samples=0
        ),
        torch.randn(16, 2),
    )
    proc = CategoricalProcess(6, T, "absorbing")
    net = TokenTransformer(proc.num_states, 6, 8, T, d_model=16, depth=1, heads=2)
    yield (
        "tokens-absorbing",
        DiffusionModule(proc, AutocastDenoiser(net), "x0", num_eval_samples=0),
        torch.randint(0, 6, (16, 8)),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_around_the_denoiser_keeps_training_losses_finite(kind) -> None:
    """The module's own training_step, called by hand, with only the denoiser in bf16."""
    for name, model, x0 in _bf16_models():
        model.loss_kind = kind
        torch.manual_seed(0)
        for _ in range(3):
            loss = model.training_step(x0, 0)
            loss.backward()
            grads = [p.grad for p in model.denoiser.parameters() if p.grad is not None]
            assert _all_finite(loss, *grads), f"{name}/{kind}: {loss}"
            assert loss.dtype == torch.float32
        assert set(model.denoiser.output_dtypes) == {torch.bfloat16}, name


def test_bf16_mixed_precision_training_with_lightning(tmp_path) -> None:
    """Trainer(precision="bf16-mixed") autocasts the whole training step: a few steps stay finite."""
    quiet_lightning()
    T = 50
    losses: list[float] = []

    class Record(DiffusionModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            losses.append(float(loss.detach()))
            return loss

    proc = CategoricalProcess(6, T, "absorbing")
    cases = [
        (
            Record(GaussianProcess(T), MLPDenoiser(2, T, hidden=32, depth=2), "eps", loss="hybrid", num_eval_samples=0),
            torch.randn(48, 2),
        ),
        (
            Record(
                proc,
                TokenTransformer(proc.num_states, 6, 8, T, d_model=16, depth=1, heads=2),
                "x0",
                loss="hybrid",
                num_eval_samples=0,
            ),
            torch.randint(0, 6, (48, 8)),
        ),
    ]
    for model, data in cases:
        make_trainer(tmp_path, max_steps=3, precision="bf16-mixed").fit(model, RowsDataModule(data, batch_size=16))
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses))), losses
