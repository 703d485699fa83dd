"""ProductProcess on DiGress-style graphs {"X": (B, N) ids, "E": (B, N, N) symmetric ids,
"mask": (B, N) bool} and on mixed Gaussian + categorical tables.

The reference for masked losses is the same graph without padding, and per-field losses written
by hand (cross-entropy over the real nodes and the real upper-triangle pairs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffkit
from diffkit import CategoricalProcess, GaussianProcess, ProductProcess

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

T, KX, KE = 20, 3, 2


def graph_process(weights=None) -> ProductProcess:
    return ProductProcess(
        {"X": CategoricalProcess(KX, T, "uniform"), "E": CategoricalProcess(KE, T, "marginal", marginals=[0.7, 0.3])},
        weights=weights,
        symmetric=["E"],
    )


def random_graphs(sizes: list[int], N: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Graphs with the given real node counts, padded to N nodes (padding ids 0, zero diagonal)."""
    B = len(sizes)
    mask = torch.arange(N)[None, :] < torch.tensor(sizes)[:, None]  # (B, N)
    X = torch.randint(0, KX, (B, N), generator=gen) * mask
    upper = torch.randint(0, KE, (B, N, N), generator=gen).triu(1)
    E = (upper + upper.transpose(1, 2)) * (mask[:, :, None] & mask[:, None, :])
    return {"X": X, "E": E, "mask": mask}


def gumbel(shape, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


def test_q_sample_keeps_symmetry_diagonal_and_padding(float64, gen) -> None:
    proc = graph_process()
    x0 = random_graphs([6, 4, 2, 5], 6, gen)
    # Put distinctive values in the padding and on the diagonal, which q_sample must leave alone.
    x0["X"] = torch.where(x0["mask"], x0["X"], torch.full_like(x0["X"], 2))
    pad_pairs = ~(x0["mask"][:, :, None] & x0["mask"][:, None, :])
    x0["E"] = torch.where(pad_pairs, torch.ones_like(x0["E"]), x0["E"])
    x0["E"] = x0["E"] | torch.eye(6, dtype=torch.long)  # diagonal = 1, still symmetric
    changed = 0
    for t_i in (1, 5, T // 2, T, T, T):
        out = proc.q_sample(x0, t_i, generator=gen)
        x_t, mask = out.x_t, x0["mask"]
        assert torch.equal(x_t["mask"], mask)
        assert torch.equal(x_t["E"], x_t["E"].transpose(1, 2)), "E_t must stay symmetric"
        assert torch.equal(torch.diagonal(x_t["E"], dim1=1, dim2=2), torch.diagonal(x0["E"], dim1=1, dim2=2))
        assert torch.equal(x_t["X"][~mask], x0["X"][~mask]), "padded nodes must not be noised"
        assert torch.equal(x_t["E"][pad_pairs], x0["E"][pad_pairs]), "padded rows / cols of E must not be noised"
        real = mask[:, :, None] & mask[:, None, :] & ~torch.eye(6, dtype=torch.bool)
        changed += int((x_t["E"][real] != x0["E"][real]).sum()) + int((x_t["X"][mask] != x0["X"][mask]).sum())
    assert changed > 0, "real elements must get noised (otherwise the checks above are vacuous)"


@pytest.mark.parametrize("kind", ["simple", "kl", "hybrid"])
def test_masked_loss_equals_loss_without_padding(kind: str, float64, gen) -> None:
    proc = graph_process()
    n, N = 4, 6
    padded = random_graphs([n, N], N, gen)
    t = torch.tensor([3, 11])
    noise = {"X": gumbel((2, N, KX), gen), "E": gumbel((2, N, N, KE), gen)}
    out_logits = {"X": 3 * torch.randn(2, N, KX, generator=gen), "E": 3 * torch.randn(2, N, N, KE, generator=gen)}
    x_t = proc.q_sample(padded, t, noise=noise).x_t

    # Graph 0 without its padding: the real n x n block of everything, same t, same noise, same outputs.
    def block(d: dict, b: int) -> dict:
        return {"X": d["X"][b : b + 1, :n], "E": d["E"][b : b + 1, :n, :n]}

    small, small_noise, small_out = block(padded, 0), block(noise, 0), block(out_logits, 0)
    small_t = proc.q_sample(small, t[:1], noise=small_noise).x_t
    assert torch.equal(small_t["X"], x_t["X"][:1, :n]) and torch.equal(small_t["E"], x_t["E"][:1, :n, :n])

    loss = proc.loss(out_logits, padded, x_t, t, noise, "x0", kind=kind)
    ref0 = proc.loss(small_out, small, small_t, t[:1], small_noise, "x0", kind=kind)
    # 1e-12: the same per-element terms averaged over the same real elements, in float64.
    torch.testing.assert_close(loss[:1], ref0, rtol=1e-12, atol=1e-12)
    # Graph 1 has no padding: removing the mask key changes nothing for it.
    full1 = {"X": padded["X"][1:], "E": padded["E"][1:]}
    x_t1 = {"X": x_t["X"][1:], "E": x_t["E"][1:]}
    ref1 = proc.loss({k: v[1:] for k, v in out_logits.items()}, full1, x_t1, t[1:], None, "x0", kind=kind)
    torch.testing.assert_close(loss[1:], ref1, rtol=1e-12, atol=1e-12)

    # Whatever sits in the padding (outputs, data, noisy data) cannot change the loss.
    junk_out = {k: v.clone() for k, v in out_logits.items()}
    junk_out["X"][0, n:] = 1e4 * torch.randn(N - n, KX, generator=gen)
    junk_out["E"][0, n:, :] = 1e4 * torch.randn(N - n, N, KE, generator=gen)
    junk_out["E"][0, :, n:] = 1e4 * torch.randn(N, N - n, KE, generator=gen)
    junk_x0 = {k: v.clone() for k, v in padded.items()}
    junk_x0["X"][0, n:] = KX - 1
    junk_xt = {k: v.clone() for k, v in x_t.items()}
    junk_xt["X"][0, n:] = 1
    torch.testing.assert_close(
        proc.loss(junk_out, junk_x0, junk_xt, t, None, "x0", kind=kind)[:1], ref0, rtol=1e-12, atol=1e-12
    )

    # The ELBO pieces agree as well.
    torch.testing.assert_close(
        proc.vlb(out_logits, padded, x_t, t, "x0")[:1],
        proc.vlb(small_out, small, small_t, t[:1], "x0"),
        rtol=1e-12,
        atol=1e-12,
    )
    torch.testing.assert_close(proc.prior_term(padded)[:1], proc.prior_term(small), rtol=1e-12, atol=1e-12)
    assert proc.num_elements(padded).tolist() == [n + n * (n - 1) / 2, N + N * (N - 1) / 2]


def test_field_weights_scale_the_hand_written_losses(float64, gen) -> None:
    x0 = random_graphs([5, 3, 6], 6, gen)
    t = torch.tensor([1, 7, T])
    plain = graph_process()
    x_t = plain.q_sample(x0, t, generator=gen).x_t
    out = {"X": torch.randn(3, 6, KX, generator=gen), "E": torch.randn(3, 6, 6, KE, generator=gen)}
    mask = x0["mask"]

    # By hand: cross-entropy averaged over real nodes, and over real pairs i < j.
    ce_X = F.cross_entropy(out["X"].reshape(-1, KX), x0["X"].reshape(-1), reduction="none").reshape(3, 6)
    ce_E = F.cross_entropy(out["E"].reshape(-1, KE), x0["E"].reshape(-1), reduction="none").reshape(3, 6, 6)
    pairs = mask[:, :, None] & mask[:, None, :] & torch.ones(6, 6, dtype=torch.bool).triu(1)
    hand_X = (ce_X * mask).sum(1) / mask.sum(1)
    hand_E = (ce_E * pairs).sum((1, 2)) / pairs.sum((1, 2))

    fields = plain.field_losses(out, x0, x_t, t, None, "x0")
    torch.testing.assert_close(fields["X"], hand_X, rtol=1e-12, atol=1e-12)  # same sums, other order
    torch.testing.assert_close(fields["E"], hand_E, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plain.loss(out, x0, x_t, t, None, "x0"), hand_X + hand_E, rtol=1e-12, atol=1e-12)
    weighted = graph_process(weights={"X": 2.0, "E": 5.0})
    torch.testing.assert_close(
        weighted.loss(out, x0, x_t, t, None, "x0"), 2 * hand_X + 5 * hand_E, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        weighted.loss(out, x0, x_t, t, None, "x0", kind="kl"),
        2 * fields_kl(plain, out, x0, x_t, t)["X"] + 5 * fields_kl(plain, out, x0, x_t, t)["E"],
        rtol=1e-12,
        atol=1e-12,
    )


def fields_kl(proc: ProductProcess, out, x0, x_t, t) -> dict[str, torch.Tensor]:
    return proc.field_losses(out, x0, x_t, t, None, "x0", kind="kl")


def test_sampling_keeps_symmetry_and_padding(float64) -> None:
    proc = graph_process()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])

    def denoiser(x, t):  # any deterministic function of (x_t, t) with the right output shapes
        return {
            "X": F.one_hot(x["X"], KX).double() * 2.0 - t[:, None, None] / T,
            "E": F.one_hot(x["E"], KE).double() + 0.5,
        }

    g = torch.Generator().manual_seed(5)
    out = diffkit.sample(proc, denoiser, {"X": (3, 6), "E": (3, 6, 6)}, "x0", num_steps=7, generator=g, mask=mask)
    assert out["X"].shape == (3, 6) and out["E"].shape == (3, 6, 6)
    assert torch.equal(out["E"], out["E"].transpose(1, 2))
    assert bool((torch.diagonal(out["E"], dim1=1, dim2=2) == 0).all())
    assert bool((out["X"][~mask] == 0).all())
    pad_pairs = ~(mask[:, :, None] & mask[:, None, :])
    assert bool((out["E"][pad_pairs] == 0).all())


def test_mixed_gaussian_and_categorical_table(float64, gen) -> None:
    gauss, cat = GaussianProcess(T, "cosine"), CategoricalProcess(4, T, "absorbing")
    proc = ProductProcess({"num": gauss, "cat": cat}, weights={"num": 1.0, "cat": 0.5})
    B = 5
    x0 = {"num": torch.randn(B, 3, generator=gen), "cat": torch.randint(0, 4, (B, 2), generator=gen)}
    t = torch.tensor([1, 4, 9, 15, T])
    noised = proc.q_sample(x0, t, generator=gen)
    assert noised.x_t["num"].shape == (B, 3) and noised.x_t["num"].dtype == torch.float64
    assert noised.x_t["cat"].shape == (B, 2) and noised.x_t["cat"].dtype == torch.long
    out = {"num": torch.randn(B, 3, generator=gen), "cat": torch.randn(B, 2, 4, generator=gen)}
    param = {"num": "eps", "cat": "x0"}
    for kind in ("simple", "kl", "hybrid"):
        expected = gauss.loss(
            out["num"], x0["num"], noised.x_t["num"], t, noised.noise["num"], "eps", kind
        ) + 0.5 * cat.loss(out["cat"], x0["cat"], noised.x_t["cat"], t, noised.noise["cat"], "x0", kind)
        # 1e-12: the same two field losses, added.
        torch.testing.assert_close(
            proc.loss(out, x0, noised.x_t, t, noised.noise, param, kind=kind), expected, rtol=1e-12, atol=1e-12
        )
    post = proc.posterior(noised.x_t, x0, t)
    torch.testing.assert_close(post["num"].mean, gauss.posterior(noised.x_t["num"], x0["num"], t).mean, rtol=0, atol=0)
    torch.testing.assert_close(post["cat"], cat.posterior(noised.x_t["cat"], x0["cat"], t), rtol=0, atol=0)

    def denoiser(x, t):
        return {"num": 0.1 * x["num"], "cat": F.one_hot(x["cat"].clamp_max(3), 4).double()}

    g = torch.Generator().manual_seed(0)
    sample = diffkit.sample(proc, denoiser, {"num": (B, 3), "cat": (B, 2)}, param, num_steps=5, generator=g, eta=0.0)
    assert sample["num"].shape == (B, 3) and bool(torch.isfinite(sample["num"]).all())
    assert sample["cat"].shape == (B, 2) and int(sample["cat"].max()) < 4 and int(sample["cat"].min()) >= 0
    bound = diffkit.nll_bound(proc, denoiser, x0, param, generator=g)
    assert bool(torch.isfinite(bound.total).all())
    torch.testing.assert_close(bound.num_elements, torch.full((B,), 5.0), rtol=0, atol=0)


def test_product_errors(float64, gen) -> None:
    proc = graph_process()
    x0 = random_graphs([4, 3], 5, gen)
    with pytest.raises(ValueError, match="missing"):
        proc.q_sample({"X": x0["X"], "mask": x0["mask"]}, 3)
    asym = {k: v.clone() for k, v in x0.items()}
    asym["E"][0, 0, 1], asym["E"][0, 1, 0] = 1, 0
    with pytest.raises(ValueError, match="symmetric"):
        proc.q_sample(asym, 3)
    with pytest.raises(TypeError, match="mask"):
        proc.q_sample({**x0, "mask": x0["mask"].long()}, 3)
    with pytest.raises(ValueError, match="mask"):
        proc.q_sample({**x0, "mask": x0["mask"][:, :4]}, 3)
    with pytest.raises(ValueError, match="T"):
        ProductProcess({"X": CategoricalProcess(3, 10), "E": CategoricalProcess(2, 20)})
    with pytest.raises(ValueError, match="weights"):
        graph_process(weights={"Y": 1.0})
    with pytest.raises(ValueError, match="symmetric"):
        ProductProcess({"X": CategoricalProcess(3, T)}, symmetric=["E"])
    with pytest.raises(TypeError, match="dict"):
        proc.q_sample(x0["X"], 3)
    with pytest.raises(ValueError):
        ProductProcess({})
