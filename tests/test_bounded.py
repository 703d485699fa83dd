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
