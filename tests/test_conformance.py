"""diffkit.testing.check_process: every built-in process passes it, and deliberately broken
processes fail it with ConformanceError (so the kit can fail, and says which check)."""

from __future__ import annotations

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess
from diffkit.processes.gaussian import GaussianParams
from diffkit.testing import ConformanceError, check_process

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

# Small draw counts keep the kit fast; its q_sample check scales its tolerance with them.
DRAWS = 2000


def gaussian_x0() -> torch.Tensor:
    return torch.tensor([[-1.5, 0.0], [0.3, 2.0], [1.0, -0.7]])  # default dtype (float32), as users have it


def ids_x0(K: int = 4) -> torch.Tensor:
    return torch.tensor([[0, 1], [2, 3], [3, 0]]) % K


def random_matrices(T: int, K: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = torch.rand(T, K, K, generator=g, dtype=torch.float64)
    R = R / R.sum(-1, keepdim=True)
    b = torch.full((T, 1, 1), 0.2, dtype=torch.float64)
    return (1 - b) * torch.eye(K, dtype=torch.float64) + b * R


BUILTINS = {
    "gaussian-linear": lambda T: GaussianProcess(T, "linear"),
    "gaussian-cosine": lambda T: GaussianProcess(T, "cosine"),
    "gaussian-linear-forward-var": lambda T: GaussianProcess(T, "linear", reverse_variance="forward"),
    "categorical-uniform": lambda T: CategoricalProcess(4, T, "uniform"),
    "categorical-absorbing": lambda T: CategoricalProcess(4, T, "absorbing"),
    "categorical-marginal": lambda T: CategoricalProcess(4, T, "marginal", marginals=[0.1, 0.2, 0.3, 0.4]),
    "categorical-marginal-linear": lambda T: CategoricalProcess(
        4, T, "marginal", schedule="linear", marginals=[0.5, 0.0, 0.3, 0.2]
    ),
    "categorical-matrix": lambda T: CategoricalProcess(4, T, transition=random_matrices(T, 4)),
}


@pytest.mark.parametrize("T", [1, 1000])
@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_processes_conform(name: str, T: int) -> None:
    proc = BUILTINS[name](T)
    x0 = gaussian_x0() if name.startswith("gaussian") else ids_x0()
    check_process(proc, x0, num_draws=DRAWS)


# ----------------------------------------------------------------------------------- broken processes


class PosteriorVarianceOff(GaussianProcess):
    """q(x_s | x_t, x0) with its variance 1% too large."""

    def posterior(self, x_t, x0, t, s=None):
        p = super().posterior(x_t, x0, t, s)
        return GaussianParams(p.mean, p.variance * 1.01)


class PosteriorMeanOffByOneStep(GaussianProcess):
    """The posterior mean uses alpha_bar_{s-1} for alpha_bar_s (an off-by-one in the table index)."""

    def posterior(self, x_t, x0, t, s=None):
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return super().posterior(x_t, x0, t, (s - 1).clamp_min(0))


class MarginalVarianceOff(GaussianProcess):
    """q(x_t | x0) with the variance of q(x_t | x0) 1% too large (q_sample left correct)."""

    def marginal(self, x0, t):
        m = super().marginal(x0, t)
        return GaussianParams(m.mean, m.variance * 1.01)


class TransitionWithoutSqrt(GaussianProcess):
    """q(x_t | x_s) with mean alpha_{t|s} x_s instead of sqrt(alpha_{t|s}) x_s."""

    def transition(self, x_s, t, s):
        p = super().transition(x_s, t, s)
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        alpha_ts = self._gather(self.alpha_bar[t] / self.alpha_bar[s], x_s)
        return GaussianParams(alpha_ts * x_s, p.variance)


class QSampleTooNoisy(GaussianProcess):
    """x_t drawn with 10% too much noise."""

    def q_sample(self, x0, t, noise=None, generator=None):
        out = super().q_sample(x0, t, noise, generator)
        mean = self.marginal(x0, t).mean
        return type(out)(mean + 1.1 * (out.x_t - mean), out.noise)


class UnnormalizedCategoricalPosterior(CategoricalProcess):
    """q(x_s | x_t, x0) that sums to 1.02."""

    def posterior(self, x_t, x0, t, s=None):
        return 1.02 * super().posterior(x_t, x0, t, s)


class CategoricalPosteriorWrongTime(CategoricalProcess):
    """q(x_s | x_t, x0) computed for s - 1 instead of s."""

    def posterior(self, x_t, x0, t, s=None):
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return super().posterior(x_t, x0, t, (s - 1).clamp_min(0))


class CategoricalTransitionWrongTime(CategoricalProcess):
    """q(x_t | x_s) for the jump t + 1 <- s (clamped at T): breaks Chapman-Kolmogorov."""

    def transition(self, x_s, t, s):
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        return super().transition(x_s, (t + 1).clamp_max(self.num_steps), s)


class CategoricalQSampleStuck(CategoricalProcess):
    """x_t keeps x0 in the first position of every sequence whatever t is (deterministic, so
    passing the noise back still reproduces it; only the frequencies can tell)."""

    def q_sample(self, x0, t, noise=None, generator=None):
        out = super().q_sample(x0, t, noise, generator)
        x_t = out.x_t.clone()
        x_t[:, 0] = x0[:, 0]
        return type(out)(x_t, out.noise)


BROKEN = [
    (lambda: PosteriorVarianceOff(50, "linear"), gaussian_x0, "posterior"),
    (lambda: PosteriorMeanOffByOneStep(50, "cosine"), gaussian_x0, "posterior"),
    (lambda: MarginalVarianceOff(50, "cosine"), gaussian_x0, "chapman-kolmogorov"),
    (lambda: TransitionWithoutSqrt(50, "linear"), gaussian_x0, "chapman-kolmogorov"),
    (lambda: QSampleTooNoisy(50, "cosine"), gaussian_x0, "q_sample"),
    (lambda: UnnormalizedCategoricalPosterior(4, 50, "uniform"), ids_x0, "posterior"),
    (lambda: CategoricalPosteriorWrongTime(4, 50, "absorbing"), ids_x0, "posterior"),
    (lambda: CategoricalPosteriorWrongTime(4, 50, "uniform"), ids_x0, "posterior"),
    (lambda: CategoricalTransitionWrongTime(4, 50, "uniform"), ids_x0, "chapman-kolmogorov"),
    (lambda: CategoricalQSampleStuck(4, 50, "uniform"), ids_x0, "q_sample"),
]


@pytest.mark.parametrize(
    "build, example, check", BROKEN, ids=[f"{b().__class__.__name__}-{i}" for i, (b, _, _) in enumerate(BROKEN)]
)
def test_broken_processes_fail_with_conformance_error(build, example, check) -> None:
    with pytest.raises(ConformanceError, match=rf"\[{check}\]"):
        check_process(build(), example(), num_draws=DRAWS)


def test_conformance_error_is_an_assertion_error() -> None:
    # pytest reports it as a failed assertion, and `except AssertionError` catches it.
    assert issubclass(ConformanceError, AssertionError)


# ----------------------------------------------------------------------------------- tiny probabilities
def banded_kernel(K: int = 16, T: int = 4, far: float = 1e-6) -> torch.Tensor:
    """(T, K, K) ordinal kernels: stay 0.9, a neighbour 0.05 each side, every other class ``far``."""
    Q = torch.full((K, K), far, dtype=torch.float64)
    idx = torch.arange(K)
    Q[idx, idx] = 0.0
    Q[idx[:-1], idx[:-1] + 1] = 0.05
    Q[idx[1:], idx[1:] - 1] = 0.05
    Q[idx, idx] = 1 - Q.sum(1)
    return Q.expand(T, K, K).clone()


def per_cell_five_se_rejects(freq: torch.Tensor, probs: torch.Tensor, n: int) -> bool:
    """The check this replaced: any cell more than 5 binomial standard errors off."""
    return bool(((freq - probs).abs() > 5 * (probs * (1 - probs) / n).sqrt() + 1e-9).any())


def test_a_banded_kernel_with_tiny_probabilities_conforms() -> None:
    """A correct process with 1e-6 cells: one draw in such a cell is 5 standard errors by itself, so
    a per-cell test false-alarms (shown on this seed's draws); the pooled chi-square test does not."""
    K, n = 16, 4000
    proc = CategoricalProcess(K, 4, banded_kernel(K))
    x0 = torch.arange(64).reshape(4, 16) % K
    draws = proc.q_sample(x0.repeat(n, 1), torch.full((4 * n,), 1), generator=torch.Generator().manual_seed(0)).x_t
    freq = torch.nn.functional.one_hot(draws, K).double().reshape(n, 4, 16, K).mean(0)
    assert per_cell_five_se_rejects(freq, proc.marginal(x0, 1).double(), n)
    check_process(proc, x0, pairs=[(1, 0), (4, 3), (4, 0)], num_draws=n)


class BandedQSampleOneStepBehind(CategoricalProcess):
    """q_sample draws x_{t-1} instead of x_t: off by one step of a slow kernel."""

    def q_sample(self, x0, t, noise=None, generator=None):
        t = self.timesteps(t, x0.shape[0], x0.device)
        return super().q_sample(x0, t - 1, noise, generator)


def test_a_banded_kernel_one_step_behind_fails() -> None:
    proc = BandedQSampleOneStepBehind(16, 4, banded_kernel(16))
    x0 = torch.arange(64).reshape(4, 16) % 16
    with pytest.raises(ConformanceError, match=r"\[q_sample\] empirical frequencies differ from marginal at t = 3"):
        check_process(proc, x0, pairs=[(3, 2)], num_draws=4000)


def test_pooled_chi_square_is_calibrated_and_pools_small_cells() -> None:
    from diffkit.testing import pooled_chi_square_p_value

    probs = torch.tensor([0.5, 0.3, 0.2 - 3e-6, 1e-6, 1e-6, 1e-6], dtype=torch.float64)
    # Exactly the expected counts (and one hit in a 1e-6 cell, pooled with the others): p near 1.
    assert pooled_chi_square_p_value(torch.tensor([5000.0, 3000, 1999, 1, 0, 0]), probs) > 0.5
    # A 3% shift of mass between the large cells is found (2%: p = 2e-5).
    assert pooled_chi_square_p_value(torch.tensor([5300.0, 2700, 2000, 0, 0, 0]), probs) < 1e-6
    # Under the null, p-values are about uniform: few below 0.05 over many draws.
    gen = torch.Generator().manual_seed(0)
    p = [
        pooled_chi_square_p_value(
            torch.bincount(torch.multinomial(probs, 2000, True, generator=gen), minlength=6).double(), probs
        )
        for _ in range(200)
    ]
    assert 0 < sum(v < 0.05 for v in p) < 25
