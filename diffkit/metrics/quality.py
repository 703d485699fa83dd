"""``sample_quality``: the default sample metrics for a batch of samples against true data.

Chosen by the kind of data, so DiffusionModule needs no per-dataset code:
float vectors -> MMD (Gaussian kernel, median heuristic) and sliced Wasserstein-2;
token sequences -> total variation of unigram and bigram frequencies;
tables (dicts) -> the above per field, prefixed by the field name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from diffkit.metrics.functional import (
    bigram_histogram,
    mmd_rbf,
    sliced_wasserstein,
    token_histogram,
    total_variation,
    wasserstein_1d,
)

__all__ = ["sample_quality"]


def _tensor_quality(samples: Tensor, reference: Tensor, seed: int) -> dict[str, float]:
    if samples.is_floating_point():
        x, y = samples.reshape(samples.shape[0], -1).double(), reference.reshape(reference.shape[0], -1).double()
        if x.shape[1] == 1:
            return {"w1": float(wasserstein_1d(x[:, 0], y[:, 0]))}
        gen = torch.Generator().manual_seed(seed)
        return {"mmd": float(mmd_rbf(x, y)), "swd": float(sliced_wasserstein(x, y, generator=gen))}
    k = int(max(samples.max(), reference.max())) + 1
    if samples.ndim == 1:
        return {"tv": float(total_variation(token_histogram(samples, k), token_histogram(reference, k)))}
    s, r = samples.reshape(samples.shape[0], -1), reference.reshape(reference.shape[0], -1)
    out = {"unigram_tv": float(total_variation(token_histogram(s, k), token_histogram(r, k)))}
    if s.shape[1] > 1:
        out["bigram_tv"] = float(total_variation(bigram_histogram(s, k).flatten(), bigram_histogram(r, k).flatten()))
    return out


def sample_quality(samples: Any, reference: Any, seed: int = 0) -> dict[str, float]:
    """Distances between generated samples and true data (lower is better).

    Args:
        samples: (N, ...) Tensor or dict of Tensors (a "mask" entry is ignored).
        reference: true data of the same kind and per-example shape.
        seed: seeds the random projections of the sliced Wasserstein distance.

    Returns:
        metric name -> value; dict inputs give "<field>/<metric>" names.

    Raises:
        ValueError: when samples and reference are of different kinds.
    """
    if isinstance(samples, Mapping):
        if not isinstance(reference, Mapping):
            raise ValueError("reference: samples are a dict of fields but reference is not")
        out = {}
        for name, value in samples.items():
            if name == "mask" or name not in reference:
                continue
            for metric, v in _tensor_quality(value, reference[name], seed).items():
                out[f"{name}/{metric}"] = v
        return out
    if not isinstance(reference, Tensor) or reference.is_floating_point() != samples.is_floating_point():
        raise ValueError("reference: expected a Tensor of the same kind (float or ids) as samples")
    return _tensor_quality(samples, reference, seed)
