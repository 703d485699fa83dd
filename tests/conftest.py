"""Shared fixtures for the core-math tests.

References are written plainly here, independently of the library: explicit K x K transition
matrices multiplied out, Bayes' rule by enumeration, Gaussian densities written as formulas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor


@pytest.fixture
def float64() -> Iterator[None]:
    """Run the test with float64 as torch's default dtype, restoring the previous default after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded CPU generator, so every statistical check is reproducible."""
    return torch.Generator().manual_seed(1234)


# ---------------------------------------------------------------------------------- categorical


class CategoricalReference:
    """Explicit transition matrices over S states, row-vector convention.

    Q[t] is Q_t for t = 1..T (Q[0] is the identity, unused); Qbar[t] = Q_1 ... Q_t, Qbar[0] = I.
    Every quantity is a plain matrix product or Bayes' rule over an enumerated state.
    """

    def __init__(self, Q: Tensor) -> None:
        Q = Q.to(torch.float64)
        S = Q.shape[-1]
        eye = torch.eye(S, dtype=torch.float64)
        self.Q = torch.cat([eye[None], Q])  # (T + 1, S, S)
        Qbar = [eye]
        for t in range(1, self.Q.shape[0]):
            Qbar.append(Qbar[-1] @ self.Q[t])
        self.Qbar = torch.stack(Qbar)  # (T + 1, S, S)
        self.T = Q.shape[0]
        self.S = S

    @classmethod
    def mixing(cls, betas: Tensor, pi: Tensor) -> CategoricalReference:
        """Q_t = (1 - beta_t) I + beta_t 1 pi^T for the given betas (T,) and pi (S,)."""
        betas = betas.to(torch.float64)
        pi = pi.to(torch.float64)
        S = pi.shape[0]
        eye = torch.eye(S, dtype=torch.float64)
        ones_pi = torch.ones(S, 1, dtype=torch.float64) * pi[None, :]  # 1 pi^T: every row is pi
        return cls(torch.stack([(1 - b) * eye + b * ones_pi for b in betas]))

    def Q_ts(self, t: int, s: int) -> Tensor:
        """Q_{t|s} = Q_{s+1} ... Q_t, (S, S)."""
        out = torch.eye(self.S, dtype=torch.float64)
        for i in range(s + 1, t + 1):
            out = out @ self.Q[i]
        return out

    def posterior(self, x_t: int, x0: int, t: int, s: int) -> Tensor:
        """q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0) by Bayes over every x_s: (S,)."""
        joint = self.Qbar[s][x0, :] * self.Q_ts(t, s)[:, x_t]
        return joint / joint.sum()

    def mixture_posterior(self, x_t: int, p_x0: Tensor, t: int, s: int) -> Tensor:
        """sum_x0 p(x0) q(x_s | x_t, x0) over the x0 with q(x_t | x0) > 0, renormalized: (S,)."""
        total = torch.zeros(self.S, dtype=torch.float64)
        mass = 0.0
        for x0 in range(p_x0.shape[0]):
            if self.Qbar[t][x0, x_t] > 0:
                total = total + p_x0[x0] * self.posterior(x_t, x0, t, s)
                mass += float(p_x0[x0])
        return total / mass

    def x0_given_xt(self, q0: Tensor, t: int) -> Tensor:
        """Exact q(x0 | x_t) ∝ q0(x0) Qbar_t[x0, x_t] for every x_t: (S, K), rows over x0.

        Rows for states x_t that q never reaches (q(x_t) = 0) are left uniform (they carry no weight).
        """
        K = q0.shape[0]
        joint = q0[:, None] * self.Qbar[t][:K, :]  # (K, S): q0(x0) q(x_t | x0)
        col = joint.sum(0, keepdim=True)  # (1, S): q(x_t)
        post = torch.where(col > 0, joint / col.clamp_min(1e-300), torch.full_like(joint, 1.0 / K))
        return post.T.contiguous()


def transition_pi(kind: str, K: int, marginals: Tensor | None = None) -> Tensor:
    """The stationary distribution pi of a mixing transition, written from its definition."""
    if kind == "uniform":
        return torch.full((K,), 1.0 / K, dtype=torch.float64)
    if kind == "absorbing":
        pi = torch.zeros(K + 1, dtype=torch.float64)
        pi[K] = 1.0  # e_mask, the extra state with id K
        return pi
    if kind == "marginal":
        assert marginals is not None
        m = torch.as_tensor(marginals, dtype=torch.float64)
        return m / m.sum()
    raise AssertionError(kind)


def random_transition_matrices(T: int, K: int, generator: torch.Generator) -> Tensor:
    """(T, K, K) row-stochastic matrices Q_t = (1 - b) I + b R_t, R_t random with some zeros.

    Zeros in R_t make some (x0, x_t) pairs impossible for small t, which exercises the
    "only the x0 consistent with x_t" rule of the mixture posterior.
    """
    R = torch.rand(T, K, K, generator=generator, dtype=torch.float64)
    R = torch.where(R < 0.3, torch.zeros_like(R), R)
    R = R + torch.eye(K, dtype=torch.float64) * 0.1  # every row keeps some mass
    R = R / R.sum(-1, keepdim=True)
    b = torch.linspace(0.05, 0.5, T, dtype=torch.float64).reshape(T, 1, 1)
    return (1 - b) * torch.eye(K, dtype=torch.float64) + b * R


@pytest.fixture
def cat_ref() -> SimpleNamespace:
    """Reference builders for categorical tests (see :class:`CategoricalReference`)."""
    return SimpleNamespace(
        Reference=CategoricalReference,
        pi=transition_pi,
        random_matrices=random_transition_matrices,
    )


# ---------------------------------------------------------------------------------- gaussian


def normal_logpdf(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, var), written out."""
    return -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)


@pytest.fixture
def normal_logpdf_fn():
    return normal_logpdf


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def default_dtype(request) -> Iterator[torch.dtype]:
    """Run the test once with each float dtype as torch's default (float32 is what training uses)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run with one intra-op thread, restoring the previous count after.

    The core-math tests use many small tensors; on a 2-core machine shared with other work,
    torch's thread pool spends more time waiting than computing (measured: a 5 s suite became
    50 s under load with the default thread count, and stays ~7 s with one thread).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
