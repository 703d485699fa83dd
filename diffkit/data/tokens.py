"""Token sequences from a stationary Markov chain, whose entropy is known exactly.

A chain on K states has a row-stochastic transition matrix P (K, K), P[i, j] = p(x_{l+1} = j | x_l = i),
and starts from its stationary distribution pi (pi P = pi), so every position has marginal pi.
Exact quantities, in nats:

    entropy rate          h = sum_i pi_i H(P[i]),   H(q) = -sum_j q_j log q_j
    sequence entropy      H(x_1..x_L) = H(pi) + (L - 1) h
    bigram                p(x_l = i, x_{l+1} = j) = pi_i P[i, j]

A model's NLL per sequence is bounded below by H(x_1..x_L), which makes the chain a test bed for
discrete diffusion likelihoods.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MetricCollection

from diffkit._checks import check_class_ids, check_non_negative_int, check_positive_int
from diffkit.data._base import SampledDataModule, stream_seed

__all__ = ["random_transition_matrix", "stationary_distribution", "MarkovChain", "MarkovTokensDataModule"]


def _entropy(probs: Tensor) -> Tensor:
    """H(q) = -sum_j q_j log q_j over the last dim, with 0 log 0 = 0. (..., K) -> (...)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def random_transition_matrix(num_states: int, concentration: float, seed: int) -> Tensor:
    """A (K, K) transition matrix whose rows are i.i.d. Dirichlet(concentration * 1_K).

    A concentration below 1 gives peaked rows (low entropy rate, strong structure); a large one
    gives rows near uniform.

    Args:
        num_states: K, >= 1.
        concentration: Dirichlet concentration, > 0.
        seed: non-negative seed (numpy's ``default_rng``).

    Returns:
        (K, K) float64 row-stochastic matrix.
    """
    rows = np.random.default_rng(seed).dirichlet(np.full(num_states, concentration), size=num_states)
    return torch.from_numpy(rows)


def stationary_distribution(transition: Tensor) -> Tensor:
    """The pi with pi P = pi and sum(pi) = 1, by least squares on [P^T - I; 1^T] pi = [0; 1].

    Args:
        transition: (K, K) float64 row-stochastic matrix.

    Returns:
        (K,) float64 probabilities.

    Raises:
        ValueError: if the stationary distribution is not unique (the system has rank < K, as for
            a chain with several closed classes).
    """
    num_states = transition.shape[0]
    eye = torch.eye(num_states, dtype=torch.float64)
    system = torch.cat([transition.T - eye, torch.ones(1, num_states, dtype=torch.float64)])  # (K + 1, K)
    rank = int(torch.linalg.matrix_rank(system))
    if rank < num_states:
        raise ValueError(
            f"transition: expected a unique stationary distribution (rank {num_states} for [P^T - I; 1^T]), "
            f"got rank {rank}: the chain has several closed classes"
        )
    target = torch.zeros(num_states + 1, 1, dtype=torch.float64)
    target[-1] = 1.0
    pi = torch.linalg.lstsq(system, target).solution.squeeze(-1)  # (K,)
    pi = pi.clamp_min(0.0)
    return pi / pi.sum()


class MarkovChain:
    """A stationary Markov chain on K states with exact entropies; a plain class, not an nn.Module.

    Build one from a transition matrix, or draw a random one with :meth:`random`.

    Args:
        transition: (K, K) float row-stochastic matrix, P[i, j] = p(next = j | current = i), of
            an irreducible chain (so the stationary distribution is unique).

    Raises:
        ValueError: if ``transition`` is not square, has negative entries or rows not summing to 1,
            or if its stationary distribution is not unique.

    Example:
        >>> chain = MarkovChain(torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64))
        >>> [round(p, 6) for p in chain.stationary.tolist()]  # (b, a) / (a + b) with a = 0.1, b = 0.5
        [0.833333, 0.166667]
    """

    def __init__(self, transition: Tensor) -> None:
        transition = torch.as_tensor(transition, dtype=torch.float64)
        if transition.ndim != 2 or transition.shape[0] != transition.shape[1] or transition.shape[0] < 1:
            raise ValueError(f"transition: expected shape (K, K) with K >= 1, got {tuple(transition.shape)}")
        if not torch.isfinite(transition).all() or (transition < 0).any():
            raise ValueError("transition: expected finite, non-negative entries, found negative or non-finite ones")
        row_sums = transition.sum(-1)
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-6):
            raise ValueError(f"transition: expected rows summing to 1, got sums {row_sums.tolist()}")
        self.transition = transition / row_sums.unsqueeze(-1)
        self._stationary = stationary_distribution(self.transition)
        self._cdf = self.transition.cumsum(-1)  # (K, K)

    @classmethod
    def random(cls, num_states: int, concentration: float = 0.5, seed: int = 0) -> MarkovChain:
        """A chain whose transition rows are i.i.d. Dirichlet(concentration * 1_K), seeded.

        Args:
            num_states: K, >= 1.
            concentration: Dirichlet concentration, > 0; below 1 gives peaked, structured rows.
            seed: non-negative seed.

        Raises:
            TypeError: if ``num_states`` or ``seed`` is not an int.
            ValueError: if an argument is out of range.
        """
        check_positive_int("num_states", num_states)
        check_non_negative_int("seed", seed)
        if not concentration > 0:
            raise ValueError(f"concentration: expected a value > 0, got {concentration}")
        return cls(random_transition_matrix(num_states, float(concentration), seed))

    @property
    def num_states(self) -> int:
        """K, the number of states."""
        return self.transition.shape[0]

    @property
    def stationary(self) -> Tensor:
        """(K,) float64 stationary distribution pi (pi P = pi), the law of every position."""
        return self._stationary.clone()

    def unigram(self) -> Tensor:
        """(K,) float64 exact marginal of any single token: pi."""
        return self.stationary

    def bigram(self) -> Tensor:
        """(K, K) float64 exact joint of consecutive tokens: B[i, j] = pi_i P[i, j]."""
        return self._stationary.unsqueeze(-1) * self.transition

    def entropy_rate(self) -> float:
        """Exact entropy rate h = sum_i pi_i H(P[i]), in nats per token."""
        return (self._stationary @ _entropy(self.transition)).item()

    def sequence_entropy(self, length: int) -> float:
        """Exact entropy of L consecutive tokens, H(pi) + (L - 1) h, in nats.

        Args:
            length: L, >= 1.
        """
        check_positive_int("length", length)
        return _entropy(self._stationary).item() + (length - 1) * self.entropy_rate()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-likelihood of sequences, log pi(x_1) + sum_l log P[x_l, x_{l+1}], in nats.

        What a model's NLL bound on the same sequences is compared with: averaged over sequences
        drawn from the chain, a bound exceeds it by KL(data || model) plus the bound's slack, both
        >= 0, while its mean over a finite set misses :meth:`sequence_entropy` by sampling noise
        that a bound measured on that set shares.

        Args:
            x: (N, L) integer state ids in [0, K).

        Returns:
            (N,) float64.

        Raises:
            TypeError / ValueError: x is not an (N, L) integer tensor of ids in [0, K).
        """
        check_class_ids(x, "x", self.num_states, expected="an integer Tensor of state ids")
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"x: expected shape (N, L) with L >= 1, got {tuple(x.shape)}")
        x = x.long()
        return self._stationary[x[:, 0]].log() + self.transition[x[:, :-1], x[:, 1:]].log().sum(1)

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n sequences: x_1 ~ pi, then x_{l+1} ~ P[x_l], by inverse CDF of uniforms.

        Args:
            n: number of sequences, >= 1.
            length: L, tokens per sequence, >= 1.
            generator: torch random generator (None: torch's default generator).

        Returns:
            (n, L) int64 state ids in [0, K).
        """
        check_positive_int("n", n)
        check_positive_int("length", length)
        u = torch.rand(length, n, 1, generator=generator, dtype=torch.float64)  # position-major: contiguous rows
        last = self.num_states - 1
        first_cdf = self._stationary.cumsum(-1).expand(n, -1).contiguous()  # (n, K)
        tokens = [torch.searchsorted(first_cdf, u[0], right=True).clamp_max(last)]  # [(n, 1)]
        for pos in range(1, length):
            cdf = self._cdf[tokens[-1].squeeze(-1)]  # (n, K)
            tokens.append(torch.searchsorted(cdf, u[pos], right=True).clamp_max(last))
        return torch.cat(tokens, dim=-1)  # (n, L)


class MarkovTokensDataModule(SampledDataModule):
    """Fixed train / val / test draws of token sequences from a seeded random Markov chain.

    ``seed`` fixes both the chain (rows ~ Dirichlet(concentration)) and the splits. Batches are
    plain (B, L) int64 Tensors of class ids in [0, num_classes).

    Args:
        num_classes: K, the vocabulary size, >= 2.
        seq_len: L, tokens per sequence, >= 1.
        num_train: number of training sequences, >= 1.
        num_val: number of validation (and test) sequences, >= 1.
        batch_size: sequences per batch, >= 1.
        seed: non-negative seed of the chain, the splits and the shuffling.
        concentration: Dirichlet concentration of the transition rows, > 0.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        TypeError: if a size or seed is not an int.
        ValueError: if an argument is out of range.
    """

    def __init__(
        self,
        num_classes: int = 8,
        seq_len: int = 32,
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 256,
        seed: int = 0,
        concentration: float = 0.5,
        num_workers: int = 0,
    ) -> None:
        super().__init__(num_train, num_val, batch_size, seed, num_workers)
        check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes}")
        check_positive_int("seq_len", seq_len)
        self.num_classes = num_classes
        self.seq_len = seq_len
        self.chain = MarkovChain.random(num_classes, concentration, stream_seed(seed, "structure"))

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example: (L,)."""
        return (self.seq_len,)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, L) int64 sequences of the chain."""
        return self.chain.sample(n, self.seq_len, generator)

    def sample_metrics(self) -> MetricCollection:
        """``{"tokens": TokenTotalVariation}`` against the chain's exact unigram and bigram
        distributions (unigram TV and KL, bigram TV); its floor is the same metric on real sequences."""
        from diffkit.metrics.samples import TokenTotalVariation

        bigram = self.chain.bigram() if self.seq_len > 1 else None
        return MetricCollection({"tokens": TokenTotalVariation(self.num_classes, self.chain.unigram(), bigram)})

    def class_marginals(self) -> Tensor:
        """(K,) float64 exact class frequencies (the chain's unigram), e.g. for "marginal" noise."""
        return self.chain.unigram()

    def true_entropy_nats_per_token(self) -> float:
        """Exact H(x_1..x_L) / L in nats: a floor for a model's NLL per token."""
        return self.chain.sequence_entropy(self.seq_len) / self.seq_len
