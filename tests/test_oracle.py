"""The library's central claim (docs/design.md (1)): a reverse step *derived* from the posterior with
an oracle x0-prediction is the true reverse transition, for every step and for strided jumps.

(a) Categorical: propagating the exact prior through the derived reverse matrices returns the data
    distribution q0 (no sampling), and a real `diffkit.sample` run with an oracle network matches
    q0's histogram.
(b) Gaussian: posterior(x_t, E[x0 | x_t], t, s).mean equals E[x_s | x_t] computed by numerical
    integration, for one-step and strided jumps.
(c) The ELBO of the oracle equals H(q0) + KL(q(x_T) || p(x_T)) exactly (enumeration), and
    `diffkit.nll_bound` estimates it without bias.

Also the reverse loop itself: `sampling_timesteps`, reproducibility, and the previous-step refusal.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import diffkit
from diffkit import CategoricalProcess, GaussianProcess, sampling_timesteps
from diffkit.processes.schedules import make_schedule

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

K = 4
Q0 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
MARGINALS = [0.4, 0.1, 0.25, 0.25]
KINDS = ["uniform", "absorbing", "marginal", "matrix"]


def build(kind: str, T: int, cat_ref):
    """Process (cosine schedule) and its explicit-matrix reference."""
    if kind == "matrix":
        Q = cat_ref.random_matrices(T, K, torch.Generator().manual_seed(3))
        return CategoricalProcess(K, T, transition=Q), cat_ref.Reference(Q)
    marginals = MARGINALS if kind == "marginal" else None
    proc = CategoricalProcess(K, T, transition=kind, schedule="cosine", marginals=marginals)
    ref = cat_ref.Reference.mixing(make_schedule("cosine", T).betas, cat_ref.pi(kind, K, marginals))
    return proc, ref


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


class CategoricalOracle(nn.Module):
    """A denoiser that knows q0: logits log q(x0 | x_t) ∝ log q0(x0) + log Qbar_t[x0, x_t].

    log 0 is written as -1e4 (exp(-1e4) is exactly 0 in float64, and the logits stay finite).
    """

    def __init__(self, ref, q0: torch.Tensor) -> None:
        super().__init__()
        table = torch.stack([ref.x0_given_xt(q0, t) for t in range(ref.T + 1)])  # (T + 1, S, K)
        self.register_buffer("log_table", torch.log(table).clamp_min(-1e4))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_full = t.reshape(-1, *([1] * (x_t.ndim - 1))).expand_as(x_t)
        return self.log_table[t_full, x_t]  # (B, ..., K)


# ----------------------------------------------------------------------------------- (a) categorical


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [None, 5, "irregular"])
def test_exact_propagation_through_derived_reverse_returns_q0(kind, steps, float64, cat_ref) -> None:
    T = 100
    proc, ref = build(kind, T, cat_ref)
    ts = [T, 73, 40, 39, 5, 1, 0] if steps == "irregular" else sampling_timesteps(T, steps)
    states = torch.arange(ref.S)
    q0_padded = torch.cat([Q0, torch.zeros(ref.S - K, dtype=torch.float64)])
    p = proc.prior_probs.clone()  # p(x_T), (S,)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        oracle = ref.x0_given_xt(Q0, t)  # (S, K): exact q(x0 | x_t) for every state x_t
        reverse = proc.posterior(states, oracle, t, s)  # (S, S): p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) q(x0 | x_t)
        torch.testing.assert_close(reverse.sum(-1), torch.ones(ref.S), rtol=0, atol=1e-12)  # rows are distributions
        p = p @ reverse
        # Every intermediate marginal is the forward one, q(x_s) = q0 Qbar_s, up to the prior's mismatch.
        assert total_variation(p, q0_padded @ ref.Qbar[s]) < 1e-5, f"at s = {s}"
    # The only approximation is p(x_T) != q(x_T): TV <= alpha_bar_T TV(q0, uniform) ~ 1e-7 for the
    # cosine schedule at T = 100 (random matrices mix faster still), so 1e-5 fails any real error.
    assert total_variation(p, q0_padded) < 1e-5


@pytest.mark.parametrize("kind", ["uniform", "absorbing"])
@pytest.mark.parametrize("num_steps", [None, 5])
def test_sampling_with_oracle_denoiser_matches_q0(kind, num_steps, float64, cat_ref) -> None:
    T, B = 50, 20000
    proc, ref = build(kind, T, cat_ref)
    oracle = CategoricalOracle(ref, Q0)
    g = torch.Generator().manual_seed(11)
    x0 = diffkit.sample(proc, oracle, (B,), "x0", num_steps=num_steps, generator=g)
    assert x0.shape == (B,) and x0.dtype == torch.long
    assert int(x0.min()) >= 0 and int(x0.max()) < K, "no mask or out-of-range state survives to t = 0"
    freq = torch.bincount(x0, minlength=K).double() / B
    # Fixed seed; 5 binomial standard errors per class (about 0.01 here).
    se = (Q0 * (1 - Q0) / B).sqrt()
    assert bool(((freq - Q0).abs() <= 5 * se).all()), f"histogram {freq.tolist()} vs q0 {Q0.tolist()}"


# ----------------------------------------------------------------------------------- (b) gaussian

POINTS = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
WEIGHTS = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)


def log_normal(x, mean, var):
    return -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_oracle_mean_equals_numerical_reverse_mean(schedule: str, float64) -> None:
    T = 200
    proc = GaussianProcess(T, schedule)
    ab = make_schedule(schedule, T).alpha_bar
    strided = sampling_timesteps(T, 5)
    pairs = sorted(
        {
            (2, 1),
            (10, 9),
            (50, 20),
            (T, T - 1),
            (T, 1),
            (T, 150),
            (101, 100),
            *zip(strided[:-1], strided[1:], strict=True),
        }
    )
    z = torch.tensor([-2.0, 0.5, 1.5], dtype=torch.float64)
    for t, s in pairs:
        ab_t, ab_s = ab[t], ab[s]
        # Plausible noisy values: sqrt(ab_t) m_i + sqrt(1 - ab_t) z for every point m_i and z in {-2, 0.5, 1.5}.
        x_t = (ab_t.sqrt() * POINTS[:, None] + (1 - ab_t).sqrt() * z).reshape(-1)  # (9,)
        # Oracle E[x0 | x_t]: softmax over the points of log w_i + log N(x_t; sqrt(ab_t) m_i, 1 - ab_t).
        log_post = torch.log(WEIGHTS) + log_normal(x_t[:, None], ab_t.sqrt() * POINTS, 1 - ab_t)
        x0_hat = (torch.softmax(log_post, -1) * POINTS).sum(-1)
        mean = proc.posterior(x_t[:, None], x0_hat[:, None], t, s).mean.squeeze(1)

        if s == 0:  # q(x_0) is the discrete distribution itself: E[x_0 | x_t] is the oracle.
            torch.testing.assert_close(mean, x0_hat, rtol=0, atol=1e-15)  # coefficient of x0 is exactly 1
            continue
        # E[x_s | x_t] = ∫ x_s q(x_t | x_s) q(x_s) dx_s / ∫ q(x_t | x_s) q(x_s) dx_s, with
        # q(x_s) = sum_i w_i N(sqrt(ab_s) m_i, 1 - ab_s), on a uniform grid (the spacing cancels)
        # covering every component to +-12 std. The narrowest factor (q(x_s)'s components or the
        # likelihood in x_s) has std >= 0.015 here: >= 20 grid points per std, where a Riemann sum
        # of a Gaussian is exact to rounding.
        sd_s = (1 - ab_s).sqrt()
        centres = ab_s.sqrt() * POINTS
        grid = torch.linspace(
            float(centres.min() - 12 * sd_s), float(centres.max() + 12 * sd_s), 40001, dtype=torch.float64
        )
        log_q_s = torch.logsumexp(
            torch.log(WEIGHTS) + log_normal(grid[:, None], ab_s.sqrt() * POINTS, 1 - ab_s), -1
        )  # (G,)
        alpha_ts = ab_t / ab_s
        log_f = log_normal(x_t[:, None], alpha_ts.sqrt() * grid, 1 - alpha_ts) + log_q_s  # (9, G)
        expected = (torch.softmax(log_f, -1) * grid).sum(-1)
        # 1e-10: the grid integral agrees to ~1e-13 (rounding in the sums); the brief's bar is 1e-6,
        # and any error in the derived mean (a wrong coefficient, a wrong s) is far above it.
        torch.testing.assert_close(
            mean, expected, rtol=0, atol=1e-10, msg=lambda m, t=t, s=s: f"(t, s) = ({t}, {s}): {m}"
        )


def test_oracle_mean_at_s_zero_is_the_oracle_x0(float64) -> None:
    proc = GaussianProcess(50, "cosine")
    x_t = torch.randn(6, 1, generator=torch.Generator().manual_seed(0))
    x0_hat = torch.randn(6, 1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(proc.posterior(x_t, x0_hat, 37, 0).mean, x0_hat, rtol=0, atol=1e-15)  # coefficient 1


# ----------------------------------------------------------------------------------- (c) ELBO


def exact_elbo_terms(proc, ref, oracle: nn.Module) -> tuple[float, float, float]:
    """E_{x0 ~ q0} of L_T, of L_0 and of sum_{t >= 2} L_{t-1}, by enumeration of x0 and x_t.

    Each L_{t-1} is averaged over x_t with weight q0(x0) q(x_t | x0) = q0(x0) Qbar_t[x0, x_t].
    """
    T = proc.num_steps
    rows, weights = [], []
    for t in range(1, T + 1):
        for x0 in range(K):
            for x_t in range(ref.S):
                w = float(Q0[x0] * ref.Qbar[t][x0, x_t])
                if w > 0:
                    rows.append((x0, x_t, t))
                    weights.append(w)
    x0, x_t, t = (torch.tensor(c) for c in zip(*rows, strict=True))
    terms = torch.tensor(weights) * proc.vlb(oracle(x_t, t), x0, x_t, t, "x0")  # L_{t-1}: decoder at t = 1
    prior = float((Q0 * proc.prior_term(torch.arange(K))).sum())
    return prior, float(terms[t == 1].sum()), float(terms[t >= 2].sum())


def entropy_and_prior_kl(proc, ref) -> tuple[float, float]:
    """H(q0) and KL(q(x_T) || p(x_T)) with q(x_T) = q0 Qbar_T."""
    T = proc.num_steps
    q_T = torch.cat([Q0, torch.zeros(ref.S - K, dtype=torch.float64)]) @ ref.Qbar[T]
    p_T = proc.prior_probs
    return float(-(Q0 * Q0.log()).sum()), float((torch.xlogy(q_T, q_T) - q_T * p_T.log()).sum())


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_elbo_is_entropy_plus_prior_kl_by_enumeration(kind, float64, cat_ref) -> None:
    T = 50
    proc, ref = build(kind, T, cat_ref)
    prior, decoder, diffusion = exact_elbo_terms(proc, ref, CategoricalOracle(ref, Q0))
    entropy, prior_kl = entropy_and_prior_kl(proc, ref)
    # With p(x_s | x_t) = q(x_s | x_t), E[-ELBO] = H(q0) + KL(q(x_T) || p(x_T)) exactly.
    # 1e-9: ~T * K * S float64 terms, each exact to ~1e-15 relative; the brief's bar is 1e-6.
    assert prior + decoder + diffusion == pytest.approx(entropy + prior_kl, abs=1e-9)
    # The prior term alone is KL(q(x_T | x0) || p(x_T)) >= KL(q(x_T) || p(x_T)) (convexity).
    assert prior >= prior_kl - 1e-15


@pytest.mark.parametrize("kind", ["uniform", "absorbing"])
def test_nll_bound_of_the_oracle_estimates_each_term(kind, float64, cat_ref) -> None:
    # T = 8: few enough steps that the decoder term L_0 carries a visible share of H(q0).
    T, B = 8, 4000
    proc, ref = build(kind, T, cat_ref)
    oracle = CategoricalOracle(ref, Q0)
    g = torch.Generator().manual_seed(21)
    x0 = torch.multinomial(Q0, B, replacement=True, generator=g)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording_oracle(x_t, t):
        calls.append((x_t.clone(), t.clone()))
        return oracle(x_t, t)

    bound = diffkit.nll_bound(proc, recording_oracle, x0, "x0", generator=g)
    # Exact bookkeeping: one call per t = 1..T, and each reported term is the sum of the
    # process's own L_{t-1} at the x_t the denoiser saw (1e-12: the same float64 terms, summed).
    assert sorted(int(t[0]) for _, t in calls) == list(range(1, T + 1))
    terms = {int(t[0]): proc.vlb(oracle(x_t, t), x0, x_t, t, "x0") for x_t, t in calls}
    torch.testing.assert_close(bound.decoder, terms[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bound.diffusion, sum(terms[t] for t in range(2, T + 1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bound.prior, proc.prior_term(x0), rtol=0, atol=0)
    prior, decoder, diffusion = exact_elbo_terms(proc, ref, oracle)
    entropy, prior_kl = entropy_and_prior_kl(proc, ref)
    torch.testing.assert_close(bound.num_elements, torch.ones(B), rtol=0, atol=0)
    assert decoder > 0.05, "the setting must give L_0 weight, or dropping it would go unnoticed"
    # Fixed seed; each term's batch mean within 5 standard errors of its exact expectation
    # (+1e-12 for a term that is constant across the batch).
    for name, values, exact in (
        ("prior", bound.prior, prior),
        ("decoder", bound.decoder, decoder),
        ("diffusion", bound.diffusion, diffusion),
        ("total", bound.total, entropy + prior_kl),
    ):
        assert bool(torch.isfinite(values).all())
        se = float(values.std() / math.sqrt(B))
        assert abs(float(values.mean()) - exact) <= 5 * se + 1e-12, (
            f"{name}: mean {float(values.mean())} vs {exact} (se {se})"
        )
    torch.testing.assert_close(bound.bits_per_element, bound.total / math.log(2), rtol=1e-14, atol=0)
    assert bound.steps is None


def test_nll_bound_per_step_terms_are_the_terms_of_each_call(float64, cat_ref) -> None:
    """per_step=True keeps L_{t-1} of the call at t in column t - 1 (the same draws: the bound is
    unchanged), for a categorical and a Gaussian process."""
    T, B = 8, 50
    cat, ref = build("uniform", T, cat_ref)
    cases = [
        (
            cat,
            CategoricalOracle(ref, Q0),
            torch.multinomial(Q0, B, replacement=True, generator=torch.Generator().manual_seed(3)),
            "x0",
        ),
        (
            diffkit.GaussianProcess(T),
            lambda x_t, t: 0.5 * x_t,
            torch.randn(B, 3, generator=torch.Generator().manual_seed(3)),
            "eps",
        ),
    ]
    for proc, net, x0, param in cases:
        calls = {}

        def recording(x_t, t, net=net, calls=calls):
            calls[int(t[0])] = (x_t.clone(), t.clone())
            return net(x_t, t)

        plain = diffkit.nll_bound(proc, net, x0, param, generator=torch.Generator().manual_seed(9))
        bound = diffkit.nll_bound(proc, recording, x0, param, generator=torch.Generator().manual_seed(9), per_step=True)
        assert bound.steps.shape == (B, T)
        for t_i, (x_t, t) in calls.items():
            torch.testing.assert_close(
                bound.steps[:, t_i - 1], proc.vlb(net(x_t, t), x0, x_t, t, param), rtol=1e-12, atol=1e-12
            )
        torch.testing.assert_close(bound.steps[:, 0], bound.decoder, rtol=0, atol=0)
        torch.testing.assert_close(bound.steps.sum(1), bound.decoder + bound.diffusion, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bound.total, plain.total, rtol=0, atol=0)


# ----------------------------------------------------------------------------------- the reverse loop


@pytest.mark.parametrize("T", [1, 2, 3, 7, 50, 99, 1000])
def test_sampling_timesteps_are_strictly_decreasing_from_T_to_0(T: int) -> None:
    for n in range(1, T + 1):
        ts = sampling_timesteps(T, n)
        assert len(ts) == n + 1 and ts[0] == T and ts[-1] == 0, (T, n, ts)
        assert all(a > b for a, b in zip(ts, ts[1:], strict=False)), (T, n, ts)
        assert all(isinstance(v, int) for v in ts)
    assert sampling_timesteps(T) == list(range(T, -1, -1))
    assert sampling_timesteps(T, T) == list(range(T, -1, -1))


@pytest.mark.parametrize("bad", [0, -1, 11, 2.5, True, "5"])
def test_sampling_timesteps_rejects_invalid_counts(bad) -> None:
    with pytest.raises(ValueError, match="num_steps"):
        sampling_timesteps(10, bad)


def test_explicit_timesteps_are_validated(float64) -> None:
    proc = GaussianProcess(10, "cosine")
    for bad in ([10, 5, 5, 0], [10, 4], [11, 5, 0], [5]):
        with pytest.raises(ValueError, match="timesteps"):
            diffkit.sample(proc, lambda x, t: x, (2, 1), "x0", timesteps=bad)


def _gaussian_denoiser(x, t):
    return 0.5 * x + 0.01 * t[:, None].to(x.dtype)


@pytest.mark.parametrize("eta", [None, 0.0, 1.0])
def test_sample_is_reproducible_with_a_generator(eta, float64) -> None:
    gproc = GaussianProcess(20, "cosine")
    runs = [
        diffkit.sample(
            gproc,
            _gaussian_denoiser,
            (8, 3),
            "eps",
            num_steps=6,
            generator=torch.Generator().manual_seed(seed),
            eta=eta,
        )
        for seed in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert bool(torch.isfinite(runs[0]).all())


def test_categorical_sample_is_reproducible_with_a_generator(float64, cat_ref) -> None:
    proc, ref = build("absorbing", 20, cat_ref)
    oracle = CategoricalOracle(ref, Q0)
    runs = [
        diffkit.sample(proc, oracle, (16, 5), "x0", generator=torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_previous_step_cannot_be_sampled_with_fewer_steps(float64) -> None:
    proc = GaussianProcess(10, "cosine")
    with pytest.raises(ValueError, match="previous-step"):
        diffkit.sample(proc, lambda x, t: 0.9 * x, (4, 2), "previous-step", num_steps=5)
    out = diffkit.sample(
        proc, lambda x, t: 0.9 * x, (4, 2), "previous-step", generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (4, 2)
    cat = CategoricalProcess(3, 10)
    with pytest.raises(ValueError, match="previous-step"):
        diffkit.sample(cat, lambda x, t: torch.zeros(*x.shape, 3), (4, 2), "previous-step", num_steps=3)
