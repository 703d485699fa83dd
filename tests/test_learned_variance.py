"""Learned reverse variance (Nichol & Dhariwal 2021): the interpolated variance and its KL against a
hand computation, the hybrid loss's mean detach, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import diffkit
from diffkit import GaussianProcess
from diffkit.models import MLPDenoiser

pytestmark = pytest.mark.usefixtures("single_thread")


def _batch(B=6, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    x_t = torch.randn(B, D, generator=g, dtype=torch.float64)
    out = torch.randn(B, 2 * D, generator=g, dtype=torch.float64) * 0.7
    return x0, x_t, out


def _hand_kl(proc, x0, x_t, out, t):
    """KL(q(x_{t-1} | x_t, x0) || p) per element, everything written out for one t >= 2 (eps target)."""
    ab = proc.alpha_bar.tolist()
    ab_t, ab_s = ab[t], ab[t - 1]
    beta = 1 - ab_t / ab_s
    tilde = beta * (1 - ab_s) / (1 - ab_t)
    D = x0.shape[1]
    eps, v = out[:, :D], out[:, D:]
    frac = (v + 1) / 2
    log_var = frac * math.log(beta) + (1 - frac) * math.log(tilde)
    x0_hat = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    c0, ct = math.sqrt(ab_s) * beta / (1 - ab_t), math.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)
    mu_p, mu_q = c0 * x0_hat + ct * x_t, c0 * x0 + ct * x_t
    return 0.5 * (log_var - math.log(tilde) + (tilde + (mu_q - mu_p) ** 2) / log_var.exp() - 1)


@pytest.mark.parametrize("t", [2, 17, 40])
def test_kl_matches_hand_computation(t):
    proc = GaussianProcess(40, reverse_variance="learned")
    x0, x_t, out = _batch()
    tt = torch.full((6,), t)
    got = proc.vlb_terms(out, x0, x_t, tt, proc.get_parametrization("eps"))
    torch.testing.assert_close(got, _hand_kl(proc, x0, x_t, out, t))


def test_endpoints_are_the_fixed_variances():
    """v_raw = +1 gives beta (reverse_variance="forward"), v_raw = -1 gives beta_tilde ("posterior")."""
    x0, x_t, out = _batch()
    D = 3
    t, s = torch.full((6,), 30), torch.full((6,), 12)
    learned = GaussianProcess(40, reverse_variance="learned")
    for v, fixed in ((1.0, "forward"), (-1.0, "posterior")):
        out[:, D:] = v
        p = learned.reverse(out, x_t, t, s, "v")
        q = GaussianProcess(40, reverse_variance=fixed).reverse(out[:, :D], x_t, t, s, "v")
        torch.testing.assert_close(p.mean, q.mean)
        torch.testing.assert_close(p.variance, q.variance.expand_as(p.variance))


def test_hybrid_kl_term_does_not_reach_the_mean():
    proc = GaussianProcess(40, reverse_variance="learned")
    x0, x_t, out = _batch()
    t = torch.tensor([1, 2, 5, 20, 33, 40])
    noise = torch.randn(6, 3, dtype=torch.float64)

    def grad(kind, weight=1.0):
        o = out.clone().requires_grad_()
        proc.loss(o, x0, x_t, t, noise, "eps", kind, hybrid_weight=weight).sum().backward()
        return o.grad

    hybrid, simple, kl = grad("hybrid"), grad("simple"), grad("kl")
    torch.testing.assert_close(hybrid[:, :3], simple[:, :3])  # the mean learns from the simple loss alone
    assert (simple[:, 3:] == 0).all()  # ... which does not touch the variance
    torch.testing.assert_close(hybrid[:, 3:], kl[:, 3:])  # the variance learns from the KL
    assert kl[:, 3:].abs().min() > 0 and kl[:, :3].abs().max() > 0  # plain "kl" trains both


def test_mlp_emits_the_variance_channels_and_sampling_runs():
    proc = GaussianProcess(20, reverse_variance="learned")
    net = MLPDenoiser(2, 20, hidden=16, depth=1, learn_variance=True)
    assert net(torch.randn(5, 2), torch.randint(0, 21, (5,))).shape == (5, 4)
    g = torch.Generator().manual_seed(0)
    for sampler in ("ancestral", "ddim", "dpmpp_2m"):
        x = diffkit.sample(proc, net, (5, 2), "eps", num_steps=5, sampler=sampler, generator=g)
        assert x.shape == (5, 2) and torch.isfinite(x).all()
    bound = diffkit.nll_bound(proc, net, torch.randn(4, 2), "eps", generator=g)
    assert torch.isfinite(bound.total).all()


def test_bad_inputs():
    proc = GaussianProcess(20, reverse_variance="learned")
    plain = MLPDenoiser(2, 20, hidden=16, depth=1)
    with pytest.raises(ValueError, match="learned.*variance channels.*learn_variance=True"):
        diffkit.sample(proc, plain, (4, 2), "eps", num_steps=4)
    with pytest.raises(ValueError, match="learned.*variance channels"):
        diffkit.sample(proc, plain, (4, 2), "eps", num_steps=4, sampler="dpmpp_2m")
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match="output: shape .* expects \\(4, 4\\)"):
        proc.loss(torch.randn(4, 2), x0, x0, torch.full((4,), 3), None, "eps", "hybrid")
    net = MLPDenoiser(2, 20, hidden=16, depth=1, learn_variance=True)
    with pytest.raises(ValueError, match="eta"):
        diffkit.sample(proc, net, (4, 2), "eps", num_steps=4, eta=0.5)
    with pytest.raises(ValueError, match="learned.*x0-based"):
        diffkit.sample(proc, net, (4, 2), "previous-step")
    with pytest.raises(ValueError, match="reverse_variance.*'forward', 'learned', 'posterior'"):
        GaussianProcess(20, reverse_variance="fixed")
