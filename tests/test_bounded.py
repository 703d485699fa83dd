"""x0 clipping / dynamic thresholding and the discretized Gaussian decoder of 8-bit data."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit import GaussianProcess
from diffkit.processes.gaussian import GaussianParams
from diffkit.processes.gaussian_bounded import clip_x0, discretized_gaussian_log_likelihood, dynamic_threshold

GRID = torch.linspace(-1, 1, 256, dtype=torch.float64)


@pytest.mark.parametrize("mean,std", [(0.0, 0.01), (0.3, 0.002), (-0.99, 0.05), (1.2, 0.1), (0.5, 1e-4), (-3.0, 0.5)])
def test_discretized_decoder_sums_to_one_over_the_256_bins(mean, std):
    logp = discretized_gaussian_log_likelihood(
        GRID, torch.full_like(GRID, mean), torch.tensor(std**2, dtype=torch.float64)
    )
    assert (logp <= 0).all()
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    # and each middle bin is the plain CDF difference (scipy-free reference through erf)
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    i = 100
    x = float(GRID[i])
    want = cdf((x + 1 / 255 - mean) / std) - cdf((x - 1 / 255 - mean) / std)
    if want > 1e-12:
        assert float(logp[i].exp()) == pytest.approx(want, rel=1e-6, abs=1e-15)


def test_process_uses_it_for_the_decoder_term():
    proc = GaussianProcess(10, decoder="discretized")
    x0 = GRID[::32].reshape(1, -1).float()
    p = GaussianParams(x0 + 0.001, torch.tensor(1e-4))
    nll = proc.decoder_nll(x0, p)
    torch.testing.assert_close(nll, -discretized_gaussian_log_likelihood(x0, p.mean, p.variance))
    assert (
        repr(GaussianProcess(10)) == "GaussianProcess(num_steps=10, reverse_variance='posterior')"
    )  # old checkpoints still load
    with pytest.raises(ValueError, match="decoder.*'discretized', 'gaussian'"):
        GaussianProcess(10, decoder="bins")


def test_clip_and_dynamic_threshold():
    x = torch.tensor([[0.5, -2.0, 3.0, 0.1], [0.2, -0.3, 0.4, 0.9]])
    torch.testing.assert_close(clip_x0(x), torch.tensor([[0.5, -1.0, 1.0, 0.1], [0.2, -0.3, 0.4, 0.9]]))
    y = dynamic_threshold(x, percentile=1.0)
    torch.testing.assert_close(y[0], x[0] / 3.0)  # s = max |x| = 3
    torch.testing.assert_close(y[1], x[1])  # s = max(1, 0.9) = 1: untouched
    assert y.abs().max() <= 1
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(x, 0.0)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [None, 0.0, 0.7])
def test_clip_x0_step_is_the_posterior_of_the_clamped_estimate(param, eta):
    g = torch.Generator().manual_seed(0)
    proc = GaussianProcess(50, clip_x0=1.0)
    x_t, out = torch.randn(6, 3, generator=g) * 3, torch.randn(6, 3, generator=g) * 3
    for t, s in [(50, 40), (7, 6), (1, 0)]:
        got = proc.step(out, x_t, t, s, param, generator=torch.Generator().manual_seed(1), eta=eta)
        tt, ss = torch.full((6,), t), torch.full((6,), s)
        x0 = proc.get_parametrization(param).x0_from_output(proc, out, x_t, tt)
        assert (x0.abs() > 1).any()  # the clamp is exercised
        p = proc.reverse_from_x0(x_t, x0.clamp(-1, 1), tt, ss, eta=eta)
        want = proc.reverse_sample(p, ss, torch.Generator().manual_seed(1))
        torch.testing.assert_close(got, want)
        # a clip no estimate reaches is the unclipped (fused) step, draw for draw
        wide = GaussianProcess(50, clip_x0=1e6).step(out, x_t, t, s, param, torch.Generator().manual_seed(2), eta)
        plain = GaussianProcess(50).step(out, x_t, t, s, param, torch.Generator().manual_seed(2), eta)
        torch.testing.assert_close(wide, plain)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_clip_x0_reaches_the_deterministic_solvers(sampler):
    from diffkit import sample

    proc = GaussianProcess(20, clip_x0=0.5)

    def wild(x_t, t):  # an eps prediction whose x0 estimate leaves [-0.5, 0.5]
        return -3 * x_t

    x = sample(
        proc,
        wild,
        (64, 2),
        parametrization="eps",
        sampler=sampler,
        num_steps=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(x.abs().max()) <= 0.5 + 1e-6  # the last jump returns the (clamped) x0 estimate
    free = sample(
        GaussianProcess(20),
        wild,
        (64, 2),
        parametrization="eps",
        sampler=sampler,
        num_steps=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(free.abs().max()) > 0.5


def test_clip_x0_bad_input():
    for bad in (0, -1.0, float("inf"), float("nan"), "1"):
        with pytest.raises(ValueError, match="clip_x0"):
            GaussianProcess(10, clip_x0=bad)
    with pytest.raises(ValueError, match="clip_x0.*learned"):
        GaussianProcess(10, reverse_variance="learned", clip_x0=1.0)
    proc = GaussianProcess(10, clip_x0=1.0)
    with pytest.raises(ValueError, match="clip_x0.*previous step"):
        proc.step(torch.zeros(2, 3), torch.zeros(2, 3), 5, 4, "previous-step")
    assert repr(proc) == "GaussianProcess(num_steps=10, reverse_variance='posterior', clip_x0=1)"
