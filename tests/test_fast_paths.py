"""The fused paths against the reference paths they replace.

* Gaussian: the fused step x_s = P output + Q x_t + sigma z (per-jump scalar coefficients, for a
  jump shared by the batch, given as ints as sample() does) against x0_from_output ->
  reverse_from_x0 -> reverse_sample in float64, with the same generator (so the same z): equal up
  to rounding. The sampling loop against a loop of reference steps. A parametrization or process
  that overrides a hook the fused step stands for loses the capability, so its override runs.
* Categorical: the two-pass mixing posterior against the term-by-term (dense) one; the two-level
  inverse-CDF sampler, the fused categorical step and the O(B·L) q_sample against exact
  probabilities (frequency checks with fixed seeds, 5 binomial standard errors per cell).
* The fused categorical sampler (block sums of p, no (B, L, S) weights; large K) against the
  two-pass weights + inverse_cdf_sample under the same uniforms: the same ids.
* Inside trusted_values (the training step after its first batch) q_sample and loss give the same
  values and gradients as outside; all_finite against torch.isfinite.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from diffkit import CategoricalProcess, GaussianProcess, NoiseSchedule, sample
from diffkit.processes import categorical
from diffkit.processes.categorical import (
    _mixing_posterior_dense,
    _mixing_posterior_unnormalized,
    _mixing_step_sample,
    inverse_cdf_sample,
    mixing_posterior,
)
from diffkit.processes.gaussian import GaussianParams


# ----------------------------------------------------------------------------------- Gaussian
def reference_step(proc: GaussianProcess, name: str, output, x_t, t, s, eta, generator, z_dtype=None):
    """The pre-issue-5 path, written out: x0_hat, the posterior mean and variance, then the draw."""
    param = proc.get_parametrization(name)
    if name == "previous-step":
        p = GaussianParams(output, proc.reverse_variance_at(t, s, x_t))
    else:
        p = proc.reverse_from_x0(x_t, param.x0_from_output(proc, output, x_t, t), t, s, eta=eta)
    z = torch.randn(p.mean.shape, dtype=z_dtype or p.mean.dtype, generator=generator).to(p.mean.dtype)
    return p.mean + torch.where(
        (s > 0).reshape(-1, *([1] * (x_t.ndim - 1))), p.variance.sqrt() * z, torch.zeros_like(z)
    ), p


JUMPS = [(1, 0), (2, 1), (37, 36), (50, 0), (50, 49), (50, 20), (13, 3)]


@pytest.mark.parametrize(
    "schedule, reverse_variance", [("cosine", "posterior"), ("linear", "forward"), ("linear", "posterior")]
)
@pytest.mark.parametrize(
    "name, eta",
    [("eps", None), ("x0", None), ("v", None), ("eps", 0.0), ("v", 0.5), ("x0", 1.0), ("previous-step", None)],
)
def test_fused_gaussian_step_equals_the_reference_path(schedule, reverse_variance, name, eta) -> None:
    T, B = 50, 6
    proc = GaussianProcess(T, schedule, reverse_variance=reverse_variance)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(B, 3, 2, generator=g, dtype=torch.float64)
    out = torch.randn(B, 3, 2, generator=g, dtype=torch.float64)
    jumps = [j for j in JUMPS if name != "previous-step" or j[0] - j[1] == 1]
    for t_i, s_i in jumps:
        t, s = torch.full((B,), t_i), torch.full((B,), s_i)
        expected, p = reference_step(proc, name, out, x_t, t, s, eta, torch.Generator().manual_seed(7))
        # Shared jump, as ints and as constant tensors (the scalar, cached coefficients) ...
        for args in ((t_i, s_i), (t, s)):
            got = proc.step(out, x_t, *args, parametrization=name, eta=eta, generator=torch.Generator().manual_seed(7))
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        # ... and float32 data.
        got32 = proc.step(
            out.float(), x_t.float(), t, s, parametrization=name, eta=eta, generator=torch.Generator().manual_seed(7)
        )
        assert got32.dtype == torch.float32
        expected32, _ = reference_step(proc, name, out, x_t, t, s, eta, torch.Generator().manual_seed(7), torch.float32)
        torch.testing.assert_close(got32.double(), expected32, rtol=1e-5, atol=1e-5)
        # The distribution itself (reverse): same mean and variance.
        rev = proc.reverse(out, x_t, t, s, parametrization=name, eta=eta)
        torch.testing.assert_close(rev.mean, p.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rev.variance.expand_as(p.variance), p.variance, rtol=1e-12, atol=0)
    # Per-example jumps (the tensor path) in one batch.
    pairs = [j for j in itertools.islice(itertools.cycle(jumps), B)]
    t, s = torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])
    expected, p = reference_step(proc, name, out, x_t, t, s, eta, torch.Generator().manual_seed(3))
    got = proc.step(out, x_t, t, s, parametrization=name, eta=eta, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(proc.reverse(out, x_t, t, s, name, eta=eta).mean, p.mean, rtol=1e-12, atol=1e-12)


def test_fused_step_is_not_used_for_a_custom_x0_from_output() -> None:
    """A subclass overriding x0_from_output loses x0_is_linear, so step (ints, as sample() calls it)
    runs its x0_from_output: the clipped estimate, not the built-in one."""
    from diffkit.processes.gaussian import EpsParametrization

    class Clipped(EpsParametrization):
        def x0_from_output(self, process, output, x_t, t):
            return super().x0_from_output(process, output, x_t, t).clamp(-1, 1)

    assert EpsParametrization.x0_is_linear and not Clipped.x0_is_linear
    proc = GaussianProcess(20)
    g = torch.Generator().manual_seed(0)
    x_t, out = 5 * torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    t, s = torch.full((4,), 10), torch.full((4,), 9)
    p = proc.reverse_from_x0(x_t, Clipped().x0_from_output(proc, out, x_t, t), t, s)
    got = proc.reverse(out, x_t, t, s, Clipped())
    torch.testing.assert_close(got.mean, p.mean, rtol=0, atol=0)
    expected, _ = reference_step(proc, "eps", out, x_t, t, s, None, torch.Generator().manual_seed(1))
    clipped = proc.step(out, x_t, 10, 9, Clipped(), generator=torch.Generator().manual_seed(1))
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(clipped, p.mean + p.variance.sqrt() * z)
    assert not torch.allclose(clipped, expected)


def test_fused_step_is_not_used_by_a_process_overriding_reverse_sample() -> None:
    """A GaussianProcess subclass overriding reverse_sample loses fuses_reverse_step: sample() runs it."""
    calls = []

    class Mean(GaussianProcess):
        def reverse_sample(self, p, s, generator=None):
            calls.append(1)
            return p.mean

    assert GaussianProcess.fuses_reverse_step and not Mean.fuses_reverse_step
    proc = Mean(10)
    x = sample(proc, lambda x, t: torch.zeros_like(x), (3, 2), "eps", generator=torch.Generator().manual_seed(0))
    assert len(calls) == 10 and x.shape == (3, 2)


def test_q_sample_follows_the_schedule_table() -> None:
    """q_sample reads alpha_bar at every call (no table cached from it): edited in place or replaced,
    for every data rank and dtype."""
    proc = GaussianProcess(10, "linear")
    t, noise = torch.tensor([3, 7]), torch.full((2, 2, 3), 0.5, dtype=torch.float64)
    x0 = torch.ones(2, 2, 3, dtype=torch.float64)

    def expected():
        ab = proc.alpha_bar[t].view(2, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    for edit in (
        lambda: None,
        lambda: proc.alpha_bar.mul_(0.5).index_fill_(0, torch.tensor([0]), 1.0),
        lambda: setattr(proc, "alpha_bar", proc.alpha_bar.sqrt()),
    ):
        edit()
        want = expected()
        torch.testing.assert_close(proc.q_sample(x0, t, noise).x_t, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(proc.q_sample(x0[:, 0, 0], t, noise[:, 0, 0]).x_t, want[:, 0, 0], rtol=1e-12, atol=0)
        torch.testing.assert_close(proc.q_sample(x0.float(), t, noise.float()).x_t, want.float())


@pytest.mark.parametrize("eta", [None, 0.0])
def test_sampling_loop_equals_a_loop_of_reference_steps(eta) -> None:
    T, B = 30, 5
    proc = GaussianProcess(T, "cosine")

    def denoiser(x, t):  # any deterministic function of (x_t, t)
        return torch.sin(x) * (t.to(x.dtype) / T).reshape(-1, 1)

    ts = [30, 21, 9, 4, 0]
    got = sample(proc, denoiser, (B, 2), "eps", timesteps=ts, generator=torch.Generator().manual_seed(5), eta=eta)
    g = torch.Generator().manual_seed(5)
    x = proc.prior_sample((B, 2), generator=g, dtype=torch.get_default_dtype())
    for t_i, s_i in zip(ts[:-1], ts[1:], strict=True):
        t, s = torch.full((B,), t_i), torch.full((B,), s_i)
        x, _ = reference_step(proc, "eps", denoiser(x, t), x, t, s, eta, g)
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- categorical
def mixing_cases():
    """(process, pi) for uniform, absorbing and marginal noise with zeros in pi."""
    yield CategoricalProcess(6, 40, "uniform", "cosine")
    yield CategoricalProcess(6, 40, "absorbing", "linear")
    yield CategoricalProcess(6, 40, "marginal", "cosine", marginals=[0.0, 1, 2, 0, 3, 0])
    yield CategoricalProcess(6, 40, "uniform", NoiseSchedule.from_betas(torch.full((40,), 1e-9, dtype=torch.float64)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(4))
def test_two_pass_mixing_posterior_equals_the_dense_one(case, dtype) -> None:
    proc = list(mixing_cases())[case]
    kernel = proc.kernel
    g = torch.Generator().manual_seed(case)
    B, L, N, K = 12, 9, proc.num_states, proc.num_classes
    t = torch.tensor([1, 2, 3, 5, 10, 20, 39, 40, 40, 40, 7, 1])
    s = torch.tensor([0, 1, 0, 4, 9, 3, 38, 0, 39, 20, 6, 0])
    x_t = torch.randint(0, N, (B, L), generator=g)
    logits = 6 * torch.randn(B, L, K, generator=g, dtype=torch.float64)
    logits[0] = -1e4  # all mass on class 0 (or underflowed) in example 0
    logits[0, :, 0] = 0
    probs = F.pad(logits.softmax(-1), (0, N - K)).to(dtype)
    probs[1, 0] = F.one_hot(x_t[1, 0].clamp_max(K - 1), N).to(dtype)  # a one-hot x0 distribution
    ab_t = kernel.alpha_bar[t].reshape(B, 1, 1)
    ab_s = kernel.alpha_bar[s].reshape(B, 1, 1)
    dense = _mixing_posterior_dense(x_t, probs, ab_t, ab_s, kernel.pi)
    fast = mixing_posterior(x_t, probs, ab_t, ab_s, kernel.pi)
    u = _mixing_posterior_unnormalized(x_t, probs, ab_t, ab_s, kernel.pi)
    assert u is not None and bool((u >= 0).all())
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=0, atol=2e-6)
    torch.testing.assert_close(fast, dense, **tol)
    torch.testing.assert_close(u / u.sum(-1, keepdim=True), dense, **tol)
    # Through the process (kernel.posterior) with autograd on: the out-of-place branch.
    leaf = probs.clone().requires_grad_(True)
    with torch.enable_grad():
        post = kernel.posterior(x_t, leaf, t, s)
        post.sum().backward()
    torch.testing.assert_close(post.detach(), dense, **tol)
    assert bool(torch.isfinite(leaf.grad).all())


def test_mixing_posterior_falls_back_to_the_dense_formula_on_zero_mass() -> None:
    proc = CategoricalProcess(4, 10, "uniform")
    x_t = torch.tensor([[0, 1, 2]])
    probs = torch.zeros(1, 3, 4)
    ab_t, ab_s = proc.kernel.alpha_bar[5].reshape(1, 1, 1), proc.kernel.alpha_bar[4].reshape(1, 1, 1)
    assert _mixing_posterior_unnormalized(x_t, probs, ab_t, ab_s, proc.kernel.pi) is None
    torch.testing.assert_close(
        mixing_posterior(x_t, probs, ab_t, ab_s, proc.kernel.pi),
        _mixing_posterior_dense(x_t, probs, ab_t, ab_s, proc.kernel.pi),
    )


def assert_frequencies(ids: torch.Tensor, probs: torch.Tensor, what: str) -> None:
    """ids (n,) drawn from probs (K,): every class within 5 binomial standard errors, and classes
    of probability 0 never drawn."""
    n, K = ids.shape[0], probs.shape[0]
    freq = torch.bincount(ids, minlength=K).double() / n
    p = probs.double() / probs.double().sum()
    assert freq.shape[0] == K, f"{what}: an id out of range"
    assert bool((freq[p == 0] == 0).all()), f"{what}: drew a class of probability 0"
    bad = (freq - p).abs() > 5 * (p * (1 - p) / n).sqrt() + 1e-12
    assert not bool(bad.any()), f"{what}: frequencies {freq[bad].tolist()} vs probabilities {p[bad].tolist()}"


@pytest.mark.parametrize("K", [1, 2, 5, 17, 64, 1025])
def test_inverse_cdf_sampler_frequencies(K) -> None:
    g = torch.Generator().manual_seed(K)
    n = 40000
    w = torch.rand(K, generator=g) ** 3
    w[torch.randperm(K, generator=g)[: K // 3]] = 0  # zeros anywhere, including (maybe) the ends
    if K > 1:
        w[-1] = 0
        w[0] = 1e-30 * (K > 2)  # tiny but positive
    if not bool((w > 0).any()):
        w[0] = 1.0
    for scale, dtype in ((1.0, torch.float32), (1e-20, torch.float32), (3.0, torch.float64)):
        ids = inverse_cdf_sample((scale * w).to(dtype).expand(n, K), torch.Generator().manual_seed(1))
        assert ids.shape == (n,) and ids.dtype == torch.long
        assert_frequencies(ids, w, f"K={K} scale={scale} {dtype}")
    # Leading dims kept.
    assert inverse_cdf_sample(torch.ones(20, 5, K), torch.Generator().manual_seed(2)).shape == (20, 5)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_inverse_cdf_sampler_refuses_rows_it_cannot_draw_from(bad) -> None:
    """A row of zeros, or one holding NaN / inf, raises (it used to draw uniformly, which put the
    absorbing mask id into "clean" samples); the message counts the bad rows."""
    w = torch.rand(6, 4, 5, generator=torch.Generator().manual_seed(0))
    w[2, 1] = 0.0
    w[2, 1, 3] = bad
    with pytest.raises(ValueError, match=r"weights: 1 of 24 rows of categorical weights are all zero or not finite"):
        inverse_cdf_sample(w, torch.Generator().manual_seed(1))


def test_categorical_step_refuses_a_non_finite_output() -> None:
    """sample() with a denoiser that returns NaN logits raises instead of drawing uniformly."""
    proc = CategoricalProcess(5, 10, "absorbing")
    with pytest.raises(ValueError, match="not finite"):
        sample(
            proc,
            lambda x, t: torch.full((*x.shape, 5), float("nan")),
            (3, 4),
            "x0",
            generator=torch.Generator().manual_seed(0),
        )


def test_inverse_cdf_sampler_is_reproducible_and_depends_on_the_seed() -> None:
    w = torch.rand(64, 300, generator=torch.Generator().manual_seed(0))
    a = inverse_cdf_sample(w, torch.Generator().manual_seed(1))
    b = inverse_cdf_sample(w, torch.Generator().manual_seed(1))
    c = inverse_cdf_sample(w, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("case", range(4))
def test_categorical_step_draws_from_the_exact_reverse_distribution(case) -> None:
    proc = list(mixing_cases())[case]
    g = torch.Generator().manual_seed(10 + case)
    n, L, K, N = 30000, 3, proc.num_classes, proc.num_states
    logits = (2 * torch.randn(1, L, K, generator=g)).expand(n, L, K)
    for t_i, s_i in ((40, 39), (12, 0), (3, 1), (1, 0)):
        x_t = torch.randint(0, N, (1, L), generator=g).expand(n, L).contiguous()
        t, s = torch.full((n,), t_i), torch.full((n,), s_i)
        exact = _mixing_posterior_dense(
            x_t[:1],
            F.pad(logits[:1].softmax(-1), (0, N - K)).double(),
            proc.kernel.alpha_bar[t_i].reshape(1, 1, 1),
            proc.kernel.alpha_bar[s_i].reshape(1, 1, 1),
            proc.kernel.pi,
        )[0]  # (L, N)
        ids = proc.step(logits, x_t, t, s, "x0", generator=g)
        for j in range(L):
            assert_frequencies(ids[:, j], exact[j], f"{proc.kind} t={t_i} s={s_i} element {j}")


def fused_cases():
    """mixing_cases() plus class counts with a short last block (K = 10, 1000) and K = 1024."""
    yield from mixing_cases()
    yield CategoricalProcess(10, 40, "absorbing", "cosine")
    yield CategoricalProcess(1000, 40, "uniform", "cosine")
    yield CategoricalProcess(1024, 40, "absorbing", "cosine")


def reference_draw(proc, logits, x_t, t, s, generator):
    """The pre-fusion step: softmax, pad to num_states, the two-pass weights, inverse_cdf_sample."""
    ab = proc.kernel.alpha_bar
    ab_t, ab_s = ab[t].reshape(-1, 1, 1), ab[s].reshape(-1, 1, 1)
    p = F.pad(logits.softmax(-1), (0, proc.num_states - proc.num_classes))
    w = _mixing_posterior_unnormalized(x_t, p, ab_t, ab_s, proc.kernel.pi)
    if w is None:
        w = _mixing_posterior_dense(x_t, p, ab_t, ab_s, proc.kernel.pi)
    return inverse_cdf_sample(w, generator)


@pytest.mark.parametrize("case", range(7))
def test_fused_step_sampler_equals_the_reference_draws(case) -> None:
    """Same uniforms (one per element, in order), same ids: exactly in float64, and in float32 up to
    uniforms within rounding of a CDF boundary. Per-example t (s = 0 included), masked and unmasked
    x_t mixed."""
    proc = list(fused_cases())[case]
    g = torch.Generator().manual_seed(30 + case)
    B, L, K, N = 64, 16, proc.num_classes, proc.num_states
    logits = 3 * torch.randn(B, L, K, generator=g, dtype=torch.float64)
    logits[..., torch.randperm(K, generator=g)[: K // 4]] = -torch.inf  # classes of probability 0
    t = torch.randint(1, 41, (B,), generator=g)
    s = torch.where(torch.rand(B, generator=g) < 0.25, 0, t - 1)
    x_t = proc.q_sample(torch.randint(0, K, (B, L), generator=g), t, generator=g).x_t
    ab = proc.kernel.alpha_bar
    for dtype in (torch.float64, torch.float32):
        lg = logits.to(dtype)
        fused = _mixing_step_sample(
            lg, x_t, ab[t].reshape(-1, 1, 1), ab[s].reshape(-1, 1, 1), proc.kernel.pi, torch.Generator().manual_seed(5)
        )
        ref = reference_draw(proc, lg, x_t, t, s, torch.Generator().manual_seed(5))
        step = proc.step(lg, x_t, t, s, "x0", generator=torch.Generator().manual_seed(5))
        if fused is None:  # an alpha_bar_t that rounds to 1 in the data dtype: the dense formula decides
            assert case == 3 and torch.equal(step, ref)
            continue
        assert fused is not None and fused.shape == x_t.shape and fused.dtype == torch.long
        assert torch.equal(step, fused if K >= categorical.FUSED_MIN_CLASSES else ref)
        same = (fused == ref).double().mean().item()
        assert same == 1.0 if dtype == torch.float64 else same >= 0.999, (dtype, same)
        # never a class of probability 0: a -inf logit, or the mask state at s = 0
        exact = _mixing_posterior_dense(
            x_t, F.pad(lg.softmax(-1), (0, N - K)), ab[t].reshape(-1, 1, 1), ab[s].reshape(-1, 1, 1), proc.kernel.pi
        )
        assert bool((exact.gather(-1, fused.unsqueeze(-1)) > 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_step_frequencies_with_short_blocks_and_zeros(dtype, monkeypatch) -> None:
    """K = 10 absorbing (blocks 3, 3, 3, 1, then the mask), the fused sampler forced: frequencies
    against the exact posterior, zero-probability classes (a -inf logit; the mask at s = 0) never
    drawn; float16 logits go through the float32 softmax."""
    monkeypatch.setattr(categorical, "FUSED_MIN_CLASSES", 1)
    proc = CategoricalProcess(10, 40, "absorbing", "cosine")
    g = torch.Generator().manual_seed(40)
    n, K, N = 30000, proc.num_classes, proc.num_states
    base = 2 * torch.randn(1, 4, K, generator=g)
    base[0, :, 3] = -torch.inf
    base[0, 1, 9] = -torch.inf  # the last data class, alone in its block
    logits = base.to(dtype).expand(n, 4, K)
    x_t = torch.tensor([[K, K, 2, K]]).expand(n, 4).contiguous()
    for t_i, s_i in ((30, 29), (5, 0), (2, 1)):
        t, s = torch.full((n,), t_i), torch.full((n,), s_i)
        exact = _mixing_posterior_dense(
            x_t[:1],
            F.pad(logits[:1].float().softmax(-1), (0, N - K)).double(),
            proc.kernel.alpha_bar[t_i].reshape(1, 1, 1),
            proc.kernel.alpha_bar[s_i].reshape(1, 1, 1),
            proc.kernel.pi,
        )[0]  # (4, N)
        ids = proc.step(logits, x_t, t, s, "x0", generator=g)
        for j in range(4):
            assert_frequencies(ids[:, j], exact[j], f"{dtype} t={t_i} s={s_i} element {j}")


@pytest.mark.parametrize("case", range(3))
def test_mixing_q_sample_frequencies_and_noise_round_trip(case) -> None:
    proc = list(mixing_cases())[case]
    g = torch.Generator().manual_seed(20 + case)
    n, K = 30000, proc.num_classes
    x0 = torch.tensor([[0, 1, K - 1]]).expand(n, 3).contiguous()
    for t_i in (1, 7, 25, 40):
        out = proc.q_sample(x0, t_i, generator=g)
        assert out.noise.shape == x0.shape
        exact = proc.marginal(x0[:1], t_i)[0]  # (3, N)
        for j in range(3):
            assert_frequencies(out.x_t[:, j], exact[j], f"{proc.kind} t={t_i} element {j}")
        assert torch.equal(proc.q_sample(x0, t_i, noise=out.noise).x_t, out.x_t)
    # Gumbel noise of shape (..., N) still selects the Gumbel-max path and reproduces itself.
    gumbel = -torch.log(-torch.log(torch.rand(n, 3, proc.num_states, generator=g)))
    a = proc.q_sample(x0, 5, noise=gumbel)
    assert torch.equal(a.noise, gumbel) and torch.equal(proc.q_sample(x0, 5, noise=gumbel).x_t, a.x_t)


# ------------------------------------------------------------------- the training step's paths
def _product():
    from diffkit import ProductProcess

    return ProductProcess({"x": GaussianProcess(30), "c": CategoricalProcess(5, 30, "absorbing")})


MEAN_LOSS_CASES = [
    ("gaussian eps", lambda: GaussianProcess(30), "eps", "simple"),
    ("gaussian x0", lambda: GaussianProcess(30), "x0", "simple"),
    ("gaussian v", lambda: GaussianProcess(30, "linear"), "v", "simple"),
    ("gaussian previous-step", lambda: GaussianProcess(30), "previous-step", "simple"),
    ("gaussian v min-snr", lambda: GaussianProcess(30), None, "simple"),
    ("gaussian eps hybrid", lambda: GaussianProcess(30), "eps", "hybrid"),
    ("categorical x0 uniform", lambda: CategoricalProcess(6, 30, "uniform"), "x0", "simple"),
    ("categorical x0 absorbing kl", lambda: CategoricalProcess(6, 30, "absorbing"), "x0", "kl"),
    ("categorical previous-step", lambda: CategoricalProcess(6, 30, "uniform"), "previous-step", "simple"),
    ("product", _product, "x0", "simple"),
]


def _draw(proc, gen):
    if isinstance(proc, GaussianProcess):
        return torch.randn(7, 3, 2, generator=gen, dtype=torch.float64)
    if isinstance(proc, CategoricalProcess):
        return torch.randint(0, proc.num_classes, (7, 5), generator=gen)
    return {"x": torch.randn(7, 4, generator=gen, dtype=torch.float64), "c": torch.randint(0, 5, (7, 3), generator=gen)}


def _output(proc, param, x_t, gen):
    if isinstance(x_t, dict):
        return {f: _output(p, param[f], x_t[f], gen) for f, p in proc.fields.items()}
    return torch.randn(param.output_shape(proc, x_t), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("case, make, name, kind", MEAN_LOSS_CASES, ids=[c[0] for c in MEAN_LOSS_CASES])
def test_trusted_values_change_nothing_but_the_checks(case, make, name, kind) -> None:
    """The training step after its first batch runs q_sample and loss inside trusted_values: the
    same draws, losses and gradients as the checked calls."""
    from diffkit._checks import trusted_values
    from diffkit.processes.gaussian import VParametrization

    proc = make()
    param = proc.get_parametrization(VParametrization(min_snr_gamma=2.0) if name is None else name)
    gen = torch.Generator().manual_seed(3)
    x0 = _draw(proc, gen)
    t = proc.sample_timesteps(7, generator=gen)
    x_t, noise = proc.q_sample(x0, t, generator=torch.Generator().manual_seed(5))
    with trusted_values():
        x_t2, noise2 = proc.q_sample(x0, t, generator=torch.Generator().manual_seed(5))
    for a, b in ((x_t, x_t2), (noise, noise2)):
        for key in a if isinstance(a, dict) else [None]:
            assert torch.equal(a if key is None else a[key], b if key is None else b[key])
    out = _output(proc, param, x_t, gen)
    leaves = list(out.values()) if isinstance(out, dict) else [out]
    for leaf in leaves:
        leaf.requires_grad_(True)
    expected = proc.loss(out, x0, x_t, t, noise, param, kind).mean()
    grads = torch.autograd.grad(expected, leaves)
    with trusted_values():
        got = proc.loss(out, x0, x_t, t, noise, param, kind).mean()
    assert torch.equal(got, expected)
    for g, e in zip(torch.autograd.grad(got, leaves), grads, strict=True):
        assert torch.equal(g, e)


def test_loss_uses_an_overridden_simple_loss() -> None:
    from diffkit.processes.gaussian import EpsParametrization

    class Huber(EpsParametrization):
        def simple_loss(self, process, output, x0, x_t, t, noise):
            return F.huber_loss(output, noise, reduction="none")

    proc = GaussianProcess(20)
    x0 = torch.randn(6, 2, dtype=torch.float64)
    t = torch.arange(1, 7)
    x_t, noise = proc.q_sample(x0, t)
    out = 3 * torch.randn(6, 2, dtype=torch.float64)
    got = proc.loss(out, x0, x_t, t, noise, Huber()).mean()
    torch.testing.assert_close(got, F.huber_loss(out, noise))
    assert not torch.allclose(got, F.mse_loss(out, noise))


def test_all_finite_is_exact_where_the_sum_overflows() -> None:
    from diffkit._checks import all_finite

    big = torch.full((4,), 3e38)  # finite, but the float32 sum overflows to inf
    assert not torch.isfinite(big.sum())
    assert all_finite(big) and all_finite(torch.full((4,), 6e4, dtype=torch.float16)) and all_finite(torch.empty(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            x = torch.zeros(3, 5, dtype=dtype)
            x[2, 4] = bad
            assert not all_finite(x)
    pair = torch.tensor([float("inf"), -float("inf")])  # sums to NaN
    assert not all_finite(pair)


def test_sampling_loop_passes_fresh_int64_times_and_reuses_s_as_the_next_t() -> None:
    """The denoiser sees (B,) int64 tensors holding t_i at every step of the grid."""
    proc = GaussianProcess(10)
    seen = []

    def net(x, t):
        seen.append(t.clone())
        assert t.dtype == torch.long and t.shape == (4,)
        return torch.zeros_like(x)

    sample(proc, net, (4, 2), "eps", num_steps=5, generator=torch.Generator().manual_seed(0))
    assert [int(t[0]) for t in seen] == [10, 8, 6, 4, 2]
    assert all(bool((t == t[0]).all()) for t in seen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gaussian_q_sample_draws_the_randn_noise_of_the_generator(dtype) -> None:
    """q_sample's noise is torch.randn(x0.shape) from the generator, also for a non-contiguous x0,
    and the generator ends in the same state (so the next draws agree too)."""
    proc = GaussianProcess(50)
    for x0 in (torch.ones(6, 3, 2, dtype=dtype), torch.ones(2, 6, dtype=dtype).t(), torch.ones(5, dtype=dtype)):
        t = torch.arange(1, x0.shape[0] + 1)
        g_a, g_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        noised = proc.q_sample(x0, t, generator=g_a)
        expected = torch.randn(x0.shape, dtype=dtype, generator=g_b)
        assert noised.noise.is_contiguous() and torch.equal(noised.noise, expected)
        assert torch.equal(torch.rand(3, generator=g_a), torch.rand(3, generator=g_b))
        assert torch.allclose(noised.x_t, proc.q_sample(x0, t, noise=expected).x_t)


@pytest.mark.parametrize(
    "make, name, kwargs",
    [
        (lambda: GaussianProcess(20), "eps", {}),
        (lambda: GaussianProcess(20, "linear"), "x0", {}),
        (lambda: GaussianProcess(20), "v", {}),
        (lambda: GaussianProcess(20), "previous-step", {}),
        (lambda: GaussianProcess(20, reverse_variance="learned"), "eps", {"kind": "hybrid"}),
        (lambda: GaussianProcess(20, reverse_variance="learned"), "v", {}),
        (lambda: GaussianProcess(20), "eps", {"kind": "kl"}),
        (lambda: CategoricalProcess(5, 20, "absorbing"), "x0", {}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mean_loss_is_the_batch_mean_of_loss_with_its_gradient(make, name, kwargs, dtype) -> None:
    from diffkit.processes.gaussian import EpsParametrization

    proc = make()
    gen = torch.Generator().manual_seed(3)
    if isinstance(proc, GaussianProcess):
        x0 = torch.randn(16, 3, 4, generator=gen, dtype=dtype)
    else:
        x0 = torch.randint(0, 5, (16, 7), generator=gen)
    t = proc.sample_timesteps(16, generator=gen)
    x_t, noise = proc.q_sample(x0, t, generator=gen)
    params = [name] if name != "eps" or kwargs else [name, EpsParametrization(min_snr_gamma=5.0)]
    for param in params:
        shape = proc.get_parametrization(param).output_shape(proc, x_t)
        out = torch.randn(shape, generator=gen, dtype=dtype if isinstance(proc, GaussianProcess) else None)
        a, b = out.clone().requires_grad_(), out.clone().requires_grad_()
        fused = proc.mean_loss(a, x0, x_t, t, noise, param, **kwargs)
        want = proc.loss(b, x0, x_t, t, noise, param, **kwargs).mean()
        assert fused.ndim == 0 and fused.dtype == want.dtype
        tol = dict(rtol=1e-6, atol=0) if dtype == torch.float32 else dict(rtol=1e-13, atol=0)
        torch.testing.assert_close(fused, want, **tol)
        fused.backward()
        want.backward()
        torch.testing.assert_close(a.grad, b.grad, **tol)


def test_trusted_values_blocks_nest_and_restore_the_setting_they_found() -> None:
    """Entering sets the flag, leaving restores the enclosing block's setting, also when the block raises."""
    from diffkit._checks import check_values, trusted_values

    assert check_values()
    with trusted_values():
        assert not check_values()
        with trusted_values(False):
            assert check_values()
        assert not check_values()
        with pytest.raises(RuntimeError, match="inside"):
            with trusted_values(False):
                raise RuntimeError("inside")
        assert not check_values()
    assert check_values()
    with pytest.raises(ValueError, match="0..T = 0..10"):  # value checks run again after the blocks
        GaussianProcess(10).q_sample(torch.zeros(2, 3), torch.tensor([1, 11]))


def test_a_parametrization_of_another_process_is_named_and_rejected() -> None:
    """get_parametrization accepts an instance of one of the process's classes as it is, and names
    the class and the valid choices for any other Parametrization."""
    from diffkit.processes.categorical import CategoricalX0
    from diffkit.processes.gaussian import EpsParametrization

    gaussian = GaussianProcess(10)
    eps = EpsParametrization()
    assert gaussian.get_parametrization(eps) is eps
    with pytest.raises(ValueError, match=r"CategoricalX0 cannot be used with GaussianProcess; expected one of \["):
        gaussian.get_parametrization(CategoricalX0())
    with pytest.raises(TypeError, match="expected a name or a Parametrization, got int"):
        gaussian.get_parametrization(3)  # type: ignore[arg-type]
