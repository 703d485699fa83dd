"""A small convolutional U-Net denoiser for small images (DDPM's U-Net, Ho et al. 2020 appendix B, shrunk).

Two input layouts:

- Gaussian pixels: x_t (B, C, H, W) float -> (B, out_channels, H, W), the parametrization's target
  (eps, x0 or v);
- categorical pixels (``num_states`` given): x_t (B, H, W) int64 class ids (K, or K + 1 with an
  absorbing mask state) are embedded to ``embed_dim`` channels; the output is (B, H, W,
  num_outputs) x0 logits, the (..., K) layout a ``CategoricalProcess`` expects.

Structure: a 3x3 conv in; per resolution level ``blocks`` residual blocks then a stride-2 conv down
(except at the last level); two residual blocks in the middle; the mirror path up with the skip
of each level concatenated; GroupNorm, SiLU, 3x3 conv out (zero-initialized, so a fresh model
predicts 0). Each residual block adds a projection of the time embedding (TimeEmbedding of t / T)
after its first conv: h = conv2(act(norm(conv1(act(norm(x))) + W c))) + skip(x).
H and W must be divisible by 2 ** (levels - 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffkit._checks import check_positive_int, check_timesteps
from diffkit.models.embeddings import TimeEmbedding

__all__ = ["UNet", "ResBlock"]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """Residual conv block with an additive time embedding (module docstring). (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x))) + self.time(c)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return h + self.skip(x)


class UNet(nn.Module):
    """Small U-Net denoiser (module docstring).

    Args:
        num_steps: T; time enters as t / T.
        in_channels: C of Gaussian inputs (ignored when ``num_states`` is given).
        out_channels: output channels of Gaussian inputs (default ``in_channels``).
        num_states: number of input class ids (categorical pixels); None for float images.
        num_outputs: logits per pixel for categorical inputs (default ``num_states``).
        channels: channels per resolution level, e.g. (32, 64): two levels (8x8, 4x4).
        blocks: residual blocks per level on the way down (and up).
        embed_dim: embedding width of categorical class ids.
        time_dim: width of the time embedding.
        dropout: dropout inside residual blocks.

    Example:
        >>> net = UNet(num_steps=100, num_states=18, num_outputs=17, channels=(16, 32))
        >>> net(torch.randint(0, 18, (2, 8, 8)), torch.tensor([1, 100])).shape
        torch.Size([2, 8, 8, 17])
    """

    def __init__(
        self,
        num_steps: int,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_states: int | None = None,
        num_outputs: int | None = None,
        channels: Sequence[int] = (32, 64),
        blocks: int = 1,
        embed_dim: int = 16,
        time_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in dict(
            num_steps=num_steps, in_channels=in_channels, blocks=blocks, embed_dim=embed_dim, time_dim=time_dim
        ).items():
            check_positive_int(name, value)
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels: expected a non-empty list of positive ints, got {channels}")
        self.num_steps, self.num_states = num_steps, num_states
        if num_states is not None:
            check_positive_int("num_states", num_states)
            self.embed = nn.Embedding(num_states, embed_dim)
            c_in, c_out = embed_dim, num_outputs or num_states
        else:
            c_in, c_out = in_channels, out_channels or in_channels
        self.levels = len(channels)
        self.time_embed = TimeEmbedding(num_steps, time_dim)
        self.conv_in = nn.Conv2d(c_in, channels[0], 3, padding=1)
        self.down, self.downsample, skips = nn.ModuleList(), nn.ModuleList(), []
        width = channels[0]
        for i, c in enumerate(channels):
            self.down.append(
                nn.ModuleList(ResBlock(width if b == 0 else c, c, time_dim, dropout) for b in range(blocks))
            )
            width = c
            skips.append(c)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(width, width, time_dim, dropout), ResBlock(width, width, time_dim, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(
                nn.ModuleList(
                    ResBlock((width + skips[i]) if b == 0 else c, c, time_dim, dropout) for b in range(blocks)
                )
            )
            width = c
            if i > 0:
                self.upsample.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, channels[i - 1], 3, padding=1)
                    )
                )
                width = channels[i - 1]
        self.norm_out, self.act = _norm(width), nn.SiLU()
        self.conv_out = nn.Conv2d(width, c_out, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Predict the parametrization's target (Gaussian) or x0 logits (categorical).

        Args:
            x_t: (B, C, H, W) float, or (B, H, W) int64 ids when ``num_states`` is set.
            t: (B,) int64 steps in 0..T.

        Returns:
            (B, out_channels, H, W) float, or (B, H, W, num_outputs) float logits.
        """
        check_timesteps(t, x_t.shape[0])
        if self.num_states is not None:
            if x_t.is_floating_point() or x_t.ndim != 3:
                raise TypeError(f"x_t: expected (B, H, W) int64 class ids, got {tuple(x_t.shape)} {x_t.dtype}")
            h = self.embed(x_t).permute(0, 3, 1, 2)  # (B, E, H, W)
        else:
            if not x_t.is_floating_point() or x_t.ndim != 4:
                raise TypeError(f"x_t: expected a (B, C, H, W) float image, got {tuple(x_t.shape)} {x_t.dtype}")
            h = x_t
        size = 2 ** (self.levels - 1)
        if h.shape[-1] % size or h.shape[-2] % size:
            raise ValueError(
                f"x_t: height and width must be divisible by {size} (2 ** (levels - 1)), got {tuple(h.shape[-2:])}"
            )
        c = self.time_embed(t)
        h = self.conv_in(h)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, c)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, c)
        for j, blocks in enumerate(self.up):
            h = torch.cat([h, skips[self.levels - 1 - j]], dim=1)
            for block in blocks:
                h = block(h, c)
            if j < self.levels - 1:
                h = self.upsample[j](h)
        out = self.conv_out(self.act(self.norm_out(h)))
        return out.permute(0, 2, 3, 1) if self.num_states is not None else out
