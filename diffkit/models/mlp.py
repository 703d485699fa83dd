"""An MLP denoiser for small continuous data (2-D toy sets, flattened vectors).

The input x_t is flattened to (B, dim), concatenated with a sinusoidal embedding of t / T and
passed through ``depth`` hidden layers of width ``hidden`` with SiLU. The output has the shape of
x_t; what it means (eps, x0, v, ...) is the parametrization's business.

The default shape (2 inputs + 128 sinusoidal features, three hidden layers of 256) is used in the
speed benchmarks, so the forward pass is kept lean: the frequency table is a buffer built once and
nothing loops over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffkit._checks import check_float, check_positive_int, check_timesteps
from diffkit.models.conditioning import ConditionEmbedding, ConditionSpec
from diffkit.models.embeddings import SinusoidalEmbedding

__all__ = ["MLPDenoiser"]


class MLPDenoiser(nn.Module):
    """MLP on [x_t, sinusoidal(t / T)].

    Args:
        dim: D, the number of features per example (the product of the data shape).
        num_steps: T, the number of diffusion steps; time enters as t / T.
        hidden: width of each hidden layer.
        depth: number of hidden layers (Linear + SiLU), >= 1.
        time_dim: width of the sinusoidal time embedding.
        num_classes: K for a class-conditional model (``cond`` int64 ids (B,)); None: no classes.
        cond_dim: C for a feature-conditional model (``cond`` float (B, C)); None: no features.
            The condition's embedding (:class:`~diffkit.models.conditioning.ConditionEmbedding`,
            with a learned null condition) is added to the time embedding.
        learn_variance: also emit D variance outputs (for ``GaussianProcess(reverse_variance="learned")``):
            the output then has x_t's shape with dim 1 doubled, mean channels first.

    Example:
        >>> import torch
        >>> net = MLPDenoiser(dim=2, num_steps=100)
        >>> net(torch.randn(8, 2), torch.randint(0, 101, (8,))).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        dim: int,
        num_steps: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 128,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        learn_variance: bool = False,
    ) -> None:
        super().__init__()
        for name, value in dict(dim=dim, hidden=hidden, depth=depth, time_dim=time_dim).items():
            check_positive_int(name, value)
        self.dim = dim
        self.num_steps = num_steps
        self.time_embed = SinusoidalEmbedding(num_steps, time_dim)
        conditional = num_classes is not None or cond_dim is not None
        self.cond_embed = ConditionEmbedding(num_classes, cond_dim, dim=time_dim) if conditional else None
        layers: list[nn.Module] = []
        width = dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.learn_variance = learn_variance
        layers.append(nn.Linear(hidden, 2 * dim if learn_variance else dim))
        self.net = nn.Sequential(*layers)

    @property
    def cond_spec(self) -> ConditionSpec | None:
        """What ``cond`` this model takes (None: unconditional)."""
        return None if self.cond_embed is None else self.cond_embed.spec

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict the parametrization's target for a noisy batch.

        Args:
            x_t: (B, ...) float noisy data whose trailing dims multiply to ``dim``.
            t: (B,) int64 steps in 0..T.
            cond: None (the null condition), int64 ids (B,) or float features (B, C) (see
                :mod:`diffkit.models.conditioning`); only for a conditional model.

        Returns:
            Tensor of the same shape and dtype as ``x_t`` (dim 1 doubled with ``learn_variance``).

        Raises:
            TypeError: if ``x_t`` is not floating point or ``t`` is not int64.
            ValueError: if the trailing dims of ``x_t`` do not multiply to ``dim`` or ``t`` is not (B,).
        """
        check_float("x_t", x_t)
        if x_t.ndim < 2 or math.prod(x_t.shape[1:]) != self.dim:
            raise ValueError(
                f"x_t: expected shape (B, ...) with {self.dim} features per example, got {tuple(x_t.shape)}"
            )
        check_timesteps(t, x_t.shape[0])
        h = x_t.reshape(x_t.shape[0], self.dim)  # (B, D)
        emb = self.time_embed(t).to(h.dtype)  # (B, time_dim)
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond, h.shape[0]).to(h.dtype)
        elif cond is not None:
            raise ValueError("cond: this MLPDenoiser is unconditional; build it with num_classes=K or cond_dim=C")
        out = self.net(torch.cat([h, emb], dim=-1))  # (B, D), or (B, 2D) with learn_variance
        if self.learn_variance:
            return out.reshape(x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:])
        return out.reshape(x_t.shape)
