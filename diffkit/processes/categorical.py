"""Categorical (D3PM / DiGress) diffusion: the x0 and previous-step parametrizations and
:class:`CategoricalProcess`.

The formulas (C1)-(C4) live in :mod:`diffkit.processes.categorical_formulas`, the samplers in
:mod:`diffkit.processes.categorical_sampling`, the transition kernels in
:mod:`diffkit.processes.categorical_transitions`; their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import all_finite, check_class_ids, check_values
from diffkit.parametrizations import PreviousStepParametrization, X0BasedParametrization
from diffkit.processes.base import ForwardProcess, Noised, at_least_float32, expand_to
from diffkit.processes.categorical_formulas import (  # noqa: F401 (re-exported: the import paths of before the split)
    LOG_TINY,
    _log,
    _mixing_posterior_dense,
    _mixing_posterior_unnormalized,
    _normalize,
    categorical_kl,
    categorical_posterior,
    mixing_marginal,
    mixing_posterior,
)
from diffkit.processes.categorical_sampling import (  # noqa: F401
    FUSED_MIN_CLASSES,
    _mixing_step_sample,
    check_rows_drawable,
    gumbel_sample,
    inverse_cdf_sample,
)
from diffkit.processes.categorical_transitions import MatrixTransition, MixingTransition
from diffkit.processes.schedules import ScheduleLike, make_schedule

__all__ = [
    "CategoricalProcess",
    "MixingTransition",
    "MatrixTransition",
    "mixing_marginal",
    "mixing_posterior",
    "categorical_posterior",
    "categorical_kl",
    "gumbel_sample",
    "inverse_cdf_sample",
    "CategoricalX0",
    "CategoricalPreviousStep",
]

TransitionName = Literal["uniform", "absorbing", "marginal"]


# ------------------------------------------------------------------------ parametrizations
class CategoricalX0(X0BasedParametrization):
    """The network gives logits of p(x0 | x_t) over the ``num_classes`` data classes (never the
    mask); the reverse step is the mixture (C4). Simple loss: cross-entropy -log p(x0 | x_t)
    (DiGress; Austin et al. 2021's auxiliary loss), minimised by the exact q(x0 | x_t)."""

    name = "x0"
    x0_is_softmax = True
    guidance = "log_probs"  # guided p(x0 | x_t) ~ p_c^(1 + w) p_null^(-w) (diffkit.guidance)

    def output_shape(self, process, x_t):
        return (*x_t.shape, process.num_classes)

    def x0_from_output(self, process, output, x_t, t):
        probs = at_least_float32(output).softmax(-1)
        extra = process.num_states - process.num_classes
        return F.pad(probs, (0, extra)) if extra else probs

    def simple_loss(self, process, output, x0, x_t, t, noise):
        logits = at_least_float32(output)
        return torch.logsumexp(logits, -1) - logits.gather(-1, x0.unsqueeze(-1)).squeeze(-1)

    def oracle_output(self, process, x0, x_t, t, noise):
        onehot = F.one_hot(x0, process.num_classes).bool()
        return torch.where(onehot, 0.0, LOG_TINY)


class CategoricalPreviousStep(PreviousStepParametrization):
    """The network gives logits of p(x_{t-1} | x_t) over all ``num_states`` states directly.
    Simple loss: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), the exact per-step term."""

    guidance = "log_probs"  # guided p(x_{t-1} | x_t) ~ p_c^(1 + w) p_null^(-w) (diffkit.guidance)

    def output_shape(self, process, x_t):
        return (*x_t.shape, process.num_states)

    def reverse(self, process, output, x_t, t, s, eta=None):
        self.check_single_step(t, s)
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only")
        probs = at_least_float32(output).softmax(-1)
        if process.num_states > process.num_classes:
            # x_0 is data: the absorbing mask state has probability 0 at s = 0.
            final = expand_to(s == 0, probs.ndim) & (
                torch.arange(process.num_states, device=probs.device) >= process.num_classes
            )
            probs = _normalize(probs.masked_fill(final, 0.0))
        return probs

    def simple_loss(self, process, output, x0, x_t, t, noise):
        # KL(q || softmax(output)) with log p = log_softmax(output) in float32: exact where p underflows.
        q = process.posterior(x_t, x0, t, t - 1)
        log_p = at_least_float32(output).log_softmax(-1)
        return (torch.xlogy(q, q) - q * log_p.to(q.dtype)).sum(-1)

    def oracle_output(self, process, x0, x_t, t, noise):
        return _log(process.posterior(x_t, x0, t, t - 1)).clamp_min(LOG_TINY)


# ------------------------------------------------------------------------ process
class CategoricalProcess(ForwardProcess):
    """Categorical diffusion over ``num_classes`` classes (D3PM, Austin et al. 2021; DiGress).

    Args:
        num_classes: K >= 1 data classes; data are int64 ids in [0, K). K = 1 (with "uniform") is
            the constant field of unlabelled graph nodes: never noised, zero loss.
        num_steps: T >= 1.
        transition: "uniform" (pi = 1/K), "absorbing" (pi = e_mask; adds one mask state with id
            ``num_classes``, so probabilities have K + 1 entries), "marginal" (pi = the data's
            class frequencies, DiGress), or a (T, K, K) tensor of row-stochastic matrices Q_t.
        schedule: "cosine" | "linear" | NoiseSchedule | betas (mixing kinds only).
        marginals: (K,) class frequencies for "marginal"; None leaves them to be filled from
            the training data (:meth:`set_marginals`, done by DiffusionModule).

    Raises:
        ValueError: bad num_classes, unknown transition, invalid marginals or matrices.
    """

    parametrizations = {"x0": CategoricalX0, "previous-step": CategoricalPreviousStep}
    fuses_reverse_step = True

    def __init__(
        self,
        num_classes: int,
        num_steps: int = 500,
        transition: TransitionName | Tensor = "uniform",
        schedule: ScheduleLike = "cosine",
        marginals: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        if isinstance(transition, (Tensor, list, tuple)):
            Q = self._check_matrices(torch.as_tensor(transition, dtype=torch.float64), num_classes, num_steps)
            self.kind, self.num_states = "matrix", num_classes
            self.kernel: MatrixTransition | MixingTransition = MatrixTransition(Q)
            self._num_steps = num_steps
            return
        kinds = ("absorbing", "marginal", "uniform")
        if transition not in kinds:
            raise ValueError(
                f"transition: unknown kind {transition!r}; expected one of {list(kinds)} or a (T, K, K) tensor"
            )
        self.kind = transition
        self.num_states = num_classes + 1 if transition == "absorbing" else num_classes
        alpha_bar = make_schedule(schedule, num_steps).alpha_bar
        self._num_steps = num_steps
        pi: Tensor | None
        if transition == "uniform":
            pi = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        elif transition == "absorbing":
            pi = F.one_hot(torch.tensor(num_classes), num_classes + 1).to(torch.float64)
        else:
            pi = None if marginals is None else self._check_marginals(marginals)
        if marginals is not None and transition != "marginal":
            raise ValueError(f"marginals: only used with transition='marginal', got transition={transition!r}")
        self.kernel = MixingTransition(alpha_bar, pi, self.num_states, persistent=transition == "marginal")

    # -- construction helpers
    def _check_marginals(self, marginals: Sequence[float] | Tensor) -> Tensor:
        m = torch.as_tensor(marginals, dtype=torch.float64).flatten()
        if m.numel() != self.num_classes:
            raise ValueError(f"marginals: expected {self.num_classes} class frequencies, got {m.numel()}")
        if not torch.isfinite(m).all() or (m < 0).any() or m.sum() <= 0:
            raise ValueError(
                f"marginals: expected non-negative finite frequencies with a positive sum, got {m.tolist()}"
            )
        return m / m.sum()

    @staticmethod
    def _check_matrices(Q: Tensor, K: int, T: int) -> Tensor:
        if Q.shape != (T, K, K):
            raise ValueError(
                f"transition: expected a (T, K, K) = ({T}, {K}, {K}) tensor of matrices, got {tuple(Q.shape)}"
            )
        if not torch.isfinite(Q).all() or (Q < 0).any():
            raise ValueError("transition: matrices must hold finite non-negative probabilities")
        err = (Q.sum(-1) - 1).abs().max().item()
        if err > 1e-6:
            raise ValueError(
                f"transition: every row of Q_t must sum to 1 (row-vector convention), max deviation {err:.2e}"
            )
        return Q

    def set_marginals(self, marginals: Sequence[float] | Tensor) -> None:
        """Fill pi for transition='marginal' (normalized); stored in the state dict."""
        if self.kind != "marginal" or not isinstance(self.kernel, MixingTransition):
            raise ValueError(f"set_marginals: only for transition='marginal', this process uses {self.kind!r}")
        self.kernel.set_pi(self._check_marginals(marginals))

    @property
    def exact_infill(self) -> bool:  # type: ignore[override]
        """Absorbing noise infills exactly: a known token is never masked (``diffkit.infill``)."""
        return self.kind == "absorbing"

    @property
    def needs_marginals(self) -> bool:
        """True while a "marginal" transition still waits for its class frequencies."""
        return not self.kernel.ready

    def _ensure_ready(self) -> None:
        """Raise while a "marginal" transition has no class frequencies (a value check: skipped
        inside ``trusted_values``)."""
        if check_values() and not self.kernel.ready:
            raise ValueError(
                "marginals: transition='marginal' needs class frequencies; pass marginals=[...] or let "
                "DiffusionModule fill them from the training data (process.set_marginals(freqs))"
            )

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @property
    def prior_probs(self) -> Tensor:
        """(num_states,) float64 p(x_T)."""
        self._ensure_ready()
        return self.kernel.prior(self.num_classes)

    # -- validation and conversion
    def validate_x0(self, x0: Any, name: str = "x0") -> None:
        self._check_ids(x0, name, self.num_classes)

    def _check_ids(self, x: Tensor, name: str, high: int) -> None:
        check_class_ids(
            x,
            name,
            high,
            expected="int64 class ids for a categorical field",
            dtype_hint=" (probabilities are accepted as x0 by posterior() only)" if name == "x0" else "",
            mask_id=self.num_classes if self.kind == "absorbing" else None,
            mask_note="the absorbing mask state",
        )

    def _probs(self, x: Tensor, name: str = "x0") -> Tensor:
        """Ids -> one-hot (..., num_states) float; probabilities (..., num_classes or num_states) -> padded.

        Public entry points only (marginal, posterior): probabilities are checked to be a
        distribution, which costs a device sync; inner loops use :meth:`_posterior` / the kernel.
        """
        if x.is_floating_point():
            if x.shape[-1] not in (self.num_classes, self.num_states):
                raise ValueError(
                    f"{name}: probabilities need a last dim of {self.num_classes} (or {self.num_states}), got "
                    f"{x.shape[-1]}"
                )
            self._check_distribution(x, name)
            return F.pad(x, (0, self.num_states - x.shape[-1]))
        self.validate_x0(x, name)
        return F.one_hot(x, self.num_states).to(torch.get_default_dtype())

    @staticmethod
    def _check_distribution(x: Tensor, name: str) -> None:
        """Raise unless every row (last dim) of ``x`` is finite, >= 0 and sums to 1.

        The tolerance on the sums is max(1e-4, K * the dtype's eps), so float32 / bfloat16
        softmax outputs pass.
        """
        K = x.shape[-1]
        if x.numel() == 0 or not check_values():
            return
        if not all_finite(x):
            raise ValueError(
                f"{name}: expected probabilities over the {K} classes in the last dim, found NaN or inf (not finite)"
            )
        low = float(x.min())
        if low < 0:
            raise ValueError(f"{name}: expected probabilities >= 0 in the last dim, found a negative value {low:.4g}")
        sums = x.double().sum(-1)
        tol = max(1e-4, K * torch.finfo(x.dtype).eps)
        worst = float((sums - 1).abs().max())
        if worst > tol:
            raise ValueError(
                f"{name}: expected probabilities whose rows (last dim) sum to 1 within {tol:.1e}, found sums from "
                f"{float(sums.min()):.4g} to {float(sums.max()):.4g}"
            )

    def _check_reachable(self, x_t: Tensor, x0: Tensor, t: Tensor) -> None:
        """Raise unless q(x_t | x0) > 0 for every element (ids x0; computed in float64). A value check."""
        if not check_values():
            return
        like = self.kernel.marginal(F.one_hot(x0, self.num_states).to(torch.float64), t)
        like = like.gather(-1, x_t.unsqueeze(-1)).squeeze(-1)  # q(x_t | x0), shape of x_t
        bad = like <= 0
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"x_t: id {int(x_t[first])} at index {first} cannot come from x0 = {int(x0[first])} at t = "
                f"{int(t[first[0]])} "
                f"(q(x_t | x0) = 0 under transition={self.kind!r}; {int(bad.sum())} element(s) like this), so "
                "q(x_s | x_t, x0) is undefined; pass an x_t that q(x_t | x0) can produce, or x0 as probabilities"
            )

    # -- primitives
    def marginal(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """q(x_t | x0) = Cat(x0 Qbar_t), (C1). x0: (B, ...) int64 ids or (B, ..., K) probs.

        Returns:
            (B, ..., num_states) probabilities.
        """
        self._ensure_ready()
        x0_probs = self._probs(x0)
        t = self.timesteps(t, x0_probs.shape[0], x0_probs.device)
        return self.kernel.marginal(x0_probs, t)

    def transition(self, x_s: Tensor, t: Tensor | int, s: Tensor | int) -> Tensor:
        """q(x_t | x_s) = Cat(x_s Q_{t|s}), (C2). x_s: (B, ...) int64 ids in [0, num_states)."""
        self._ensure_ready()
        self._check_ids(x_s, "x_s", self.num_states)
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        return self.kernel.transition(F.one_hot(x_s, self.num_states).to(torch.get_default_dtype()), t, s)

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int, s: Tensor | int | None = None) -> Tensor:
        """q(x_s | x_t, x0), (C3); with x0 as probabilities, the mixture (C4).

        Args:
            x_t: (B, ...) int64 ids in [0, num_states).
            x0: (B, ...) int64 ids, or (B, ..., K) probabilities over the classes.
            t, s: (B,) int64 or ints, 0 <= s < t; s defaults to t - 1.

        Returns:
            (B, ..., num_states) probabilities of x_s.

        Raises:
            ValueError: probabilities that are not a distribution (NaN / inf, negative, rows
                not summing to 1); ids x0 that cannot produce x_t (q(x_t | x0) = 0).
        """
        self._ensure_ready()
        self._check_ids(x_t, "x_t", self.num_states)
        x0_probs = self._probs(x0)
        if x0_probs.shape[:-1] != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        if not x0.is_floating_point():
            self._check_reachable(x_t, x0, t)
        return self.kernel.posterior(x_t, x0_probs, t, s)

    def q_sample(
        self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """x_t ~ Cat(x0 Qbar_t).

        Mixing transitions (uniform, absorbing, marginal) draw one uniform u per element: x_t = x0
        where u < alpha_bar_t, else the inverse CDF of pi at (u - alpha_bar_t) / (1 - alpha_bar_t),
        i.e. exactly alpha_bar_t e_x0 + (1 - alpha_bar_t) pi, in O(B·L) work and memory. Matrix
        transitions (and given Gumbel noise of shape (B, ..., num_states)) use Gumbel-max over
        x0 Qbar_t.

        Returns:
            Noised(x_t (B, ...) int64, noise): the float64 uniforms (B, ...) for mixing
            transitions, else the Gumbel noise (B, ..., num_states); passing it back reproduces x_t.
        """
        self.validate_x0(x0)
        probs_shape = (*x0.shape, self.num_states)
        gumbel = noise is not None and tuple(noise.shape) == probs_shape
        if isinstance(self.kernel, MixingTransition) and not gumbel:
            self._ensure_ready()
            t = self.timesteps(t, x0.shape[0], x0.device)
            if noise is None:
                noise = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
            elif noise.shape != x0.shape:
                raise ValueError(
                    f"noise: expected Gumbel noise of shape {probs_shape}, got {tuple(noise.shape)} (a mixing "
                    f"transition also takes one uniform per element, shape {tuple(x0.shape)})"
                )
            elif not noise.is_floating_point():
                raise TypeError(f"noise: expected floating-point uniforms in [0, 1), got dtype {noise.dtype}")
            return Noised(self.kernel.sample_marginal(x0, t, noise), noise)
        probs = self.marginal(x0, t)
        if noise is not None and noise.shape != probs.shape:
            raise ValueError(f"noise: expected Gumbel noise of shape {tuple(probs.shape)}, got {tuple(noise.shape)}")
        x_t, noise = gumbel_sample(_log(probs), noise, generator)
        return Noised(x_t, noise)

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x_T ~ p(x_T) (see :attr:`prior_probs`): (B, ...) int64; masked-out elements are 0."""
        log_p = _log(self.prior_probs.to(device=device, dtype=torch.float32))
        ids, _ = gumbel_sample(log_p.expand(*shape, self.num_states), generator=generator)
        return ids if mask is None else ids * mask.long()

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x0) || p(x_T)) per element (L_T), nats."""
        t = torch.full((x0.shape[0],), self.num_steps, dtype=torch.long, device=x0.device)
        q = self.kernel.marginal(F.one_hot(x0, self.num_states).to(torch.get_default_dtype()), t)
        return categorical_kl(q, self.prior_probs.to(q))

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return categorical_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: Tensor) -> Tensor:
        """-log p(x0 | x_1) per element, nats."""
        return -_log(p.gather(-1, x0.unsqueeze(-1)).squeeze(-1))

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Tensor:
        """p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t), (C4). x0_hat: (B, ..., num_states) probs."""
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only; a categorical reverse step has none")
        return self.kernel.posterior(x_t, x0_hat, t, s)

    def reverse_sample(self, p: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s ~ Cat(p): (B, ...) int64, by the inverse CDF (:func:`inverse_cdf_sample`)."""
        return inverse_cdf_sample(p, generator)

    def step(self, output, x_t, t, s=None, parametrization="x0", generator=None, eta=None):
        """One reverse step x_s ~ p(x_s | x_t). For a parametrization with ``x0_is_softmax`` under a
        mixing transition with at least ``FUSED_MIN_CLASSES`` classes (and ``fuses_reverse_step``),
        the softmax and the draw are fused (:func:`_mixing_step_sample`: block sums of p, one
        gathered block per element, the posterior weights never formed): the same law as
        ``reverse_sample(reverse(...))``. Otherwise exactly that."""
        param = self.get_parametrization(parametrization)
        fused = (
            eta is None
            and self.fuses_reverse_step
            and param.x0_is_softmax
            and self.num_classes >= FUSED_MIN_CLASSES
            and isinstance(output, Tensor)
            and output.shape == (*x_t.shape, self.num_classes)
        )
        if fused and isinstance(self.kernel, MixingTransition):
            t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
            nd = output.ndim
            alpha_bar = self.kernel.alpha_bar
            ids = _mixing_step_sample(
                output, x_t, expand_to(alpha_bar[t], nd), expand_to(alpha_bar[s], nd), self.kernel.pi, generator
            )
            if ids is not None:
                return ids
        return super().step(output, x_t, t, s, param, generator, eta)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_steps={self.num_steps}, transition={self.kind!r}"
