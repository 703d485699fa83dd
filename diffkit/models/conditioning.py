"""The condition embedding every shipped denoiser uses: class ids or feature vectors -> (B, dim).

A conditional denoiser is called ``denoiser(x_t, t, cond)`` (docs/conditioning.md). ``cond`` is

* ``None``: the null condition for the whole batch (the unconditional model of classifier-free
  guidance, Ho & Salimans 2022);
* int64 class ids (B,) in [0, K), with the id :data:`NULL_CLASS` (-1) marking a dropped (null)
  example, as ``DiffusionModule(cond_drop_prob=...)`` writes it;
* float features (B, C), with a row of NaN marking a dropped (null) example.

:class:`ConditionEmbedding` maps each of these to a (B, dim) vector: a class embedding table with
one extra learned row for the null class, or a linear map of the features with a learned null
vector. The shipped denoisers add it to their time embedding; their ``cond_spec`` attribute says
what they accept (None: unconditional), which ``diffkit.sample`` and ``DiffusionModule`` check
``cond`` against (:func:`diffkit.guidance.check_cond`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["NULL_CLASS", "ConditionSpec", "ConditionEmbedding"]

#: The class id of a dropped (null) condition in an int64 ``cond``.
NULL_CLASS = -1


@dataclass(frozen=True)
class ConditionSpec:
    """What a conditional denoiser accepts as ``cond``: exactly one of the two is set.

    Attributes:
        num_classes: K, for int64 class ids (B,) in [0, K).
        cond_dim: C, for float features (B, C).
    """

    num_classes: int | None = None
    cond_dim: int | None = None

    def __post_init__(self) -> None:
        if (self.num_classes is None) == (self.cond_dim is None):
            raise ValueError(
                f"num_classes, cond_dim: expected exactly one of them, got num_classes={self.num_classes!r}, "
                f"cond_dim={self.cond_dim!r}"
            )
        for name, value in (("num_classes", self.num_classes), ("cond_dim", self.cond_dim)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected an int >= 1 or None, got {value!r}")


def condition_spec(num_classes: int | None, cond_dim: int | None) -> ConditionSpec | None:
    """The :class:`ConditionSpec` of a denoiser's ``num_classes`` / ``cond_dim`` arguments (None: unconditional)."""
    if num_classes is None and cond_dim is None:
        return None
    return ConditionSpec(num_classes, cond_dim)


class ConditionEmbedding(nn.Module):
    """Embed ``cond`` (class ids, features, or None) as (B, dim), with a learned null condition.

    Args:
        num_classes: K for class-id conditions (an nn.Embedding of K + 1 rows, row K the null class).
        cond_dim: C for feature conditions (Linear(C, dim) and a learned null vector).
        dim: the output width.

    Exactly one of ``num_classes`` and ``cond_dim`` is given.

    Example:
        >>> emb = ConditionEmbedding(num_classes=3, dim=4)
        >>> emb(torch.tensor([0, 2, -1]), 3).shape, emb(None, 5).shape
        (torch.Size([3, 4]), torch.Size([5, 4]))
    """

    def __init__(self, num_classes: int | None = None, cond_dim: int | None = None, *, dim: int) -> None:
        super().__init__()
        self.spec = ConditionSpec(num_classes, cond_dim)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected an int >= 1, got {dim!r}")
        self.dim = dim
        if num_classes is not None:
            self.classes = nn.Embedding(num_classes + 1, dim)  # row K: the null class
            self.features = None
            self.null = None
        else:
            self.classes = None
            self.features = nn.Linear(cond_dim, dim)
            self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, cond: Tensor | None, batch_size: int) -> Tensor:
        """(B, dim) embedding of ``cond``; None, id -1 or a NaN row give the learned null condition.

        Args:
            cond: None, int64 (B,) ids in [-1, K), or float (B, C) features (rows of NaN = null).
            batch_size: B (used when ``cond`` is None).

        Raises:
            TypeError: a dtype that does not match the spec.
            ValueError: a shape or class id that does not.
        """
        spec = self.spec
        if self.classes is not None:
            null_id = spec.num_classes
            if cond is None:
                ids = torch.full((batch_size,), null_id, dtype=torch.long, device=self.classes.weight.device)
            else:
                if cond.dtype != torch.long:
                    raise TypeError(f"cond: expected int64 class ids for num_classes={null_id}, got dtype {cond.dtype}")
                if cond.shape != (batch_size,):
                    raise ValueError(f"cond: expected class ids of shape ({batch_size},), got {tuple(cond.shape)}")
                ids = torch.where(cond == NULL_CLASS, null_id, cond)
            return self.classes(ids)
        if cond is None:
            return self.null.expand(batch_size, self.dim)
        if not cond.is_floating_point():
            raise TypeError(
                f"cond: expected float features (B, {spec.cond_dim}) for cond_dim={spec.cond_dim}, got dtype "
                f"{cond.dtype}"
            )
        if cond.shape != (batch_size, spec.cond_dim):
            raise ValueError(
                f"cond: expected features of shape ({batch_size}, {spec.cond_dim}), got {tuple(cond.shape)}"
            )
        dropped = torch.isnan(cond).all(-1, keepdim=True)  # (B, 1)
        out = self.features(torch.nan_to_num(cond, nan=0.0).to(self.features.weight.dtype))
        return torch.where(dropped, self.null.to(out.dtype), out)
