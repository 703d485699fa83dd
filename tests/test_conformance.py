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
    "categorical-marginal-linear": lambda T: CategoricalProcess(4, T, "marginal", schedule="linear", marginals=[0.5, 0.0, 0.3, 0.2]),
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


@pytest.mark.parametrize("build, example, check", BROKEN, ids=[f"{b().__class__.__name__}-{i}" for i, (b, _, _) in enumerate(BROKEN)])
def test_broken_processes_fail_with_conformance_error(build, example, check) -> None:
    with pytest.raises(ConformanceError, match=rf"\[{check}\]"):
        check_process(build(), example(), num_draws=DRAWS)


def test_conformance_error_is_an_assertion_error() -> None:
    # pytest reports it as a failed assertion, and `except AssertionError` catches it.
    assert issubclass(ConformanceError, AssertionError)
