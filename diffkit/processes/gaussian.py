"""Gaussian (DDPM) diffusion: pure formulas, the eps / x0 / v / previous-step parametrizations,
and :class:`GaussianProcess`.

Every formula is for any 0 <= s < t (DESIGN.md), with alpha_{t|s} = alpha_bar_t / alpha_bar_s:

    q(x_t | x0)      = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)                       (G1)
    q(x_t | x_s)     = N(sqrt(alpha_{t|s}) x_s, (1 - alpha_{t|s}) I)                      (G2)
    q(x_s | x_t, x0) = N(mu, var I),                                                     (G3)
        mu  = sqrt(alpha_bar_s) (1 - alpha_{t|s}) / (1 - alpha_bar_t) x0
            + sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t
        var = (1 - alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t)
    x0  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)                            (G4)
    v   = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0                                 (G5)
    x0  = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v                                  (G6)

Because mu in (G3) is linear in x0, the derived reverse step mu(x_t, E[x0 | x_t]) has the exact
mean of q(x_s | x_t) = E_{x0 ~ q(x0 | x_t)}[q(x_s | x_t, x0)] (DESIGN.md (1)).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import all_finite
from diffkit.parametrizations import PreviousStepParametrization, X0BasedParametrization
from diffkit.processes.base import ForwardProcess, Noised, expand_to
from diffkit.processes.gaussian_bounded import discretized_gaussian_log_likelihood
from diffkit.processes.gaussian_variance import frozen_mean_output, learned_reverse, split_learned_output
from diffkit.processes.schedules import ScheduleLike, make_schedule

__all__ = [
    "GaussianParams",
    "GaussianProcess",
    "gaussian_marginal",
    "gaussian_transition",
    "gaussian_posterior",
    "ddim_reverse",
    "x0_from_eps",
    "eps_from_x0",
    "x0_from_v",
    "v_from_x0",
    "gaussian_kl",
    "gaussian_nll",
    "EpsParametrization",
    "X0Parametrization",
    "VParametrization",
    "GaussianPreviousStep",
]


class GaussianParams(NamedTuple):
    """A diagonal Gaussian N(mean, variance). ``variance`` broadcasts against ``mean``."""

    mean: Tensor
    variance: Tensor


# ------------------------------------------------------------------------ pure formulas
def gaussian_marginal(x0: Tensor, alpha_bar_t: Tensor) -> GaussianParams:
    """q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), (G1); Ho et al. 2020 eq. 4.

    Args:
        x0: (B, ...) float clean data.
        alpha_bar_t: (B, 1, ..., 1) float, broadcastable to x0.

    Returns:
        GaussianParams with mean (B, ...) and variance (B, 1, ..., 1).
    """
    return GaussianParams(alpha_bar_t.sqrt() * x0, 1 - alpha_bar_t)


def gaussian_transition(x_s: Tensor, alpha_ts: Tensor) -> GaussianParams:
    """q(x_t | x_s) = N(sqrt(alpha_{t|s}) x_s, (1 - alpha_{t|s}) I), (G2).

    Args:
        x_s: (B, ...) float.
        alpha_ts: (B, 1, ..., 1) alpha_bar_t / alpha_bar_s.
    """
    return GaussianParams(alpha_ts.sqrt() * x_s, 1 - alpha_ts)


def gaussian_posterior(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor) -> GaussianParams:
    """q(x_s | x_t, x0) for any s < t, (G3); Ho et al. 2020 eqs. 6-7 for s = t - 1.

    Args:
        x_t: (B, ...) float noisy data at t.
        x0: (B, ...) float clean data (or an estimate of it).
        alpha_bar_t: (B, 1, ..., 1), with alpha_bar_t < alpha_bar_s.
        alpha_bar_s: (B, 1, ..., 1).

    Returns:
        GaussianParams: mean (B, ...), variance (B, 1, ..., 1) (0 where s = 0).
    """
    # Coefficients in the dtype of the alpha_bar arguments (pass float64 to avoid the
    # cancellation in 1 - alpha_{t|s} at small t), cast to the data's dtype before use.
    alpha_ts = alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s.sqrt() * (1 - alpha_ts) / (1 - alpha_bar_t)
    coef_xt = alpha_ts.sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    variance = (1 - alpha_ts) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    dt = x_t.dtype
    return GaussianParams(coef_x0.to(dt) * x0 + coef_xt.to(dt) * x_t, variance.to(dt))


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), (G4); Ho et al. 2020 eq. 4 solved for x0."""
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t), the inverse of (G4)."""
    return (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v, (G6); Salimans & Ho 2022 sec. 4."""
    return alpha_bar_t.sqrt() * x_t - (1 - alpha_bar_t).sqrt() * v


def v_from_x0(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 with eps from (G4), i.e. (G5)."""
    eps = eps_from_x0(x_t, x0, alpha_bar_t)
    return alpha_bar_t.sqrt() * eps - (1 - alpha_bar_t).sqrt() * x0


def ddim_reverse(x_t: Tensor, x0_hat: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, eta: float) -> GaussianParams:
    """DDIM's generalized reverse step (Song et al. 2021 eq. 12), any s < t.

        sigma^2 = eta^2 var,  var from (G3)
        mean    = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat

    eta = 1 gives exactly q(x_s | x_t, x0_hat) of (G3); eta = 0 is the deterministic DDIM step.
    """
    variance = eta**2 * gaussian_posterior(x_t, x0_hat, alpha_bar_t, alpha_bar_s).variance
    eps_hat = eps_from_x0(x_t, x0_hat, alpha_bar_t)
    mean = alpha_bar_s.sqrt() * x0_hat + (1 - alpha_bar_s - variance).clamp_min(0).sqrt() * eps_hat
    return GaussianParams(mean, variance)


def gaussian_kl(q: GaussianParams, p: GaussianParams) -> Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per element, nats.

    KL = 0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1).
    Variances are clamped at the dtype's smallest normal number so a zero posterior variance
    (s = 0) stays finite; the ELBO selects the decoder term there.
    """
    tiny = torch.finfo(q.mean.dtype).tiny
    var_q = q.variance.clamp_min(tiny)
    var_p = p.variance.clamp_min(tiny)
    return 0.5 * (var_p.log() - var_q.log() + (var_q + (q.mean - p.mean) ** 2) / var_p - 1)


def gaussian_nll(x: Tensor, p: GaussianParams) -> Tensor:
    """-log N(x; mean, variance) per element, nats (a density: can be negative)."""
    var = p.variance.clamp_min(torch.finfo(x.dtype).tiny)
    return 0.5 * (math.log(2 * math.pi) + var.log() + (x - p.mean) ** 2 / var)


# ------------------------------------------------------------------------ parametrizations
class _GaussianX0Based(X0BasedParametrization):
    """Shared pieces of the eps / x0 / v parametrizations.

    Args:
        min_snr_gamma: if set, weight the simple loss by the min-SNR-gamma rule (Hang et al.
            2023): the x0-space weight min(SNR_t, gamma), expressed for this target as
            min(SNR_t, gamma) / mse_scale, with SNR_t = alpha_bar_t / (1 - alpha_bar_t).
    """

    def __init__(self, min_snr_gamma: float | None = None) -> None:
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma: expected a positive number or None, got {min_snr_gamma}")
        self.min_snr_gamma = min_snr_gamma

    def target(self, process: GaussianProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        raise NotImplementedError

    def mse_scale(self, snr: Tensor) -> Tensor:
        """||target error||^2 / ||x0 error||^2 for this target (x0: 1, eps: SNR, v: SNR + 1)."""
        raise NotImplementedError

    def output_shape(self, process: ForwardProcess, x_t: Tensor) -> tuple[int, ...]:
        if getattr(process, "reverse_variance", None) == "learned":  # mean channels, then variance channels (dim 1)
            return (x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:])
        return tuple(x_t.shape)

    def reverse(self, process, output, x_t, t, s, eta=None):
        if isinstance(process, GaussianProcess) and process.reverse_variance == "learned":
            if eta is not None:
                raise ValueError("eta: DDIM's eta replaces the reverse variance; with reverse_variance='learned' sample with eta=None")
            return learned_reverse(process, self, output, x_t, t, s)
        # Built-in targets are linear in (output, x_t): mean = P output + Q x_t with P, Q formed in
        # float64 (no float32 x0_hat that over- or underflows where alpha_bar_t is tiny).
        coefs = process._jump_coefficients(self, t, s, eta, None, x_t, output) if isinstance(process, GaussianProcess) else None
        if coefs is None:
            return super().reverse(process, output, x_t, t, s, eta=eta)
        P, Q, var, _ = coefs
        return GaussianParams(P * output + Q * x_t, var)

    def oracle_output(self, process: GaussianProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        if noise is None:
            noise = eps_from_x0(x_t, x0, process.alpha_bar_at(t, x_t))
        return self.target(process, x0, x_t, t, noise)

    def simple_loss(self, process: GaussianProcess, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        output = process.mean_output(output, x_t)
        target = self.oracle_output(process, x0, x_t, t, noise)
        if target.shape == output.shape and target.dtype == output.dtype:
            sq = F.mse_loss(output, target, reduction="none")  # (output - target) ** 2 in one autograd node
        else:
            sq = (output - target) ** 2
        if self.min_snr_gamma is None:
            return sq
        snr = process.snr_at(t, x_t)
        return sq * snr.clamp_max(self.min_snr_gamma) / self.mse_scale(snr)

    def mean_simple_loss(self, process, output, x0, x_t, t, noise):
        # F.mse_loss's mean: one op and one autograd node (its backward is one kernel).
        if self.min_snr_gamma is None and type(self).simple_loss is _GaussianX0Based.simple_loss:
            target = self.oracle_output(process, x0, x_t, t, noise)
            if target.shape == output.shape and target.dtype == output.dtype:
                return F.mse_loss(output, target)
        return super().mean_simple_loss(process, output, x0, x_t, t, noise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_snr_gamma={self.min_snr_gamma})"


class EpsParametrization(_GaussianX0Based):
    """The network predicts the total noise eps (Ho et al. 2020); x0_hat by (G4)."""

    name = "eps"

    def x0_from_output(self, process, output, x_t, t):
        return x0_from_eps(x_t, output, process.alpha_bar_at(t, x_t))

    def target(self, process, x0, x_t, t, noise):
        return noise

    def mse_scale(self, snr):
        return snr


class X0Parametrization(_GaussianX0Based):
    """The network predicts the clean sample x0 directly."""

    name = "x0"

    def x0_from_output(self, process, output, x_t, t):
        return output

    def target(self, process, x0, x_t, t, noise):
        return x0

    def mse_scale(self, snr):
        return torch.ones_like(snr)


class VParametrization(_GaussianX0Based):
    """The network predicts v (Salimans & Ho 2022); x0_hat by (G6)."""

    name = "v"

    def x0_from_output(self, process, output, x_t, t):
        return x0_from_v(x_t, output, process.alpha_bar_at(t, x_t))

    def target(self, process, x0, x_t, t, noise):
        ab = process.alpha_bar_at(t, x_t)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def mse_scale(self, snr):
        return snr + 1


class GaussianPreviousStep(PreviousStepParametrization):
    """The network predicts the mean of p(x_{t-1} | x_t) itself (Ho et al. 2020's "mu" baseline).

    Its variance is the process's ``reverse_variance`` choice. Loss: MSE to the posterior mean
    mu(x_t, x0) of (G3) with s = t - 1.
    """

    def output_shape(self, process, x_t):
        return tuple(x_t.shape)

    def reverse(self, process, output, x_t, t, s, eta=None):
        self.check_single_step(t, s)
        if eta is not None:
            raise ValueError("eta: DDIM's eta needs an x0 estimate; the 'previous-step' parametrization has none")
        return GaussianParams(output, process.reverse_variance_at(t, s, x_t))

    def oracle_output(self, process, x0, x_t, t, noise):
        return process._posterior(x_t, x0, t, t - 1).mean

    def simple_loss(self, process, output, x0, x_t, t, noise):
        return (output - self.oracle_output(process, x0, x_t, t, noise)) ** 2


#: x0_from_output of each built-in x0-based target -> (a_out, a_x) with x0_hat = a_out output + a_x x_t,
#: as functions of alpha_bar_t (float or float64 tensor) and a sqrt. A subclass that overrides
#: x0_from_output is not in this table and takes the general path.
_X0_LINEAR = {
    EpsParametrization.x0_from_output: lambda ab, sqrt: (-sqrt(1 - ab) / sqrt(ab), 1 / sqrt(ab)),  # (G4)
    X0Parametrization.x0_from_output: lambda ab, sqrt: (1.0, 0.0),
    VParametrization.x0_from_output: lambda ab, sqrt: (-sqrt(1 - ab), sqrt(ab)),  # (G6)
}


def _jump_terms(ab_t, ab_s, s_zero, x0_linear, eta, forward_variance: bool, sqrt, clamp0, select):
    """(P, Q, var, sigma) of p(x_s | x_t) = N(P output + Q x_t, var I), sampled with std sigma.

    Written once for Python floats (one jump shared by the batch) and float64 tensors (per-example
    jumps). ``x0_linear`` None: the output is the mean itself (previous-step). Same formulas as
    ``reverse_from_x0`` / ``ddim_reverse`` / ``reverse_variance_at`` / ``reverse_sample``, with the
    x0 estimate folded into the coefficients:
        mean = c0 x0_hat + ct x_t (G3),  x0_hat = a_out output + a_x x_t  =>  P = c0 a_out, Q = c0 a_x + ct
        DDIM: mean = sqrt(ab_s) x0_hat + d (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t), d = sqrt(1 - ab_s - sigma^2)
    """
    alpha_ts = ab_t / ab_s
    forward = 1 - alpha_ts
    posterior = forward * (1 - ab_s) / (1 - ab_t)
    if eta is None:
        var = forward if forward_variance else select(s_zero, forward, posterior)
    else:
        var = eta**2 * posterior
    if x0_linear is None:
        P, Q = 1.0, 0.0
    else:
        a_out, a_x = x0_linear(ab_t, sqrt)
        if eta is None:
            c0 = sqrt(ab_s) * forward / (1 - ab_t)
            ct = sqrt(alpha_ts) * (1 - ab_s) / (1 - ab_t)
        else:
            ct = sqrt(clamp0(1 - ab_s - var)) / sqrt(1 - ab_t)
            c0 = sqrt(ab_s) - ct * sqrt(ab_t)
        P, Q = c0 * a_out, c0 * a_x + ct
    return P, Q, var, select(s_zero, 0.0, sqrt(var))


def _jump_table(terms, like: Tensor) -> Tensor:
    """(N, 4) float64 from :func:`_jump_terms`' four values (tensors shaped like ``like`` (N,), or floats)."""
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=like.device).expand(like.shape) for v in terms], 1)


_SCALAR_OPS = (math.sqrt, lambda v: max(v, 0.0), lambda c, a, b: a if c else b)
_TENSOR_OPS = (torch.sqrt, lambda v: v.clamp_min(0), torch.where)


# ------------------------------------------------------------------------ process
ReverseVariance = Literal["posterior", "forward", "learned"]


class GaussianProcess(ForwardProcess):
    """DDPM's Gaussian forward process, any (s, t) jump, with the eps / x0 / v / previous-step
    parametrizations.

    Args:
        num_steps: T >= 1.
        schedule: "cosine" | "linear", a NoiseSchedule, or T betas. alpha_bar_T must be at
            least float32's smallest normal number (~1.2e-38), so sqrt(alpha_bar_t) is nonzero
            in float32.
        reverse_variance: variance of p(x_s | x_t): "posterior" (beta tilde, var of (G3)) or
            "forward" (1 - alpha_{t|s}, Ho et al.'s sigma_t^2 = beta_t). The decoder p(x0 | x_1)
            always uses beta_1, since the posterior variance is 0 at s = 0.

    Raises:
        ValueError: invalid schedule or reverse_variance.
    """

    parametrizations = {"eps": EpsParametrization, "x0": X0Parametrization, "v": VParametrization, "previous-step": GaussianPreviousStep}
    supports_eta: ClassVar[bool] = True
    supports_gaussian_solvers: ClassVar[bool] = True

    def __init__(self, num_steps: int = 1000, schedule: ScheduleLike = "cosine", reverse_variance: ReverseVariance = "posterior", decoder: Literal["gaussian", "discretized"] = "gaussian") -> None:
        super().__init__()
        sched = make_schedule(schedule, num_steps)
        if sched.alpha_bar[-1] <= 0:
            raise ValueError("schedule: a Gaussian process needs alpha_bar_T > 0 (x0 = (x_t - ...) / sqrt(alpha_bar_t) divides by it)")
        if sched.alpha_bar[-1] < torch.finfo(torch.float32).tiny:
            raise ValueError(
                f"schedule: alpha_bar_T = {sched.alpha_bar[-1].item():.3g} is below float32's smallest normal number "
                f"{torch.finfo(torch.float32).tiny:.3g}, so it is 0 in float32 data and x0 = (x_t - ...) / sqrt(alpha_bar_t) "
                "divides by 0 (NaN / inf losses near t = T); a Gaussian process needs alpha_bar_T >= 1.2e-38: use "
                "fewer steps or smaller betas"
            )
        if reverse_variance not in ("posterior", "forward", "learned"):
            raise ValueError(f"reverse_variance: unknown choice {reverse_variance!r}; expected one of ['forward', 'learned', 'posterior']")
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder: unknown choice {decoder!r}; expected one of ['discretized', 'gaussian']")
        self.reverse_variance = reverse_variance
        self.decoder = decoder
        self._num_steps = num_steps
        self.register_buffer("alpha_bar", sched.alpha_bar, persistent=False)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    # -- table look-ups: gathered in float64, cast to the data's dtype, shaped (B, 1, ..., 1)
    def _gather(self, values: Tensor, like: Tensor) -> Tensor:
        return expand_to(values, like.ndim).to(like.dtype if like.is_floating_point() else torch.float32)

    def alpha_bar_at(self, t: Tensor, like: Tensor) -> Tensor:
        """alpha_bar_t as (B, 1, ..., 1) in ``like``'s dtype."""
        return self._gather(self.alpha_bar[t], like)

    def snr_at(self, t: Tensor, like: Tensor) -> Tensor:
        """SNR_t = alpha_bar_t / (1 - alpha_bar_t) as (B, 1, ..., 1)."""
        ab = self.alpha_bar[t]
        return self._gather(ab / (1 - ab), like)

    def reverse_variance_at(self, t: Tensor, s: Tensor, like: Tensor) -> Tensor:
        """The variance of p(x_s | x_t): the ``reverse_variance`` choice, beta_1-style at s = 0."""
        if self.reverse_variance == "learned":
            raise ValueError("reverse_variance: 'learned' variances come from the network output; use an x0-based parametrization ('eps', 'x0', 'v')")
        ab_t, ab_s = self.alpha_bar[t], self.alpha_bar[s]
        forward = 1 - ab_t / ab_s
        if self.reverse_variance == "posterior":
            var = forward * (1 - ab_s) / (1 - ab_t)
            var = torch.where(s == 0, forward, var)
        else:
            var = forward
        return self._gather(var, like)

    # -- validation
    def validate_x0(self, x0, name: str = "x0") -> None:
        self._check_batch(x0, name)
        if not all_finite(x0):
            raise ValueError(f"{name}: found NaN or inf in Gaussian data")

    def _check_batch(self, x0, name: str = "batch") -> None:
        # Type, dtype and rank only: NaN / inf in x0 always gives a non-finite loss (x_t, and every
        # built-in target, carry it), and the module then names it through validate_x0.
        if not isinstance(x0, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(x0).__name__}")
        if not x0.is_floating_point():
            raise TypeError(f"{name}: a Gaussian field expects floating-point data, got dtype {x0.dtype}")
        if x0.ndim < 1:
            raise ValueError(f"{name}: expected shape (B, ...), got a scalar")

    def _check_pair(self, a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
        if a.shape != b.shape:
            raise ValueError(f"{name_b}: shape {tuple(b.shape)} does not match {name_a} {tuple(a.shape)}")

    # -- primitives
    def marginal(self, x0: Tensor, t: Tensor | int) -> GaussianParams:
        """q(x_t | x0), (G1). x0: (B, ...) float; t: (B,) int64 or int."""
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        return gaussian_marginal(x0, self.alpha_bar_at(t, x0))

    def transition(self, x_s: Tensor, t: Tensor | int, s: Tensor | int) -> GaussianParams:
        """q(x_t | x_s), (G2), for s < t."""
        self.validate_x0(x_s, "x_s")
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        return gaussian_transition(x_s, self._gather(self.alpha_bar[t] / self.alpha_bar[s], x_s))

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int, s: Tensor | int | None = None) -> GaussianParams:
        """q(x_s | x_t, x0), (G3), for 0 <= s < t; s defaults to t - 1.

        Args:
            x_t: (B, ...) float.
            x0: (B, ...) float, same shape.
            t, s: (B,) int64 or ints.

        Returns:
            GaussianParams(mean (B, ...), variance (B, 1, ..., 1)).
        """
        self.validate_x0(x_t, "x_t")
        self.validate_x0(x0)
        self._check_pair(x_t, x0, "x_t", "x0")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return self._posterior(x_t, x0, t, s)

    def _posterior(self, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> GaussianParams:
        ndim = x_t.ndim
        return gaussian_posterior(x_t, x0, expand_to(self.alpha_bar[t], ndim), expand_to(self.alpha_bar[s], ndim))

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Noised:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, eps ~ N(0, I) (Ho et al. eq. 4).

        Returns:
            Noised(x_t (B, ...), noise eps (B, ...)).
        """
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        if noise is not None:
            self._check_pair(x0, noise, "x0", "noise")
        return self._q_sample(x0, t, noise, generator)

    def _q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Noised:
        if noise is None:
            # The draws of torch.randn(x0.shape, ...) (randn is empty + normal_), without its
            # argument parsing (~3 us a step).
            noise = torch.empty_like(x0, memory_format=torch.contiguous_format).normal_(generator=generator)
        # sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t): square roots taken in float64, one look-up.
        a, b = self._marginal_table(x0.dtype, x0.ndim).index_select(0, t).unbind(1)
        return Noised(torch.addcmul(a * x0, b, noise), noise)

    def _marginal_table(self, dtype: torch.dtype, ndim: int) -> Tensor:
        """(T + 1, 2, 1, ..., 1) [sqrt(alpha_bar), sqrt(1 - alpha_bar)] with ndim - 1 trailing ones
        (a look-up by t broadcasts against (B, ...) data as it is), formed in float64, cast to
        ``dtype`` once."""
        cache = self._jump_cache()
        key = ("marginal", dtype, ndim)
        table = cache.get(key)
        if table is None:
            ab = self.alpha_bar
            table = torch.stack([ab.sqrt(), (1 - ab).sqrt()], 1).to(dtype)
            table = cache[key] = table.view(*table.shape, *(1,) * (ndim - 1))
        return table

    def prior_sample(self, shape, *, device=None, generator=None, mask=None, dtype: torch.dtype | None = None) -> Tensor:
        """x_T ~ N(0, I) of the given shape (B, ...) in ``dtype`` (default: torch's default
        float dtype); masked-out elements are 0."""
        x = torch.randn(tuple(shape), device=device, generator=generator, dtype=dtype or torch.get_default_dtype())
        return x if mask is None else x * mask.to(x.dtype)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x0) || N(0, I)) per element (L_T), nats."""
        t = torch.full((x0.shape[0],), self.num_steps, dtype=torch.long, device=x0.device)
        q = gaussian_marginal(x0, self.alpha_bar_at(t, x0))
        return gaussian_kl(q, GaussianParams(torch.zeros_like(x0), torch.ones_like(q.variance)))

    def kl(self, q: GaussianParams, p: GaussianParams) -> Tensor:
        return gaussian_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: GaussianParams) -> Tensor:
        """-log p(x0 | x_1) per element, nats: the Gaussian density (decoder="gaussian"; a density bound,
        can be negative), or the discretized Gaussian of 8-bit data in [-1, 1] (decoder="discretized",
        Ho et al. 2020 eq. 13; a code length, comparable to papers' bits/dim)."""
        if self.decoder == "discretized":
            return -discretized_gaussian_log_likelihood(x0, p.mean, p.variance)
        return gaussian_nll(x0, p)

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> GaussianParams:
        """p(x_s | x_t) = N(mu(x_t, x0_hat), var): (G3)'s mean with the ``reverse_variance``
        choice, or DDIM's step (Song et al. 2021 eq. 12) when ``eta`` is given."""
        ab_t, ab_s = self.alpha_bar_at(t, x_t), self.alpha_bar_at(s, x_t)
        if eta is not None:
            if eta < 0:
                raise ValueError(f"eta: expected eta >= 0, got {eta}")
            return ddim_reverse(x_t, x0_hat, ab_t, ab_s, eta)
        mean = self._posterior(x_t, x0_hat, t, s).mean
        return GaussianParams(mean, self.reverse_variance_at(t, s, x_t))

    def reverse_sample(self, p: GaussianParams, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s = mean + sqrt(variance) z, z ~ N(0, I); the mean itself where s = 0."""
        z = torch.randn(p.mean.shape, dtype=p.mean.dtype, device=p.mean.device, generator=generator)
        noisy = expand_to(s > 0, p.mean.ndim)
        return p.mean + torch.where(noisy, p.variance.sqrt() * z, torch.zeros_like(z))

    # -- the reverse step as P output + Q x_t + sigma z, coefficients formed in float64
    def _jump_coefficients(self, param, t: Tensor, s: Tensor, eta: float | None, same: tuple[int, int] | None, x_t: Tensor, output: Tensor):
        """(P, Q, var, sigma) for a built-in parametrization (see :func:`_jump_terms`), else None.

        ``same`` = (t, s) ints: Python floats, cached per jump; otherwise (B, 1, ..., 1) tensors in
        x_t's dtype, computed from float64 look-ups. None (use the general path) for other
        parametrizations, or an output whose shape or dtype differs from x_t's.
        """
        if self.reverse_variance == "learned":  # per-element variances from the output: the general path
            return None
        if isinstance(param, GaussianPreviousStep):
            x0_linear = None
            if same is None or same[0] - same[1] != 1:
                param.check_single_step(t, s)
            if eta is not None:
                raise ValueError("eta: DDIM's eta needs an x0 estimate; the 'previous-step' parametrization has none")
        else:
            x0_linear = _X0_LINEAR.get(type(param).x0_from_output) if isinstance(param, _GaussianX0Based) else None
            if x0_linear is None:
                return None
            if eta is not None and eta < 0:
                raise ValueError(f"eta: expected eta >= 0, got {eta}")
        if not isinstance(output, Tensor) or output.shape != x_t.shape or output.dtype != x_t.dtype or not x_t.is_floating_point():
            return None
        forward_variance = self.reverse_variance == "forward"
        if same is not None:
            key = (x0_linear, eta, forward_variance, same)
            cache = self._jump_cache()
            coefs = cache.get(key)
            if coefs is None:
                ab = self._alpha_bar_list
                try:
                    coefs = _jump_terms(ab[same[0]], ab[same[1]], same[1] == 0, x0_linear, eta, forward_variance, *_SCALAR_OPS)
                except (ZeroDivisionError, ValueError, OverflowError):  # a degenerate schedule: the tensor path gives inf / nan like the formulas
                    coefs = None
                if coefs is not None:
                    cache[key] = coefs
            if coefs is not None:
                return coefs
        if t.ndim == 1 and t.shape == s.shape and torch.equal(t - s, torch.ones_like(t)):
            # Per-example single steps (KL / hybrid losses): rows of a cached (T + 1, 4) table.
            table = self._single_step_table(x0_linear, eta, forward_variance)[t]
        else:
            ab_t, ab_s = self.alpha_bar[t], self.alpha_bar[s]
            table = _jump_table(_jump_terms(ab_t, ab_s, s == 0, x0_linear, eta, forward_variance, *_TENSOR_OPS), ab_t)
        table = table.to(x_t.dtype).reshape(t.shape[0], 4, *([1] * (x_t.ndim - 1)))
        return table.unbind(1)

    def _single_step_table(self, x0_linear, eta: float | None, forward_variance: bool) -> Tensor:
        """(T + 1, 4) float64: row t holds (P, Q, var, sigma) of the jump (t, t - 1) (row 0 unused),
        the same float64 formulas as the per-example path; cached with the per-jump scalars. Row 0
        is NaN (no jump ends at t = -1)."""
        cache = self._jump_cache()
        key = ("single-step table", x0_linear, eta, forward_variance)
        table = cache.get(key)
        if table is None:
            ab = self.alpha_bar
            t = torch.arange(1, ab.shape[0], device=ab.device)
            ab_t, ab_s = ab[t], ab[t - 1]
            rows = _jump_table(_jump_terms(ab_t, ab_s, t == 1, x0_linear, eta, forward_variance, *_TENSOR_OPS), ab_t)
            table = cache[key] = torch.cat([torch.full_like(rows[:1], float("nan")), rows])
        return table

    def _jump_cache(self) -> dict:
        """Per-jump scalar coefficients; rebuilt when the alpha_bar table is replaced or edited."""
        state = self.__dict__
        # The buffer read from _buffers directly: self.alpha_bar goes through nn.Module.__getattr__
        # (~1.5 us, and this runs at every training step and sampling jump).
        ab = state["_buffers"].get("alpha_bar")
        if ab is None:
            ab = self.alpha_bar
        if state.get("_jump_source") is not ab or state["_jump_version"] != ab._version:
            state["_jump_source"], state["_jump_version"] = ab, ab._version
            state["_alpha_bar_list"] = ab.tolist()
            state["_jump_cache_dict"] = {}
        cache = state["_jump_cache_dict"]
        if len(cache) > 100_000:
            cache.clear()
        return cache

    def _step(self, output, x_t, t, s, param, generator=None, eta=None, same=None):
        """x_s = P output + Q x_t + sigma z in three fused ops; the same law, and the same draw of z
        from ``generator``, as reverse_sample(param.reverse(...))."""
        coefs = self._jump_coefficients(param, t, s, eta, same, x_t, output)
        if coefs is None:
            return super()._step(output, x_t, t, s, param, generator, eta, same)
        P, Q, _, sigma = coefs
        if isinstance(P, float):
            mean = output * P if Q == 0.0 else torch.add(x_t * Q, output, alpha=P)
            if sigma != 0.0:
                # mean + sigma z in one op; torch.normal draws z as torch.randn does (same generator stream).
                return torch.normal(mean, sigma, generator=generator)
            torch.randn(x_t.shape, dtype=x_t.dtype, device=x_t.device, generator=generator)  # z unused: keep the stream
            return mean
        z = torch.randn(x_t.shape, dtype=x_t.dtype, device=x_t.device, generator=generator)
        return torch.addcmul(torch.addcmul(Q * x_t, P, output), sigma, z)

    def mean_output(self, output: Tensor, x_t: Tensor) -> Tensor:
        """The parametrization's part of a denoiser output: the first half along dim 1 with
        ``reverse_variance="learned"`` (checked: ValueError if the variance channels are missing), else ``output``."""
        return split_learned_output(output, x_t)[0] if self.reverse_variance == "learned" else output

    def _loss(self, output, x0, x_t, t, noise, param, kind="simple", hybrid_weight=1e-3, mask=None, reduction="none"):
        if self.reverse_variance == "learned" and kind == "hybrid":
            # Nichol & Dhariwal sec. 3.1: the KL term sees the mean as a constant (trains the variance only).
            total = super()._loss(output, x0, x_t, t, noise, param, "simple", mask=mask)
            total = total + hybrid_weight * super()._loss(frozen_mean_output(output), x0, x_t, t, noise, param, "kl", mask=mask)
            return total.mean() if reduction == "mean" else total
        return super()._loss(output, x0, x_t, t, noise, param, kind, hybrid_weight, mask, reduction)

    def extra_repr(self) -> str:
        extra = f", decoder={self.decoder!r}" if self.decoder != "gaussian" else ""
        return f"num_steps={self.num_steps}, reverse_variance={self.reverse_variance!r}{extra}"
