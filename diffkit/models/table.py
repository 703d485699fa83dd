"""A denoiser for mixed tables: numeric columns under Gaussian noise, categorical under categorical noise.

A batch is a dict of named fields (the input of a ``ProductProcess``): numeric fields are (B, D_f)
floats, categorical fields are (B,) int64 ids. Every field is embedded (numeric as is, categorical
by ``nn.Embedding``), concatenated with a sinusoidal embedding of t / T and run through one shared
MLP trunk; one linear head per field then gives that field's output:

    numeric field f      -> (B, D_f) float, the parametrization's target (eps, x0 or v)
    categorical field f  -> (B, num_outputs_f) float x0 logits

The output dict has exactly the field names given to the constructor; extra input keys (such as
a "mask") are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from diffkit._checks import check_float, check_ids, check_positive_int, check_timesteps
from diffkit.models.conditioning import ConditionEmbedding, ConditionSpec
from diffkit.models.embeddings import SinusoidalEmbedding

__all__ = ["TableDenoiser"]


class TableDenoiser(nn.Module):
    """Shared MLP trunk over all fields and t / T, with one head per field.

    Args:
        numeric: field name -> D_f, the width of that numeric field.
        categorical: field name -> (num_states, num_outputs): the number of input ids (K, or K + 1
            with an absorbing mask state) and of output logits (usually K).
        num_steps: T, the number of diffusion steps; time enters as t / T.
        hidden: width of each trunk layer.
        depth: number of trunk layers (Linear + SiLU), >= 1.
        embed_dim: width of each categorical field's embedding.
        time_dim: width of the sinusoidal time embedding.
        num_classes: K for a class-conditional model (``cond`` int64 ids (B,)); None: no classes.
        cond_dim: C for a feature-conditional model (``cond`` float (B, C)); None: no features.
            The condition's embedding (with a learned null condition) is added to the time embedding.

    Example:
        >>> import torch
        >>> net = TableDenoiser({"age": 1}, {"job": (5, 4)}, num_steps=100)
        >>> out = net({"age": torch.randn(3, 1), "job": torch.tensor([0, 4, 2])}, torch.tensor([1, 50, 100]))
        >>> {name: tuple(v.shape) for name, v in out.items()}
        {'age': (3, 1), 'job': (3, 4)}
    """

    def __init__(
        self,
        numeric: dict[str, int],
        categorical: dict[str, tuple[int, int]],
        num_steps: int,
        hidden: int = 256,
        depth: int = 3,
        embed_dim: int = 16,
        time_dim: int = 128,
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        _check_fields(numeric, categorical)
        for name, value in dict(hidden=hidden, depth=depth, embed_dim=embed_dim, time_dim=time_dim).items():
            check_positive_int(name, value)
        self.numeric = dict(numeric)
        self.categorical = {name: (int(k_in), int(k_out)) for name, (k_in, k_out) in categorical.items()}
        self.num_steps = num_steps
        self.time_embed = SinusoidalEmbedding(num_steps, time_dim)
        conditional = num_classes is not None or cond_dim is not None
        self.cond_embed = ConditionEmbedding(num_classes, cond_dim, dim=time_dim) if conditional else None
        # ModuleLists in field order, so any column name works (ModuleDict rejects "a.b" and "values").
        self.embeds = nn.ModuleList(nn.Embedding(k_in, embed_dim) for k_in, _ in self.categorical.values())
        layers: list[nn.Module] = []
        width = sum(self.numeric.values()) + embed_dim * len(self.categorical) + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.numeric_heads = nn.ModuleList(nn.Linear(hidden, d) for d in self.numeric.values())
        self.categorical_heads = nn.ModuleList(nn.Linear(hidden, k_out) for _, k_out in self.categorical.values())

    @property
    def field_names(self) -> list[str]:
        """Numeric field names, then categorical ones, in constructor order."""
        return [*self.numeric, *self.categorical]

    @property
    def cond_spec(self) -> ConditionSpec | None:
        """What ``cond`` this model takes (None: unconditional)."""
        return None if self.cond_embed is None else self.cond_embed.spec

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, cond: Tensor | None = None) -> dict[str, Tensor]:
        """Predict every field's output from the noisy row and the step (and ``cond``: None, int64
        ids (B,) or float features (B, C), for a conditional model).

        Args:
            x_t: dict with, for each numeric field, a (B, D_f) float Tensor and, for each
                categorical field, a (B,) int64 Tensor of ids in [0, num_states). Other keys are ignored.
            t: (B,) int64 steps in 0..T.

        Returns:
            dict with exactly the constructor's field names: numeric -> (B, D_f) float,
            categorical -> (B, num_outputs) float logits.

        Raises:
            TypeError: if ``x_t`` is not a mapping, a field has the wrong dtype, or ``t`` is not int64.
            ValueError: if a field is missing, has the wrong shape or batch size, holds out-of-range
                ids, or ``t`` is not (B,).
        """
        batch_size = self._check_batch(x_t)
        check_timesteps(t, batch_size)
        dtype = self.trunk[0].weight.dtype
        parts = [x_t[name].to(dtype) for name in self.numeric]  # each (B, D_f)
        parts += [
            embed(x_t[name]) for name, embed in zip(self.categorical, self.embeds, strict=True)
        ]  # each (B, embed_dim)
        emb = self.time_embed(t).to(dtype)  # (B, time_dim)
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond, batch_size).to(dtype)
        elif cond is not None:
            raise ValueError("cond: this TableDenoiser is unconditional; build it with num_classes=K or cond_dim=C")
        parts.append(emb)
        h = self.trunk(torch.cat(parts, dim=-1))  # (B, hidden)
        out = {name: head(h) for name, head in zip(self.numeric, self.numeric_heads, strict=True)}  # each (B, D_f)
        out.update(
            {name: head(h) for name, head in zip(self.categorical, self.categorical_heads, strict=True)}
        )  # each (B, K_out)
        return out

    def _check_batch(self, x_t: Mapping[str, Tensor]) -> int:
        """Check every field's presence, dtype, shape and ids; return the batch size B (read from the first field)."""
        if not isinstance(x_t, Mapping):
            raise TypeError(f"x_t: expected a dict of field tensors, got {type(x_t).__name__}")
        missing = [name for name in self.field_names if name not in x_t]
        if missing:
            raise ValueError(
                f"x_t: missing field(s) {missing}; expected fields {self.field_names}, got keys {list(x_t)}"
            )
        first = x_t[self.field_names[0]]
        # "B" only when the first field is 0-d, which then fails its own shape check below.
        batch_size = first.shape[0] if isinstance(first, Tensor) and first.ndim else "B"
        for name, width in self.numeric.items():
            check_float(f"x_t[{name!r}]", x_t[name])
            if tuple(x_t[name].shape) != (batch_size, width):
                raise ValueError(f"x_t[{name!r}]: expected shape ({batch_size}, {width}), got {tuple(x_t[name].shape)}")
        for name, (num_states, _) in self.categorical.items():
            check_ids(f"x_t[{name!r}]", x_t[name], num_states, bound="num_states")
            if tuple(x_t[name].shape) != (batch_size,):
                raise ValueError(f"x_t[{name!r}]: expected shape ({batch_size},), got {tuple(x_t[name].shape)}")
        return batch_size


def _check_fields(numeric: dict[str, int], categorical: dict[str, tuple[int, int]]) -> None:
    """Raise a clear error for an unusable field specification."""
    if not isinstance(numeric, Mapping) or not isinstance(categorical, Mapping):
        raise TypeError(
            f"numeric, categorical: expected two dicts, got {type(numeric).__name__} and {type(categorical).__name__}"
        )
    if not numeric and not categorical:
        raise ValueError("numeric, categorical: expected at least one field, got both empty")
    shared = sorted(set(numeric) & set(categorical))
    if shared:
        raise ValueError(f"numeric, categorical: expected distinct field names, got {shared} in both")
    for name, width in numeric.items():
        check_positive_int(f"numeric[{name!r}]", width)
    for name, spec in categorical.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise ValueError(f"categorical[{name!r}]: expected a pair (num_states, num_outputs), got {spec!r}")
        check_positive_int(f"categorical[{name!r}][0] (num_states)", spec[0])
        check_positive_int(f"categorical[{name!r}][1] (num_outputs)", spec[1])
