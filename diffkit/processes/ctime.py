"""Continuous-time discrete diffusion: schedules alpha(t), time checks and the shared base class.

Time contract (docs/plugins.md, "Continuous time"): a process with ``is_continuous_time = True``
takes t as a floating-point tensor of shape (B,) (or a Python float) with values in [0, 1]; t = 0
is clean data, t = 1 the prior. An integer t (Python int or an integer tensor) is a TypeError, as
a float t is for a discrete-time process. Its ``num_steps`` is None (there is no T). The sampler
walks ``process.sampling_grid(steps)`` = linspace(1, 0, steps + 1) and ``nll_bound`` integrates
the continuous-time ELBO over t by a stratified Monte Carlo estimate (:func:`stratified_times`).

alpha(t) is the probability that a token is still its clean value at time t (alpha(0) = 1,
decreasing). Schedules (MDLM, Sahoo et al. 2024, sec. 3 and appendix E.1; sigma(t) = -log alpha(t)
is MDLM's "total noise"):

    loglinear   alpha(t) = 1 - t                 alpha'(t) = -1              (sigma = -log(1 - t))
    linear      alpha(t) = exp(-s_max t)         alpha'(t) = -s_max alpha(t) (sigma linear in t,
                                                                              s_max = log(1e4))
    cosine      alpha(t) = cos(pi t / 2)         alpha'(t) = -pi/2 sin(pi t / 2)

Every alpha and alpha' is evaluated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from diffkit._checks import check_values
from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess

__all__ = [
    "ContinuousSchedule",
    "ContinuousScheduleName",
    "make_continuous_schedule",
    "ContinuousTimeProcess",
    "continuous_times",
    "continuous_time_grid",
    "stratified_times",
]

ContinuousScheduleName = Literal["loglinear", "linear", "cosine"]

#: s_max of the "linear" schedule: alpha(1) = 1e-4.
LINEAR_SIGMA_MAX = math.log(1e4)


class ContinuousSchedule(NamedTuple):
    """alpha(t) and its derivative, both float64 tensors -> float64 tensors of the same shape."""

    name: str
    alpha: Callable[[Tensor], Tensor]
    alpha_prime: Callable[[Tensor], Tensor]


def _loglinear() -> ContinuousSchedule:
    return ContinuousSchedule("loglinear", lambda t: 1 - t, lambda t: -torch.ones_like(t))


def _linear() -> ContinuousSchedule:
    s = LINEAR_SIGMA_MAX
    return ContinuousSchedule("linear", lambda t: torch.exp(-s * t), lambda t: -s * torch.exp(-s * t))


def _cosine() -> ContinuousSchedule:
    h = math.pi / 2
    return ContinuousSchedule("cosine", lambda t: torch.cos(h * t), lambda t: -h * torch.sin(h * t))


_SCHEDULES: dict[str, Callable[[], ContinuousSchedule]] = {
    "loglinear": _loglinear,
    "linear": _linear,
    "cosine": _cosine,
}


def make_continuous_schedule(name: ContinuousScheduleName) -> ContinuousSchedule:
    """The schedule called ``name`` (module docstring).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if name not in _SCHEDULES:
        raise ValueError(f"schedule: unknown continuous-time schedule {name!r}; expected one of {sorted(_SCHEDULES)}")
    return _SCHEDULES[name]()


# ---------------------------------------------------------------------------- time checks
def continuous_times(t: Tensor | float, batch_size: int, device: torch.device | None, name: str = "t") -> Tensor:
    """Validate a continuous time argument and return it as a floating (B,) tensor.

    Args:
        t: a Python float or a floating-point tensor of shape (), (1,) or (B,), values in [0, 1].
        batch_size: B.
        device: where the result lives.
        name: the argument's name in error messages.

    Returns:
        (B,) floating tensor (a Python float becomes float64).

    Raises:
        TypeError: an int / integer tensor (the time of a discrete-time process), a bool, or
            anything that is not a float or a tensor.
        ValueError: a wrong shape, NaN, or a value outside [0, 1].
    """
    if isinstance(t, bool) or (isinstance(t, Tensor) and t.dtype == torch.bool):
        raise TypeError(f"{name}: expected a float time in [0, 1] for a continuous-time process, got bool")
    if isinstance(t, int) or (isinstance(t, Tensor) and not t.is_floating_point()):
        found = f"dtype {t.dtype}" if isinstance(t, Tensor) else f"the int {t}"
        raise TypeError(
            f"{name}: a continuous-time process takes float times in [0, 1] (a floating-point tensor), got {found}; "
            "integer steps 0..T belong to discrete-time processes"
        )
    if isinstance(t, float):
        if not 0.0 <= t <= 1.0:  # also catches NaN; checked without a device read
            raise ValueError(f"{name}: expected continuous times in [0, 1], got min {t}, max {t}")
        t = torch.full((batch_size,), t, dtype=torch.float64, device=device)
    elif isinstance(t, Tensor):
        t = t.to(device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(()).expand(batch_size)
        if t.shape != (batch_size,):
            raise ValueError(f"{name}: expected shape ({batch_size},) to match the batch, got {tuple(t.shape)}")
    else:
        raise TypeError(f"{name}: expected a float or a floating-point tensor, got {type(t).__name__}")
    if check_values() and t.numel():  # a host sync: skipped inside trusted_values (after a first full check)
        lo, hi = (float(v) for v in torch.aminmax(t))
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise ValueError(f"{name}: expected continuous times in [0, 1], got min {lo}, max {hi}")
    return t


def continuous_time_grid(steps: int) -> list[float]:
    """The sampler's grid: ``steps + 1`` floats linspace(1, 0), first exactly 1.0, last exactly 0.0.

    Raises:
        ValueError: steps is not an int >= 1.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"num_steps: expected a number of sampling steps >= 1 for a continuous-time process, got {steps!r}"
        )
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    grid[0], grid[-1] = 1.0, 0.0
    return grid


def check_time_grid(times: Sequence[float]) -> list[float]:
    """An explicit grid for a continuous-time sampler: floats, strictly decreasing, <= 1, ending at 0.

    Raises:
        TypeError: an int in the grid (integer steps are discrete time).
        ValueError: not strictly decreasing from <= 1 down to 0.
    """
    values = list(times)
    if any(isinstance(v, (bool, int)) or (isinstance(v, Tensor) and not v.is_floating_point()) for v in values):
        raise TypeError(f"timesteps: a continuous-time process takes float times in [0, 1], got {values}")
    ts = [float(v) for v in values]
    if len(ts) < 2 or ts[-1] != 0.0 or ts[0] > 1.0 or any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps: expected a strictly decreasing list of floats from <= 1 down to 0.0, got {ts}")
    return ts


def stratified_times(
    batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Low-discrepancy training times: t_i = (i + 1 - u) / B for one u ~ U[0, 1) per batch.

    Each t_i is uniform on ((i) / B, (i + 1) / B], so every t_i is marginally U(0, 1] and the batch
    mean of any integrand f(t_i) is unbiased for int_0^1 f(t) dt with the variance of a stratified
    estimator (MDLM's "antithetic" sampling, Sahoo et al. 2024, appendix B). Never exactly 0.

    Returns:
        (B,) float32 times in (0, 1].
    """
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand((), dtype=torch.float64, device=device, generator=generator)
    i = torch.arange(batch_size, dtype=torch.float64, device=device)
    return ((i + 1 - u) / batch_size).to(torch.get_default_dtype())


# ---------------------------------------------------------------------------- base class
class ContinuousTimeProcess(ForwardProcess):
    """A ForwardProcess on t in [0, 1] (module docstring): time checks, training times, the
    sampling grid and the continuous-time ELBO as the ``kl`` loss.

    Subclasses give the schedule (``self.schedule``), the primitives, and
    :meth:`elbo_integrand_terms`, the per-element integrand of the continuous ELBO

        -log p(x0) <= KL(q(x_1 | x0) || p(x_1)) + int_0^1 E_{x_t ~ q(x_t | x0)} [ l(x_t, x0, t) ] dt

    where l is the limit of KL(q(x_s | x_t, x0) || p(x_s | x_t)) / (t - s) as s -> t (theory page,
    "Continuous time"). The ``decoder`` term of the discrete bound vanishes because alpha(0) = 1.

    Class attributes:
        is_continuous_time: True.
        default_sampling_steps: the grid size when ``sample(num_steps=None)``.
    """

    is_continuous_time: ClassVar[bool] = True
    default_sampling_steps: ClassVar[int] = 128
    schedule: ContinuousSchedule

    @property
    def num_steps(self) -> None:  # type: ignore[override]  # the documented exception: no T in continuous time
        """None: a continuous-time process has no T."""
        return None

    # -- schedule on (B,) times
    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t), float64, same shape as t."""
        return self.schedule.alpha(t.to(torch.float64))

    def alpha_prime(self, t: Tensor) -> Tensor:
        """d alpha / dt at t, float64, same shape as t."""
        return self.schedule.alpha_prime(t.to(torch.float64))

    # -- times
    def timesteps(
        self, t: Tensor | float, batch_size: int, device: torch.device | None = None, name: str = "t"
    ) -> Tensor:
        """Validate t (see :func:`continuous_times`)."""
        return continuous_times(t, batch_size, device, name)

    def step_pair(
        self, t: Tensor | float, s: Tensor | float | None, batch_size: int, device: torch.device | None
    ) -> tuple[Tensor, Tensor]:
        """Validate a reverse jump 0 <= s < t <= 1 (floats) and return both as (B,) float tensors;
        s is required (there is no t - 1). The s < t check reads values (skipped inside
        ``trusted_values``, where :func:`~diffkit.sample` runs after checking its grid)."""
        if s is None:
            raise ValueError("s: a continuous-time process needs an explicit s < t (there is no 't - 1')")
        t = continuous_times(t, batch_size, device, "t")
        s = continuous_times(s, batch_size, device, "s")
        if check_values() and batch_size and bool((s >= t).any()):
            raise ValueError(f"s: expected 0 <= s < t for a reverse jump, got s = {s.tolist()} and t = {t.tolist()}")
        return t, s

    def sample_timesteps(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Training times by :func:`stratified_times`: (B,) float32 in (0, 1]."""
        return stratified_times(batch_size, device, generator)

    def sampling_grid(self, steps: int | None = None) -> list[float]:  # type: ignore[override]  # is_continuous_time
        """linspace(1, 0, steps + 1) as floats (None: :attr:`default_sampling_steps`)."""
        return continuous_time_grid(self.default_sampling_steps if steps is None else steps)

    def check_sampling_grid(self, times: Sequence[float]) -> list[float]:
        """Validate an explicit grid given to ``sample(timesteps=...)`` (see :func:`check_time_grid`)."""
        return check_time_grid(times)

    # -- the continuous ELBO
    def elbo_integrand_terms(
        self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, parametrization: Parametrization
    ) -> Tensor:
        """Per-element integrand l(x_t, x0, t) of the continuous ELBO, nats per unit time."""
        raise NotImplementedError

    def vlb_terms(self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, parametrization: Parametrization) -> Tensor:
        """The continuous ELBO's integrand per element (what ``vlb`` sums and ``nll_bound`` integrates)."""
        return self.elbo_integrand_terms(output, x0, x_t, t, parametrization)
