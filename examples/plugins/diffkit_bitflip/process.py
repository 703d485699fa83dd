"""Bit-flip diffusion: a forward process with its own closed forms, plugged into diffkit.

Data are bits, int64 tensors x0 of shape (B, ...) with values in {0, 1}. Time t is an integer in
{0, ..., T}; t = 0 is data, t = T is the prior (diffkit's convention). Step t flips every bit
independently with probability beta_t in (0, 1/2]:

    q(x_t | x_{t-1}):  x_t = 1 - x_{t-1} with probability beta_t, else x_t = x_{t-1}      (B1)

Closed forms. Write a bit as the spin 2x - 1 in {-1, +1}: one step multiplies the spin by -1 with
probability beta_t, so E[spin_t | spin_{t-1}] = (1 - 2 beta_t) spin_{t-1}, and after several
independent steps the factors multiply. With

    r_t = prod_{i <= t} (1 - 2 beta_i),   r_0 = 1,   r_{t|s} = r_t / r_s   (s < t)

(r_t is the correlation of x_t with x0 in spin form) a bit has flipped an odd number of times
with probability (1 - r)/2, because E[spin_t spin_0] = P(same) - P(flipped) = r_t. Hence

    q(x_t != x0 | x0)  = (1 - r_t) / 2,  i.e. q(x_t = k | x0) = r_t [k = x0] + (1 - r_t) / 2     (B2)
    q(x_t != x_s | x_s) = (1 - r_t / r_s) / 2                                                    (B3)
    p(x_T) = Bernoulli(1/2), and q(x_T | x0) = p(x_T) exactly when r_T = 0                        (B4)

Posterior by Bayes, q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0), where only two
values of x_s exist. The probability that x_s kept x0's value is, with r_ts = r_t / r_s,

    keep_same = (1 + r_s)(1 + r_ts) / (2 (1 + r_t))      if x_t = x0                             (B5)
    keep_diff = (1 + r_s)(1 - r_ts) / (2 (1 - r_t))      if x_t != x0

(numerator: x_s = x0 has probability (1 + r_s)/2 and then x_t = x_s with (1 + r_ts)/2, or x_t != x_s
with (1 - r_ts)/2; denominator: (B2) for x_t, since (1 + r_s)(1 + r_ts) + (1 - r_s)(1 - r_ts) =
2 (1 + r_t)). So q(x_s = x0 | x_t, x0) = keep and q(x_s = 1 - x0 | x_t, x0) = 1 - keep. For a
distribution p(x0) over the two values (the network's x0_probs) the reverse step is the mixture
of docs/design.md (1):

    p(x_s = k | x_t) = sum_{j in {0, 1}} p(x0 = j) ( keep_j [k = j] + (1 - keep_j) [k != j] )    (B6)

with keep_j = keep_same if x_t = j else keep_diff. The default schedule is cosine-shaped in r:
r_t = f(t) / f(0), f(t) = cos(pi/2 (t/T + 0.008) / 1.008)^2 (Nichol & Dhariwal 2021, eq. 17, read
as a correlation), with r_T = 0 so that (B4) holds exactly; beta_t = (1 - r_t / r_{t-1}) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from diffkit.processes import ForwardProcess, Noised, check_values
from diffkit.processes.base import expand_to
from diffkit.processes.categorical import CategoricalPreviousStep, CategoricalX0, categorical_kl

__all__ = ["BitFlipProcess", "cosine_flip_probs", "flip_marginal", "flip_posterior"]

#: offset of the cosine schedule (Nichol & Dhariwal 2021, eq. 17): keeps beta_1 away from 0.
COSINE_OFFSET = 0.008


def cosine_flip_probs(num_steps: int) -> Tensor:
    """Flip probabilities beta_1..beta_T whose r_t = prod (1 - 2 beta_i) follows a cosine, r_T = 0.

    Returns:
        (T,) float64, every beta_t in (0, 1/2], beta_T = 1/2.
    """
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    r = f / f[0]
    r[-1] = 0.0  # cos(pi/2) is 6e-17 in float64; make the prior exact, (B4)
    return (1 - r[1:] / r[:-1]) / 2


def flip_marginal(x_probs: Tensor, r: Tensor) -> Tensor:
    """(B2) / (B3): q(x_t = k) = r x_probs[k] + (1 - r) / 2 for r = r_t (from x0) or r_t / r_s (from x_s).

    Args:
        x_probs: (B, ..., 2) probabilities of the earlier state (one-hot for a known bit).
        r: (B, 1, ..., 1) correlation, same dtype.

    Returns:
        (B, ..., 2) probabilities.
    """
    return r * x_probs + (1 - r) / 2


def flip_posterior(x_t: Tensor, x0_probs: Tensor, keep_same: Tensor, keep_diff: Tensor) -> Tensor:
    """(B5)-(B6): sum_j p(x0 = j) q(x_s | x_t, x0 = j) for two states.

    Args:
        x_t: (B, ...) int64 bits.
        x0_probs: (B, ..., 2) probabilities of x0 (one-hot for a known x0).
        keep_same, keep_diff: (B, 1, ..., 1) q(x_s = x0 | x_t, x0) when x_t = x0 and when x_t != x0.

    Returns:
        (B, ..., 2) probabilities of x_s.
    """
    bit = torch.arange(2, device=x_t.device)  # candidate values j of x0
    keep = torch.where(x_t.unsqueeze(-1) == bit, keep_same.unsqueeze(-1), keep_diff.unsqueeze(-1))  # (B, ..., 2)
    kept = x0_probs * keep  # mass on x_s = j
    return kept + (x0_probs - kept).flip(-1)  # mass that left j lands on 1 - j


class BitFlipProcess(ForwardProcess):
    """Independent bit flips with probability beta_t per step; closed forms (B1)-(B6) above.

    It reuses diffkit's categorical parametrizations, which read ``num_classes``, ``num_states``
    and call the public ``posterior(x_t, x0_ids, t, s)``: "x0" (the network gives logits (..., 2) of p(x0 | x_t),
    the reverse step is (B6), any s < t) and "previous-step" (logits of p(x_{t-1} | x_t)).

    Args:
        num_steps: T >= 1.
        flip_probs: optional beta_1..beta_T, each in (0, 1/2), the last may be 1/2; default:
            :func:`cosine_flip_probs`.

    Raises:
        TypeError: num_steps is not an int.
        ValueError: num_steps < 1, or flip_probs of the wrong length or outside the range.
    """

    parametrizations = {"x0": CategoricalX0, "previous-step": CategoricalPreviousStep}
    num_classes: ClassVar[int] = 2
    num_states: ClassVar[int] = 2

    def __init__(self, num_steps: int = 100, flip_probs: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise TypeError(f"num_steps: expected an int, got {type(num_steps).__name__}")
        if num_steps < 1:
            raise ValueError(f"num_steps: expected T >= 1, got {num_steps}")
        self._num_steps = num_steps
        self.custom = flip_probs is not None
        beta = cosine_flip_probs(num_steps) if flip_probs is None else torch.as_tensor(flip_probs, dtype=torch.float64)
        if beta.shape != (num_steps,):
            raise ValueError(f"flip_probs: expected {num_steps} values (one per step), got shape {tuple(beta.shape)}")
        if not bool(((beta > 0) & (beta <= 0.5)).all()) or bool((beta[:-1] == 0.5).any()):
            raise ValueError(f"flip_probs: expected values in (0, 1/2), the last in (0, 1/2], got {beta.tolist()}")
        r = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - 2 * beta, 0)])
        self.register_buffer("flip_probs", beta, persistent=False)  # (T,) beta_1..beta_T
        self.register_buffer("r", r, persistent=False)  # (T + 1,) r_0..r_T

    @property
    def num_steps(self) -> int:
        return self._num_steps

    # -- validation and conversion
    def validate_x0(self, x0, name: str = "x0") -> None:
        if not isinstance(x0, Tensor):
            raise TypeError(f"{name}: expected an int64 Tensor of bits, got {type(x0).__name__}")
        if x0.is_floating_point() or x0.is_complex() or x0.dtype == torch.bool:
            raise TypeError(f"{name}: expected int64 bits in {{0, 1}}, got dtype {x0.dtype} (convert with .long())")
        if x0.ndim < 1:
            raise ValueError(f"{name}: expected shape (B, ...), got a scalar")
        if check_values() and x0.numel() and (int(x0.min()) < 0 or int(x0.max()) > 1):
            raise ValueError(f"{name}: expected bits in {{0, 1}}, found values in [{int(x0.min())}, {int(x0.max())}]")

    def _probs(self, x: Tensor, name: str) -> Tensor:
        """Bits (B, ...) -> one-hot (B, ..., 2); probabilities (B, ..., 2) pass through."""
        if isinstance(x, Tensor) and x.is_floating_point():
            if x.ndim < 2 or x.shape[-1] != 2:
                raise ValueError(f"{name}: probabilities need a last dim of 2, got shape {tuple(x.shape)}")
            return x
        self.validate_x0(x, name)
        return torch.nn.functional.one_hot(x, 2).to(torch.get_default_dtype())

    def _r(self, index: Tensor, like: Tensor) -> Tensor:
        return expand_to(self.r[index], like.ndim).to(like.dtype)

    def _keep(self, t: Tensor, s: Tensor, ndim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(B5) in float64, then cast: keep_same, keep_diff as (B, 1, ..., 1)."""
        r_t, r_s = self.r[t], self.r[s]
        r_ts = r_t / r_s
        keep_same = (1 + r_s) * (1 + r_ts) / (2 * (1 + r_t))
        keep_diff = (1 + r_s) * (1 - r_ts) / (2 * (1 - r_t))
        return expand_to(keep_same, ndim).to(dtype), expand_to(keep_diff, ndim).to(dtype)

    # -- primitives
    def marginal(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """q(x_t | x0), (B2). x0: (B, ...) int64 bits or (B, ..., 2) probabilities -> (B, ..., 2)."""
        x0_probs = self._probs(x0, "x0")
        t = self.timesteps(t, x0_probs.shape[0], x0_probs.device)
        return flip_marginal(x0_probs, self._r(t, x0_probs))

    def transition(self, x_s: Tensor, t: Tensor | int, s: Tensor | int) -> Tensor:
        """q(x_t | x_s), (B3). x_s: (B, ...) int64 bits or (B, ..., 2) probabilities -> (B, ..., 2)."""
        x_s_probs = self._probs(x_s, "x_s")
        t, s = self.step_pair(t, s, x_s_probs.shape[0], x_s_probs.device)
        return flip_marginal(x_s_probs, self._r(t, x_s_probs) / self._r(s, x_s_probs))

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int, s: Tensor | int | None = None) -> Tensor:
        """q(x_s | x_t, x0), (B5); with x0 as probabilities (B, ..., 2), the mixture (B6).

        Args:
            x_t: (B, ...) int64 bits.
            x0: (B, ...) int64 bits, or (B, ..., 2) probabilities.
            t, s: (B,) int64 or ints, 0 <= s < t; s defaults to t - 1.

        Returns:
            (B, ..., 2) probabilities of x_s.
        """
        self.validate_x0(x_t, "x_t")
        x0_probs = self._probs(x0, "x0")
        if x0_probs.shape[:-1] != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return flip_posterior(x_t, x0_probs, *self._keep(t, s, x_t.ndim, x0_probs.dtype))

    def q_sample(
        self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """x_t ~ q(x_t | x0): flip bit i where u_i < (1 - r_t) / 2, u ~ U[0, 1).

        Returns:
            Noised(x_t (B, ...) int64, the uniform draws u (B, ...) float).
        """
        self.validate_x0(x0)
        t = self.timesteps(t, x0.shape[0], x0.device)
        if noise is None:
            noise = torch.rand(x0.shape, generator=generator, device=x0.device)
        elif not isinstance(noise, Tensor) or not noise.is_floating_point():
            found = noise.dtype if isinstance(noise, Tensor) else type(noise).__name__
            raise TypeError(f"noise: expected uniform draws in a float Tensor, got {found}")
        elif noise.shape != x0.shape:
            raise ValueError(
                f"noise: expected uniform draws of shape {tuple(x0.shape)} (one per bit), got {tuple(noise.shape)}"
            )
        flip = noise.double() < expand_to((1 - self.r[t]) / 2, x0.ndim)
        return Noised(torch.where(flip, 1 - x0, x0), noise)

    def prior_sample(self, shape, *, device=None, generator=None, mask=None) -> Tensor:
        """x_T ~ Bernoulli(1/2), (B4): (B, ...) int64; masked-out elements are 0."""
        bits = torch.randint(0, 2, tuple(shape), device=device, generator=generator)
        return bits if mask is None else bits * mask.long()

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x0) || Bernoulli(1/2)) per element, nats (0 when r_T = 0)."""
        q = self.marginal(x0, self.num_steps)
        return categorical_kl(q, torch.full_like(q, 0.5))

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return categorical_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: Tensor) -> Tensor:
        """-log p(x0 | x_1) per element, nats."""
        return -p.gather(-1, x0.unsqueeze(-1)).squeeze(-1).clamp_min(torch.finfo(p.dtype).tiny).log()

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Tensor:
        """p(x_s | x_t), (B6), from x0_hat: (B, ..., 2) probabilities of x0."""
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only; a bit-flip step has none")
        return flip_posterior(x_t, x0_hat, *self._keep(t, s, x_t.ndim, x0_hat.dtype))

    def reverse_sample(self, p: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s ~ p: 1 where u < p(x_s = 1), u ~ U[0, 1); (B, ...) int64."""
        u = torch.rand(p.shape[:-1], generator=generator, device=p.device, dtype=p.dtype)
        return (u < p[..., 1]).long()

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, flip_probs={'custom' if self.custom else 'cosine'}"
