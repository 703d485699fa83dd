"""Gaussian (DDPM) diffusion: the eps / x0 / v / previous-step parametrizations and
:class:`GaussianProcess`.

The formulas (G1)-(G6) live in :mod:`diffkit.processes.gaussian_formulas` (re-exported here), the
fused reverse step in :mod:`diffkit.processes.gaussian_step`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import all_finite, check_values
from diffkit.parametrizations import PreviousStepParametrization, X0BasedParametrization
from diffkit.processes.base import ForwardProcess, Noised, expand_to
from diffkit.processes.gaussian_bounded import discretized_gaussian_log_likelihood
from diffkit.processes.gaussian_formulas import (
    GaussianParams,
    ddim_reverse,
    eps_from_x0,
    gaussian_kl,
    gaussian_marginal,
    gaussian_nll,
    gaussian_posterior,
    gaussian_transition,
    v_from_x0,
    x0_from_eps,
    x0_from_v,
)
from diffkit.processes.gaussian_step import fused_step, jump_coefficients
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


# ------------------------------------------------------------------------ parametrizations
class _GaussianX0Based(X0BasedParametrization):
    """Shared pieces of the eps / x0 / v parametrizations.

    ``fuses_mean_loss``: the training step's batch mean of the simple loss is one ``F.mse_loss``.

    Args:
        min_snr_gamma: if set, weight the simple loss by the min-SNR-gamma rule (Hang et al.
            2023): the x0-space weight min(SNR_t, gamma), expressed for this target as
            min(SNR_t, gamma) / mse_scale, with SNR_t = alpha_bar_t / (1 - alpha_bar_t).
    """

    fuses_mean_loss: ClassVar[bool] = True

    def __init__(self, min_snr_gamma: float | None = None) -> None:
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma: expected a positive number or None, got {min_snr_gamma}")
        self.min_snr_gamma = min_snr_gamma

    def target(self, process: GaussianProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        raise NotImplementedError

    def x0_coefficients(self, alpha_bar_t: float) -> tuple[float, float]:
        """(a_out, a_x) with x0_from_output = a_out output + a_x x_t at this alpha_bar_t, for a
        target with ``x0_is_linear``."""
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
                raise ValueError(
                    "eta: DDIM's eta replaces the reverse variance; with reverse_variance='learned' sample with "
                    "eta=None"
                )
            return learned_reverse(process, self, output, x_t, t, s)
        return super().reverse(process, output, x_t, t, s, eta=eta)

    def oracle_output(  # type: ignore[override]  # resolve_parametrization admits it only on a GaussianProcess
        self, process: GaussianProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        if noise is None:
            noise = eps_from_x0(x_t, x0, process.alpha_bar_at(t, x_t))
        return self.target(process, x0, x_t, t, noise)

    def simple_loss(  # type: ignore[override]  # resolve_parametrization admits it only on a GaussianProcess
        self, process: GaussianProcess, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        output = process.mean_output(output, x_t)
        target = self.oracle_output(process, x0, x_t, t, noise)
        same = target.shape == output.shape and target.dtype == output.dtype
        sq = F.mse_loss(output, target, reduction="none") if same else (output - target) ** 2  # one autograd node
        if self.min_snr_gamma is None:
            return sq
        snr = process.snr_at(t, x_t)
        return sq * snr.clamp_max(self.min_snr_gamma) / self.mse_scale(snr)

    def mean_simple_loss(  # type: ignore[override]  # resolve_parametrization admits it only on a GaussianProcess
        self, process: GaussianProcess, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        """``simple_loss(...).mean()``; without min-SNR weighting, one ``F.mse_loss`` (mean) to the
        target: every example has as many elements, so the mean of per-example means is the mean."""
        mean = process.mean_output(output, x_t)
        target = self.oracle_output(process, x0, x_t, t, noise)
        if self.min_snr_gamma is None and target.shape == mean.shape and target.dtype == mean.dtype:
            return F.mse_loss(mean, target)
        return self.simple_loss(process, output, x0, x_t, t, noise).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_snr_gamma={self.min_snr_gamma})"


class EpsParametrization(_GaussianX0Based):
    """The network predicts the total noise eps (Ho et al. 2020); x0_hat by (G4)."""

    name = "eps"

    x0_is_linear = True

    def x0_from_output(self, process, output, x_t, t):
        return x0_from_eps(x_t, output, process.alpha_bar_at(t, x_t))

    def x0_coefficients(self, alpha_bar_t: float) -> tuple[float, float]:
        """(G4): x0 = -sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t) eps + 1 / sqrt(alpha_bar_t) x_t."""
        return -math.sqrt(1 - alpha_bar_t) / math.sqrt(alpha_bar_t), 1 / math.sqrt(alpha_bar_t)

    def target(self, process, x0, x_t, t, noise):
        return noise

    def mse_scale(self, snr):
        return snr


class X0Parametrization(_GaussianX0Based):
    """The network predicts the clean sample x0 directly."""

    name = "x0"

    x0_is_linear = True

    def x0_from_output(self, process, output, x_t, t):
        return output

    def x0_coefficients(self, alpha_bar_t: float) -> tuple[float, float]:
        return 1.0, 0.0

    def target(self, process, x0, x_t, t, noise):
        return x0

    def mse_scale(self, snr):
        return torch.ones_like(snr)


class VParametrization(_GaussianX0Based):
    """The network predicts v (Salimans & Ho 2022); x0_hat by (G6)."""

    name = "v"

    x0_is_linear = True

    def x0_from_output(self, process, output, x_t, t):
        return x0_from_v(x_t, output, process.alpha_bar_at(t, x_t))

    def x0_coefficients(self, alpha_bar_t: float) -> tuple[float, float]:
        """(G6): x0 = -sqrt(1 - alpha_bar_t) v + sqrt(alpha_bar_t) x_t."""
        return -math.sqrt(1 - alpha_bar_t), math.sqrt(alpha_bar_t)

    def target(self, process, x0, x_t, t, noise):
        alpha_bar_t = process.alpha_bar_at(t, x_t)
        return alpha_bar_t.sqrt() * noise - (1 - alpha_bar_t).sqrt() * x0

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
        return process.posterior(x_t, x0, t, t - 1).mean

    def simple_loss(self, process, output, x0, x_t, t, noise):
        return (output - self.oracle_output(process, x0, x_t, t, noise)) ** 2


def _same_layout(output: object, x_t: Tensor) -> bool:
    """Whether ``output`` is a Tensor of x_t's shape and floating dtype (what the fused step takes)."""
    return (
        isinstance(output, Tensor)
        and output.shape == x_t.shape
        and output.dtype == x_t.dtype
        and x_t.is_floating_point()
    )


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
        decoder: "gaussian" or "discretized" (8-bit data in [-1, 1]) for the L_0 term.
        clip_x0: if set to c > 0, every reverse step of sampling (:meth:`step`, and the DDIM /
            DPM-Solver++ solvers through :meth:`clamp_x0`) clamps the x0 estimate to [-c, c]
            before the posterior mean is taken (Ho et al. 2020's image sampler; diffusers'
            ``clip_sample``). For data known to lie in that range (pixels in [-1, 1]). Losses and
            ``nll_bound`` never clip. Needs an x0-based parametrization ("eps", "x0", "v").

    Raises:
        ValueError: invalid schedule, reverse_variance, decoder or clip_x0.
    """

    parametrizations = {
        "eps": EpsParametrization,
        "x0": X0Parametrization,
        "v": VParametrization,
        "previous-step": GaussianPreviousStep,
    }
    supports_eta: ClassVar[bool] = True
    fuses_reverse_step: ClassVar[bool] = True
    supports_gaussian_solvers: ClassVar[bool] = True
    fuses_mean_loss: ClassVar[bool] = True  # its loss override changes the learned-variance hybrid only

    alpha_bar: Tensor  # (T + 1,) float64 buffer

    def __init__(
        self,
        num_steps: int = 1000,
        schedule: ScheduleLike = "cosine",
        reverse_variance: ReverseVariance = "posterior",
        decoder: Literal["gaussian", "discretized"] = "gaussian",
        clip_x0: float | None = None,
    ) -> None:
        super().__init__()
        sched = make_schedule(schedule, num_steps)
        if sched.alpha_bar[-1] <= 0:
            raise ValueError(
                "schedule: a Gaussian process needs alpha_bar_T > 0 (x0 = (x_t - ...) / sqrt(alpha_bar_t) divides by "
                "it)"
            )
        if sched.alpha_bar[-1] < torch.finfo(torch.float32).tiny:
            raise ValueError(
                f"schedule: alpha_bar_T = {sched.alpha_bar[-1].item():.3g} is below float32's smallest normal number "
                f"{torch.finfo(torch.float32).tiny:.3g}, so it is 0 in float32 data and x0 = (x_t - ...) / "
                "sqrt(alpha_bar_t) "
                "divides by 0 (NaN / inf losses near t = T); a Gaussian process needs alpha_bar_T >= 1.2e-38: use "
                "fewer steps or smaller betas"
            )
        if reverse_variance not in ("posterior", "forward", "learned"):
            raise ValueError(
                f"reverse_variance: unknown choice {reverse_variance!r}; expected one of ['forward', 'learned', "
                "'posterior']"
            )
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder: unknown choice {decoder!r}; expected one of ['discretized', 'gaussian']")
        if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and math.isfinite(clip_x0) and clip_x0 > 0):
            raise ValueError(f"clip_x0: expected a positive finite number or None, got {clip_x0!r}")
        if clip_x0 is not None and reverse_variance == "learned":
            raise ValueError("clip_x0: not available with reverse_variance='learned' (its step takes the raw output)")
        self.reverse_variance = reverse_variance
        self.decoder = decoder
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        self._num_steps = num_steps
        self.register_buffer("alpha_bar", sched.alpha_bar, persistent=False)
        #: The schedule as Python floats, fixed at construction: per-jump scalar coefficients of
        #: :meth:`step` without a device read.
        self.alpha_bar_host: list[float] = sched.alpha_bar.tolist()

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
        alpha_bar_t = self.alpha_bar[t]
        return self._gather(alpha_bar_t / (1 - alpha_bar_t), like)

    def reverse_variance_at(self, t: Tensor, s: Tensor, like: Tensor) -> Tensor:
        """The variance of p(x_s | x_t): the ``reverse_variance`` choice, beta_1-style at s = 0."""
        if self.reverse_variance == "learned":
            raise ValueError(
                "reverse_variance: 'learned' variances come from the network output; use an x0-based parametrization "
                "('eps', 'x0', 'v')"
            )
        alpha_bar_t, alpha_bar_s = self.alpha_bar[t], self.alpha_bar[s]
        forward = 1 - alpha_bar_t / alpha_bar_s
        if self.reverse_variance == "posterior":
            var = forward * (1 - alpha_bar_s) / (1 - alpha_bar_t)
            var = torch.where(s == 0, forward, var)
        else:
            var = forward
        return self._gather(var, like)

    # -- validation
    def validate_x0(self, x0: Any, name: str = "x0") -> None:
        if not isinstance(x0, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(x0).__name__}")
        if not x0.is_floating_point():
            raise TypeError(f"{name}: a Gaussian field expects floating-point data, got dtype {x0.dtype}")
        if x0.ndim < 1:
            raise ValueError(f"{name}: expected shape (B, ...), got a scalar")
        if check_values() and not all_finite(x0):
            raise ValueError(f"{name}: found NaN or inf in Gaussian data")

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
        return gaussian_posterior(
            x_t, x0, expand_to(self.alpha_bar[t], x_t.ndim), expand_to(self.alpha_bar[s], x_t.ndim)
        )

    def q_sample(
        self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, eps ~ N(0, I) (Ho et al. eq. 4).

        Returns:
            Noised(x_t (B, ...), noise eps (B, ...)).
        """
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        else:
            self._check_pair(x0, noise, "x0", "noise")
        # (G1) with sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) taken in float64, then cast.
        alpha_bar_t = self.alpha_bar[t]
        scale, std = (self._gather(v, x0) for v in (alpha_bar_t.sqrt(), (1 - alpha_bar_t).sqrt()))
        return Noised(torch.addcmul(scale * x0, std, noise), noise)

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
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

    def reverse_from_x0(
        self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None
    ) -> GaussianParams:
        """p(x_s | x_t) = N(mu(x_t, x0_hat), var): (G3)'s mean with the ``reverse_variance``
        choice, or DDIM's step (Song et al. 2021 eq. 12) when ``eta`` is given."""
        if eta is not None and eta < 0:
            raise ValueError(f"eta: expected eta >= 0, got {eta}")
        ndim = x_t.ndim
        if eta is not None:
            return ddim_reverse(
                x_t, x0_hat, expand_to(self.alpha_bar[t], ndim), expand_to(self.alpha_bar[s], ndim), eta
            )
        mean = gaussian_posterior(
            x_t, x0_hat, expand_to(self.alpha_bar[t], ndim), expand_to(self.alpha_bar[s], ndim)
        ).mean
        return GaussianParams(mean, self.reverse_variance_at(t, s, x_t))

    def reverse_sample(self, p: GaussianParams, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s = mean + sqrt(variance) z, z ~ N(0, I); the mean itself where s = 0."""
        z = torch.randn(p.mean.shape, dtype=p.mean.dtype, device=p.mean.device, generator=generator)
        noisy = expand_to(s > 0, p.mean.ndim)
        return p.mean + torch.where(noisy, p.variance.sqrt() * z, torch.zeros_like(z))

    def clamp_x0(self, x0_hat: Tensor) -> Tensor:
        """The x0 estimate a sampling step uses: clamped to [-clip_x0, clip_x0] when ``clip_x0`` is
        set, else ``x0_hat`` itself. (B, ...) -> (B, ...)."""
        return x0_hat if self.clip_x0 is None else x0_hat.clamp(-self.clip_x0, self.clip_x0)

    def step(self, output, x_t, t, s=None, parametrization="x0", generator=None, eta=None):
        """One reverse step x_s ~ p(x_s | x_t). With ints t and s (what :func:`~diffkit.sample`
        passes), a parametrization with ``x0_is_linear`` and ``fuses_reverse_step``, it is
        x_s = P output + Q x_t + sigma z with scalar coefficients (:func:`gaussian_step.jump_coefficients`):
        the same law, and the same draw of z from ``generator``, as ``reverse_sample(reverse(...))``,
        which runs otherwise. With ``clip_x0`` set it is
        ``reverse_sample(reverse_from_x0(x_t, clamp_x0(x0_from_output(...)), ...))``."""
        param = self.get_parametrization(parametrization)
        if self.clip_x0 is not None:
            if not isinstance(param, X0BasedParametrization):
                raise ValueError(
                    f"clip_x0: clipping needs an x0 estimate; parametrization {param.name!r} predicts the previous "
                    "step only: use 'eps', 'x0' or 'v', or clip_x0=None"
                )
            t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
            x0_hat = self.clamp_x0(param.x0_from_output(self, output, x_t, t))
            return self.reverse_sample(self.reverse_from_x0(x_t, x0_hat, t, s, eta=eta), s, generator)
        if (
            self.fuses_reverse_step
            and self.reverse_variance != "learned"
            and param.x0_is_linear
            and isinstance(t, int)
            and (s is None or isinstance(s, int))
            and _same_layout(output, x_t)
        ):
            s = t - 1 if s is None else s
            self.step_pair(t, s, x_t.shape[0], x_t.device)  # ints: checked without a device read
            if eta is not None and eta < 0:
                raise ValueError(f"eta: expected eta >= 0, got {eta}")
            host = self.alpha_bar_host
            coefs = jump_coefficients(
                host[t], host[s], s == 0, param.x0_coefficients, eta, self.reverse_variance == "forward"
            )
            return fused_step(output, x_t, coefs, generator)
        return super().step(output, x_t, t, s, param, generator, eta)

    def mean_output(self, output: Tensor, x_t: Tensor) -> Tensor:
        """The parametrization's part of a denoiser output: the first half along dim 1 with
        ``reverse_variance="learned"`` (checked: ValueError if the variance channels are missing), else ``output``."""
        return split_learned_output(output, x_t)[0] if self.reverse_variance == "learned" else output

    def loss(self, output, x0, x_t, t, noise, parametrization, kind="simple", hybrid_weight=1e-3, mask=None):
        """:meth:`ForwardProcess.loss`; with ``reverse_variance="learned"`` and ``kind="hybrid"``, the KL
        term sees the mean as a constant, so it trains the variance only (Nichol & Dhariwal 2021 sec. 3.1)."""
        if self.reverse_variance == "learned" and kind == "hybrid":
            simple = super().loss(output, x0, x_t, t, noise, parametrization, "simple", mask=mask)
            return simple + hybrid_weight * super().loss(
                frozen_mean_output(output), x0, x_t, t, noise, parametrization, "kl", mask=mask
            )
        return super().loss(output, x0, x_t, t, noise, parametrization, kind, hybrid_weight, mask)

    def extra_repr(self) -> str:
        extra = f", decoder={self.decoder!r}" if self.decoder != "gaussian" else ""
        extra += f", clip_x0={self.clip_x0:g}" if self.clip_x0 is not None else ""
        return f"num_steps={self.num_steps}, reverse_variance={self.reverse_variance!r}{extra}"
