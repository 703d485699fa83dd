"""Conformance kit: run ``check_process(process, example_x0)`` on your own ForwardProcess.

It checks the contract against independent computations, not against golden numbers:

1. shapes and dtypes of every primitive;
2. Chapman-Kolmogorov consistency of ``marginal`` and ``transition``:
   discrete  q(x_t | x0) = sum_i q(x_s = i | x0) q(x_t | x_s = i)   (Qbar_s Q_{t|s} = Qbar_t),
   Gaussian  a linear-Gaussian transition composed with q(x_s | x0) gives q(x_t | x0);
3. ``posterior`` against brute-force Bayes, q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0):
   enumeration over states (discrete) or a numerical product of densities on a grid (Gaussian);
4. ``q_sample``'s empirical statistics against ``marginal`` (discrete: a pooled chi-square test per
   element whose false-alarm rate does not depend on the number or size of the cells; Gaussian:
   mean and variance within 5 standard errors);
5. for every parametrization: the oracle output (a network that knows x0) gives a zero
   simple loss (Gaussian) and finite loss / ELBO terms; random outputs give finite terms too;
6. ``prior_sample`` and ``prior_term``.

Continuous-time processes (``is_continuous_time``) are checked the same way at float times
(t, s) in [0, 1]; ``sample_timesteps`` must give floats in (0, 1].

A process whose ``marginal`` returns a Tensor of probabilities (..., K) is treated as discrete;
one returning a (mean, variance) pair as a diagonal Gaussian.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffkit.processes.base import ForwardProcess

__all__ = ["check_process", "ConformanceError", "pooled_chi_square_p_value"]


class ConformanceError(AssertionError):
    """A ForwardProcess broke its contract; the message says which check and by how much."""


def _fail(check: str, msg: str) -> None:
    raise ConformanceError(f"[{check}] {msg}")


def _close(check: str, a: Tensor, b: Tensor, atol: float, what: str) -> None:
    err = (a.double() - b.double()).abs().max().item()
    if not err <= atol:
        _fail(check, f"{what}: max |difference| {err:.3e} > tolerance {atol:.1e}")


def _continuous_pairs(generator: torch.Generator) -> list[tuple[float, float]]:
    pairs = {(1.0, 0.0), (1.0, 0.9), (0.5, 0.0)}
    for _ in range(3):
        t = float(torch.rand((), dtype=torch.float64, generator=generator)) * 0.98 + 0.02
        pairs.add((t, t * float(torch.rand((), dtype=torch.float64, generator=generator))))
    return sorted(pairs)


def _time(process: ForwardProcess, value: float, batch: int) -> Tensor:
    """(B,) times in the process's type: float64 for continuous-time processes, else int64."""
    return torch.full((batch,), value, dtype=torch.float64 if process.is_continuous_time else torch.long)


def _pairs(T: int, generator: torch.Generator) -> list[tuple[int, int]]:
    pairs = {(1, 0), (T, 0), (T, T - 1) if T > 1 else (1, 0)}
    for _ in range(3):
        t = int(torch.randint(1, T + 1, (1,), generator=generator))
        s = int(torch.randint(0, t, (1,), generator=generator))
        pairs.add((t, s))
    return sorted(pairs)


def check_process(
    process: ForwardProcess,
    example_x0: Tensor,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    num_draws: int = 4000,
    atol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Check ``process`` against the ForwardProcess contract; raise ConformanceError on the first failure.

    Args:
        process: the process under test (any device; checks run where its buffers live).
        example_x0: (B, ...) a small valid clean batch (B >= 1; a few elements suffice).
        pairs: (t, s) jumps to check; default: (1, 0), (T, 0), (T, T - 1) and three random pairs
            (continuous time: floats (1, 0), (1, 0.9), (0.5, 0) and three random pairs).
        num_draws: draws per element for the q_sample statistics.
        atol: tolerance of the exact identities (Chapman-Kolmogorov, Bayes, normalization).
        seed: seeds every random choice, so a failure reproduces.

    Raises:
        ConformanceError: naming the check, the (t, s) pair and the error found.
    """
    gen = torch.Generator().manual_seed(seed)
    process.validate_x0(example_x0)
    B = example_x0.shape[0]
    ts = process.sample_timesteps(1000, generator=gen)
    if process.is_continuous_time:
        _check_continuous_times(process, ts)
        default_pairs: Sequence[tuple[float, float]] = _continuous_pairs(gen)
    else:
        T = process.num_steps
        if not isinstance(T, int) or T < 1:
            _fail("num_steps", f"expected an int >= 1, got {T!r}")
        if ts.dtype != torch.long or int(ts.min()) < 1 or int(ts.max()) > T:
            _fail(
                "sample_timesteps",
                f"expected int64 values in 1..{T}, got {ts.dtype} in [{int(ts.min())}, {int(ts.max())}]",
            )
        default_pairs = _pairs(T, gen)
    discrete = discrete_probs(process, example_x0)
    for t, s in pairs or default_pairs:
        tt, ss = _time(process, t, B), _time(process, s, B)
        noised = process.q_sample(example_x0, tt, generator=gen)
        if noised.x_t.shape != example_x0.shape or noised.x_t.dtype != example_x0.dtype:
            _fail(
                "q_sample",
                f"x_t has {tuple(noised.x_t.shape)} {noised.x_t.dtype}, expected {tuple(example_x0.shape)} "
                f"{example_x0.dtype}",
            )
        again = process.q_sample(example_x0, tt, noise=noised.noise).x_t
        if not torch.equal(again, noised.x_t):
            _fail("q_sample", f"passing back the returned noise does not reproduce x_t at t = {t}")
        if discrete:
            _check_discrete(process, example_x0, noised.x_t, tt, ss, atol, num_draws, gen)
        else:
            _check_gaussian(process, example_x0, noised.x_t, tt, ss, atol, num_draws, gen)
        _check_losses(process, example_x0, noised.x_t, noised.noise, tt, gen)
    prior = process.prior_sample(tuple(example_x0.shape), generator=gen)
    if prior.shape != example_x0.shape or prior.dtype != example_x0.dtype:
        _fail(
            "prior_sample",
            f"got {tuple(prior.shape)} {prior.dtype}, expected {tuple(example_x0.shape)} {example_x0.dtype}",
        )
    L_T = process.prior_term(example_x0)
    if L_T.shape != (B,) or not torch.isfinite(L_T).all() or (L_T < -atol).any():
        _fail("prior_term", f"expected finite non-negative (B,) values, got {L_T}")


def _check_continuous_times(process: ForwardProcess, ts: Tensor) -> None:
    if process.num_steps is not None:
        _fail("num_steps", f"a continuous-time process has no T: expected None, got {process.num_steps!r}")
    if not ts.is_floating_point() or float(ts.min()) <= 0 or float(ts.max()) > 1:
        _fail(
            "sample_timesteps",
            f"expected float values in (0, 1], got {ts.dtype} in [{float(ts.min())}, {float(ts.max())}]",
        )
    grid = process.sampling_grid(4)
    if len(grid) != 5 or grid[0] != 1.0 or grid[-1] != 0.0 or any(a <= b for a, b in zip(grid, grid[1:], strict=False)):
        _fail("sampling_grid", f"expected 5 decreasing floats from 1.0 to 0.0 for 4 steps, got {grid}")


def _check_discrete(
    process: ForwardProcess,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    s: Tensor,
    atol: float,
    num_draws: int,
    gen: torch.Generator,
) -> None:
    t_i, s_i = t[0].item(), s[0].item()
    m_t = process.marginal(x0, t).double()  # (B, ..., K)
    m_s = process.marginal(x0, s).double() if s_i > 0 else None
    K = m_t.shape[-1]
    if m_t.shape != (*x0.shape, K) or (m_t < -atol).any():
        _fail("marginal", f"expected non-negative probabilities of shape {(*x0.shape, 'K')}, got {tuple(m_t.shape)}")
    _close("marginal", m_t.sum(-1), torch.ones_like(m_t[..., 0]), atol, f"rows at t = {t_i} must sum to 1")
    if m_s is None:  # q(x_0 | x0) is the data itself
        m_s = torch.nn.functional.one_hot(x0, K).double()
    # trans[..., i, j] = q(x_t = j | x_s = i)
    trans = torch.stack([process.transition(torch.full_like(x0, i), t, s).double() for i in range(K)], -2)
    _close(
        "chapman-kolmogorov",
        (m_s.unsqueeze(-1) * trans).sum(-2),
        m_t,
        atol,
        f"sum_i q(x_s=i|x0) q(x_t|x_s=i) vs q(x_t|x0) at (t, s) = ({t_i}, {s_i})",
    )
    post = process.posterior(x_t, x0, t, s).double()
    like = trans.gather(-1, x_t[..., None, None].expand(*x_t.shape, K, 1)).squeeze(-1)  # q(x_t | x_s = i)
    bayes = m_s * like
    bayes = bayes / bayes.sum(-1, keepdim=True)
    _close("posterior", post, bayes, atol, f"posterior vs brute-force Bayes at (t, s) = ({t_i}, {s_i})")
    draws = process.q_sample(x0.repeat(num_draws, *([1] * (x0.ndim - 1))), t.repeat(num_draws), generator=gen).x_t
    counts = torch.nn.functional.one_hot(draws, K).double().reshape(num_draws, -1, K).sum(0)  # (elements, K)
    probs = m_t.reshape(-1, K).clamp_min(0)
    impossible = (counts > 0) & (probs <= 0)
    if bool(impossible.any()):
        _fail("q_sample", f"drew a state of probability 0 under marginal at t = {t_i}")
    # One pooled chi-square test per element at level FALSE_ALARM / (number of elements): the
    # false-alarm rate of the whole check does not depend on how many cells there are or how small.
    level = FALSE_ALARM / counts.shape[0]
    for element in range(counts.shape[0]):
        p_value = pooled_chi_square_p_value(counts[element], probs[element])
        if p_value < level:
            _fail(
                "q_sample",
                f"empirical frequencies differ from marginal at t = {t_i} (element {element}: pooled chi-square p = "
                f"{p_value:.2e} < {level:.1e})",
            )


#: The chance that check_process rejects a correct process's q_sample at one (t, s) pair.
FALSE_ALARM = 1e-6


def pooled_chi_square_p_value(counts: Tensor, probs: Tensor, min_expected: float = 5.0) -> float:
    """Pearson's chi-square goodness-of-fit p-value of ``counts`` (K,) under ``probs`` (K,), with
    the cells of expected count below ``min_expected`` pooled into one (then merged with the next
    smallest cell until it reaches ``min_expected``), so the chi-square approximation holds however
    small some probabilities are: a single draw of a 1e-5 cell no longer counts as hundreds of
    standard errors.

    Args:
        counts: (K,) observed counts (float), summing to n.
        probs: (K,) probabilities summing to 1.

    Returns:
        The p-value (1.0 when all the mass is in one pooled cell: nothing to test).
    """
    from scipy.stats import chi2

    n = float(counts.sum())
    expected = (n * probs.double()).tolist()
    observed = counts.double().tolist()
    cells = sorted(zip(expected, observed, strict=True))
    pooled_e = pooled_o = 0.0
    while cells and (pooled_e < min_expected or cells[0][0] < min_expected):
        e, o = cells.pop(0)
        pooled_e, pooled_o = pooled_e + e, pooled_o + o
    if pooled_e > 0:
        cells.append((pooled_e, pooled_o))
    if len(cells) < 2:
        return 1.0
    stat = sum((o - e) ** 2 / e for e, o in cells)
    return float(chi2.sf(stat, len(cells) - 1))


def _check_gaussian(
    process: ForwardProcess,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    s: Tensor,
    atol: float,
    num_draws: int,
    gen: torch.Generator,
) -> None:
    t_i, s_i = t[0].item(), s[0].item()
    mean_t, var_t = (v.double() for v in process.marginal(x0, t))
    # The transition q(x_t | x_s) must be linear-Gaussian: mean = a x_s + c.
    zero = process.transition(torch.zeros_like(x0), t, s)
    one = process.transition(torch.ones_like(x0), t, s)
    a, c, var_ts = one.mean.double() - zero.mean.double(), zero.mean.double(), zero.variance.double()
    if s_i > 0:
        mean_s, var_s = (v.double() for v in process.marginal(x0, s))
    else:
        mean_s, var_s = x0.double(), torch.zeros_like(var_ts)
    _close(
        "chapman-kolmogorov",
        a * mean_s + c,
        mean_t.expand_as(mean_s),
        atol,
        f"composed mean at (t, s) = ({t_i}, {s_i})",
    )
    _close(
        "chapman-kolmogorov",
        (a**2 * var_s + var_ts).expand_as(mean_s),
        var_t.expand_as(mean_s),
        atol,
        f"composed variance at (t, s) = ({t_i}, {s_i})",
    )
    post = process.posterior(x_t, x0, t, s)
    if s_i > 0:  # numerical product of densities on a grid around q(x_s | x0)
        z = torch.linspace(-12, 12, 24001, dtype=torch.float64)
        xs = mean_s.unsqueeze(-1) + var_s.sqrt().unsqueeze(-1) * z  # (B, ..., G)
        log_w = -0.5 * z**2 - 0.5 * (
            x_t.double().unsqueeze(-1) - a.unsqueeze(-1) * xs - c.unsqueeze(-1)
        ) ** 2 / var_ts.unsqueeze(-1)
        w = torch.softmax(log_w, -1)
        num_mean = (w * xs).sum(-1)
        num_var = (w * (xs - num_mean.unsqueeze(-1)) ** 2).sum(-1)
        _close("posterior", post.mean, num_mean, max(atol, 1e-6), f"mean vs numerical Bayes at (t, s) = ({t_i}, {s_i})")
        _close(
            "posterior",
            post.variance.expand_as(post.mean),
            num_var,
            max(atol, 1e-6),
            f"variance vs numerical Bayes at (t, s) = ({t_i}, {s_i})",
        )
    else:
        _close("posterior", post.mean, x0, max(atol, 1e-5), "q(x_0 | x_t, x0) must be a point mass at x0")
    draws = process.q_sample(x0.repeat(num_draws, *([1] * (x0.ndim - 1))), t.repeat(num_draws), generator=gen).x_t
    draws = draws.double().reshape(num_draws, *x0.shape)
    se_mean = (var_t / num_draws).sqrt()
    if ((draws.mean(0) - mean_t).abs() > 5 * se_mean + 1e-7).any():
        _fail("q_sample", f"empirical mean differs from marginal mean by more than 5 standard errors at t = {t_i}")
    se_var = var_t * (2 / (num_draws - 1)) ** 0.5
    if ((draws.var(0) - var_t).abs() > 5 * se_var + 1e-7).any():
        _fail(
            "q_sample", f"empirical variance differs from marginal variance by more than 5 standard errors at t = {t_i}"
        )


def _check_losses(
    process: ForwardProcess, x0: Tensor, x_t: Tensor, noise: Tensor | None, t: Tensor, gen: torch.Generator
) -> None:
    for name in process.parametrizations:
        param = process.get_parametrization(name)
        oracle = param.oracle_output(process, x0, x_t, t, noise)
        shape = param.output_shape(process, x_t)
        if tuple(oracle.shape) != shape:
            _fail(
                f"parametrization {name!r}",
                f"oracle output shape {tuple(oracle.shape)} differs from output_shape {shape}",
            )
        random_out = torch.randn(shape, generator=gen, dtype=oracle.dtype)
        for label, out in (("oracle", oracle), ("random", random_out)):
            param.check_output(process, out, x_t)
            for kind in ("simple", "kl", "hybrid"):
                loss = process.loss(out, x0, x_t, t, noise, param, kind=kind)
                if loss.shape != (x0.shape[0],) or not torch.isfinite(loss).all():
                    _fail(f"loss {name!r}/{kind}", f"{label} output gave {loss}")
        simple = process.loss(oracle, x0, x_t, t, noise, param, kind="simple")
        if not discrete_probs(process, x0) and simple.abs().max() > 1e-6:
            _fail(f"loss {name!r}/simple", f"the oracle output must give zero loss, got {simple}")


def discrete_probs(process: ForwardProcess, x0: Tensor) -> bool:
    """True when the process's marginals are probability vectors (a discrete process)."""
    return isinstance(process.marginal(x0, _time(process, 1, x0.shape[0]).to(x0.device)), Tensor)
