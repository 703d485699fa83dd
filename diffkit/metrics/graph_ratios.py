"""MMD ratios as DeFoG-style tables compute them (Qin et al. 2024, and later papers copying the rule).

``GraphMetrics`` divides each MMD^2 by the exact train-vs-test MMD^2. The published tables instead
divide by that reference **rounded to 4 decimals**, drop every descriptor whose rounded reference
is 0, and average what is left; they also average a fifth descriptor (wavelet) that diffkit does
not compute. So a mean ratio from :func:`rounded_ratios` is comparable with theirs only up to the
missing wavelet term, and on the same data set sizes:

    ratio_d = mmd_d / round(ref_d, 4)     for each d with round(ref_d, 4) != 0
    mean    = average of the ratio_d kept
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["RoundedRatios", "rounded_ratios"]


class RoundedRatios(NamedTuple):
    """Per-descriptor ratios kept (descriptor -> ratio), their mean (NaN if none is kept) and the dropped
    descriptors."""

    ratios: dict[str, float]
    mean: float
    dropped: tuple[str, ...]


def rounded_ratios(mmd: Mapping[str, float], reference: Mapping[str, float], decimals: int = 4) -> RoundedRatios:
    """DeFoG-style ratios (module docstring).

    Args:
        mmd: descriptor -> MMD^2(generated, test).
        reference: descriptor -> MMD^2(train, test), for at least the descriptors of ``mmd``.
        decimals: rounding of the reference (4 in the published tables).

    Raises:
        ValueError: if a descriptor of ``mmd`` has no reference.
    """
    missing = [k for k in mmd if k not in reference]
    if missing:
        raise ValueError(f"reference: expected an MMD for every descriptor of mmd, got none for {missing}")
    ratios, dropped = {}, []
    for name, value in mmd.items():
        denominator = round(float(reference[name]), decimals)
        if denominator == 0:
            dropped.append(name)
        else:
            ratios[name] = float(value) / denominator
    mean = sum(ratios.values()) / len(ratios) if ratios else math.nan
    return RoundedRatios(ratios, mean, tuple(dropped))
