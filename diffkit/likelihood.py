"""The full negative log-likelihood bound, -log p(x0) <= L_T + sum_{t=1}^{T} L_{t-1}.

Ho et al. 2020 eq. 5 (see ``processes/base.py``): one network call per t, so T calls per batch.
For training-time estimates use ``ForwardProcess.loss(kind="kl")``; this is for evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from diffkit._checks import trusted_values
from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess

__all__ = ["NLLBound", "nll_bound"]


class NLLBound(NamedTuple):
    """Per-example terms of the bound, all (B,) in nats.

    Attributes:
        prior: L_T.
        diffusion: sum_{t=2}^{T} L_{t-1}.
        decoder: L_0 = -log p(x0 | x_1).
        num_elements: scored elements per example (dimensions or tokens).
        steps: with ``nll_bound(..., per_step=True)``, (B, T) nats, column t - 1 the term of the
            denoiser call at time t (L_{t-1}: the decoder L_0 in column 0), so that
            ``steps.sum(1) == decoder + diffusion``; else None.
    """

    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    num_elements: Tensor
    steps: Tensor | None = None

    @property
    def total(self) -> Tensor:
        """(B,) nats: the bound on -log p(x0)."""
        return self.prior + self.diffusion + self.decoder

    @property
    def nats_per_element(self) -> Tensor:
        """(B,) total / num_elements."""
        return self.total / self.num_elements

    @property
    def bits_per_element(self) -> Tensor:
        """(B,) bits per dimension (continuous) or per token (categorical)."""
        return self.nats_per_element / math.log(2)


@torch.no_grad()
def nll_bound(
    process: ForwardProcess,
    denoiser: Callable[[Any, Tensor], Any],
    x0: Any,
    parametrization: str | Parametrization | dict = "x0",
    generator: torch.Generator | None = None,
    per_step: bool = False,
    num_points: int | None = None,
) -> NLLBound:
    """Evaluate every term of the ELBO for a batch x0 (T denoiser calls).

    Calls the process's public hooks ``validate_x0``, ``get_parametrization``, ``prior_term``
    (``prior_kl``), ``num_elements`` and, for every t in 1..T, ``q_sample``, the denoiser and
    ``vlb`` (``vlb_terms``: ``parametrization.reverse``, ``posterior``, ``kl``, ``decoder_nll``).

    Args:
        process: the forward process.
        denoiser: ``denoiser(x_t, t)``.
        x0: clean batch (Tensor or dict, as the process takes).
        parametrization: how to read the denoiser output.
        generator: for the x_t ~ q(x_t | x0) draws.
        per_step: also keep every term, (B, T) in ``NLLBound.steps`` (where in t the bound is
            spent: e.g. an x0-predicting network pays most of it at the first few t).

        num_points: continuous-time processes only: N, the number of times t at which the ELBO's
            integrand is evaluated (N denoiser calls; default 128), see
            :func:`diffkit.likelihood_ct.continuous_nll_bound`.

    Returns:
        NLLBound with per-example terms.
    """
    if process.is_continuous_time:
        from diffkit.likelihood_ct import continuous_nll_bound

        return continuous_nll_bound(process, denoiser, x0, parametrization, generator, per_step, num_points)
    if num_points is not None:
        raise ValueError(
            f"num_points: only for continuous-time processes; {type(process).__name__} sums all T = "
            f"{process.num_steps} terms"
        )
    process.validate_x0(x0)
    param = process.get_parametrization(parametrization)
    prior = process.prior_term(x0)
    diffusion = torch.zeros_like(prior)
    decoder = torch.zeros_like(prior)
    batch = prior.shape[0]
    terms = []
    with trusted_values():  # x0 was checked above; every t below is in 1..T
        for t_i in range(1, process.num_steps + 1):
            t = torch.full((batch,), t_i, dtype=torch.long, device=prior.device)
            x_t = process.q_sample(x0, t, generator=generator).x_t
            term = process.vlb(denoiser(x_t, t), x0, x_t, t, param)
            if per_step:
                terms.append(term)
            if t_i == 1:
                decoder = term
            else:
                diffusion = diffusion + term
    return NLLBound(prior, diffusion, decoder, process.num_elements(x0), torch.stack(terms, 1) if per_step else None)
