"""Input checks shared by the whole library: processes, parametrizations, denoisers, metrics, data.

Every check raises at the public boundary (docs/design.md, Conventions): a ``TypeError`` for a
wrong type or dtype, a ``ValueError`` otherwise, with the message
``"<argument>: expected <what was expected>, got <what was found>"``.

Two kinds of input checks exist. Metadata checks (type, dtype, shape) read no tensor values and
always run. Value checks (time steps in 0..T, class ids in range, NaN / inf, symmetry, rows of
probabilities) need the values on the host: on an accelerator each one is a device sync. They run
at every public call, except inside :func:`trusted_values`, which the callers that already checked
their inputs once use: :class:`~diffkit.DiffusionModule` after the first training batch, and
:func:`~diffkit.sample` for the time grid it validated at entry. (The same idea as
``torch.distributions``' ``validate_args``.) The metrics' value checks run inside it too: metric
inputs are checked at every call (``check_ids(..., always=True)``, :func:`check_probabilities`).
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
from torch import Tensor

# The names plugin authors use (the API page); the other checks are internal, imported by name.
__all__ = ["all_finite", "check_class_ids", "check_values", "trusted_values"]

# ------------------------------------------------------------------ which checks read values
# check_values / trusted_values decide whether the value checks below (host syncs) run.

_TRUSTED: ContextVar[bool] = ContextVar("diffkit_trusted_values", default=False)


def check_values() -> bool:
    """Whether value checks (those that need a host sync) run here: False inside :func:`trusted_values`."""
    return not _TRUSTED.get()


class _TrustedValues:
    """The context manager :func:`trusted_values` returns: sets the flag on entry, restores it on exit.

    A plain class rather than ``contextlib.contextmanager``: a training step enters it once, and a
    generator-based context manager costs several microseconds there (docs/benchmarks.md, speed)."""

    __slots__ = ("_token", "_trusted")

    def __init__(self, trusted: bool) -> None:
        self._trusted = trusted

    def __enter__(self) -> None:
        self._token = _TRUSTED.set(self._trusted)

    def __exit__(self, *exc_info: object) -> None:
        _TRUSTED.reset(self._token)


def trusted_values(trusted: bool = True) -> _TrustedValues:
    """Skip value checks in this block (``trusted=False``: run them, the default outside any block).

    For callers whose inputs were already checked once at their boundary; metadata checks still run.
    Use as ``with trusted_values(): ...``; blocks nest, each restoring the setting it found.
    """
    return _TrustedValues(trusted)


def all_finite(x: Tensor) -> bool:
    """Whether every element of a floating-point tensor is finite (no NaN, no +-inf).

    One reduction and one host sync.

    Args:
        x: a floating-point tensor of any shape.
    """
    return x.numel() == 0 or bool(torch.isfinite(x).all())


# ------------------------------------------------------------------ scalar arguments
# Hyperparameters, sizes and seeds of the denoisers, metrics and data modules (no tensor involved).


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is a positive int (a size, a count, a width).

    Raises:
        TypeError: if ``value`` is not an int (bool is rejected).
        ValueError: if ``value < 1``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")


def check_non_negative_int(name: str, value: object) -> None:
    """Raise unless ``value`` is a non-negative int (a seed, a number of workers).

    Raises:
        TypeError: if ``value`` is not an int (bool is rejected).
        ValueError: if ``value < 0``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value}")


def check_order(p: object) -> None:
    """Raise unless ``p``, the order of a Wasserstein distance, is a number >= 1 (a ValueError)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"p: expected the order to be a number >= 1, got {p!r}")


def check_bandwidth(bandwidth: object) -> None:
    """Raise unless ``bandwidth``, a kernel bandwidth, is a number > 0 or None (a ValueError)."""
    if bandwidth is None:
        return
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise ValueError(f"bandwidth: expected a number > 0 or None, got {bandwidth!r}")


# ------------------------------------------------------------------ tensors: type, dtype, shape
# Metadata checks for the denoisers' and the metrics' inputs (no host sync).


def check_tensor(name: str, x: object) -> None:
    """Raise a TypeError unless ``x`` is a Tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def check_float(name: str, x: object) -> None:
    """Raise unless ``x`` is a floating-point Tensor.

    Raises:
        TypeError: if ``x`` is not a Tensor or not floating point.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a float Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point Tensor, got {x.dtype}")


def check_timesteps(t: Tensor, batch_size: int, continuous: bool = False) -> None:
    """A denoiser's ``t``: an int64 tensor of shape (batch_size,) (``continuous``: floating point).

    Values are not range-checked (that would cost a device sync on every call); a step outside
    0..T just extends the sinusoid past t / T = 1.

    Raises:
        TypeError: if ``t`` is not a Tensor or not int64.
        ValueError: if its shape is not (batch_size,).
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t: expected an int64 Tensor of shape (B,), got {type(t).__name__}")
    if continuous and not t.is_floating_point():
        raise TypeError(
            f"t: expected a floating-point tensor of continuous times in [0, 1] (num_steps=None), got {t.dtype}"
        )
    if not continuous and t.dtype != torch.int64:
        raise TypeError(f"t: expected dtype torch.int64 (integer steps in 0..T), got {t.dtype}")
    if t.shape != (batch_size,):
        raise ValueError(f"t: expected shape ({batch_size},) to match the batch, got {tuple(t.shape)}")


def check_points(name: str, x: object, min_rows: int = 1) -> None:
    """A floating (N, D) point cloud with N >= min_rows and D >= 1."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name}: expected at least {min_rows} rows and 1 column, got shape {tuple(x.shape)}")


def check_columns(name: str, x: object) -> None:
    """A floating (N,) or (N, C) tensor with N >= 1 and C >= 1."""
    check_tensor(name, x)
    if x.ndim not in (1, 2):
        raise ValueError(f"{name}: expected shape (N,) or (N, C), got {tuple(x.shape)}")
    check_points(name, x if x.ndim == 2 else x[:, None])


def check_same_features(x_name: str, x: Tensor, y_name: str, y: Tensor) -> None:
    """Raise a ValueError unless ``x`` and ``y`` have the same shape after their first dim."""
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"{x_name}, {y_name}: expected the same trailing shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


# ------------------------------------------------------------------ values: ids, probabilities
# Checks that read tensor values (a host sync each).

#: How far a probability vector's sum may stray from 1 (float32 sums of ~1e5 classes stay within it).
PROBABILITY_SUM_ATOL = 1e-4


def check_probabilities(name: str, p: object) -> None:
    """A floating tensor (..., K), non-negative, each last-dim row summing to 1 (always checked)."""
    check_tensor(name, p)
    if not p.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {p.dtype}")
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"{name}: expected shape (..., K) with K >= 1, got {tuple(p.shape)}")
    if bool((p < 0).any()):
        raise ValueError(f"{name}: expected non-negative values, got a minimum of {float(p.min())}")
    error = float((p.double().sum(-1) - 1).abs().max())
    if error > PROBABILITY_SUM_ATOL:
        raise ValueError(f"{name}: expected rows summing to 1 over the last dim, found a row off by {error:.3g}")


def check_ids(
    name: str,
    x: object,
    num_classes: int,
    *,
    ndim: int | None = None,
    nonempty: bool = False,
    always: bool = False,
    bound: str = "",
) -> None:
    """Raise unless ``x`` is an int64 tensor of class ids in [0, num_classes).

    The type, dtype and shape checks always run; the range check reads values (one host sync) and
    is skipped inside :func:`trusted_values` unless ``always`` (the metrics' inputs). Unlike
    :func:`check_class_ids` (the processes' data), the dtype must be exactly int64.

    Args:
        name: the argument's name in error messages.
        x: the argument to check.
        num_classes: ids must be < num_classes.
        ndim: the number of dims ``x`` must have, if given.
        nonempty: raise for a tensor with no element.
        always: check the range inside :func:`trusted_values` too.
        bound: the argument ``num_classes`` came from, named in the range error ("num_states").

    Raises:
        TypeError: if ``x`` is not a Tensor or not int64.
        ValueError: a wrong ``ndim``, no element with ``nonempty``, or an id outside [0, num_classes).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected an int64 Tensor of class ids, got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise TypeError(f"{name}: expected int64 class ids, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {tuple(x.shape)}")
    if not x.numel():
        if nonempty:
            raise ValueError(f"{name}: expected at least one id, got shape {tuple(x.shape)}")
        return
    if not (always or check_values()):
        return
    low, high = (int(v) for v in torch.aminmax(x))
    if low < 0 or high >= num_classes:
        named = f" ({bound}={num_classes})" if bound else ""
        raise ValueError(f"{name}: expected ids in [0, {num_classes}){named}, got values in [{low}, {high}]")


def check_sequences(name: str, ids: object, num_classes: int) -> None:
    """(N, L) int64 ids in [0, K) with L >= 2, what bigrams need (always checked)."""
    check_ids(name, ids, num_classes, ndim=2, nonempty=True, always=True)
    if ids.shape[1] < 2:
        raise ValueError(f"{name}: expected shape (N, L) with L >= 2, got {tuple(ids.shape)}")


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
