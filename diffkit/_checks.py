"""Value checks shared by the processes, parametrizations and the Lightning module.

Two kinds of input checks exist. Metadata checks (type, dtype, shape) read no tensor values and
always run. Value checks (time steps in 0..T, class ids in range, NaN / inf, symmetry, rows of
probabilities) need the values on the host: on an accelerator each one is a device sync. They run
at every public call, except inside :func:`trusted_values`, which the callers that already checked
their inputs once use: :class:`~diffkit.DiffusionModule` after the first training batch, and
:func:`~diffkit.sample` for the time grid it validated at entry. (The same idea as
``torch.distributions``' ``validate_args``.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["all_finite", "check_values", "trusted_values"]

_TRUSTED: ContextVar[bool] = ContextVar("diffkit_trusted_values", default=False)


def check_values() -> bool:
    """Whether value checks (those that need a host sync) run here: False inside :func:`trusted_values`."""
    return not _TRUSTED.get()


@contextlib.contextmanager
def trusted_values(trusted: bool = True) -> Iterator[None]:
    """Skip value checks in this block (``trusted=False``: run them, the default outside any block).

    For callers whose inputs were already checked once at their boundary; metadata checks still run.
    """
    token = _TRUSTED.set(trusted)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def all_finite(x: Tensor) -> bool:
    """Whether every element of a floating-point tensor is finite (no NaN, no +-inf).

    One reduction and one host sync.

    Args:
        x: a floating-point tensor of any shape.
    """
    return x.numel() == 0 or bool(torch.isfinite(x).all())
