"""GaussianProcess: every formula against an independent reference written here.

* the posterior q(x_s | x_t, x0), any s < t, against a numerical product of the densities
  q(x_t | x_s) q(x_s | x0) on a 1-D grid;
* Ho et al. 2020 eq. 11 (the eps form of the s = t - 1 mean);
* the eps / x0 / v conversions from their definitions;
* q_sample's statistics and determinism;
* DDIM (eta = 1 is the posterior, eta = 0 is deterministic);
* the per-step KL of the eps parametrization as a weighted eps-MSE, the simple losses and min-SNR;
* the errors at the public boundary.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffkit import GaussianProcess, NoiseSchedule
from diffkit.processes.gaussian import (
    EpsParametrization,
    VParametrization,
    X0Parametrization,
    eps_from_x0,
    v_from_x0,
    x0_from_eps,
    x0_from_v,
)
from diffkit.processes.schedules import make_schedule

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

SCHEDULES = ["linear", "cosine"]


def table(schedule: str, T: int) -> torch.Tensor:
    """alpha_bar[0..T] in float64 (the schedule itself is tested in test_schedules.py)."""
    return make_schedule(schedule, T).alpha_bar


def col(values: list[float] | torch.Tensor) -> torch.Tensor:
    """A (B,) list as a (B, 1) float64 column, to broadcast against (B, D) data."""
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1, 1)


def reverse_pairs(T: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """(t, s) jumps with 1 <= s < t: neighbours at both ends, big jumps and random ones."""
    pairs = {(2, 1), (T, T - 1), (T, 1), (T, T // 2), (T // 2 + 1, T // 2), (T // 3, 1)}
    while len(pairs) < 16:
        t = int(torch.randint(2, T + 1, (1,), generator=gen))
        s = int(torch.randint(1, t, (1,), generator=gen))
        pairs.add((t, s))
        pairs.add((t, t - 1))
    return sorted(pairs)


# ----------------------------------------------------------------------------------- posterior


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_posterior_matches_numerical_product_of_densities(schedule: str, float64, gen, normal_logpdf_fn) -> None:
    T = 200
    proc = GaussianProcess(T, schedule)
    ab = table(schedule, T)
    pairs = reverse_pairs(T, gen)
    x0_values = [-1.3, 0.2, 2.5]
    t = torch.tensor([p[0] for p in pairs for _ in x0_values])
    s = torch.tensor([p[1] for p in pairs for _ in x0_values])
    x0 = col(x0_values * len(pairs))  # (B, 1)
    ab_t, ab_s = col(ab[t]), col(ab[s])
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * torch.randn(x0.shape, generator=gen, dtype=torch.float64)

    post = proc.posterior(x_t, x0, t, s)

    # Reference: p(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0) on a grid of +-12 std of q(x_s | x0).
    # The posterior std is >= 15% of that std for these pairs, so the 48001-point grid puts > 300
    # points per posterior std: a Riemann sum of a Gaussian that fine is exact to rounding.
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64)
    mean_s, var_s = ab_s.sqrt() * x0, 1 - ab_s  # q(x_s | x0)
    xs = mean_s + var_s.sqrt() * z  # (B, G)
    alpha_ts = ab_t / ab_s
    log_w = normal_logpdf_fn(x_t, alpha_ts.sqrt() * xs, 1 - alpha_ts) + normal_logpdf_fn(xs, mean_s, var_s)
    w = torch.softmax(log_w, -1)
    num_mean = (w * xs).sum(-1, keepdim=True)
    num_var = (w * (xs - num_mean) ** 2).sum(-1, keepdim=True)

    assert post.mean.shape == x0.shape
    # 1e-11 absolute on O(1) means and 1e-10 relative on variances: the grid reference agrees to
    # ~5e-14 (rounding in a 48001-term sum); 1% of the variance or 1e-3 of a mean is far outside.
    torch.testing.assert_close(post.mean, num_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(post.variance.expand_as(num_var), num_var, rtol=1e-10, atol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_posterior_at_s_zero_is_a_point_mass_at_x0(schedule: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, schedule)
    t = torch.tensor([1, 2, 50, T])
    x0 = torch.randn(4, 3, generator=gen)
    x_t = torch.randn(4, 3, generator=gen)
    post = proc.posterior(x_t, x0, t, 0)
    # The coefficient of x0 is (1 - alpha_bar_t) / (1 - alpha_bar_t): exact up to one rounding.
    torch.testing.assert_close(post.mean, x0, rtol=0, atol=1e-15)
    assert bool((post.variance == 0).all())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ho_eq11_eps_form_of_the_one_step_mean(schedule: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, schedule)
    ab = table(schedule, T)
    t = torch.arange(1, T + 1)
    ab_t, ab_prev = col(ab[t]), col(ab[t - 1])
    beta_t = 1 - ab_t / ab_prev
    x_t = torch.randn(T, 2, generator=gen)
    eps = torch.randn(T, 2, generator=gen)
    mu_eq11 = (x_t - beta_t / (1 - ab_t).sqrt() * eps) / (1 - beta_t).sqrt()
    mu = proc.posterior(x_t, x0_from_eps(x_t, eps, ab_t), t).mean  # s defaults to t - 1
    # 1e-10: at t = T (cosine), x0 = (x_t - ...) / sqrt(alpha_bar_T) amplifies rounding ~2000x.
    torch.testing.assert_close(mu, mu_eq11, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eps_x0_v_definitions_and_round_trips(schedule: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, schedule)
    t = torch.arange(1, T + 1)
    ab_t = col(table(schedule, T)[t])
    x0 = torch.randn(T, 3, generator=gen)
    eps = torch.randn(T, 3, generator=gen)
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps  # Ho et al. eq. 4
    v = ab_t.sqrt() * eps - (1 - ab_t).sqrt() * x0  # Salimans & Ho 2022

    # 1e-9 absolute: the worst case is x0 at t = T, recovered by dividing by sqrt(alpha_bar_T) ~ 5e-4.
    tol = dict(rtol=0, atol=1e-9)
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab_t), x0, **tol)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab_t), eps, **tol)
    torch.testing.assert_close(v_from_x0(x_t, x0, ab_t), v, **tol)
    torch.testing.assert_close(x0_from_v(x_t, v, ab_t), x0, **tol)
    # eps from v by the other identity eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v.
    torch.testing.assert_close(
        eps_from_x0(x_t, x0_from_v(x_t, v, ab_t), ab_t), (1 - ab_t).sqrt() * x_t + ab_t.sqrt() * v, **tol
    )
    # Round trips of the pure functions on arbitrary (not self-consistent) inputs.
    other = torch.randn(T, 3, generator=gen)
    torch.testing.assert_close(x0_from_eps(x_t, eps_from_x0(x_t, other, ab_t), ab_t), other, **tol)
    torch.testing.assert_close(eps_from_x0(x_t, x0_from_eps(x_t, other, ab_t), ab_t), other, **tol)
    torch.testing.assert_close(x0_from_v(x_t, v_from_x0(x_t, other, ab_t), ab_t), other, **tol)

    # The parametrization objects read their own target back as x0.
    for param, target in ((EpsParametrization(), eps), (X0Parametrization(), x0), (VParametrization(), v)):
        torch.testing.assert_close(param.x0_from_output(proc, target, x_t, t), x0, **tol)
        torch.testing.assert_close(param.target(proc, x0, x_t, t, eps), target, **tol)


# ----------------------------------------------------------------------------------- q_sample


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_q_sample_statistics_within_five_standard_errors(schedule: str, float64, gen) -> None:
    T, N = 100, 20000
    proc = GaussianProcess(T, schedule)
    ab = table(schedule, T)
    x0 = col([-2.0, -0.5, 0.0, 1.0, 3.0])
    t = torch.tensor([1, 10, 50, 90, T])
    draws = proc.q_sample(x0.repeat(N, 1), t.repeat(N), generator=gen).x_t.reshape(N, 5)
    mean = ab[t].sqrt() * x0.squeeze(1)
    var = 1 - ab[t]
    # Fixed seed, 5 standard errors of the mean (sqrt(var / N)) and of the variance (var sqrt(2 / (N - 1))).
    assert bool(((draws.mean(0) - mean).abs() <= 5 * (var / N).sqrt()).all())
    assert bool(((draws.var(0) - var).abs() <= 5 * var * math.sqrt(2 / (N - 1))).all())


def test_q_sample_with_given_noise_is_deterministic(float64, gen) -> None:
    T = 50
    proc = GaussianProcess(T, "cosine")
    ab = table("cosine", T)
    x0 = torch.randn(6, 2, 3, generator=gen)
    noise = torch.randn(6, 2, 3, generator=gen)
    t = torch.tensor([1, 5, 10, 25, 49, 50])
    a = proc.q_sample(x0, t, noise=noise)
    b = proc.q_sample(x0, t, noise=noise, generator=torch.Generator().manual_seed(99))
    assert torch.equal(a.x_t, b.x_t)
    assert torch.equal(a.noise, noise)
    ab_t = ab[t].reshape(6, 1, 1)
    torch.testing.assert_close(
        a.x_t, ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * noise, rtol=0, atol=1e-15
    )  # same expression
    c = proc.q_sample(x0, t, generator=torch.Generator().manual_seed(1))
    d = proc.q_sample(x0, t, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c.x_t, d.x_t)


def test_prior_term_and_prior_sample(float64, gen) -> None:
    T = 50
    for schedule in SCHEDULES:
        proc = GaussianProcess(T, schedule)
        ab_T = table(schedule, T)[T]
        x0 = torch.randn(4, 3, generator=gen)
        # KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per element, summed: 0.5 (var + mean^2 - 1 - log var).
        var, mean = 1 - ab_T, ab_T.sqrt() * x0
        expected = (0.5 * (var + mean**2 - 1 - torch.log(var))).sum(1)
        torch.testing.assert_close(proc.prior_term(x0), expected, rtol=1e-10, atol=1e-15)  # rounding only
    N = 40000
    draws = proc.prior_sample((N, 2), generator=gen)
    assert draws.shape == (N, 2) and draws.dtype == torch.float64
    # Fixed seed; 5 standard errors of the mean (1 / sqrt(N)) and of the variance (sqrt(2 / N)).
    assert bool((draws.mean(0).abs() <= 5 / math.sqrt(N)).all())
    assert bool(((draws.var(0) - 1).abs() <= 5 * math.sqrt(2 / N)).all())
    mask = torch.tensor([True, False]).expand(N, 2)
    assert bool((proc.prior_sample((N, 2), generator=gen, mask=mask)[:, 1] == 0).all())


# ----------------------------------------------------------------------------------- DDIM


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ddim_eta_one_is_the_posterior_and_eta_zero_is_deterministic(schedule: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, schedule)
    ab = table(schedule, T)
    pairs = reverse_pairs(T, gen) + [(1, 0), (T, 0), (37, 0)]
    t = torch.tensor([p[0] for p in pairs])
    s = torch.tensor([p[1] for p in pairs])
    B = len(pairs)
    x_t = torch.randn(B, 4, generator=gen)
    x0_hat = torch.randn(B, 4, generator=gen)

    ddim = proc.reverse(x0_hat, x_t, t, s, parametrization="x0", eta=1.0)
    post = proc.posterior(x_t, x0_hat, t, s)
    # 1e-10: two algebraically equal expressions; the DDIM one goes through eps_hat, divided by
    # sqrt(1 - alpha_bar_t), which is ~6e-3 at t = 1 for the linear schedule.
    torch.testing.assert_close(ddim.mean, post.mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        ddim.variance.expand_as(post.mean), post.variance.expand_as(post.mean), rtol=1e-12, atol=1e-15
    )

    ab_t, ab_s = col(ab[t]), col(ab[s])
    eps_hat = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
    zero = proc.reverse(x0_hat, x_t, t, s, parametrization="x0", eta=0.0)
    assert bool((zero.variance == 0).all())
    torch.testing.assert_close(
        zero.mean, ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps_hat, rtol=0, atol=1e-10
    )  # as above
    one = proc.step(x0_hat, x_t, t, s, parametrization="x0", eta=0.0, generator=torch.Generator().manual_seed(1))
    two = proc.step(x0_hat, x_t, t, s, parametrization="x0", eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(one, two)

    # Any eta keeps q(x_s | x0)'s variance: (eps coefficient)^2 + sigma^2 = 1 - alpha_bar_s (Song et al. eq. 12).
    for eta in (0.0, 0.3, 1.0):
        d = proc.reverse(x0_hat, x_t, t, s, parametrization="x0", eta=eta)
        eps_coef = (d.mean - ab_s.sqrt() * x0_hat) / eps_hat
        torch.testing.assert_close(
            eps_coef**2 + d.variance, (1 - ab_s).expand_as(eps_coef), rtol=0, atol=1e-9
        )  # ratio of O(1) values
        torch.testing.assert_close(
            d.variance.expand_as(post.mean), eta**2 * post.variance.expand_as(post.mean), rtol=1e-12, atol=1e-15
        )
    with pytest.raises(ValueError, match="eta"):
        proc.reverse(x0_hat, x_t, t, s, parametrization="x0", eta=-0.5)


# ----------------------------------------------------------------------------------- losses


def one_step_batch(proc: GaussianProcess, ab: torch.Tensor, t: torch.Tensor, gen: torch.Generator, D: int = 3):
    x0 = torch.randn(t.shape[0], D, generator=gen)
    eps = torch.randn(t.shape[0], D, generator=gen)
    ab_t = col(ab[t])
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
    return x0, eps, x_t


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eps_kl_is_the_weighted_eps_mse(schedule: str, float64, gen) -> None:
    T, D = 100, 3
    proc = GaussianProcess(T, schedule, reverse_variance="posterior")
    ab = table(schedule, T)
    t = torch.cat([torch.tensor([2, 3, T - 1, T]), torch.randint(2, T + 1, (12,), generator=gen)])
    x0, eps, x_t = one_step_batch(proc, ab, t, gen, D)
    eps_hat = eps + torch.randn(eps.shape, generator=gen)

    ab_t, ab_prev = col(ab[t]), col(ab[t - 1])
    beta_t = 1 - ab_t / ab_prev
    var = beta_t * (1 - ab_prev) / (1 - ab_t)  # posterior variance, Ho et al. eq. 7
    coef = beta_t / ((1 - ab_t).sqrt() * (1 - beta_t).sqrt())
    expected = (coef**2 * (eps - eps_hat) ** 2 / (2 * var)).sum(1)

    kl = proc.vlb(eps_hat, x0, x_t, t, "eps")
    # 1e-9 relative: KL with equal variances; the two variance expressions differ by rounding only.
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-12)
    loss = proc.loss(eps_hat, x0, x_t, t, eps, "eps", kind="kl")
    torch.testing.assert_close(loss, T * expected / D, rtol=1e-9, atol=1e-12)  # "kl" = T * per-element mean


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_kl_with_forward_variance_and_decoder_term(schedule: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, schedule, reverse_variance="forward")
    ab = table(schedule, T)
    t = torch.tensor([1, 1, 2, 10, 50, T])
    x0, eps, x_t = one_step_batch(proc, ab, t, gen)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=gen)

    ab_t, ab_prev = col(ab[t]), col(ab[t - 1])
    beta_t = 1 - ab_t / ab_prev
    var_q = beta_t * (1 - ab_prev) / (1 - ab_t)
    coef_x0 = ab_prev.sqrt() * beta_t / (1 - ab_t)  # Ho et al. eq. 7
    coef_xt = (1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab_t)
    mu_q, mu_p = coef_x0 * x0 + coef_xt * x_t, coef_x0 * x0_hat + coef_xt * x_t
    kl = 0.5 * (torch.log(beta_t / var_q) + var_q / beta_t - 1) + (mu_q - mu_p) ** 2 / (2 * beta_t)
    # t = 1: -log N(x0; x0_hat, beta_1), the decoder term (the mean of p(x_0 | x_1) is x0_hat).
    decoder = 0.5 * torch.log(2 * math.pi * beta_t) + (x0 - x0_hat) ** 2 / (2 * beta_t)
    expected = torch.where(col(t == 1).bool(), decoder, kl).sum(1)
    torch.testing.assert_close(proc.vlb(x0_hat, x0, x_t, t, "x0"), expected, rtol=1e-9, atol=1e-12)  # rounding only


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_reverse_variance_choices_and_the_decoder_variance(schedule: str, float64, gen) -> None:
    T = 100
    ab = table(schedule, T)
    t = torch.tensor([1, 2, 10, 60, T, T, 40])
    s = torch.tensor([0, 1, 9, 20, T - 1, 0, 0])
    ab_t, ab_s = ab[t], ab[s]
    forward = 1 - ab_t / ab_s  # 1 - alpha_{t|s}; beta_t for s = t - 1
    tilde = forward * (1 - ab_s) / (1 - ab_t)  # posterior variance (G3): 0 at s = 0
    x_t = torch.randn(7, 2, generator=gen)
    x0_hat = torch.randn(7, 2, generator=gen)
    for choice, expected in (("forward", forward), ("posterior", torch.where(s == 0, forward, tilde))):
        proc = GaussianProcess(T, schedule, reverse_variance=choice)
        p = proc.reverse(x0_hat, x_t, t, s, parametrization="x0")
        # Ho et al. sigma_t^2 = beta_t or beta tilde; at s = 0 the decoder uses 1 - alpha_bar_t
        # (beta_1 for t = 1), since beta tilde is 0 there. Rounding only: 1e-12 relative.
        torch.testing.assert_close(p.variance.reshape(-1), expected, rtol=1e-12, atol=0)
        torch.testing.assert_close(p.mean, proc.posterior(x_t, x0_hat, t, s).mean, rtol=0, atol=0)
    # With the posterior choice the t = 1 ELBO term is -log N(x0; x0_hat, beta_1) as well.
    proc = GaussianProcess(T, schedule, reverse_variance="posterior")
    one = torch.ones(3, dtype=torch.long)
    x0 = torch.randn(3, 2, generator=gen)
    x_1 = torch.randn(3, 2, generator=gen)
    out = torch.randn(3, 2, generator=gen)
    beta_1 = 1 - ab[1]
    expected = (0.5 * torch.log(2 * math.pi * beta_1) + (x0 - out) ** 2 / (2 * beta_1)).sum(1)
    torch.testing.assert_close(proc.vlb(out, x0, x_1, one, "x0"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["eps", "x0", "v"])
def test_simple_loss_zero_at_oracle_and_mse_elsewhere(name: str, float64, gen) -> None:
    T = 100
    proc = GaussianProcess(T, "cosine")
    ab = table("cosine", T)
    t = torch.tensor([1, 2, 30, 70, T])
    x0, eps, x_t = one_step_batch(proc, ab, t, gen)
    ab_t = col(ab[t])
    target = {"eps": eps, "x0": x0, "v": ab_t.sqrt() * eps - (1 - ab_t).sqrt() * x0}[name]
    # The target is computed by the same expression as the library's: zero up to rounding squared.
    assert proc.loss(target, x0, x_t, t, eps, name, kind="simple").abs().max().item() < 1e-28
    out = target + torch.randn(target.shape, generator=gen)
    torch.testing.assert_close(
        proc.loss(out, x0, x_t, t, eps, name, kind="simple"), ((out - target) ** 2).mean(1), rtol=1e-12, atol=0
    )
    # Without the noise, the target is recovered from (x0, x_t): same loss up to the conversion's rounding.
    torch.testing.assert_close(
        proc.loss(out, x0, x_t, t, None, name, kind="simple"), ((out - target) ** 2).mean(1), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("param_cls", [EpsParametrization, X0Parametrization, VParametrization])
def test_min_snr_weight_is_min_snr_gamma_in_x0_space(param_cls, float64, gen) -> None:
    T, gamma = 100, 5.0
    proc = GaussianProcess(T, "cosine")
    ab = table("cosine", T)
    t = torch.tensor([1, 5, 20, 40, 50, 60, 80, T])
    x0, eps, x_t = one_step_batch(proc, ab, t, gen)
    ab_t = col(ab[t])
    snr = ab_t / (1 - ab_t)
    assert bool((snr > gamma).any()) and bool((snr < gamma).any()), "cover both sides of the clip"
    out = torch.randn(x0.shape, generator=gen)
    x0_hat = {  # read the output as x0 by the definitions (G4) / (G6)
        EpsParametrization: (x_t - (1 - ab_t).sqrt() * out) / ab_t.sqrt(),
        X0Parametrization: out,
        VParametrization: ab_t.sqrt() * x_t - (1 - ab_t).sqrt() * out,
    }[param_cls]
    expected = (snr.clamp_max(gamma) * (x0_hat - x0) ** 2).mean(1)
    loss = proc.loss(out, x0, x_t, t, eps, param_cls(min_snr_gamma=gamma), kind="simple")
    # 1e-8 relative: x0_hat at t = T divides by sqrt(alpha_bar_T) ~ 5e-4 (rounding x 2000).
    torch.testing.assert_close(loss, expected, rtol=1e-8, atol=0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="min_snr_gamma"):
            param_cls(min_snr_gamma=bad)


def test_previous_step_refuses_to_stride(float64, gen) -> None:
    T = 20
    proc = GaussianProcess(T, "cosine")
    x_t = torch.randn(3, 2, generator=gen)
    out = torch.randn(3, 2, generator=gen)
    with pytest.raises(ValueError, match="previous-step"):
        proc.reverse(out, x_t, 10, 5, parametrization="previous-step")
    with pytest.raises(ValueError, match="previous-step"):
        proc.step(out, x_t, 10, 0, parametrization="previous-step")
    # One step is fine, and its mean is the network output itself.
    p = proc.reverse(out, x_t, 10, 9, parametrization="previous-step")
    assert torch.equal(p.mean, out)
    # Its simple loss is the MSE to the posterior mean (Ho et al. eq. 7), zero at that mean.
    x0 = torch.randn(3, 2, generator=gen)
    t = torch.full((3,), 10)
    mu = proc.posterior(x_t, x0, t).mean
    assert proc.loss(mu, x0, x_t, t, None, "previous-step").abs().max().item() < 1e-28  # same expression


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_float32_posterior_keeps_float32_precision(schedule: str, gen) -> None:
    # Tables are float64 (docs/design.md); computed from them, the posterior coefficients and variance
    # need no more than float32 rounding. Forming 1 - alpha_bar_t / alpha_bar_s from float32-cast
    # alpha_bars instead cancels catastrophically at small t (alpha_{t|s} = 1 - O(1e-4)).
    T = 1000
    proc = GaussianProcess(T, schedule)
    t = torch.tensor([2, 3, 5, 10, 100, 500, T])
    x0 = torch.randn(7, 4, generator=gen)  # float32
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    got = proc.posterior(x_t, x0, t)
    want = proc.posterior(x_t.double(), x0.double(), t)  # same inputs, float64 arithmetic
    assert got.mean.dtype == torch.float32
    # 1e-5 relative on the variance (~100 float32 ulps); cancellation gives ~4e-4.
    torch.testing.assert_close(got.variance.double(), want.variance, rtol=1e-5, atol=0)
    # The mean to 1e-3 posterior standard deviations (float32 rounding of O(1) terms is ~1e-7,
    # the posterior std is >= ~5e-3 here); cancellation in the coefficients gives ~1e-2.
    err = (got.mean.double() - want.mean).abs() / want.variance.sqrt()
    assert err.max().item() <= 1e-3, f"mean off by {err.max().item():.2e} posterior std"


# ----------------------------------------------------------------------------------- errors


def test_errors_at_the_public_boundary(float64) -> None:
    T = 10
    proc = GaussianProcess(T, "cosine")
    x0 = torch.randn(3, 2)
    x_t = torch.randn(3, 2)

    bad = x0.clone()
    bad[1, 0] = float("nan")
    for call in (
        lambda: proc.q_sample(bad, 3),
        lambda: proc.marginal(bad, 3),
        lambda: proc.posterior(x_t, bad, 3),
        lambda: proc.posterior(bad, x0, 3),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()
    with pytest.raises(TypeError, match="floating-point"):
        proc.q_sample(torch.ones(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="x0") as info:
        proc.posterior(x_t, torch.randn(3, 4), 3)
    assert "(3, 4)" in str(info.value) and "(3, 2)" in str(info.value)
    for s in (5, 6):
        with pytest.raises(ValueError, match="s"):
            proc.posterior(x_t, x0, 5, s)
    with pytest.raises(ValueError, match="0..T"):
        proc.posterior(x_t, x0, T + 1)
    with pytest.raises(ValueError, match="0..T"):
        proc.q_sample(x0, torch.tensor([1, 2, T + 1]))
    with pytest.raises(ValueError, match="0..T"):
        proc.q_sample(x0, -1)
    with pytest.raises(TypeError, match="t"):
        proc.posterior(x_t, x0, torch.tensor([3.0, 3.0, 3.0]))
    with pytest.raises(TypeError, match="t"):
        proc.q_sample(x0, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="t"):
        proc.q_sample(x0, True)
    with pytest.raises(ValueError, match="shape"):
        proc.q_sample(x0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise"):
        proc.q_sample(x0, 3, noise=torch.randn(3, 5))
    with pytest.raises(ValueError, match="alpha_bar_T"):
        GaussianProcess(2, schedule=NoiseSchedule.from_alpha_bar([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="reverse_variance"):
        GaussianProcess(10, reverse_variance="fixed")  # type: ignore[arg-type]  ("learned" is valid since issue 17)
    with pytest.raises(ValueError, match="parametrization"):
        proc.loss(x0, x0, x_t, 3, None, "score")
