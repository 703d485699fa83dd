"""Masked (absorbing) diffusion in continuous time: MDLM (Sahoo et al. 2024), :class:`MaskedProcess`.

K data classes with ids 0..K-1 and one mask state m = K. Each token is independently kept with
probability alpha(t) and replaced by m otherwise; m never changes back in the forward process.
With alpha_{t|s} = alpha(t) / alpha(s) for s < t (row vectors over the K + 1 states, e_i one-hot):

    q(x_t | x0)      = alpha(t) e_x0 + (1 - alpha(t)) e_m                                        (M1)
    q(x_t | x_s)     = alpha_{t|s} e_{x_s} + (1 - alpha_{t|s}) e_m     (x_s = m stays m)         (M2)
    q(x_s | x_t, x0) = e_{x_t}                                          if x_t != m             (M3)
                     = [(alpha(s) - alpha(t)) e_x0 + (1 - alpha(s)) e_m] / (1 - alpha(t))  if x_t = m
    p(x_s | x_t)     = sum_x0 q(x_s | x_t, x0) p(x0 | x_t)                                        (M4)
                     = e_{x_t} (carry-over)                             if x_t != m
                     = [(alpha(s) - alpha(t)) p(. | x_t) + (1 - alpha(s)) e_m] / (1 - alpha(t))  if x_t = m

with p(m | x_t) = 0 ("zero-masking": the network's K logits never include m). The per-step KL of
(M3) against (M4) at a masked x_t is (alpha(s) - alpha(t)) / (1 - alpha(t)) * (-log p(x0 | x_t)),
and its limit over (t - s) gives the continuous ELBO (MDLM eq. 10-11):

    -log p(x0) <= L_prior + int_0^1 -alpha'(t) / (1 - alpha(t)) E_q [ sum_{i: x_t^i = m} -log p(x0^i | x_t) ] dt

L_prior = KL(q(x_1 | x0) || p(x_1)) with p(x_1) = alpha(1) Uniform(K) + (1 - alpha(1)) e_m, which
is alpha(1) log K per token (0 for the loglinear and cosine schedules, where alpha(1) = 0).
q(x0 | x_t) does not depend on t given x_t (the unmasked tokens and the pattern say everything),
so ``x0_prediction_time_independent = True``: the sampler may reuse a prediction while x_t is
unchanged (MDLM's caching sampler, sec. 4.2).

The count weight (``elbo_weight="count"``, loglinear schedule). For a denoiser that does not see
t, the integrand at t depends on t only through its weight -alpha'(t) / (1 - alpha(t)) = 1 / t.
Given that k of the n tokens of x_t are masked (each is, independently, with probability t), t ~
U(0, 1] has the posterior Beta(k + 1, n - k + 1), whose E[1 / t] is (n + 1) / k. Replacing the
weight by that conditional expectation (Rao-Blackwell) keeps the expectation of the integrand:

    -log p(x0) <= E_{t ~ U(0, 1], x_t ~ q(x_t | x0)} [ (n + 1) / k(x_t) sum_{i: x_t^i = m} -log p(x0^i | x_t) ]   (M5)

and lowers its variance: 1 / t on about t n masked tokens has an infinite second moment near
t = 0, (n + 1) / k a bounded one. With t uniform, k is uniform on 0..n, and (M5) is the any-order
autoregressive loss sum_k E[mean of -log p(x0^i | x_t) over the k masked tokens] (Hoogeboom et
al. 2022, "Autoregressive Diffusion Models"; Ou et al. 2024, "Your Absorbing Discrete Diffusion
Secretly Models the Conditional Distributions of Clean Data"). It holds only for a denoiser
without time input (``requires_time_agnostic_denoiser``; DiffusionModule refuses a
TokenTransformer with ``time_conditioning=True``) and for examples whose every element is a token
(no padding): n is the number of elements of one example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import check_class_ids
from diffkit.parametrizations import Parametrization, X0BasedParametrization
from diffkit.processes.base import Noised, expand_to
from diffkit.processes.categorical import CategoricalX0, categorical_kl, inverse_cdf_sample
from diffkit.processes.ctime import ContinuousScheduleName, ContinuousTimeProcess, make_continuous_schedule

__all__ = ["ElboWeight", "MaskedProcess"]

#: The weight of the continuous ELBO's integrand (module docstring): "schedule" -alpha'(t) / (1 - alpha(t)),
#: "count" (M5)'s (n + 1) / k.
ElboWeight = Literal["schedule", "count"]


def _log(p: Tensor) -> Tensor:
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


class MaskedProcess(ContinuousTimeProcess):
    """Absorbing (masked) noise in continuous time t in [0, 1] (module docstring, MDLM).

    Args:
        num_classes: K >= 1 data classes; the mask state has id K, so ``num_states = K + 1`` and a
            denoiser takes ids in [0, K] and outputs K logits of x0 (parametrization "x0").
        schedule: "loglinear" (alpha = 1 - t, MDLM's default) | "linear" | "cosine"
            (:mod:`diffkit.processes.ctime`).
        elbo_weight: "schedule" (default): the integrand's weight -alpha'(t) / (1 - alpha(t)) at the
            drawn t (MDLM eq. 10); "count": its expectation given the number k of masked tokens,
            (n + 1) / k (module docstring, (M5)): the same bound for a denoiser without time input,
            estimated with a bounded variance. Loglinear schedule only.

    Raises:
        ValueError: bad num_classes, unknown schedule or elbo_weight, "count" with another schedule.
    """

    parametrizations = {"x0": CategoricalX0}
    x0_prediction_time_independent: ClassVar[bool] = True

    def __init__(
        self, num_classes: int, schedule: ContinuousScheduleName = "loglinear", elbo_weight: ElboWeight = "schedule"
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
        if elbo_weight not in ("schedule", "count"):
            raise ValueError(f"elbo_weight: expected 'schedule' or 'count', got {elbo_weight!r}")
        self.num_classes = num_classes
        self.num_states = num_classes + 1
        self.mask_id = num_classes
        self.schedule = make_continuous_schedule(schedule)
        if elbo_weight == "count" and self.schedule.name != "loglinear":
            raise ValueError(
                f"elbo_weight: 'count' is the expectation of 1 / t given the masked count, which needs the loglinear "
                f"schedule (alpha = 1 - t); got schedule {self.schedule.name!r}"
            )
        self.elbo_weight = elbo_weight
        #: (M5) is the bound only for a denoiser that does not see t (DiffusionModule checks it).
        self.requires_time_agnostic_denoiser = elbo_weight == "count"

    def extra_repr(self) -> str:
        weight = "" if self.elbo_weight == "schedule" else f", elbo_weight={self.elbo_weight!r}"
        return f"num_classes={self.num_classes}, schedule={self.schedule.name!r}{weight}"

    # -- checks
    def validate_x0(self, x0: Tensor, name: str = "x0") -> None:
        self._check_ids(x0, name, self.num_classes)

    def _check_ids(self, x: Tensor, name: str, high: int) -> None:
        check_class_ids(x, name, high, mask_id=self.mask_id)

    def _alphas(self, t: Tensor, ndim: int) -> Tensor:
        return expand_to(self.alpha(t), ndim)

    # -- primitives
    def marginal(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """q(x_t | x0), (M1): (B, ..., K + 1) float64 probabilities for (B, ...) int64 ids x0."""
        self.validate_x0(x0)
        a = self._alphas(self.timesteps(t, x0.shape[0], x0.device), x0.ndim + 1)
        return a * F.one_hot(x0, self.num_states).double() + (1 - a) * self._mask_row(x0.device)

    def _mask_row(self, device: torch.device | str | None) -> Tensor:
        return F.one_hot(torch.tensor(self.mask_id, device=device), self.num_states).double()

    def transition(self, x_s: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """q(x_t | x_s), (M2): (B, ..., K + 1) float64, x_s ids in [0, K] (the mask stays)."""
        self._check_ids(x_s, "x_s", self.num_states)
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        a = expand_to(self.alpha(t) / self.alpha(s), x_s.ndim + 1)
        return a * F.one_hot(x_s, self.num_states).double() + (1 - a) * self._mask_row(x_s.device)

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | float, s: Tensor | float | None = None) -> Tensor:
        """q(x_s | x_t, x0), (M3): (B, ..., K + 1) float64.

        Raises:
            ValueError: an unmasked x_t that differs from x0 (q(x_t | x0) = 0), or s missing / s >= t.
        """
        self._check_ids(x_t, "x_t", self.num_states)
        self.validate_x0(x0)
        if x0.shape != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        bad = (x_t != self.mask_id) & (x_t != x0)
        if bool(bad.any()):
            raise ValueError(
                f"x_t: {int(bad.sum())} unmasked token(s) differ from x0, which masked noise cannot produce (q(x_t | "
                "x0) = 0)"
            )
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return self._reverse_probs(x_t, F.one_hot(x0, self.num_states).double(), t, s)

    def _reverse_probs(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """(M3) / (M4) for x0 probabilities (..., K + 1) whose mask entry is ignored (zero-masking)."""
        nd = x0_probs.ndim
        dt = x0_probs.dtype
        a_t, a_s = self._alphas(t, nd), self._alphas(s, nd)
        p = x0_probs[..., : self.num_classes]
        p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
        keep = ((a_s - a_t) / (1 - a_t).clamp_min(torch.finfo(torch.float64).tiny)).to(dt)  # prob. of unmasking
        masked = torch.cat([keep * p, (1 - keep).expand(*p.shape[:-1], 1)], -1)
        carry = F.one_hot(x_t, self.num_states).to(dt)
        return torch.where((x_t == self.mask_id).unsqueeze(-1), masked, carry)

    def q_sample(
        self, x0: Tensor, t: Tensor | float, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """x_t ~ (M1) from one uniform u per token: x_t = x0 where u < alpha(t), else the mask.

        Returns:
            Noised(x_t (B, ...) int64, the float64 uniforms (B, ...)); passing them back reproduces x_t.
        """
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        if noise is None:
            noise = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
        elif noise.shape != x0.shape or not noise.is_floating_point():
            raise ValueError(
                f"noise: expected float uniforms of shape {tuple(x0.shape)}, got {tuple(noise.shape)} {noise.dtype}"
            )
        keep = noise.to(torch.float64) < self._alphas(t, x0.ndim)
        return Noised(torch.where(keep, x0, torch.full_like(x0, self.mask_id)), noise)

    def prior_probs(self, device: torch.device | str | None = None) -> Tensor:
        """(K + 1,) float64 p(x_1) = alpha(1) Uniform(K) + (1 - alpha(1)) e_m."""
        a1 = float(self.alpha(torch.ones((), dtype=torch.float64)))
        p = torch.full((self.num_states,), a1 / self.num_classes, dtype=torch.float64, device=device)
        p[self.mask_id] = 1 - a1
        return p

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x_1 ~ p(x_1) per token: (B, ...) int64 (all masks where alpha(1) = 0); masked-out elements are 0."""
        p = self.prior_probs(device).to(torch.get_default_dtype())
        ids = inverse_cdf_sample(p.expand(*shape, self.num_states), generator)
        return ids if mask is None else ids * mask.long()

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_1 | x0) || p(x_1)) = alpha(1) log K per token, nats (shape of x0)."""
        a1 = float(self.alpha(torch.ones((), dtype=torch.float64)))
        value = a1 * math.log(self.num_classes) if a1 > 0 else 0.0
        return torch.full(x0.shape, value, dtype=torch.get_default_dtype(), device=x0.device)

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return categorical_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: Tensor) -> Tensor:
        """-log p(x0 | x_t) per element, nats."""
        return -_log(p.gather(-1, x0.unsqueeze(-1)).squeeze(-1))

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Tensor:
        """p(x_s | x_t), (M4): carry-over of unmasked tokens; x0_hat (B, ..., K or K + 1) probabilities."""
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only; a masked reverse step has none")
        if x0_hat.shape[-1] == self.num_classes:
            x0_hat = F.pad(x0_hat, (0, 1))
        return self._reverse_probs(x_t, x0_hat, t, s)

    def reverse_sample(self, p: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s ~ Cat(p): (B, ...) int64 (one uniform per token, :func:`inverse_cdf_sample`)."""
        return inverse_cdf_sample(p, generator)

    # -- continuous ELBO
    def elbo_integrand_terms(
        self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, parametrization: Parametrization
    ) -> Tensor:
        """-alpha'(t) / (1 - alpha(t)) * (-log p(x0 | x_t)) at masked tokens, 0 elsewhere (MDLM eq. 10);
        with ``elbo_weight="count"`` the weight is (n + 1) / k, k of the example's n tokens masked (M5).

        Returns:
            (B, ...) float per-token integrand, nats per unit time (float32 or the output's dtype).
        """
        # parametrizations = {"x0": CategoricalX0}: get_parametrization admits nothing else
        param = cast(X0BasedParametrization, parametrization)
        x0_hat = param.x0_from_output(self, output, x_t, t)  # (B, ..., K + 1), p(m) = 0
        nll = self.decoder_nll(x0, x0_hat)
        masked = x_t == self.mask_id
        if self.elbo_weight == "count":
            n = x_t[0].numel()
            k = masked.reshape(masked.shape[0], -1).sum(1).clamp_min(1)  # k = 0: no masked token, the terms are 0
            per_example = (n + 1) / k.double()
        else:
            a, da = self.alpha(t), self.alpha_prime(t)
            per_example = -da / (1 - a).clamp_min(torch.finfo(torch.float64).tiny)
        weight = expand_to(per_example, x0.ndim).to(nll.dtype)
        return torch.where(masked, weight * nll, torch.zeros((), dtype=nll.dtype, device=nll.device))
