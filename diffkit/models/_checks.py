"""Input checks shared by the denoisers, raised at their public boundary (docs/design.md, Conventions).

Every error names the argument, what was found and what was expected. Checks on shape and dtype
read only tensor metadata; only the id-range check reads values (one device sync).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit._checks import check_values


def check_positive(name: str, value: int) -> None:
    """Raise if a hyperparameter is not a positive int.

    Raises:
        TypeError: if ``value`` is not an int.
        ValueError: if ``value < 1``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int, but got {value}.")


def check_timesteps(t: Tensor, batch_size: int, continuous: bool = False) -> None:
    """Raise unless ``t`` is an int64 tensor of shape (batch_size,) (``continuous``: floating point).

    Values are not range-checked (that would cost a device sync on every call); a step outside
    0..T just extends the sinusoid past t / T = 1.

    Raises:
        TypeError: if ``t`` is not a Tensor or not int64.
        ValueError: if its shape is not (batch_size,).
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"Expected `t` to be an int64 Tensor of shape (B,), but got {type(t).__name__}.")
    if continuous and not t.is_floating_point():
        raise TypeError(
            "Expected `t` to be a floating-point tensor of continuous times in [0, 1] (num_steps=None), but got "
            f"{t.dtype}."
        )
    if not continuous and t.dtype != torch.int64:
        raise TypeError(f"Expected `t` to have dtype torch.int64 (integer steps in 0..T), but got {t.dtype}.")
    if t.shape != (batch_size,):
        raise ValueError(f"Expected `t` to have shape ({batch_size},) to match the batch, but got {tuple(t.shape)}.")


def check_float(name: str, x: Tensor) -> None:
    """Raise unless ``x`` is a floating-point Tensor.

    Raises:
        TypeError: if ``x`` is not a Tensor or not floating point.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be a float Tensor, but got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"Expected `{name}` to be a floating-point Tensor, but got {x.dtype}.")


def check_ids(name: str, x: Tensor, num_states: int) -> None:
    """Raise unless ``x`` holds int64 class ids in [0, num_states).

    The range is a value check (a host sync), skipped inside :func:`diffkit._checks.trusted_values`.

    Raises:
        TypeError: if ``x`` is not a Tensor or not int64.
        ValueError: if an id lies outside [0, num_states).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be an int64 Tensor of class ids, but got {type(x).__name__}.")
    if x.dtype != torch.int64:
        raise TypeError(f"Expected `{name}` to hold int64 class ids, but got {x.dtype}.")
    if x.numel() and check_values() and bool(((x < 0) | (x >= num_states)).any()):
        raise ValueError(
            f"Expected `{name}` ids in [0, {num_states}) (num_states={num_states}), "
            f"but got values in [{int(x.min())}, {int(x.max())}]."
        )
