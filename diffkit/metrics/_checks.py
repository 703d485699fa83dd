"""Input checks shared by the metric functions and classes.

Each check raises a TypeError (wrong type or dtype) or a ValueError (wrong shape or value) whose
message names the argument, what it found and what was expected.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: How far a probability vector's sum may stray from 1 (float32 sums of ~1e5 classes stay within it).
PROBABILITY_SUM_ATOL = 1e-4


def check_tensor(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")


def check_points(name: str, x: object, min_rows: int = 1) -> None:
    """A floating (N, D) point cloud with N >= min_rows and D >= 1."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"Expected `{name}` to have a floating dtype, but got {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(f"Expected `{name}` of shape (N, D), but got shape {tuple(x.shape)}.")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(
            f"Expected `{name}` to have at least {min_rows} rows and 1 column, but got shape {tuple(x.shape)}."
        )


def check_same_features(x_name: str, x: Tensor, y_name: str, y: Tensor) -> None:
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"Expected `{x_name}` and `{y_name}` to have the same trailing shape, but got "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )


def check_ids(name: str, ids: object, num_classes: int, ndim: int | None = None) -> None:
    """An int64 tensor of class ids in [0, num_classes), with ``ndim`` dims if given."""
    check_tensor(name, ids)
    if ids.dtype != torch.int64:
        raise TypeError(f"Expected `{name}` to have dtype torch.int64, but got {ids.dtype}.")
    if ndim is not None and ids.ndim != ndim:
        raise ValueError(f"Expected `{name}` to have {ndim} dims, but got shape {tuple(ids.shape)}.")
    if ids.numel() == 0:
        raise ValueError(f"Expected `{name}` to hold at least one id, but got shape {tuple(ids.shape)}.")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"Expected `{name}` to hold ids in [0, {num_classes}), but got values in [{low}, {high}].")


def check_sequences(name: str, ids: Tensor, num_classes: int) -> None:
    """(N, L) int64 ids in [0, K) with L >= 2: what bigrams need."""
    check_ids(name, ids, num_classes, ndim=2)
    if ids.shape[1] < 2:
        raise ValueError(f"Expected `{name}` of shape (N, L) with L >= 2, but got shape {tuple(ids.shape)}.")


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"Expected `{name}` >= 1, but got {value}.")


def check_probabilities(name: str, p: object) -> None:
    """A floating tensor (..., K), non-negative, each last-dim row summing to 1."""
    check_tensor(name, p)
    if not p.is_floating_point():
        raise TypeError(f"Expected `{name}` to have a floating dtype, but got {p.dtype}.")
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"Expected `{name}` of shape (..., K) with K >= 1, but got shape {tuple(p.shape)}.")
    if bool((p < 0).any()):
        raise ValueError(f"Expected `{name}` to be non-negative, but got a minimum of {float(p.min())}.")
    error = float((p.double().sum(-1) - 1).abs().max())
    if error > PROBABILITY_SUM_ATOL:
        raise ValueError(f"Expected `{name}` to sum to 1 over its last dim, but a row is off by {error:.3g}.")


def check_columns(name: str, x: object) -> None:
    """A floating (N,) or (N, C) tensor with N >= 1 and C >= 1."""
    check_tensor(name, x)
    if x.ndim not in (1, 2):
        raise ValueError(f"Expected `{name}` of shape (N,) or (N, C), but got shape {tuple(x.shape)}.")
    check_points(name, x if x.ndim == 2 else x[:, None])


def check_order(p: object) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"Expected the order `p` to be a number >= 1, but got {p!r}.")


def check_bandwidth(bandwidth: object) -> None:
    if bandwidth is None:
        return
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise ValueError(f"Expected `bandwidth` to be a number > 0 or None, but got {bandwidth!r}.")
