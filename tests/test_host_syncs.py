"""GPU-ready training steps: after the first batch, a training step makes at most one host sync.

A host sync is a call that needs a tensor's values on the host: ``Tensor.item``, ``bool(t)``,
``int(t)``, ``float(t)``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``torch.equal`` and
``nonzero``. On CPU they cost nothing, but on an accelerator each one stalls the queue until
every kernel before it has run. The test counts them, on CPU, by wrapping those entry points
while ``training_step`` runs (a Gaussian, a categorical and a graph ProductProcess model). The
one sync left is the non-finite-loss guard (``loss.item()``).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess
from diffkit.models import GraphTransformer, MLPDenoiser, TokenTransformer
from diffkit.module import DiffusionModule
from diffkit.processes import MaskedProcess, UniformProcess

SYNC_METHODS = ("item", "__bool__", "__int__", "__float__", "cpu", "tolist", "numpy", "nonzero")


@contextlib.contextmanager
def count_syncs(counts: Counter):
    """Count calls of the host-sync entry points of torch.Tensor (and torch.equal / torch.nonzero)."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
    saved_fns = {"equal": torch.equal, "nonzero": torch.nonzero}

    def wrap(name, fn):
        def counted(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        for name, fn in saved_fns.items():
            setattr(torch, name, wrap(f"torch.{name}", fn))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
        for name, fn in saved_fns.items():
            setattr(torch, name, fn)


def graph_batch(B: int = 8, N: int = 6, gen: torch.Generator | None = None) -> dict:
    gen = gen or torch.Generator().manual_seed(0)
    sizes = torch.randint(3, N + 1, (B,), generator=gen)
    mask = torch.arange(N)[None, :] < sizes[:, None]
    X = torch.randint(0, 3, (B, N), generator=gen) * mask
    upper = torch.randint(0, 2, (B, N, N), generator=gen).triu(1)
    E = (upper + upper.transpose(1, 2)) * (mask[:, :, None] & mask[:, None, :])
    return {"X": X, "E": E, "mask": mask}


def _cases():
    T = 20
    yield (
        "gaussian",
        DiffusionModule(GaussianProcess(T), MLPDenoiser(2, T, hidden=16, depth=1), "eps", num_eval_samples=0),
        lambda: torch.randn(16, 2),
    )
    cat = CategoricalProcess(5, T, "absorbing")
    net = TokenTransformer(cat.num_states, 5, 6, T, d_model=16, depth=1, heads=2)
    yield (
        "categorical",
        DiffusionModule(cat, net, "x0", loss="hybrid", num_eval_samples=0),
        lambda: torch.randint(0, 5, (16, 6)),
    )
    graph = ProductProcess(
        {"X": CategoricalProcess(3, T, "uniform"), "E": CategoricalProcess(2, T, "marginal", marginals=[0.7, 0.3])},
        symmetric=["E"],
    )
    gnet = GraphTransformer(3, 2, 3, 2, T, hidden=16, edge_hidden=8, global_hidden=8, depth=1, heads=2)
    yield "graph", DiffusionModule(graph, gnet, "x0", num_eval_samples=0), graph_batch
    for name, ctime in (("masked", MaskedProcess(5)), ("uniform_ct", UniformProcess(5))):
        cnet = TokenTransformer(ctime.num_states, 5, 6, None, d_model=16, depth=1, heads=2)
        yield (
            name,
            DiffusionModule(ctime, cnet, "x0", loss="kl", num_eval_samples=0),
            lambda: torch.randint(0, 5, (16, 6)),
        )


def syncs_per_step(model: DiffusionModule, make_batch, steps: int = 3) -> list[int]:
    """Host syncs of each of ``steps`` training steps after the first."""
    model.training_step(make_batch(), 0)  # the first batch: full checks
    per_step = []
    for i in range(steps):
        batch = make_batch()
        counts: Counter = Counter()
        with count_syncs(counts):
            loss = model.training_step(batch, i + 1)
        loss.backward()
        per_step.append(sum(counts.values()))
    return per_step


@pytest.mark.parametrize("name", ["gaussian", "categorical", "graph", "masked", "uniform_ct"])
def test_a_training_step_after_the_first_makes_at_most_one_host_sync(name) -> None:
    model, make_batch = next((m, b) for n, m, b in _cases() if n == name)
    counts = syncs_per_step(model, make_batch)
    assert max(counts) <= 1, f"{name}: host syncs per step {counts}"


def test_the_counter_sees_syncs() -> None:
    """The instrument itself: each wrapped entry point is counted."""
    counts: Counter = Counter()
    x = torch.arange(4)
    with count_syncs(counts):
        x.sum().item(), bool(x.any()), int(x[0]), x.tolist(), x.cpu(), torch.equal(x, x)
    assert sum(counts.values()) >= 6, counts
