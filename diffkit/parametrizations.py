"""Parametrizations: what the network outputs, and how that output becomes a reverse step.

A parametrization is a small object chosen once (k-diffusion's ``Denoiser`` wrapper is the
model). It never branches on its own name: each kind is a class.

Two families exist, and the difference is the point of the library (docs/design.md, eq. (1)):

* **x0-based** (``eps``, ``x0``, ``v`` for Gaussian fields; ``x0`` for categorical ones): the
  output is turned into a clean-sample estimate ``x0_hat`` and the reverse step is *derived*
  from the closed-form posterior, p(x_s | x_t) = q(x_s | x_t, x0 = x0_hat) (Gaussian, whose mean is
  linear in x0) or sum_x0 q(x_s | x_t, x0) p(x0 | x_t) (categorical). Any s < t works, so these
  stride.
* **previous-step**: the output *is* the reverse transition p(x_{t-1} | x_t) (its mean for
  Gaussian fields, its logits for categorical ones). Nothing relates it to any other s, so it
  can only take s = t - 1 steps; asking it to stride raises.

Concrete classes live next to their process (``gaussian.py``, ``categorical.py``); each process
lists the names it accepts in its ``parametrizations`` dict.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from diffkit._checks import all_finite, check_values

if TYPE_CHECKING:
    from diffkit.processes.base import ForwardProcess

__all__ = [
    "Parametrization",
    "X0BasedParametrization",
    "PreviousStepParametrization",
    "resolve_parametrization",
    "CAPABILITY_METHODS",
    "withdraw_capabilities",
]

#: capability attribute -> the methods whose behaviour it declares:
#: ``x0_is_softmax``: ``x0_from_output`` is softmax(output) over the data classes (padded with zeros
#: to the process's states) and ``reverse`` is ``process.reverse_from_x0`` of it, so a categorical
#: process may fuse the softmax into its reverse draw.
#: ``x0_is_linear``: ``x0_from_output`` is a_out output + a_x x_t with (a_out, a_x) =
#: ``x0_coefficients(alpha_bar_t)`` and ``reverse`` is ``process.reverse_from_x0`` of it, so a
#: Gaussian process may fold the x0 estimate into scalar step coefficients.
#: ``fuses_mean_loss``: ``mean_simple_loss`` equals ``simple_loss(...).mean()`` (the mean over all
#: elements of the batch), taken in fewer ops, so a training step may call it instead.
CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "x0_is_softmax": ("x0_from_output", "reverse"),
    "x0_is_linear": ("x0_from_output", "reverse", "x0_coefficients"),
    "fuses_mean_loss": ("simple_loss",),
}


def withdraw_capabilities(cls: type, capabilities: dict[str, tuple[str, ...]]) -> None:
    """Set each capability to False on ``cls`` if ``cls`` overrides one of the methods it vouches
    for without declaring the capability itself: a fused path never bypasses an override."""
    for capability, methods in capabilities.items():
        if capability not in cls.__dict__ and any(m in cls.__dict__ for m in methods):
            setattr(cls, capability, False)


class Parametrization(abc.ABC):
    """Maps a network output to the reverse distribution p(x_s | x_t) and defines the simple loss."""

    #: The short name used in configs ("eps", "x0", "v", "previous-step").
    name: ClassVar[str]
    #: Whether one prediction gives a valid jump to any s < t (strided sampling).
    can_stride: ClassVar[bool] = True
    #: Capabilities a process may rely on to fuse work, each vouching for some methods of this
    #: class (see :data:`CAPABILITY_METHODS`). A subclass that overrides one of those methods
    #: loses the capability (it is set to False on the subclass) unless it declares it again.
    x0_is_softmax: ClassVar[bool] = False
    x0_is_linear: ClassVar[bool] = False
    fuses_mean_loss: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        withdraw_capabilities(cls, CAPABILITY_METHODS)

    #: How classifier-free guidance combines a conditional and a null output of this kind
    #: (``diffkit.guidance``): "linear" in the output's own space, or "log_probs" for logits.
    guidance: ClassVar[str] = "linear"

    @abc.abstractmethod
    def reverse(
        self, process: ForwardProcess, output: Tensor, x_t: Tensor, t: Tensor, s: Tensor, eta: float | None = None
    ) -> Any:
        """The parameters of p(x_s | x_t) in the process's distribution family."""

    @abc.abstractmethod
    def simple_loss(
        self, process: ForwardProcess, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        """Per-element training loss (same shape as the process's elements, no reduction)."""

    def mean_simple_loss(
        self, process: ForwardProcess, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        """``simple_loss`` averaged over every element of the batch: a scalar. A parametrization with
        ``fuses_mean_loss`` computes it in fewer ops (e.g. one ``F.mse_loss``)."""
        return self.simple_loss(process, output, x0, x_t, t, noise).mean()

    @abc.abstractmethod
    def oracle_output(
        self, process: ForwardProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None
    ) -> Tensor:
        """The output of a network that knows x0 (and the noise): the loss's minimiser for a point mass."""

    @abc.abstractmethod
    def output_shape(self, process: ForwardProcess, x_t: Tensor) -> tuple[int, ...]:
        """The output shape the network must produce for input x_t."""

    def check_output(self, process: ForwardProcess, output: Tensor, x_t: Tensor) -> None:
        """Raise a clear error if the network output cannot be used with this process.

        Raises:
            TypeError: output is not a floating-point tensor.
            ValueError: its shape differs from :meth:`output_shape`, or it holds NaN / inf.
        """
        if not isinstance(output, Tensor) or not output.is_floating_point():
            found = output.dtype if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(f"denoiser output: expected a floating-point Tensor, got {found}")
        expected = self.output_shape(process, x_t)
        if tuple(output.shape) != expected:
            raise ValueError(
                f"denoiser output: shape {tuple(output.shape)} does not match the {self.name!r} "
                f"parametrization of {type(process).__name__}, which expects {expected}"
            )
        if check_values() and not all_finite(output):
            raise ValueError("denoiser output: found NaN or inf values")

    def x0_coefficients(self, alpha_bar_t: float) -> tuple[float, float]:
        """(a_out, a_x) with x0_hat = a_out output + a_x x_t at alpha_bar_t: the hook that
        ``x0_is_linear`` vouches for (see :data:`CAPABILITY_METHODS`); others have no linear estimate."""
        raise NotImplementedError(f"{type(self).__name__} has no linear x0 estimate (x0_is_linear is False)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class X0BasedParametrization(Parametrization):
    """Output -> x0_hat, then the reverse step is derived from the posterior (docs/design.md (1))."""

    can_stride = True

    @abc.abstractmethod
    def x0_from_output(self, process: ForwardProcess, output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The clean-sample estimate (Gaussian: values; categorical: probabilities (..., K))."""

    def reverse(
        self, process: ForwardProcess, output: Tensor, x_t: Tensor, t: Tensor, s: Tensor, eta: float | None = None
    ) -> Any:
        x0_hat = self.x0_from_output(process, output, x_t, t)
        return process.reverse_from_x0(x_t, x0_hat, t, s, eta=eta)


class PreviousStepParametrization(Parametrization):
    """Output is p(x_{t-1} | x_t) itself; valid for s = t - 1 only."""

    name = "previous-step"
    can_stride = False

    @staticmethod
    def check_single_step(t: Tensor, s: Tensor) -> None:
        """Raise unless every s = t - 1.

        Raises:
            ValueError: naming the requested jump and the fix.
        """
        if isinstance(t, int) and isinstance(s, int):
            single, jump = t - s == 1, t - s
        elif not check_values():
            return
        else:
            single, jump = bool((t - s == 1).all()), int((t - s).max())
        if not single:
            raise ValueError(
                "parametrization 'previous-step' predicts p(x_{t-1} | x_t) directly and cannot jump "
                f"from t to s < t - 1 (asked for a jump of {jump} steps); sample with all T steps "
                "(num_steps=None) or train an x0-based parametrization ('eps', 'x0', 'v') to stride"
            )


#: What ``get_parametrization`` takes: a name or an object; a ProductProcess also takes a dict
#: field -> name / object (any other process rejects a dict with a TypeError).
ParametrizationLike = str | Parametrization | Mapping[str, str | Parametrization]


def resolve_parametrization(process: ForwardProcess, parametrization: ParametrizationLike) -> Parametrization:
    """Turn a name into the process's parametrization object, or check a given object.

    Raises:
        ValueError: unknown name for this process (the message lists the valid names).
        TypeError: neither a string nor a Parametrization.
    """
    valid = process.parametrizations
    if isinstance(parametrization, str):
        if parametrization not in valid:
            raise ValueError(
                f"parametrization: {parametrization!r} is not valid for {type(process).__name__}; "
                f"expected one of {sorted(valid)}"
            )
        return valid[parametrization]()
    if isinstance(parametrization, Parametrization):
        if isinstance(parametrization, tuple(valid.values())):
            return parametrization
        raise ValueError(
            f"parametrization: {type(parametrization).__name__} cannot be used with "
            f"{type(process).__name__}; expected one of {sorted(valid)}"
        )
    raise TypeError(f"parametrization: expected a name or a Parametrization, got {type(parametrization).__name__}")
