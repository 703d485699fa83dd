"""Conditioning and classifier-free guidance: the pure combinations and the checks at the boundary.

Classifier-free guidance (Ho & Salimans 2022) samples with the conditional and the null
(unconditional) prediction of one network, trained with the condition dropped at random
(``DiffusionModule(cond_drop_prob=...)``). With guidance scale w >= 0 (w = 0: the plain
conditional model) the two outputs are combined per field, in the space where the combination is
what guidance means (docs/conditioning.md gives the derivations):

* Gaussian fields (``eps``, ``x0``, ``v``, ``previous-step``): linearly,
  ``out = out_c + w (out_c - out_null)`` (:func:`cfg_linear`). The score of
  p(x | c)^(1 + w) p(x)^(-w) is (1 + w) score_c - w score_null, and eps, x0, v and the reverse mean
  are all affine in the score at fixed (x_t, t), so the same combination holds in each of them.
* categorical fields: in x0 log-probabilities, ``log p = log_softmax(log p_c + w (log p_c - log
  p_null))`` (:func:`cfg_log_probs`): p(x0 | x_t) proportional to p_c^(1 + w) p_null^(-w),
  renormalized, before the derived reverse step.

A parametrization says which combination its output takes with the class attribute
``guidance`` (a :data:`GuidanceKind`); a plug-in parametrization sets its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from diffkit.models.conditioning import NULL_CLASS, ConditionSpec

__all__ = [
    "GuidanceKind",
    "cfg_linear",
    "cfg_log_probs",
    "combine_guided",
    "guided_output",
    "cond_spec",
    "check_cond",
    "check_guidance_scale",
    "drop_cond",
    "split_cond_batch",
]

GuidanceKind = Literal["linear", "log_probs"]


def cfg_linear(out_c: Tensor, out_null: Tensor, w: float) -> Tensor:
    """Guided output of a Gaussian field: out_c + w (out_c - out_null) (Ho & Salimans 2022 eq. 6,
    written with w = 0 the conditional model). Any shape; returns the same shape and dtype."""
    return out_c + w * (out_c - out_null)


def cfg_log_probs(logits_c: Tensor, logits_null: Tensor, w: float) -> Tensor:
    """Guided x0 log-probabilities of a categorical field.

    log p = log_softmax((1 + w) log p_c - w log p_null) over the last dim: the distribution
    proportional to p_c^(1 + w) p_null^(-w), i.e. log p_c + w (log p_c - log p_null) renormalized.

    Args:
        logits_c: (..., K) conditional logits (any normalization).
        logits_null: (..., K) null-condition logits.
        w: guidance scale >= 0.

    Returns:
        (..., K) normalized log-probabilities (float32 at least).
    """
    lp_c = torch.log_softmax(logits_c.float() if logits_c.dtype in (torch.float16, torch.bfloat16) else logits_c, -1)
    lp_null = torch.log_softmax(logits_null.to(lp_c.dtype), -1)
    return torch.log_softmax(lp_c + w * (lp_c - lp_null), -1)


_COMBINE: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {"linear": cfg_linear, "log_probs": cfg_log_probs}


def combine_guided(param: Any, out_c: Any, out_null: Any, w: float) -> Any:
    """Combine conditional and null outputs field by field, each by its parametrization's ``guidance``.

    Args:
        param: a Parametrization, or a dict field -> Parametrization (ProductProcess).
        out_c, out_null: the denoiser's outputs (a Tensor, or a dict of them per field).
        w: guidance scale >= 0.

    Raises:
        ValueError: a parametrization whose ``guidance`` is not a :data:`GuidanceKind`.
    """
    if isinstance(param, Mapping):
        return {
            name: combine_guided(param[name], out_c[name], out_null[name], w) if name in param else out_c[name]
            for name in out_c
        }
    kind = getattr(param, "guidance", "linear")
    if kind not in _COMBINE:
        raise ValueError(
            f"{type(param).__name__}.guidance: unknown combination {kind!r}; expected one of {sorted(_COMBINE)}"
        )
    return _COMBINE[kind](out_c, out_null, w)


def guided_output(
    denoiser: Callable, x_t: Any, t: Tensor, cond: Tensor | None, guidance_scale: float, param: Any
) -> Any:
    """The one call of the denoiser in :func:`diffkit.sample`'s loop.

    * ``cond`` None: ``denoiser(x_t, t)`` (an unconditional denoiser, or a conditional one's null model);
    * ``guidance_scale`` 0: ``denoiser(x_t, t, cond)``;
    * otherwise the conditional and null outputs combined by :func:`combine_guided`.

    Arguments were checked by the caller (:func:`check_cond`, :func:`check_guidance_scale`).
    """
    if cond is None:
        return denoiser(x_t, t)
    out_c = denoiser(x_t, t, cond)
    if guidance_scale == 0:
        return out_c
    return combine_guided(param, out_c, denoiser(x_t, t, None), guidance_scale)


def cond_spec(denoiser: Any) -> ConditionSpec | None:
    """What ``denoiser`` accepts as ``cond``: its declared ``cond_spec`` attribute (None or absent: unconditional)."""
    spec = getattr(denoiser, "cond_spec", None)
    if spec is not None and not isinstance(spec, ConditionSpec):
        raise TypeError(f"denoiser.cond_spec: expected a ConditionSpec or None, got {type(spec).__name__}")
    return spec


def check_cond(
    denoiser: Any, cond: Any, batch_size: int, device: torch.device | str | None = None, allow_null: bool = False
) -> Tensor | None:
    """Check ``cond`` against the denoiser's :class:`ConditionSpec`; return it as a Tensor on ``device``.

    An int is broadcast to (B,) class ids. ``allow_null`` accepts the null markers a training batch
    may carry after dropping (id -1, NaN rows).

    Raises:
        ValueError: cond for an unconditional denoiser, a wrong shape, a class id outside [0, K).
        TypeError: a dtype that does not match (ids need int64, features a float dtype).
    """
    if cond is None:
        return None
    spec = cond_spec(denoiser)
    if spec is None:
        raise ValueError(
            f"cond: the denoiser {type(denoiser).__name__} is unconditional (it declares no cond_spec); build it with "
            "num_classes=K or cond_dim=C to train and sample a conditional model, or pass cond=None"
        )
    if isinstance(cond, bool) or not isinstance(cond, (int, Tensor)):
        raise TypeError(f"cond: expected an int or a Tensor, got {type(cond).__name__}")
    if isinstance(cond, int):
        cond = torch.full((batch_size,), cond, dtype=torch.long)
    cond = cond.to(device) if device is not None else cond
    if spec.num_classes is not None:
        return _check_class_ids(cond, spec.num_classes, batch_size, allow_null)
    if not cond.is_floating_point():
        raise TypeError(
            f"cond: expected float features (B, C) = ({batch_size}, {spec.cond_dim}) for cond_dim={spec.cond_dim}, "
            f"got dtype {cond.dtype}"
        )
    if tuple(cond.shape) != (batch_size, spec.cond_dim):
        raise ValueError(f"cond: expected features of shape ({batch_size}, {spec.cond_dim}), got {tuple(cond.shape)}")
    finite = torch.isfinite(cond).all(-1) | (allow_null & torch.isnan(cond).all(-1))
    if not bool(finite.all()):
        raise ValueError(
            "cond: found NaN or inf features"
            + ("" if allow_null else " (a NaN row is the null condition of training batches only)")
        )
    return cond


def _check_class_ids(cond: Tensor, num_classes: int, batch_size: int, allow_null: bool) -> Tensor:
    if cond.is_floating_point() or cond.dtype == torch.bool or cond.is_complex():
        raise TypeError(f"cond: expected int64 class ids (B,) for num_classes={num_classes}, got dtype {cond.dtype}")
    if tuple(cond.shape) != (batch_size,):
        raise ValueError(f"cond: expected class ids of shape ({batch_size},), got {tuple(cond.shape)}")
    cond = cond.long()
    low = NULL_CLASS if allow_null else 0
    if cond.numel() and (int(cond.min()) < low or int(cond.max()) >= num_classes):
        bad = int(cond.max()) if int(cond.max()) >= num_classes else int(cond.min())
        raise ValueError(f"cond: found class id {bad}, expected ids in [0, {num_classes})")
    return cond


def check_guidance_scale(guidance_scale: Any, cond: Any) -> float:
    """Return ``guidance_scale`` as a float after checking it.

    Raises:
        TypeError: not a real number.
        ValueError: negative or not finite, or positive without a ``cond`` to guide towards.
    """
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale: expected a float >= 0, got {type(guidance_scale).__name__}")
    w = float(guidance_scale)
    if not math.isfinite(w) or w < 0:
        raise ValueError(
            f"guidance_scale: expected a finite float >= 0 (0: the plain conditional model), got {guidance_scale}"
        )
    if w > 0 and cond is None:
        raise ValueError(f"guidance_scale: {w} needs a cond to guide towards; pass cond= or guidance_scale=0")
    return w


def drop_cond(cond: Tensor, drop: Tensor) -> Tensor:
    """``cond`` with the examples where ``drop`` (B,) bool is True set to the null condition:
    class id :data:`~diffkit.models.conditioning.NULL_CLASS` (-1) for int64 ids, a NaN row for features."""
    if cond.is_floating_point():
        return cond.masked_fill(drop.reshape(-1, *([1] * (cond.ndim - 1))), float("nan"))
    return cond.masked_fill(drop, NULL_CLASS)


def split_cond_batch(batch: Any) -> tuple[Any, Any]:
    """(x0, cond) of a training batch: a Tensor or a dict (cond None), a 1-tuple ``(x0,)``, a pair
    ``(x0, cond)`` (``TensorDataset(x, y)``), or a dict with the key ``"cond"`` (ProductProcess).

    Raises:
        ValueError: a list or tuple of another length.
    """
    if isinstance(batch, (list, tuple)):
        if len(batch) not in (1, 2):
            raise ValueError(
                f"batch: expected a Tensor, a dict of Tensors, (x0,) or (x0, cond), got a {len(batch)}-element "
                f"{type(batch).__name__}"
            )
        return batch[0], (batch[1] if len(batch) == 2 else None)
    if isinstance(batch, Mapping) and "cond" in batch:
        return {k: v for k, v in batch.items() if k != "cond"}, batch["cond"]
    return batch, None
