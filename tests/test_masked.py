"""Continuous-time discrete diffusion: MaskedProcess (MDLM) and UniformProcess (UDLM) on t in [0, 1].

Checked against independent computations:

* closed forms (M1)-(M2) / (U1)-(U2) against matrix exponentials of the CTMC generator and against
  explicit products of many small discrete steps; posteriors against Bayes (check_process);
* the continuous ELBO against the discrete T-step bound of the same schedule (T = 100, 1000: the
  gap shrinks like 1 / T), both evaluated exactly by enumerating every x_t of a 2-token sequence;
* an oracle denoiser (the exact p(x0 | x_t) of a 3-token Markov chain) through ``sample``: the
  samples follow the chain's joint distribution (chi-square) for several step counts;
* the caching sampler equals the plain one draw for draw, with fewer network evaluations;
* resume through DiffusionModule is bit-exact; bad inputs raise naming the argument.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import diffkit
from diffkit import CategoricalProcess, nll_bound, sample
from diffkit.data.tokens import random_transition_matrix, stationary_distribution
from diffkit.models import TokenTransformer
from diffkit.module import DiffusionModule
from diffkit.processes import MaskedProcess, UniformProcess
from diffkit.processes.categorical import LOG_TINY, categorical_kl
from diffkit.processes.ctime import continuous_time_grid, stratified_times
from diffkit.sampling_cache import SamplingStats
from diffkit.testing import ConformanceError, check_process

SCHEDULES = ("loglinear", "linear", "cosine")
PROCESSES = {"masked": MaskedProcess, "uniform": UniformProcess}


def generator_matrix(kind: str, K: int) -> torch.Tensor:
    """The CTMC generator G (rows sum to 0) with R_t = lambda(t) G, lambda = -alpha' / alpha."""
    if kind == "masked":
        G = torch.zeros(K + 1, K + 1, dtype=torch.float64)
        G[:K, K] = 1.0
        G[:K, :K] -= torch.eye(K, dtype=torch.float64)
        return G
    return torch.full((K, K), 1.0 / K, dtype=torch.float64) - torch.eye(K, dtype=torch.float64)


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("kind", list(PROCESSES))
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_closed_forms_match_the_matrix_exponential_of_the_generator(kind: str, schedule: str) -> None:
    """q(x_t | x_s) = expm(G int_s^t lambda) = expm(G log(alpha(s) / alpha(t))) row by row."""
    K = 3
    proc = PROCESSES[kind](K, schedule)
    G = generator_matrix(kind, K)
    S = G.shape[0]
    states = torch.arange(S).unsqueeze(1)  # (S, 1): every state as a one-token batch
    for t, s in [(0.3, 0.0), (0.9, 0.2), (0.6, 0.55), (0.999, 0.5)]:
        a_t, a_s = (float(proc.alpha(torch.tensor(v, dtype=torch.float64))) for v in (t, s))
        expected = torch.linalg.matrix_exp(G * math.log(a_s / a_t))
        got = proc.transition(
            states, torch.full((S,), t, dtype=torch.float64), torch.full((S,), s, dtype=torch.float64)
        )[:, 0]
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        x0 = torch.arange(K).unsqueeze(1)
        marg = proc.marginal(x0, torch.full((K,), t, dtype=torch.float64))[:, 0]
        torch.testing.assert_close(marg, torch.linalg.matrix_exp(G * math.log(1 / a_t))[:K], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", list(PROCESSES))
def test_transition_is_the_product_of_many_small_discrete_steps(kind: str) -> None:
    """prod_k (I + lambda(tau_k) dtau G) over a fine grid of (s, t] converges to q(x_t | x_s)."""
    K, n = 3, 4000
    proc = PROCESSES[kind](K, "cosine")
    G = generator_matrix(kind, K)
    s, t = 0.1, 0.8
    taus = s + (torch.arange(n, dtype=torch.float64) + 0.5) * (t - s) / n
    lam = -proc.alpha_prime(taus) / proc.alpha(taus)
    M = torch.eye(G.shape[0], dtype=torch.float64)
    for rate in lam.tolist():
        M = M @ (torch.eye(G.shape[0], dtype=torch.float64) + rate * (t - s) / n * G)
    S = G.shape[0]
    got = proc.transition(
        torch.arange(S).unsqueeze(1), torch.full((S,), t, dtype=torch.float64), torch.full((S,), s, dtype=torch.float64)
    )[:, 0]
    torch.testing.assert_close(got, M, atol=2e-4, rtol=0)


@pytest.mark.parametrize("kind", list(PROCESSES))
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_check_process_accepts_continuous_time_processes(kind: str, schedule: str) -> None:
    check_process(PROCESSES[kind](4, schedule), torch.tensor([[0, 1, 3], [2, 2, 1]]), num_draws=2000)


def test_check_process_catches_a_wrong_continuous_posterior() -> None:
    class Broken(MaskedProcess):
        def posterior(self, x_t, x0, t, s=None):
            p = super().posterior(x_t, x0, t, s)
            return F.normalize(p + 0.05, p=1, dim=-1)

    with pytest.raises(ConformanceError, match="posterior"):
        check_process(Broken(3), torch.tensor([[0, 1, 2]]))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_start_at_one_decrease_and_have_the_right_derivative(schedule: str) -> None:
    proc = MaskedProcess(2, schedule)
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    a = proc.alpha(t)
    assert float(a[0]) == 1.0 and bool((a[1:] < a[:-1]).all()) and float(a[-1]) < 2e-4
    h = 1e-6
    mid = t[1:-1]
    numeric = (proc.alpha(mid + h) - proc.alpha(mid - h)) / (2 * h)
    torch.testing.assert_close(proc.alpha_prime(mid), numeric, atol=1e-6, rtol=1e-6)


def test_masked_reverse_zero_masks_and_carries_unmasked_tokens() -> None:
    proc = MaskedProcess(3)
    x_t = torch.tensor([[3, 1, 3]])
    logits = torch.tensor([[[0.0, 1.0, 2.0], [5.0, -1.0, 0.0], [1.0, 1.0, 1.0]]])
    p = proc.reverse(logits, x_t, torch.tensor([0.8]), torch.tensor([0.2]))
    assert torch.equal(p[0, 1], F.one_hot(torch.tensor(1), 4).to(p.dtype))  # carry-over, whatever the logits say
    keep = (0.8 - 0.2) / 0.8  # (alpha(s) - alpha(t)) / (1 - alpha(t)) for alpha = 1 - t
    torch.testing.assert_close(p[0, 0, :3], keep * logits[0, 0].softmax(-1))
    torch.testing.assert_close(p[0, 0, 3], torch.tensor(1 - keep, dtype=p.dtype))
    final = proc.reverse(logits, x_t, torch.tensor([0.8]), torch.tensor([0.0]))
    assert float(final[..., 3].max()) == 0.0  # at s = 0 nothing stays masked


def test_masked_loss_is_the_weighted_cross_entropy_at_masked_tokens() -> None:
    """MDLM eq. 10: -alpha'(t) / (1 - alpha(t)) sum_{masked} -log p(x0 | x_t), averaged over tokens."""
    proc = MaskedProcess(5, "cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 5, (4, 7), generator=g)
    t = stratified_times(4, generator=g)
    x_t, noise = proc.q_sample(x0, t, generator=g)
    logits = torch.randn(4, 7, 5, generator=g)
    ce = -logits.log_softmax(-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    a = torch.cos(math.pi / 2 * t.double())
    w = (math.pi / 2 * torch.sin(math.pi / 2 * t.double())) / (1 - a)
    expected = (w.unsqueeze(1) * ce.double() * (x_t == 5)).mean(1)
    torch.testing.assert_close(
        proc.loss(logits, x0, x_t, t, noise, "x0", kind="kl").double(), expected, rtol=1e-5, atol=1e-6
    )


def test_stratified_times_cover_every_stratum_once() -> None:
    t = stratified_times(64, generator=torch.Generator().manual_seed(3))
    assert t.dtype == torch.float32 and float(t.min()) > 0 and float(t.max()) <= 1
    assert torch.equal(torch.sort(torch.ceil(t.double() * 64)).values, torch.arange(1, 65, dtype=torch.float64))


# ------------------------------------------------------------------------------ ELBO vs the discrete limit
def _all_sequences(S: int, L: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(S), repeat=L)))


def _fixed_denoiser(K: int, S: int, L: int, time_weight: bool):
    """A deterministic denoiser: logits looked up from x_t (a fixed random table); with
    ``time_weight`` its x0 prediction moves towards x_t as t -> 0, p = (1 - t) e_{x_t} + t softmax(table),
    so that the uniform-noise ELBO is finite."""
    table = torch.randn(S**L, L, K, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    powers = S ** torch.arange(L - 1, -1, -1)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = table[(x_t * powers).sum(-1)]
        if not time_weight:
            return logits
        w = t.double().reshape(-1, 1, 1)
        p = (1 - w) * F.one_hot(x_t, K).double() + w * logits.softmax(-1)
        return p.clamp_min(1e-300).log()

    return denoiser


def _expected_terms(
    proc, denoiser, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor | None, power: int = 1
) -> torch.Tensor:
    """E_{x_t ~ q(x_t | x0)} of the continuous integrand (s None) or of the discrete KL term at each
    (t_i, s_i), exactly, by enumerating every x_t; with ``power`` = 2 the second moment of the
    continuous integrand (summed over tokens). x0: (L,); t, s: (n,). Returns (n,)."""
    L = x0.shape[0]
    xs = _all_sequences(proc.num_states, L)  # (J, L)
    n, J = t.shape[0], xs.shape[0]
    tt = t.repeat_interleave(J)
    x_t = xs.repeat(n, 1)
    x0b = x0.expand(n * J, L)
    weight = proc.marginal(x0b, tt).gather(-1, x_t.unsqueeze(-1)).squeeze(-1).prod(-1)  # q(x_t | x0)
    keep = weight > 0
    out = denoiser(x_t, tt)
    param = proc.get_parametrization("x0")
    if s is None:
        term = proc.elbo_integrand_terms(out, x0b, x_t, tt, param).double().sum(-1) ** power
    else:
        ss = s.repeat_interleave(J)
        safe_xt = torch.where(keep.unsqueeze(1), x_t, x0b)  # unreachable x_t have weight 0; keep the posterior defined
        q = proc.posterior(safe_xt, x0b, tt, ss)
        p = proc.reverse(denoiser(safe_xt, tt), safe_xt, tt, ss)
        term = categorical_kl(q, p).sum(-1)
    return torch.where(keep, weight * term, 0.0).reshape(n, J).sum(1)


@pytest.mark.parametrize("kind", list(PROCESSES))
def test_continuous_elbo_is_the_limit_of_the_discrete_bound(kind: str) -> None:
    """sum_i E KL(q(x_{s_i} | x_{t_i}, x0) || p(x_{s_i} | x_{t_i})) on t_i = i / T approaches
    int_0^1 E l(x_t, x0, t) dt: the difference falls like 1 / T (T = 100 -> 1000)."""
    K, L = 3, 2
    proc = PROCESSES[kind](K, "cosine")
    denoiser = _fixed_denoiser(K, proc.num_states, L, time_weight=kind == "uniform")
    x0 = torch.tensor([2, 0])
    # Continuous: Gauss-Legendre on [0, 1] (the expected integrand is smooth and bounded).
    nodes, weights = (torch.from_numpy(v) for v in __import__("numpy").polynomial.legendre.leggauss(200))
    tq = (nodes + 1) / 2
    continuous = float((weights / 2 * _expected_terms(proc, denoiser, x0, tq, None)).sum())
    gaps = []
    for T in (100, 1000):
        grid = torch.arange(T + 1, dtype=torch.float64) / T
        discrete = float(_expected_terms(proc, denoiser, x0, grid[1:], grid[:-1]).sum())
        gaps.append(abs(discrete - continuous))
    assert continuous > 0.1
    assert gaps[1] < gaps[0] / 5, gaps
    assert gaps[1] < 2e-3 * continuous, (gaps, continuous)


def test_masked_elbo_is_the_same_for_every_schedule_but_its_estimate_is_not() -> None:
    """For a denoiser without time input, (T10) is one integral over u = 1 - alpha(t) whatever the
    schedule (alpha(1) = 0), so loglinear and cosine give the same bound. The estimate from one t
    is not equally good: its second moment int_eps^1 E[l^2] dt grows like log(1 / eps) for loglinear
    (weight 1 / t on ~ t L masked tokens) and converges for cosine (theory page, section 10)."""
    K, L = 3, 2
    denoiser = _fixed_denoiser(K, K + 1, L, time_weight=False)
    x0 = torch.tensor([2, 0])
    nodes, weights = (torch.from_numpy(v) for v in __import__("numpy").polynomial.legendre.leggauss(200))
    bound = {
        name: float((weights / 2 * _expected_terms(MaskedProcess(K, name), denoiser, x0, (nodes + 1) / 2, None)).sum())
        for name in ("loglinear", "cosine")
    }
    assert bound["loglinear"] > 0.1
    assert abs(bound["loglinear"] - bound["cosine"]) < 1e-9 * bound["loglinear"], bound

    def second_moment(name: str, eps: float) -> float:  # in v = log t: int f(t) dt = int f(e^v) e^v dv
        v = (nodes + 1) / 2 * math.log(eps)
        terms = _expected_terms(MaskedProcess(K, name), denoiser, x0, v.exp(), None, power=2)
        return float((weights / 2 * -math.log(eps) * v.exp() * terms).sum())

    for name, grows in (("loglinear", True), ("cosine", False)):
        m = [second_moment(name, eps) for eps in (1e-2, 1e-4, 1e-6)]
        steps = [m[1] - m[0], m[2] - m[1]]
        if grows:  # each factor 100 closer to 0 adds the same log(100) x (the t -> 0 limit of t E[l^2])
            assert steps[0] > 0.5 * m[0] and abs(steps[1] - steps[0]) < 0.05 * steps[0], (name, m)
        else:  # a bounded integrand: each factor 100 closer to 0 adds 100 times less
            assert steps[0] < 0.05 * m[0] and steps[1] < 0.02 * steps[0], (name, m)


def test_nll_bound_estimates_the_continuous_integral_without_bias() -> None:
    """The stratified estimate of nll_bound averages to the exact integral (enumerated x_t, quadrature in t)."""
    K, L = 3, 2
    proc = MaskedProcess(K, "loglinear")
    denoiser = _fixed_denoiser(K, proc.num_states, L, time_weight=False)
    x0 = torch.tensor([1, 2])
    nodes, weights = (torch.from_numpy(v) for v in __import__("numpy").polynomial.legendre.leggauss(100))
    exact = float((weights / 2 * _expected_terms(proc, denoiser, x0, (nodes + 1) / 2, None)).sum())
    batch = x0.expand(4000, L)
    bound = nll_bound(proc, denoiser, batch, "x0", generator=torch.Generator().manual_seed(0), num_points=4)
    est = bound.total.double()
    assert float(bound.prior.abs().max()) == 0.0 and float(bound.decoder.abs().max()) == 0.0
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(est.numel()), (float(est.mean()), exact)


def _any_order_loss(denoiser, x0: torch.Tensor, K: int) -> float:
    """sum_{k=1}^{n} mean over the k-subsets M of the positions of (1 / k) sum_{i in M} -log p(x0^i | x0
    with M masked): the any-order autoregressive loss, by enumerating every subset."""
    n, total = x0.shape[0], 0.0
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        for subset in subsets:
            x_t = x0.clone()
            x_t[list(subset)] = K
            logp = denoiser(x_t[None], torch.ones(1)).log_softmax(-1)[0]  # (n, K)
            total += float(-logp[list(subset), x0[list(subset)]].sum()) / k / len(subsets)
    return total


def test_count_weight_is_the_same_bound_with_a_bounded_variance() -> None:
    """(M5): for a denoiser without time input, weighting by (n + 1) / k instead of 1 / t gives the
    same bound (equal to the any-order autoregressive loss, enumerated independently), a second
    moment that stays finite as t -> 0 where the loglinear weight's grows, and nll_bound's
    stratified estimate of it is unbiased."""
    K, L = 3, 3
    denoiser = _fixed_denoiser(K, K + 1, L, time_weight=False)
    x0 = torch.tensor([2, 0, 1])
    nodes, weights = (torch.from_numpy(v) for v in __import__("numpy").polynomial.legendre.leggauss(200))
    schedule, count = MaskedProcess(K, "loglinear"), MaskedProcess(K, "loglinear", elbo_weight="count")
    bound = {
        name: float((weights / 2 * _expected_terms(proc, denoiser, x0, (nodes + 1) / 2, None)).sum())
        for name, proc in (("schedule", schedule), ("count", count))
    }
    reference = _any_order_loss(denoiser, x0, K)
    assert reference > 0.5
    for value in bound.values():
        assert abs(value - reference) < 1e-9 * reference, (bound, reference)

    def second_moment(proc, eps: float) -> float:  # int_eps^1 E[l^2] dt, in v = log t
        v = (nodes + 1) / 2 * math.log(eps)
        terms = _expected_terms(proc, denoiser, x0, v.exp(), None, power=2)
        return float((weights / 2 * -math.log(eps) * v.exp() * terms).sum())

    m_count = [second_moment(count, eps) for eps in (1e-2, 1e-4, 1e-6)]
    m_schedule = [second_moment(schedule, eps) for eps in (1e-2, 1e-4, 1e-6)]
    # (n + 1) / k is at most n + 1: E[l^2] is bounded, and int_0^eps of it vanishes like eps
    assert m_count[1] - m_count[0] < 0.05 * m_count[0] and m_count[2] - m_count[1] < 0.02 * (m_count[1] - m_count[0])
    step_schedule = [m_schedule[1] - m_schedule[0], m_schedule[2] - m_schedule[1]]  # log(1 / eps) growth: equal steps
    assert abs(step_schedule[1] - step_schedule[0]) < 0.05 * step_schedule[0]
    assert step_schedule[1] > 100 * (m_count[2] - m_count[1]) and step_schedule[1] > 0.1 * m_schedule[0]
    # the variance over [0, 1] (second moment - bound^2): Gauss-Legendre is exact for the polynomial in t
    var_count = float((weights / 2 * _expected_terms(count, denoiser, x0, (nodes + 1) / 2, None, power=2)).sum())
    assert var_count - bound["count"] ** 2 < m_schedule[0] - bound["schedule"] ** 2

    batch = x0.expand(4000, L)
    est = nll_bound(count, denoiser, batch, "x0", generator=torch.Generator().manual_seed(0), num_points=4).total
    est = est.double()
    assert abs(float(est.mean()) - reference) < 4 * float(est.std()) / math.sqrt(est.numel()), (est.mean(), reference)
    check_process(count, torch.tensor([[0, 1, 2], [2, 2, 1]]), num_draws=2000)  # the conformance kit accepts it


def test_count_weight_refuses_what_it_cannot_handle() -> None:
    """Only the loglinear schedule; a module with a time-conditioned TokenTransformer; a ProductProcess field."""
    with pytest.raises(
        ValueError, match="elbo_weight: 'count' .* needs the loglinear schedule .* got schedule 'cosine'"
    ):
        MaskedProcess(4, "cosine", elbo_weight="count")
    with pytest.raises(ValueError, match="elbo_weight: expected 'schedule' or 'count', got 'time'"):
        MaskedProcess(4, elbo_weight="time")  # type: ignore[arg-type]
    proc = MaskedProcess(4, elbo_weight="count")
    body = dict(seq_len=6, num_steps=None, d_model=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="denoiser: MaskedProcess .*elbo_weight='count'.* has time_conditioning=True"):
        DiffusionModule(proc, TokenTransformer(5, 4, **body), "x0", loss="kl")
    DiffusionModule(proc, TokenTransformer(5, 4, time_conditioning=False, **body), "x0", loss="kl")
    with pytest.raises(ValueError, match="field 'tokens' \\(MaskedProcess\\) needs a denoiser without time input"):
        diffkit.ProductProcess({"tokens": proc})


# ------------------------------------------------------------------------------ oracle sampling
def _markov_joint(K: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = random_transition_matrix(K, 1.0, seed=1)
    pi = stationary_distribution(P)
    xs = _all_sequences(K, L)
    p = pi[xs[:, 0]] * torch.stack([P[xs[:, i], xs[:, i + 1]] for i in range(L - 1)], 1).prod(1)
    return xs, p


def _oracle(proc, xs: torch.Tensor, p_data: torch.Tensor):
    """denoiser(x_t, t) = log of the exact per-token p(x0^i | x_t) under the chain: Bayes over the
    whole sequences x0 (J, L), with the per-token likelihood written out here (not the process's):
    masked: q(x_t^i | x0^i) = alpha [x_t^i = x0^i] + (1 - alpha) [x_t^i = mask]; uniform:
    alpha [x_t^i = x0^i] + (1 - alpha) / K."""
    K = proc.num_classes
    masked = isinstance(proc, MaskedProcess)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert proc.schedule.name == "loglinear"
        a = (1 - t.double()).reshape(-1, 1, 1)  # alpha(t) = 1 - t
        eq = (x_t.unsqueeze(1) == xs.unsqueeze(0)).double()  # (B, J, L)
        other = (x_t == K).double().unsqueeze(1) if masked else torch.full_like(eq, 1.0 / K)
        like = (a * eq + (1 - a) * other).prod(-1)  # (B, J)
        w = like * p_data
        probs = torch.einsum("bj,jlk->blk", w / w.sum(1, keepdim=True), F.one_hot(xs, K).double())
        return probs.clamp_min(math.exp(LOG_TINY)).log().float()

    return denoiser


def chi_square_p_value(x: torch.Tensor, p: torch.Tensor, K: int) -> float:
    """Pearson's chi-square test of sequences x (n, L) against the joint p over K^L (in
    lexicographic order); sequences whose expected count is below 5 are pooled into one bin, as
    the test's chi-square approximation requires."""
    from scipy.stats import chi2

    n, L = x.shape
    codes = (x * K ** torch.arange(L - 1, -1, -1)).sum(1)
    counts = torch.bincount(codes, minlength=K**L).double()
    big = n * p >= 5
    observed = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    expected = torch.cat([n * p[big], (n * p[~big]).sum().reshape(1)])
    stat = float(((observed - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, observed.numel() - 1))


@pytest.mark.parametrize(
    ("kind", "steps"),
    [("masked", 256), ("masked", 512), ("uniform", 256), pytest.param("uniform", 1024, marks=pytest.mark.slow)],
)
def test_oracle_denoiser_reproduces_the_chain(kind: str, steps: int) -> None:
    """Samples from the exact p(x0 | x_t) of a 3-token Markov chain follow the chain (chi-square
    p-value above 1e-4) for several step counts.

    The reverse step is per token (factorized): tokens that change in the same jump are drawn
    independently, an error that shrinks with the jump size (benchmarks/factorization.py). With
    5000-6000 samples it is detectable at 64 steps for this chain and not at 256; at one step it is
    gross (the control below)."""
    K, L, n = 3, 3, 5000
    proc = PROCESSES[kind](K, "loglinear")
    xs, p = _markov_joint(K, L)
    x = sample(
        proc, _oracle(proc, xs, p), (n, L), "x0", num_steps=steps, generator=torch.Generator().manual_seed(steps)
    )
    assert int(x.max()) < K  # no mask left
    assert chi_square_p_value(x, p, K) > 1e-4


def test_one_step_masked_sampling_is_factorized_and_the_test_sees_it() -> None:
    """Control for the oracle test: one jump 1 -> 0 draws every token independently from its
    marginal, which a strongly correlated chain rejects (the chi-square test has power)."""
    K, L, n = 3, 3, 6000
    proc = MaskedProcess(K)
    xs, p = _markov_joint(K, L)
    x = sample(proc, _oracle(proc, xs, p), (n, L), "x0", num_steps=1, generator=torch.Generator().manual_seed(0))
    assert chi_square_p_value(x, p, K) < 1e-10


# ------------------------------------------------------------------------------ caching sampler
@pytest.mark.parametrize("steps", [16, 400])
def test_caching_sampler_equals_the_plain_sampler(steps: int) -> None:
    K, L, n = 3, 3, 200
    proc = MaskedProcess(K)
    xs, p = _markov_joint(K, L)
    oracle = _oracle(proc, xs, p)
    cached, plain = SamplingStats(), SamplingStats()
    a = sample(proc, oracle, (n, L), "x0", num_steps=steps, generator=torch.Generator().manual_seed(1), stats=cached)
    b = sample(
        proc,
        oracle,
        (n, L),
        "x0",
        num_steps=steps,
        generator=torch.Generator().manual_seed(1),
        stats=plain,
        cache=False,
    )
    assert torch.equal(a, b)
    assert plain.evaluations_per_sample == plain.jumps == steps and plain.network_calls == steps
    assert cached.jumps == steps and cached.evaluations_per_sample <= min(steps, L + 1)
    if steps > 100:
        assert cached.evaluations_per_sample < steps / 100 and cached.network_calls < steps


def test_caching_sampler_with_a_transformer_and_the_module_defaults() -> None:
    torch.manual_seed(0)
    proc = MaskedProcess(4)
    net = TokenTransformer(
        5, 4, seq_len=6, num_steps=None, d_model=16, depth=1, heads=2, time_conditioning=False
    ).eval()
    with torch.no_grad():
        net.head.weight.normal_()  # a non-uniform prediction
    runs = []
    for cache in (None, False):
        stats = SamplingStats()
        runs.append(
            (
                sample(
                    proc,
                    net,
                    (8, 6),
                    "x0",
                    num_steps=64,
                    generator=torch.Generator().manual_seed(2),
                    cache=cache,
                    stats=stats,
                ),
                stats,
            )
        )
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1].evaluations < runs[1][1].evaluations == 64 * 8


def test_cache_is_refused_where_predictions_depend_on_t() -> None:
    with pytest.raises(ValueError, match="x0_prediction_time_independent"):
        sample(UniformProcess(3), lambda x, t: torch.zeros(*x.shape, 3), (2, 4), "x0", num_steps=4, cache=True)
    with pytest.raises(ValueError, match="x0_prediction_time_independent"):
        sample(
            CategoricalProcess(3, 10, "absorbing"),
            lambda x, t: torch.zeros(*x.shape, 3),
            (2, 4),
            "x0",
            num_steps=4,
            cache=True,
        )


def test_sampling_grid_and_explicit_float_times() -> None:
    proc = MaskedProcess(3)
    assert proc.sampling_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0] == continuous_time_grid(4)
    assert len(proc.sampling_grid()) == proc.default_sampling_steps + 1
    assert CategoricalProcess(3, 10).sampling_grid(5) == [10, 8, 6, 4, 2, 0]
    seen = []

    def denoiser(x, t):
        seen.append(t.clone())
        return torch.zeros(*x.shape, 3)

    sample(
        proc, denoiser, (2, 4), "x0", timesteps=[0.9, 0.3, 0.0], generator=torch.Generator().manual_seed(0), cache=False
    )
    assert [s.dtype for s in seen] == [torch.float32] * 2 and [float(s[0]) for s in seen] == pytest.approx([0.9, 0.3])
    with pytest.raises(TypeError, match="float times"):
        sample(proc, denoiser, (2, 4), "x0", timesteps=[10, 5, 0])
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(proc, denoiser, (2, 4), "x0", timesteps=[0.3, 0.6, 0.0])


# ------------------------------------------------------------------------------ bad inputs
def test_bad_times_are_named() -> None:
    proc = MaskedProcess(3)
    x0 = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"t: expected continuous times in \[0, 1\]"):
        proc.q_sample(x0, torch.tensor([1.5]))
    with pytest.raises(ValueError, match=r"t: expected continuous times in \[0, 1\]"):
        proc.marginal(x0, torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="0 <= s < t"):
        proc.transition(x0, torch.tensor([0.3]), torch.tensor([0.3]))
    with pytest.raises(ValueError, match="explicit s"):
        proc.reverse(torch.zeros(1, 3, 3), x0, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="continuous-time process takes float times"):
        proc.q_sample(x0, torch.tensor([1]))
    with pytest.raises(TypeError, match="continuous-time process takes float times"):
        proc.marginal(x0, 1)
    with pytest.raises(TypeError, match="float times in \\[0, 1\\] are for continuous-time processes"):
        CategoricalProcess(3, 10).q_sample(x0, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="float times in \\[0, 1\\] are for continuous-time processes"):
        CategoricalProcess(3, 10).q_sample(x0, 0.5)
    with pytest.raises(TypeError, match="floating-point tensor of continuous times"):
        TokenTransformer(4, 3, seq_len=3, num_steps=None, d_model=8, depth=1, heads=2)(x0, torch.tensor([1]))


def test_mask_id_in_data_is_named() -> None:
    proc = MaskedProcess(3)
    with pytest.raises(ValueError, match="id 3 is the mask state, never valid in data"):
        proc.q_sample(torch.tensor([[0, 3, 1]]), 0.5)
    net = TokenTransformer(4, 3, seq_len=3, num_steps=None, d_model=8, depth=1, heads=2, time_conditioning=False)
    model = DiffusionModule(proc, net, "x0", loss="kl", num_eval_samples=0)
    with pytest.raises(ValueError, match="mask state"):
        model._unpack(torch.tensor([[0, 3, 1]]))
    with pytest.raises(ValueError, match="schedule: unknown continuous-time schedule 'sqrt'"):
        MaskedProcess(3, "sqrt")
    with pytest.raises(ValueError, match="unmasked token"):
        proc.posterior(torch.tensor([[1, 3, 3]]), torch.tensor([[0, 1, 2]]), 0.5, 0.2)
    with pytest.raises(ValueError, match="num_points"):
        nll_bound(
            CategoricalProcess(3, 10), lambda x, t: torch.zeros(*x.shape, 3), torch.tensor([[0, 1]]), num_points=8
        )


# ------------------------------------------------------------------------------ module: training and resume
@pytest.mark.parametrize("elbo_weight", ["schedule", "count"])
def test_module_trains_the_masked_elbo_and_samples(elbo_weight: str) -> None:
    torch.manual_seed(0)
    proc = MaskedProcess(4, elbo_weight=elbo_weight)  # type: ignore[arg-type]
    net = TokenTransformer(5, 4, seq_len=6, num_steps=None, d_model=16, depth=1, heads=2, time_conditioning=False)
    model = DiffusionModule(proc, net, "x0", loss="kl", num_eval_samples=0, noise_seed=0)
    model.train()
    loss, n = model._training_loss(torch.randint(0, 4, (16, 6)))
    assert n == 16 and loss.ndim == 0 and math.isfinite(float(loss)) and loss.requires_grad
    x = model.sample(3, num_steps=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 6) and int(x.max()) < 4


def masked_model() -> DiffusionModule:
    torch.manual_seed(0)
    net = TokenTransformer(6, 5, seq_len=6, num_steps=None, d_model=16, depth=1, heads=2, time_conditioning=False)
    return DiffusionModule(MaskedProcess(5), net, "x0", loss="kl", ema_decay=0.9, num_eval_samples=0)


def uniform_model() -> DiffusionModule:
    torch.manual_seed(0)
    net = TokenTransformer(5, 5, seq_len=6, num_steps=None, d_model=16, depth=1, heads=2)
    return DiffusionModule(UniformProcess(5, "cosine"), net, "x0", loss="kl", ema_decay=0.9, num_eval_samples=0)


@pytest.mark.parametrize("build", [masked_model, uniform_model], ids=["masked", "uniform"])
def test_continuous_time_resume_is_bit_exact(tmp_path: Path, build) -> None:
    from test_resume import assert_same_training_state, quiet_lightning, run_both_ways, token_rows

    quiet_lightning()
    before = torch.are_deterministic_algorithms_enabled()
    try:
        full, resumed, seen_full, seen_resumed = run_both_ways(tmp_path, build, token_rows)
    finally:
        torch.use_deterministic_algorithms(before)
    assert_same_training_state(full, resumed)
    assert any(not torch.equal(full["state_dict"][k], full["current_model_state"][k]) for k in full["state_dict"])
    assert "MaskedProcess" in full["diffkit"]["process"] or "UniformProcess" in full["diffkit"]["process"]


def test_top_level_exports() -> None:
    assert diffkit.processes.MaskedProcess is MaskedProcess and diffkit.processes.UniformProcess is UniformProcess
    assert MaskedProcess.is_continuous_time and MaskedProcess.x0_prediction_time_independent
    assert UniformProcess.is_continuous_time and not UniformProcess.x0_prediction_time_independent
    assert not CategoricalProcess.is_continuous_time and MaskedProcess(2).num_steps is None


def test_conditional_sampling_is_counted_but_never_cached() -> None:
    """A conditional masked model samples with guidance (two conditions per jump): the caching
    sampler would mix their outputs, so it is off by default and refused on request; the counter
    still passes the condition through."""
    from diffkit import sample
    from diffkit.models import TokenTransformer
    from diffkit.processes import MaskedProcess
    from diffkit.sampling import SamplingStats

    process = MaskedProcess(num_classes=3)
    net = TokenTransformer(
        num_states=4, num_outputs=3, seq_len=5, num_steps=None, d_model=16, depth=1, heads=2, num_classes=2
    )
    stats = SamplingStats()
    x = sample(
        process,
        net,
        (4, 5),
        "x0",
        num_steps=6,
        cond=1,
        guidance_scale=1.0,
        stats=stats,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (4, 5) and int(x.max()) < 3  # clean tokens, no mask id
    assert stats.network_calls == 2 * 6  # conditional + null output at every jump, none skipped
    with pytest.raises(ValueError, match="cache: conditional sampling"):
        sample(process, net, (4, 5), "x0", num_steps=6, cond=1, cache=True)
