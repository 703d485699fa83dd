"""The ForwardProcess interface: a few abstract primitives, derived operations written once.

Time convention: t is an integer in {0, ..., T}; t = 0 is clean data and t = T is (close to)
the prior, so a table index equals the paper's t (unlike improved-diffusion's "0 means one step"
or D3PM's x_{-1}). ``t`` and ``s`` are int64 tensors of shape (B,) or Python ints.

Names (docs/design.md): ``marginal`` is q(x_t | x0), ``transition`` is q(x_t | x_s), ``posterior`` is
q(x_s | x_t, x0), ``reverse`` is p(x_s | x_t). The loss and ELBO terms are written once here in
terms of the primitives:

    L_T     = KL(q(x_T | x0) || p(x_T))                                     (prior term)
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))     for t >= 2  (diffusion terms)
    L_0     = -log p(x0 | x_1)                                              (decoder term)
    -log p(x0) <= L_T + sum_{t=1}^{T} L_{t-1}                               (Ho et al. 2020 eq. 5)

Per-element terms have the shape of the process's elements (a Gaussian field's own shape; a
categorical field's id shape, without K); ``reduce`` sums or averages them over everything
but the batch dimension, honouring an optional boolean mask of padded elements.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from diffkit._checks import check_values, trusted_values
from diffkit.parametrizations import (
    Parametrization,
    ParametrizationLike,
    resolve_parametrization,
    withdraw_capabilities,
)

__all__ = ["ForwardProcess", "Noised", "LossKind", "as_timesteps", "expand_to", "sampling_timesteps"]

LossKind = Literal["simple", "kl", "hybrid"]

#: capability attribute -> the public hooks whose behaviour it stands for (see ``fuses_reverse_step``).
PROCESS_CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "fuses_reverse_step": ("reverse", "reverse_from_x0", "reverse_sample", "posterior", "reverse_variance_at"),
    "fuses_mean_loss": ("loss", "reduce", "check_loss_inputs"),
}


class Noised(NamedTuple):
    """Result of :meth:`ForwardProcess.q_sample`.

    Attributes:
        x_t: the noisy sample, same shape and dtype as x0.
        noise: what made it (Gaussian: eps, same shape as x0; categorical: the Gumbel noise
            (..., K) of the Gumbel-max draw), so passing it back reproduces x_t.
    """

    x_t: Any
    noise: Any


def check_loss_kind(kind: str) -> None:
    """Raise unless ``kind`` is a :data:`LossKind` (the ``kind`` argument of ``loss``)."""
    if kind not in ("simple", "kl", "hybrid"):
        raise ValueError(f"kind: unknown loss {kind!r}; expected one of ['hybrid', 'kl', 'simple']")


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is half precision (float16 / bfloat16), else ``x`` itself: losses and
    log-probabilities are formed and returned in full precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def expand_to(values: Tensor, ndim: int) -> Tensor:
    """View a (B,) tensor as (B, 1, ..., 1) with ``ndim`` dims, to broadcast against data."""
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


def as_timesteps(
    t: Tensor | int, batch_size: int, num_steps: int, device: torch.device | None, name: str = "t"
) -> Tensor:
    """Validate a time argument and return it as an int64 tensor of shape (B,).

    Type, dtype and shape are always checked; the values (0 <= t <= T) too, except inside
    :func:`diffkit._checks.trusted_values` (they cost a host sync for a tensor).

    Raises:
        TypeError: a float or bool tensor (times are integer steps).
        ValueError: wrong shape, or a value outside {0, ..., T}.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name}: expected an int or an int64 tensor, got bool")
    if isinstance(t, int):
        if not 0 <= t <= num_steps:
            raise ValueError(f"{name}: expected values in 0..T = 0..{num_steps}, got min {t}, max {t}")
        return torch.full((batch_size,), t, dtype=torch.long, device=device)
    if not isinstance(t, Tensor):
        hint = " (float times in [0, 1] are for continuous-time processes)" if isinstance(t, float) else ""
        raise TypeError(f"{name}: expected an int or an int64 tensor, got {type(t).__name__}{hint}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        hint = " (float times in [0, 1] are for continuous-time processes)" if t.is_floating_point() else ""
        raise TypeError(f"{name}: expected integer time steps (int64), got dtype {t.dtype}{hint}")
    t = t.to(device=device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"{name}: expected shape ({batch_size},) to match the batch, got {tuple(t.shape)}")
    if check_values() and t.numel():
        lo, hi = (int(v) for v in torch.aminmax(t))
        if lo < 0 or hi > num_steps:
            raise ValueError(f"{name}: expected values in 0..T = 0..{num_steps}, got min {lo}, max {hi}")
    return t


def sampling_timesteps(num_steps: int, steps: int | None = None) -> list[int]:
    """Evenly strided decreasing times [T, ..., 0] with ``steps`` jumps.

    Args:
        num_steps: T of the process.
        steps: number of reverse steps (1..T); None means all T (every s = t - 1).

    Returns:
        A list of ``steps + 1`` distinct ints, first T, last 0.

    Raises:
        ValueError: if steps is outside 1..T.
    """
    steps = num_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps:
        raise ValueError(f"num_steps: expected 1 <= number of sampling steps <= T = {num_steps}, got {steps!r}")
    ts = torch.linspace(num_steps, 0, steps + 1, dtype=torch.float64).round().long()
    return ts.tolist()


class ForwardProcess(nn.Module, abc.ABC):
    """A forward noising process q with closed-form marginals and posteriors.

    Subclasses implement the abstract primitives; sampling time steps, the per-example loss, the
    ELBO terms and the full NLL bound are derived here once. Tables are non-persistent buffers
    built in float64, so ``.to(device)`` moves them and checkpoints do not duplicate them.

    Every public method here is a hook: :func:`~diffkit.sample`, :func:`~diffkit.nll_bound` and
    :class:`~diffkit.DiffusionModule` call only public methods (``docs/plugins.md`` lists which),
    so overriding one in a subclass takes effect everywhere.

    Class attributes (capabilities, declared, never inferred from which methods are overridden):
        parametrizations: name -> Parametrization class accepted by this process.
        supports_eta: whether :meth:`reverse_from_x0` takes DDIM's eta.
        is_continuous_time: whether t is a float in [0, 1] (False: an int in 0..T).
        exact_infill: whether infilling keeps known elements clean at every step (``diffkit.infill``).
        supports_gaussian_solvers: whether ``sample(..., sampler="ddim" | "dpmpp_2m")`` applies.
    """

    parametrizations: ClassVar[dict[str, type[Parametrization]]] = {}
    supports_eta: ClassVar[bool] = False
    #: t is a float in [0, 1] (``num_steps`` is None) instead of an int step in 0..T; see
    #: :mod:`diffkit.processes.ctime` and docs/plugins.md, "Continuous time".
    is_continuous_time: ClassVar[bool] = False
    #: The optimal x0 prediction q(x0 | x_t) does not depend on t given x_t (masked noise), so the
    #: sampler may reuse a denoiser output while x_t is unchanged (``sample(cache=...)``).
    x0_prediction_time_independent: ClassVar[bool] = False
    #: Whether the loss and bound are valid only for a denoiser that does not see t (a masked
    #: process with ``elbo_weight="count"``); :class:`~diffkit.DiffusionModule` then refuses a denoiser
    #: whose ``time_conditioning`` attribute is True.
    requires_time_agnostic_denoiser: bool = False
    #: Whether the process's own :meth:`step` may fuse reverse + reverse_sample (same law). A
    #: subclass overriding one of :data:`PROCESS_CAPABILITY_METHODS`' methods loses it.
    fuses_reverse_step: ClassVar[bool] = False
    #: Whether :meth:`loss` of kind "simple" without a mask is ``reduce(simple_loss, mask, "mean")``,
    #: so :meth:`mean_loss` may hand the batch mean to the parametrization's ``mean_simple_loss``
    #: (true of this base class; a subclass overriding ``loss``, ``reduce`` or
    #: ``check_loss_inputs`` loses it unless it declares it again).
    fuses_mean_loss: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        withdraw_capabilities(cls, PROCESS_CAPABILITY_METHODS)

    #: Whether infilling may keep known elements at their clean values at every step (absorbing
    #: noise: known tokens are simply never masked) instead of re-noising them (``diffkit.infill``).
    exact_infill: ClassVar[bool] = False
    #: whether the deterministic Gaussian solvers of :mod:`diffkit.solvers` ("ddim", "dpmpp_2m") apply:
    #: a single Gaussian field with ``alpha_bar_at`` and x0-based parametrizations.
    supports_gaussian_solvers: ClassVar[bool] = False

    # ----------------------------------------------------------------- primitives
    @property
    @abc.abstractmethod
    def num_steps(self) -> int:
        """T, the number of forward steps."""

    @abc.abstractmethod
    def validate_x0(self, x0: Any, name: str = "x0") -> None:
        """Raise TypeError / ValueError if x0 is not valid clean data for this process.

        Checks that need tensor values (ranges, NaN / inf) should be skipped when
        :func:`diffkit._checks.check_values` is False (inputs already checked once).
        """

    @abc.abstractmethod
    def marginal(self, x0: Tensor, t: Tensor | int) -> Any:
        """q(x_t | x0): Gaussian (mean, variance); categorical probabilities (..., K)."""

    @abc.abstractmethod
    def transition(self, x_s: Tensor, t: Tensor | int, s: Tensor | int) -> Any:
        """q(x_t | x_s) for s < t, in the same family as :meth:`marginal`."""

    @abc.abstractmethod
    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int, s: Tensor | int | None = None) -> Any:
        """q(x_s | x_t, x0) for 0 <= s < t (s defaults to t - 1)."""

    @abc.abstractmethod
    def q_sample(
        self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """Draw x_t ~ q(x_t | x0); returns (x_t, noise)."""

    @abc.abstractmethod
    def prior_sample(
        self,
        shape: Any,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Any:
        """Draw x_T from the prior p(x_T) for data of the given shape."""

    @abc.abstractmethod
    def prior_kl(self, x0: Tensor) -> Tensor:
        """Per-element KL(q(x_T | x0) || p(x_T)) in nats."""

    @abc.abstractmethod
    def kl(self, q: Any, p: Any) -> Tensor:
        """Per-element KL(q || p) between two distributions of this process's family, in nats."""

    @abc.abstractmethod
    def decoder_nll(self, x0: Tensor, p: Any) -> Tensor:
        """Per-element -log p(x0 | x_1) in nats, for p the reverse distribution at s = 0."""

    @abc.abstractmethod
    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Any:
        """p(x_s | x_t) derived from a clean-sample estimate (docs/design.md (1))."""

    @abc.abstractmethod
    def reverse_sample(self, p: Any, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_s ~ p(x_s | x_t); Gaussian processes return the mean where s = 0."""

    # ----------------------------------------------------------------- derived
    def check_sampling_grid(self, times: Any) -> list:
        """Validate an explicit grid given to ``sample(timesteps=...)``: ints strictly decreasing
        from T down to 0 (continuous-time processes: floats from 1.0 down to 0.0).

        Raises:
            ValueError: a grid that does not run from T down to 0 (one that starts below T would
                start from noise the network was not trained to see at that t).
        """
        ts = [int(t) for t in times]
        if (
            len(ts) < 2
            or ts[0] != self.num_steps
            or ts[-1] != 0
            or any(a <= b for a, b in zip(ts, ts[1:], strict=False))
        ):
            raise ValueError(
                f"timesteps: expected a strictly decreasing list of ints from T = {self.num_steps} down to 0, got {ts}"
            )
        return ts

    def sample_timesteps(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Uniform training times t ~ U{1, ..., T}: (B,) int64."""
        if generator is not None and device is None:
            device = generator.device
        return torch.randint(1, self.num_steps + 1, (batch_size,), device=device, generator=generator)

    def sampling_grid(self, steps: int | None = None) -> list[int]:
        """The decreasing times [T, ..., 0] that :func:`~diffkit.sample` walks, ``steps`` jumps
        evenly strided (None: all T, every s = t - 1), see :func:`sampling_timesteps`. A process
        with ``is_continuous_time`` returns floats [1.0, ..., 0.0] instead."""
        return sampling_timesteps(self.num_steps, steps)

    def get_parametrization(self, parametrization: ParametrizationLike) -> Parametrization:
        """Resolve a name (or check an object) against :attr:`parametrizations`."""
        return resolve_parametrization(self, parametrization)

    def timesteps(
        self, t: Tensor | int, batch_size: int, device: torch.device | None = None, name: str = "t"
    ) -> Tensor:
        """Validate ``t`` and return it as (B,) int64 (see :func:`as_timesteps`)."""
        return as_timesteps(t, batch_size, self.num_steps, device, name)

    def step_pair(
        self, t: Tensor | int, s: Tensor | int | None, batch_size: int, device: torch.device | None
    ) -> tuple[Tensor, Tensor]:
        """Validate a reverse jump t -> s (s defaults to t - 1) and return both as (B,) int64.

        Ints are checked for free; tensor values (a host sync) unless inside ``trusted_values``.

        Raises:
            ValueError: if any s >= t, s < 0 or t > T.
        """
        if (
            isinstance(t, int)
            and not isinstance(t, bool)
            and (s is None or (isinstance(s, int) and not isinstance(s, bool)))
        ):
            s_i = t - 1 if s is None else s
            if not 0 <= s_i < t:
                raise ValueError(f"s: expected 0 <= s < t for a reverse jump, got s = {s_i} and t = {t}")
        t_v = self.timesteps(t, batch_size, device, "t")
        s_v = t_v - 1 if s is None else self.timesteps(s, batch_size, device, "s")
        if check_values() and batch_size and bool(((s_v < 0) | (s_v >= t_v)).any()):
            raise ValueError(
                f"s: expected 0 <= s < t for a reverse jump, got s = {s_v.tolist()} and t = {t_v.tolist()}"
            )
        return t_v, s_v

    @staticmethod
    def reduce(values: Tensor, mask: Tensor | None = None, how: Literal["sum", "mean"] = "sum") -> Tensor:
        """Sum or average per-element values over all but the batch dimension.

        Args:
            values: (B, ...) per-element values.
            mask: optional bool tensor broadcastable to values; False elements are dropped.
            how: "sum" (ELBO terms in nats per example) or "mean" (per-element average).

        Returns:
            (B,) tensor.
        """
        if mask is None and how == "mean" and values.is_floating_point():
            return values.reshape(values.shape[0], -1).mean(1)  # sum / count in one op
        if mask is not None:
            mask = mask.expand_as(values)
            values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
        total = values.reshape(values.shape[0], -1).sum(1)
        if how == "sum":
            return total
        count = mask.reshape(mask.shape[0], -1).sum(1).clamp_min(1) if mask is not None else values[0].numel()
        return total / count

    def num_elements(self, x0: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B,) number of scored elements per example (the "dimensions" of bits per dimension)."""
        ones = torch.ones(self.element_shape(x0), device=x0.device)
        return self.reduce(ones, mask)

    def element_shape(self, x0: Tensor) -> tuple[int, ...]:
        """Shape of the per-element terms for data x0 (default: x0's own shape)."""
        return tuple(x0.shape)

    def reverse(
        self,
        output: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        parametrization: str | Parametrization = "x0",
        eta: float | None = None,
    ) -> Any:
        """p(x_s | x_t) from a network output through a parametrization (s defaults to t - 1):
        ``parametrization.reverse``, which for x0-based ones is :meth:`reverse_from_x0` of the
        parametrization's ``x0_from_output``."""
        param = self.get_parametrization(parametrization)
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return param.reverse(self, output, x_t, t, s, eta=eta)

    def step(
        self,
        output: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        parametrization: str | Parametrization = "x0",
        generator: torch.Generator | None = None,
        eta: float | None = None,
    ) -> Tensor:
        """One reverse step, x_s ~ p(x_s | x_t) from a network output (s defaults to t - 1):
        ``reverse_sample(reverse(...))``. :func:`~diffkit.sample` calls it with ints t and s."""
        param = self.get_parametrization(parametrization)
        p = self.reverse(output, x_t, t, s, param, eta)
        _, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return self.reverse_sample(p, s, generator)

    def vlb_terms(self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, parametrization: Parametrization) -> Tensor:
        """Per-element L_{t-1}: the decoder term -log p(x0 | x_1) where t = 1, else the KL.

        L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t >= 2 and -log p(x0 | x_1) for
        t = 1 (Ho et al. 2020 eq. 5). Both branches are computed finite and one is selected.
        Calls ``parametrization.reverse``, :meth:`posterior`, :meth:`kl` and :meth:`decoder_nll`.
        """
        s = t - 1
        p = parametrization.reverse(self, output, x_t, t, s)
        with trusted_values():  # x_t was drawn from q(x_t | x0): the posterior's inputs are consistent
            q = self.posterior(x_t, x0, t, s)
        kl = self.kl(q, p)
        decoder = self.decoder_nll(x0, p)
        first = expand_to(t == 1, kl.ndim)
        return torch.where(first, decoder, kl)

    def loss(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor | None,
        parametrization: str | Parametrization,
        kind: LossKind = "simple",
        hybrid_weight: float = 1e-3,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Per-example training loss, (B,), in float32 or wider.

        * ``simple``: the parametrization's own per-element loss (eps / x0 / v MSE, or the
          categorical cross-entropy on x0), averaged over elements.
        * ``kl``: T * L_{t-1} averaged over elements, an unbiased estimate of the ELBO's
          diffusion and decoder terms (nats per element) with t ~ U{1..T}. A continuous-time
          process (``is_continuous_time``): its ELBO integrand ``vlb_terms`` at t averaged over
          elements, unbiased for the integral with t ~ U(0, 1] (MDLM eq. 10-11 for masked noise).
        * ``hybrid``: simple + hybrid_weight * (T * L_{t-1} averaged over elements): the weight
          multiplies the T-scaled ELBO term of ``kl`` (Nichol & Dhariwal 2021 use 1e-3 for
          Gaussians). D3PM (Austin et al. 2021) weight the other term: L_{t-1} + lambda * CE with
          lambda = 0.01, i.e. CE + (1 / lambda) * L_{t-1}; the same balance here is
          hybrid_weight = 1 / (lambda * T) (0.2 for T = 500), not 0.01.
        """
        param = self.get_parametrization(parametrization)
        self.check_loss_inputs(param, output, x0, x_t)
        t = self.timesteps(t, x_t.shape[0], x_t.device)
        check_loss_kind(kind)
        total = None
        if kind in ("simple", "hybrid"):
            total = self.reduce(param.simple_loss(self, output, x0, x_t, t, noise), mask, "mean")
        if kind in ("kl", "hybrid"):
            weight = 1.0 if kind == "kl" else hybrid_weight
            vlb = self.reduce(self.vlb_terms(output, x0, x_t, t, param), mask, "mean")
            if not self.is_continuous_time:  # T * L_{t-1} with t ~ U{1..T}; continuous: the integrand, t ~ U(0, 1]
                vlb = vlb * self.num_steps
            total = weight * vlb if total is None else total + weight * vlb
        assert total is not None  # check_loss_kind admits only "simple", "kl" and "hybrid"
        return at_least_float32(total)

    def mean_loss(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor | None,
        parametrization: str | Parametrization,
        kind: LossKind = "simple",
        hybrid_weight: float = 1e-3,
        mask: Tensor | None = None,
    ) -> Tensor:
        """The batch mean of :meth:`loss`: a scalar, what ``DiffusionModule``'s training step
        minimizes. ``loss(...).mean()``, except that the "simple" loss without a mask, on a process
        with ``fuses_mean_loss`` and a parametrization with ``fuses_mean_loss``, is the
        parametrization's ``mean_simple_loss`` (the same value: every example has as many
        elements, so the mean of per-example means is the mean over all elements; one
        ``F.mse_loss`` for the Gaussian eps / x0 / v targets)."""
        param = self.get_parametrization(parametrization)
        if kind == "simple" and mask is None and self.fuses_mean_loss and param.fuses_mean_loss:
            self.check_loss_inputs(param, output, x0, x_t)
            t = self.timesteps(t, x_t.shape[0], x_t.device)
            return at_least_float32(param.mean_simple_loss(self, output, x0, x_t, t, noise))
        return self.loss(output, x0, x_t, t, noise, param, kind, hybrid_weight, mask).mean()

    def prior_term(self, x0: Tensor, mask: Tensor | None = None) -> Tensor:
        """L_T = KL(q(x_T | x0) || p(x_T)) summed over elements: (B,) nats."""
        return self.reduce(self.prior_kl(x0), mask)

    def vlb(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        parametrization: str | Parametrization,
        mask: Tensor | None = None,
    ) -> Tensor:
        """L_{t-1} summed over elements: (B,) nats."""
        param = self.get_parametrization(parametrization)
        self.check_loss_inputs(param, output, x0, x_t)
        t = self.timesteps(t, x_t.shape[0], x_t.device)
        return self.reduce(self.vlb_terms(output, x0, x_t, t, param), mask)

    def check_loss_inputs(self, param: Parametrization, output: Tensor, x0: Tensor, x_t: Tensor) -> None:
        """Shapes and dtypes of :meth:`loss` / :meth:`vlb` inputs (metadata only: no device sync).

        Raises:
            TypeError: output is not a floating-point Tensor, or x0 / x_t are not Tensors.
            ValueError: x_t's shape differs from x0's, or output's from the parametrization's
                :meth:`~diffkit.parametrizations.Parametrization.output_shape` for x_t.
        """
        if not isinstance(x0, Tensor) or not isinstance(x_t, Tensor):
            name, value = ("x0", x0) if not isinstance(x0, Tensor) else ("x_t", x_t)
            raise TypeError(f"{name}: expected a Tensor, got {type(value).__name__}")
        if x_t.shape != x0.shape:
            raise ValueError(f"x_t: shape {tuple(x_t.shape)} does not match x0 {tuple(x0.shape)}")
        if not isinstance(output, Tensor) or not output.is_floating_point():
            found = f"dtype {output.dtype}" if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(f"output: expected a floating-point Tensor from the denoiser, got {found}")
        expected = tuple(param.output_shape(self, x_t))
        if output.shape != expected:
            raise ValueError(
                f"output: shape {tuple(output.shape)} does not match the {param.name!r} parametrization of "
                f"{type(self).__name__}, which expects {expected} for x_t of shape {tuple(x_t.shape)}"
            )
