"""No silent edges: inputs that used to give a quietly wrong answer now raise or give the exact one."""

from __future__ import annotations

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess
from diffkit.graphs import type_marginals
from diffkit.marginals import fill_marginals
from diffkit.models import MLPDenoiser
from diffkit.module import DiffusionModule


def test_denoiser_with_another_num_steps_is_refused() -> None:
    with pytest.raises(ValueError, match=r"denoiser: num_steps = 50 differs from the process's T = 20"):
        DiffusionModule(GaussianProcess(20), MLPDenoiser(2, 50), "eps")
    DiffusionModule(GaussianProcess(20), MLPDenoiser(2, 20), "eps")  # the same T is fine


def graph_process(masked=None) -> ProductProcess:
    return ProductProcess(
        {"X": CategoricalProcess(3, 10, "marginal"), "E": CategoricalProcess(2, 10, "marginal")},
        symmetric=["E"],
        masked=masked,
    )


def test_marginals_of_a_complete_graph_count_each_pair_once() -> None:
    """K4 has an edge on every pair: edge-type frequencies [0, 1], not [0.25, 0.75] (which counted the
    zero diagonal and both triangles)."""
    E = (1 - torch.eye(4, dtype=torch.long)).unsqueeze(0)  # (1, 4, 4)
    batch = {"X": torch.zeros(1, 4, dtype=torch.long), "E": E}
    proc = graph_process()
    fill_marginals(proc, [batch])
    torch.testing.assert_close(proc.fields["E"].kernel.pi, torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(proc.fields["X"].kernel.pi, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_marginals_equal_graph_type_marginals_on_masked_graphs() -> None:
    gen = torch.Generator().manual_seed(0)
    B, N = 6, 7
    sizes = torch.randint(2, N + 1, (B,), generator=gen)
    mask = torch.arange(N)[None] < sizes[:, None]
    X = torch.randint(0, 3, (B, N), generator=gen) * mask
    upper = torch.randint(0, 2, (B, N, N), generator=gen).triu(1)
    E = (upper + upper.transpose(1, 2)) * (mask[:, :, None] & mask[:, None, :])
    batch = {"X": X, "E": E, "mask": mask}
    proc = graph_process()
    fill_marginals(proc, [batch])
    node, edge = type_marginals(batch, 3, 2)
    torch.testing.assert_close(proc.fields["X"].kernel.pi, node)
    torch.testing.assert_close(proc.fields["E"].kernel.pi, edge)


def test_marginals_of_an_unmasked_non_symmetric_field_next_to_a_mask() -> None:
    """A field the node mask does not apply to (masked=["E"]) is counted over all its elements
    (this used to crash on the missing field mask)."""
    proc = graph_process(masked=["E"])
    X = torch.tensor([[0, 1, 2, 2]])
    batch = {"X": X, "E": torch.zeros(1, 4, 4, dtype=torch.long), "mask": torch.tensor([[True, True, False, False]])}
    fill_marginals(proc, [batch])
    torch.testing.assert_close(proc.fields["X"].kernel.pi, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(proc.fields["E"].kernel.pi, torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_previous_step_categorical_loss_is_exact_where_the_softmax_underflows() -> None:
    """KL(q || softmax(output)) from log_softmax in float32: a logit 200 below the others (softmax
    underflows to 0 in float32) gives the exact KL, not the one of a clamped probability."""
    proc = CategoricalProcess(3, 10, "uniform")
    x0 = torch.tensor([[0, 1, 2]])
    t = torch.tensor([5])
    x_t = proc.q_sample(x0, t, generator=torch.Generator().manual_seed(0)).x_t
    out = torch.zeros(1, 3, 3)
    out[..., 2] = -200.0
    got = proc.loss(out, x0, x_t, t, None, "previous-step")
    q = proc.posterior(x_t, x0, t).double()
    log_p = out.double().log_softmax(-1)
    expected = (torch.xlogy(q, q) - q * log_p).sum(-1).mean(1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    assert float(got) > 10  # about 200 * q(class 2): the clamped softmax gave ~87 * q instead


def test_hybrid_weight_multiplies_the_T_scaled_elbo_term() -> None:
    """loss(kind="hybrid") = simple + hybrid_weight * loss(kind="kl"), the kl term being T * L_{t-1}
    per element: the weight multiplies the ELBO term (D3PM's lambda multiplies the cross-entropy)."""
    proc = CategoricalProcess(4, 50, "absorbing")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 4, (5, 6), generator=gen)
    t = torch.randint(1, 51, (5,), generator=gen)
    x_t, noise = proc.q_sample(x0, t, generator=gen)
    out = torch.randn(5, 6, 4, generator=gen)
    simple = proc.loss(out, x0, x_t, t, noise, "x0", "simple")
    kl = proc.loss(out, x0, x_t, t, noise, "x0", "kl")
    torch.testing.assert_close(kl, 50 * proc.vlb(out, x0, x_t, t, "x0") / 6)
    for w in (0.01, 0.2):
        torch.testing.assert_close(proc.loss(out, x0, x_t, t, noise, "x0", "hybrid", hybrid_weight=w), simple + w * kl)
