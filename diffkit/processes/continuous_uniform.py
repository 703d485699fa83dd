"""Uniform noise in continuous time (UDLM, Schiff et al. 2024): :class:`UniformProcess`.

K classes, no extra state. Each token is kept with probability alpha(t) and otherwise redrawn
uniformly: with pi = 1 / K, alpha_{t|s} = alpha(t) / alpha(s) (row vectors over the K classes):

    q(x_t | x0)      = alpha(t) e_x0 + (1 - alpha(t)) pi                                        (U1)
    q(x_t | x_s)     = alpha_{t|s} e_{x_s} + (1 - alpha_{t|s}) pi                               (U2)
    q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0),   p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t)  (U3)

(U3) is the mixing-family closed form of ``categorical.mixing_posterior`` with alpha_bar_t = alpha(t),
alpha_bar_s = alpha(s). As a continuous-time Markov chain, (U2) has the jump rates
R_t(x, y) = lambda(t) pi_y for y != x, lambda(t) = -alpha'(t) / alpha(t). The reverse chain jumps
x -> y at rate R_t(y, x) q_t(y | x0) / q_t(x | x0) (true) and at R_hat(x, y) = R_t(y, x)
sum_x0 p(x0 | x_t) q_t(y | x0) / q_t(x | x0) when derived from an x0 prediction (the limit of (U3)
as s -> t). The continuous ELBO's integrand is the limit of KL(q(x_s | x_t, x0) || p(x_s | x_t)) /
(t - s), a Bregman divergence between the two rate vectors (Campbell et al. 2022, eq. 6; SEDD's
score entropy, Lou et al. 2024; the UDLM bound, Schiff et al. 2024, sec. 3):

    l(x_t = x, x0, t) = lambda(t) / K * sum_{y != x} [ r_hat_y - r_y - r_y log(r_hat_y / r_y) ]      (U4)

with, for a = alpha(t) and b = (1 - alpha(t)) / K,

    r_y     = q_t(y | x0) / q_t(x | x0)      = b / (a + b)           if x0 = x
                                             = (a + b) / b [y = x0] + 1 [y != x0]   if x0 != x
    r_hat_y = sum_x0 p(x0) q_t(y | x0) / q_t(x | x0) = (a / b) p_y + (1 - p_x) + b p_x / (a + b).

The ELBO is -log p(x0) <= KL(q(x_1 | x0) || pi) + int_0^1 E_q [ sum_i l(x_t^i, x0^i, t) ] dt; the
prior term is 0 when alpha(1) = 0. The tests check (U4) against the discrete T-step bound for
large T.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import check_class_ids
from diffkit.parametrizations import Parametrization, X0BasedParametrization
from diffkit.processes.base import Noised, expand_to
from diffkit.processes.categorical import CategoricalX0, categorical_kl, inverse_cdf_sample, mixing_posterior
from diffkit.processes.ctime import ContinuousScheduleName, ContinuousTimeProcess, make_continuous_schedule

__all__ = ["UniformProcess", "uniform_rate_divergence"]


def uniform_rate_divergence(x_t: Tensor, x0: Tensor, x0_probs: Tensor, alpha: Tensor) -> Tensor:
    """sum_{y != x_t} [r_hat_y - r_y - r_y log(r_hat_y / r_y)] of (U4), without the lambda / K factor.

    Args:
        x_t, x0: (B, ...) int64 ids in [0, K).
        x0_probs: (B, ..., K) probabilities p(x0 | x_t).
        alpha: (B, 1, ..., 1) float64 alpha(t) in (0, 1), one more dim than x_t.

    Returns:
        (B, ...) float64, >= 0.
    """
    K = x0_probs.shape[-1]
    p = x0_probs.to(torch.float64)
    a = alpha
    b = (1 - alpha) / K
    p_x = p.gather(-1, x_t.unsqueeze(-1))  # (B, ..., 1)
    r_hat = (a / b) * p + (1 - p_x) + b * p_x / (a + b)  # (B, ..., K)
    same = (x0 == x_t).unsqueeze(-1)
    at_x0 = F.one_hot(x0, K).bool()
    r = torch.where(
        same, (b / (a + b)).expand_as(p), torch.where(at_x0, ((a + b) / b).expand_as(p), torch.ones_like(p))
    )
    tiny = torch.finfo(torch.float64).tiny
    terms = r_hat - r - r * (r_hat.clamp_min(tiny).log() - r.log())
    others = ~F.one_hot(x_t, K).bool()
    return torch.where(others, terms, torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


class UniformProcess(ContinuousTimeProcess):
    """Uniform noise in continuous time t in [0, 1] (module docstring, UDLM).

    Args:
        num_classes: K >= 2 classes; data and x_t are int64 ids in [0, K).
        schedule: "loglinear" (alpha = 1 - t) | "linear" | "cosine" (:mod:`diffkit.processes.ctime`).

    Raises:
        ValueError: bad num_classes, unknown schedule.
    """

    parametrizations = {"x0": CategoricalX0}

    pi: Tensor  # (K,) float64 buffer, uniform

    def __init__(self, num_classes: int, schedule: ContinuousScheduleName = "loglinear") -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
        self.num_classes = self.num_states = num_classes
        self.schedule = make_continuous_schedule(schedule)
        self.register_buffer("pi", torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64), persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, schedule={self.schedule.name!r}"

    def validate_x0(self, x0: Tensor, name: str = "x0") -> None:
        check_class_ids(x0, name, self.num_classes)

    def _mix(self, ids: Tensor, a: Tensor) -> Tensor:
        """a e_ids + (1 - a) pi in float64, a (B, 1, ..., 1)."""
        return a * F.one_hot(ids, self.num_classes).double() + (1 - a) * self.pi

    def marginal(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """q(x_t | x0), (U1): (B, ..., K) float64."""
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        return self._mix(x0, expand_to(self.alpha(t), x0.ndim + 1))

    def transition(self, x_s: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """q(x_t | x_s), (U2): (B, ..., K) float64."""
        self.validate_x0(x_s, "x_s")
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        return self._mix(x_s, expand_to(self.alpha(t) / self.alpha(s), x_s.ndim + 1))

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | float, s: Tensor | float | None = None) -> Tensor:
        """q(x_s | x_t, x0), (U3): (B, ..., K) float64."""
        self.validate_x0(x_t, "x_t")
        self.validate_x0(x0)
        if x0.shape != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return self._reverse_probs(x_t, F.one_hot(x0, self.num_classes).double(), t, s)

    def _reverse_probs(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        nd = x0_probs.ndim
        return mixing_posterior(x_t, x0_probs, expand_to(self.alpha(t), nd), expand_to(self.alpha(s), nd), self.pi)

    def q_sample(
        self, x0: Tensor, t: Tensor | float, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """x_t ~ (U1) from one uniform u per token: x0 where u < alpha(t), else the class
        floor(K (u - alpha) / (1 - alpha)) (uniform given u >= alpha).

        Returns:
            Noised(x_t (B, ...) int64, the float64 uniforms (B, ...)).
        """
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        if noise is None:
            noise = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
        elif noise.shape != x0.shape or not noise.is_floating_point():
            raise ValueError(
                f"noise: expected float uniforms of shape {tuple(x0.shape)}, got {tuple(noise.shape)} {noise.dtype}"
            )
        u = noise.to(torch.float64)
        a = expand_to(self.alpha(t), x0.ndim)
        draw = (
            ((u - a) / (1 - a).clamp_min(torch.finfo(torch.float64).tiny) * self.num_classes)
            .floor()
            .clamp(0, self.num_classes - 1)
            .long()
        )
        return Noised(torch.where(u < a, x0, draw), noise)

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x_1 ~ Uniform(K): (B, ...) int64; masked-out elements are 0."""
        ids = torch.randint(0, self.num_classes, tuple(shape), device=device, generator=generator)
        return ids if mask is None else ids * mask.long()

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_1 | x0) || Uniform(K)) per token, nats (0 when alpha(1) = 0)."""
        ones = torch.ones(x0.shape[0], dtype=torch.float64, device=x0.device)
        q = self._mix(x0, expand_to(self.alpha(ones), x0.ndim + 1))
        return categorical_kl(q, self.pi.expand_as(q)).to(torch.get_default_dtype())

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return categorical_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: Tensor) -> Tensor:
        return -p.gather(-1, x0.unsqueeze(-1)).squeeze(-1).clamp_min(torch.finfo(p.dtype).tiny).log()

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Tensor:
        """p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t), (U3); x0_hat (B, ..., K) probabilities."""
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only; a categorical reverse step has none")
        return self._reverse_probs(x_t, x0_hat, t, s)

    def reverse_sample(self, p: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return inverse_cdf_sample(p, generator)

    def elbo_integrand_terms(
        self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, parametrization: Parametrization
    ) -> Tensor:
        """(U4) per token, nats per unit time: lambda(t) / K * the rate divergence (0 where alpha(t) = 0)."""
        # parametrizations = {"x0": CategoricalX0}: get_parametrization admits nothing else
        x0_hat = cast(X0BasedParametrization, parametrization).x0_from_output(self, output, x_t, t)  # (B, ..., K)
        a = self.alpha(t)
        ok = a > 0
        a_safe = torch.where(ok, a, torch.ones_like(a))
        lam = torch.where(ok, -self.alpha_prime(t) / a_safe, torch.zeros_like(a)) / self.num_classes
        div = uniform_rate_divergence(
            x_t, x0, x0_hat, expand_to(torch.where(ok, a, torch.full_like(a, 0.5)), x0.ndim + 1)
        )
        return (expand_to(lam, x0.ndim) * div).to(x0_hat.dtype)
