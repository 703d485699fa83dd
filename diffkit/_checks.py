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

__all__ = ["all_finite", "check_class_ids", "check_values", "trusted_values"]

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


def check_class_ids(
    x: object,
    name: str,
    high: int,
    *,
    expected: str = "int64 class ids",
    dtype_hint: str = "",
    mask_id: int | None = None,
    mask_note: str = "the mask state",
) -> None:
    """Check that ``x`` holds class ids in [0, high): an integer tensor of shape (B, ...).

    The type, dtype and shape checks always run; the range check reads values (one host sync) and
    is skipped inside :func:`trusted_values`.

    Args:
        x: the argument to check.
        name: its name in error messages.
        high: ids must be < high.
        expected: what the dtype error says was expected.
        dtype_hint: appended to the dtype error.
        mask_id: an id that is a noise state, named in the range error when found in the data.
        mask_note: what ``mask_id`` is, for that error.

    Raises:
        TypeError: not a Tensor, or a floating / complex / bool dtype.
        ValueError: a scalar, or an id outside [0, high).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected an int64 Tensor of class ids, got {type(x).__name__}")
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name}: expected {expected}, got dtype {x.dtype}{dtype_hint}")
    if x.ndim < 1:
        raise ValueError(f"{name}: expected shape (B, ...), got a scalar")
    if not check_values() or not x.numel():
        return
    low, top = (int(v) for v in torch.aminmax(x))
    if low < 0 or top >= high:
        bad = top if top >= high else low
        hint = f" (id {mask_id} is {mask_note}, never valid in data)" if bad == mask_id else ""
        raise ValueError(f"{name}: found class id {bad}, expected ids in [0, {high}){hint}")
