"""Infilling: sample the unknown part of x0 given a known part, ``sample(..., known=, known_mask=)``.

Two projections, chosen per field by the process's ``exact_infill`` attribute:

* exact (absorbing categorical noise): the known tokens are set to their values in the prior and
  after every jump, so they are never masked. Under absorbing noise each element is masked
  independently of its value and of the other elements, so conditioning on "the known elements
  were never masked" changes nothing else: with the exact p(x0 | x_t) the chain samples the true
  conditional p(x0_unknown | x0_known) (up to the joint-vs-factorized error every reverse step
  has, which vanishes as the steps get finer).
* RePaint (Lugmayr et al. 2022, Alg. 1) for every other field (Gaussian, uniform / marginal /
  matrix categorical): after each jump t -> s the known elements are replaced by a fresh draw of
  q(x_s | x0_known); with ``resample_rounds`` U > 1 the jump is repeated U times, the merged x_s
  re-noised to x_t ~ q(x_t | x_s) in between, so the unknown part has time to agree with the
  known one. This approximates the conditional: the known part of x_s is drawn independently of
  the unknown part, while the true joint q(x_s | x0) correlates them only through x0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from diffkit.processes.base import ForwardProcess

__all__ = ["Known", "check_known", "impose_known", "renoise", "check_resample_rounds"]


class Known(NamedTuple):
    """The known part of x0, checked (:func:`check_known`).

    Attributes:
        values: like x0 (a Tensor, or a dict with every field of a ProductProcess); values where
            ``mask`` is False are replaced by zeros (a valid value of every field).
        mask: bool, the same structure and shapes as ``values``: True where the value is known.
    """

    values: Any
    mask: Any


def _field_processes(process: ForwardProcess) -> dict[str | None, ForwardProcess]:
    fields = getattr(process, "fields", None)
    return {None: process} if fields is None else dict(fields.items())


def _check_field(
    proc: ForwardProcess, shape: tuple, known: Any, mask: Any, where: str, device: Any
) -> tuple[Tensor, Tensor]:
    """One field's (values, mask) on ``device``; raises naming ``known{where}`` / ``known_mask{where}``."""
    for name, value in ((f"known{where}", known), (f"known_mask{where}", mask)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match the sample shape {tuple(shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"known_mask{where}: expected a bool Tensor (True = known), got dtype {mask.dtype}")
    known, mask = known.to(device), mask.to(device)
    filled = torch.where(mask, known, torch.zeros((), dtype=known.dtype, device=device))
    proc.validate_x0(filled, f"known{where}")  # dtype (ids vs floats) and the known values' range
    return filled, mask


def check_known(process: ForwardProcess, shape: Any, known: Any, known_mask: Any, device: Any) -> Known | None:
    """Check ``known`` / ``known_mask`` against the sample shape and the process; None if both are None.

    For a ProductProcess both are dicts over a subset of the fields (missing fields: nothing known).

    Raises:
        ValueError: only one of the two given, a shape that does not match, an unknown field,
            a known value the field cannot hold (a class id outside [0, K), NaN).
        TypeError: a wrong type or dtype (known_mask must be bool; known ids int64 for a
            categorical field, floats for a Gaussian one).
    """
    if known is None and known_mask is None:
        return None
    if known is None or known_mask is None:
        missing = "known" if known is None else "known_mask"
        raise ValueError(f"{missing}: infilling needs both known (the values) and known_mask (True where known)")
    procs = _field_processes(process)
    if None in procs:
        return Known(*_check_field(process, shape, known, known_mask, "", device))
    for name, value in (("known", known), ("known_mask", known_mask)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{name}: a ProductProcess takes a dict field -> Tensor, got {type(value).__name__}")
        unknown = sorted(set(value) - set(procs))
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {unknown}; the fields are {list(procs)}")
    if set(known) != set(known_mask):
        raise ValueError(f"known_mask: fields {sorted(known_mask)} do not match known's {sorted(known)}")
    values, masks = {}, {}
    for f, proc in procs.items():
        if f in known:
            values[f], masks[f] = _check_field(proc, shape[f], known[f], known_mask[f], f"[{f!r}]", device)
        else:
            # only the dtype and shape are used; a private generator leaves torch's global RNG alone
            like = proc.prior_sample(shape[f], device=device, generator=torch.Generator(device).manual_seed(0))
            values[f], masks[f] = torch.zeros_like(like), torch.zeros(like.shape, dtype=torch.bool, device=device)
    return Known(values, masks)


def check_resample_rounds(resample_rounds: Any) -> int:
    """Raise unless ``resample_rounds`` is an int >= 1 (1: no resampling)."""
    if isinstance(resample_rounds, bool) or not isinstance(resample_rounds, int) or resample_rounds < 1:
        raise ValueError(f"resample_rounds: expected an int >= 1 (1: no RePaint resampling), got {resample_rounds!r}")
    return resample_rounds


def impose_known(
    process: ForwardProcess, x_s: Any, known: Known, s: int, generator: torch.Generator | None = None
) -> Any:
    """x_s with its known elements replaced: by their values (``exact_infill`` fields, and every field
    at s = 0), else by a draw of q(x_s | x0_known) (RePaint)."""
    procs = _field_processes(process)
    repaint = s > 0 and not all(p.exact_infill for p in procs.values())
    if repaint:
        source = known.values if None in procs else {**known.values, **_mask_entry(process, x_s)}
        noised = process.q_sample(source, s, generator=generator).x_t
    if None in procs:
        value = noised if repaint and not process.exact_infill else known.values
        return torch.where(known.mask, value, x_s)
    out = dict(x_s)
    for f, proc in procs.items():
        value = noised[f] if repaint and not proc.exact_infill else known.values[f]
        out[f] = torch.where(known.mask[f], value, x_s[f])
    return out


def _mask_entry(process: ForwardProcess, x: Mapping) -> dict:
    key = getattr(process, "mask_key", None)
    return {key: x[key]} if key is not None and key in x else {}


def renoise(process: ForwardProcess, x_s: Any, t: int, s: int, generator: torch.Generator | None = None) -> Any:
    """x_t ~ q(x_t | x_s) for ints 0 <= s < t: RePaint's step back up between resampling rounds.

    Drawn with the process's public ``transition`` and ``reverse_sample`` (at time t > 0, a real
    draw). For a ProductProcess each field is re-noised; padding and the lower triangle of
    symmetric fields are restored from the upper one (``field_mask``).
    """
    procs = _field_processes(process)
    if None in procs:
        batch = x_s.shape[0]
        return process.reverse_sample(
            process.transition(x_s, t, s), torch.full((batch,), t, dtype=torch.long, device=x_s.device), generator
        )
    mask = _mask_entry(process, x_s)
    out = dict(x_s)
    for f, proc in procs.items():
        old = x_s[f]
        t_vec = torch.full((old.shape[0],), t, dtype=torch.long, device=old.device)
        new = proc.reverse_sample(proc.transition(old, t, s), t_vec, generator)
        keep = process.field_mask(f, old, next(iter(mask.values()), None))
        if keep is not None:
            new = torch.where(keep, new, old)
        if f in getattr(process, "symmetric", ()):
            upper = torch.ones(old.shape[1], old.shape[1], dtype=torch.bool, device=old.device).triu(1)
            lower = upper.T.reshape(1, *upper.shape, *([1] * (old.ndim - 3)))
            new = torch.where(lower, new.transpose(1, 2), new)
        out[f] = new
    return out
