"""A small bidirectional transformer denoiser for token sequences (categorical diffusion).

Input x_t is (B, L) int64 class ids (possibly including an absorbing mask id); output is
(B, L, num_outputs) logits, read by the parametrization as x0_logits. Attention is non-causal:
every position sees every other, because the denoiser predicts all of x0 at once.

Time conditions every block by adaptive LayerNorm with zero-initialized gates (adaLN-Zero, DiT,
Peebles & Xie 2023 sec. 3.2): c = TimeEmbedding(t / T) gives per-block shift, scale and gate,

    h = h + gate_attn * Attn(LN(h) * (1 + scale_attn) + shift_attn)
    h = h + gate_mlp  * MLP(LN(h) * (1 + scale_mlp) + shift_mlp)

The modulation layers start at zero, so each block is the identity at init. As in DiT, the final
projection also starts at zero (uniform logits): a fresh model's gradients reach only the
modulation and output layers until the first optimizer step opens the gates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffkit._checks import check_ids, check_positive_int, check_timesteps
from diffkit.models.conditioning import ConditionEmbedding, ConditionSpec
from diffkit.models.embeddings import TimeEmbedding

__all__ = ["TokenTransformer", "AdaLNBlock"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift, with (B, 1, D) shift and scale broadcast over positions."""
    return x * (1 + scale) + shift


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention via ``scaled_dot_product_attention``."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)  # (B, L, 3, H, D/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, D/H)
        p = self.dropout if self.training else 0.0
        y = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=False)  # (B, H, L, D/H)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.proj(y)


class AdaLNBlock(nn.Module):
    """Transformer block conditioned by adaLN-Zero (module docstring); the identity at init.

    Args:
        d_model: D, the residual width.
        heads: number of attention heads (divides D).
        dropout: dropout on attention weights and the MLP output.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model, elementwise_affine=False)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm_mlp = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )
        self.modulation = nn.Sequential(nn.SiLU(), _zero_linear(d_model, 6 * d_model))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """Apply the block.

        Args:
            h: (B, L, D) float hidden states.
            c: (B, D) float time conditioning.

        Returns:
            (B, L, D) float hidden states.
        """
        mods = self.modulation(c)[:, None, :]  # (B, 1, 6D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods.chunk(6, dim=-1)  # each (B, 1, D)
        h = h + gate_a * self.attn(modulate(self.norm_attn(h), shift_a, scale_a))
        return h + gate_m * self.mlp(modulate(self.norm_mlp(h), shift_m, scale_m))


class TokenTransformer(nn.Module):
    """Bidirectional transformer over (B, L) token ids, conditioned on t / T by adaLN-Zero.

    Args:
        num_states: number of input ids, e.g. K, or K + 1 with an absorbing mask state (id K).
        num_outputs: number of logits per position, usually K.
        seq_len: maximum sequence length L (size of the learned positional table).
        num_steps: T, the number of diffusion steps; time enters as t / T. None: a
            continuous-time process, t is a float tensor in [0, 1] and enters as it is.
        d_model: D, the residual width.
        depth: number of transformer blocks.
        heads: attention heads; must divide ``d_model``.
        dropout: dropout probability in attention and MLPs, in [0, 1).
        num_classes: K for a class-conditional model (``cond`` int64 ids (B,)); None: no classes.
        cond_dim: C for a feature-conditional model (``cond`` float (B, C)); None: no features.
            The condition's embedding (with a learned null condition) is added to the time
            conditioning c of every block.
        time_conditioning: False ignores t (the blocks see a zero conditioning vector): MDLM's
            denoiser for masked noise, whose optimal x0 prediction does not depend on t.

    Example:
        >>> import torch
        >>> net = TokenTransformer(num_states=5, num_outputs=4, seq_len=16, num_steps=100)
        >>> net(torch.randint(0, 5, (2, 16)), torch.tensor([0, 100])).shape
        torch.Size([2, 16, 4])
    """

    def __init__(
        self,
        num_states: int,
        num_outputs: int,
        seq_len: int,
        num_steps: int | None,
        d_model: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        time_conditioning: bool = True,
    ) -> None:
        super().__init__()
        sizes = dict(
            num_states=num_states, num_outputs=num_outputs, seq_len=seq_len, d_model=d_model, depth=depth, heads=heads
        )
        for name, value in sizes.items():
            check_positive_int(name, value)
        if d_model % heads:
            raise ValueError(f"heads: expected a divisor of d_model={d_model}, got heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout}")
        self.num_states = num_states
        self.num_outputs = num_outputs
        self.seq_len = seq_len
        if num_steps is not None:
            check_positive_int("num_steps", num_steps)
        self.num_steps = num_steps
        self.token_embed = nn.Embedding(num_states, d_model)
        # Same scale as the token embeddings (nn.Embedding: N(0, 1)); at std 0.02 the positions
        # are drowned by the tokens and the model stays at unigram level (benchmarks/categorical).
        self.pos_embed = nn.Parameter(torch.randn(seq_len, d_model))
        self.time_conditioning = time_conditioning
        self.time_embed = TimeEmbedding(1 if num_steps is None else num_steps, d_model) if time_conditioning else None
        conditional = num_classes is not None or cond_dim is not None
        self.cond_embed = ConditionEmbedding(num_classes, cond_dim, dim=d_model) if conditional else None
        self.blocks = nn.ModuleList(AdaLNBlock(d_model, heads, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation_out = nn.Sequential(nn.SiLU(), _zero_linear(d_model, 2 * d_model))
        self.head = _zero_linear(d_model, num_outputs)

    @property
    def cond_spec(self) -> ConditionSpec | None:
        """What ``cond`` this model takes (None: unconditional)."""
        return None if self.cond_embed is None else self.cond_embed.spec

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict x0 logits for every position.

        Args:
            x_t: (B, L) int64 ids in [0, num_states), L <= seq_len.
            t: (B,) int64 steps in 0..T; with ``num_steps=None`` a (B,) float tensor in [0, 1].
            cond: None (the null condition), int64 ids (B,) or float features (B, C); only for a
                conditional model.

        Returns:
            (B, L, num_outputs) float logits.

        Raises:
            TypeError: if ``x_t`` is not int64, or ``t`` is not int64 (float with ``num_steps=None``).
            ValueError: if ``x_t`` is not (B, L) with L <= seq_len, an id is out of range, or ``t`` is not (B,).
        """
        check_ids("x_t", x_t, self.num_states, bound="num_states")
        if x_t.ndim != 2 or x_t.shape[1] > self.seq_len:
            raise ValueError(f"x_t: expected shape (B, L) with L <= {self.seq_len}, got {tuple(x_t.shape)}")
        check_timesteps(t, x_t.shape[0], continuous=self.num_steps is None)
        h = self.token_embed(x_t) + self.pos_embed[: x_t.shape[1]]  # (B, L, D)
        if self.time_embed is None:
            c = h.new_zeros(h.shape[0], h.shape[2])  # (B, D): no time conditioning
        else:
            c = self.time_embed(t if self.num_steps is not None else t.to(h.dtype))  # (B, D)
        if self.cond_embed is not None:
            c = c + self.cond_embed(cond, x_t.shape[0])
        elif cond is not None:
            raise ValueError("cond: this TokenTransformer is unconditional; build it with num_classes=K or cond_dim=C")
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.modulation_out(c)[:, None, :].chunk(2, dim=-1)  # each (B, 1, D)
        return self.head(modulate(self.norm_out(h), shift, scale))  # (B, L, num_outputs)
