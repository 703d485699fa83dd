"""Tests for the denoiser networks in diffkit.models: shapes, properties of the architectures, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffkit.models import (
    MLPDenoiser,
    SinusoidalEmbedding,
    TableDenoiser,
    TimeEmbedding,
    TokenTransformer,
    timestep_embedding,
)
from diffkit.models.embeddings import TIME_SCALE
from diffkit.models.transformer import AdaLNBlock

T = 50


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_zero_params_(model: nn.Module, std: float = 0.1) -> nn.Module:
    """Give every all-zero parameter (adaLN-Zero gates, zero output head) random values."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, std)
    return model


def small_transformer(**kwargs) -> TokenTransformer:
    args = dict(num_states=6, num_outputs=5, seq_len=8, num_steps=T, d_model=32, depth=2, heads=4)
    return TokenTransformer(**{**args, **kwargs})


def small_table() -> TableDenoiser:
    return TableDenoiser({"price": 2, "age": 1}, {"job": (5, 4), "city": (3, 3)}, num_steps=T, hidden=32, depth=2)


def table_batch(batch_size: int = 6) -> dict[str, torch.Tensor]:
    return {
        "price": torch.randn(batch_size, 2),
        "age": torch.randn(batch_size, 1),
        "job": torch.randint(0, 5, (batch_size,)),
        "city": torch.randint(0, 3, (batch_size,)),
    }


# ---------------------------------------------------------------------------------------------- embeddings


def test_timestep_embedding_matches_plain_formula() -> None:
    dim, max_period = 6, 10000.0
    t_frac = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    emb = timestep_embedding(t_frac, dim, max_period)
    assert emb.shape == (3, dim) and emb.dtype == torch.float64
    half = dim // 2
    for i, u in enumerate(t_frac.tolist()):
        for k in range(half):
            angle = TIME_SCALE * u * max_period ** (-k / half)
            assert emb[i, k].item() == pytest.approx(math.cos(angle), abs=1e-9)
            assert emb[i, half + k].item() == pytest.approx(math.sin(angle), abs=1e-9)


def test_timestep_embedding_odd_dim_pads_one_zero() -> None:
    emb = timestep_embedding(torch.rand(4), 7)
    assert emb.shape == (4, 7)
    assert torch.all(emb[:, -1] == 0)


def test_sinusoidal_embedding_depends_only_on_t_over_T() -> None:
    """The same fraction t / T embeds the same at T = 10 and T = 1000 and matches the functional form."""
    short, long = SinusoidalEmbedding(10, 16), SinusoidalEmbedding(1000, 16)
    t_short = torch.tensor([0, 3, 10])
    emb = short(t_short)
    torch.testing.assert_close(emb, long(t_short * 100))
    torch.testing.assert_close(emb, timestep_embedding(t_short / 10, 16))
    assert emb.dtype == torch.float32


def test_sinusoidal_frequencies_are_not_saved_in_state_dict() -> None:
    assert "freqs" not in SinusoidalEmbedding(T, 8).state_dict()


def test_time_embedding_shape() -> None:
    out = TimeEmbedding(T, 24, sinusoidal_dim=10)(torch.randint(0, T + 1, (5,)))
    assert out.shape == (5, 24) and out.dtype == torch.float32


def test_timestep_embedding_rejects_integer_fractions() -> None:
    with pytest.raises(TypeError, match=r"^t_frac: expected a floating-point Tensor, got torch.int64"):
        timestep_embedding(torch.tensor([1, 2]), 8)


# ---------------------------------------------------------------------------------------------- MLP


@pytest.mark.parametrize("shape", [(7, 2), (3, 3, 4)])
def test_mlp_output_shape_and_dtype(shape: tuple[int, ...]) -> None:
    net = MLPDenoiser(dim=math.prod(shape[1:]), num_steps=T, hidden=32, depth=2, time_dim=16)
    out = net(torch.randn(shape), torch.randint(0, T + 1, (shape[0],)))
    assert out.shape == shape and out.dtype == torch.float32


def test_mlp_benchmark_shape() -> None:
    """The benchmark configuration: 2 + 128 inputs, three hidden SiLU layers of 256, output 2."""
    net = MLPDenoiser(dim=2, num_steps=1000)
    linears = [m for m in net.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(130, 256), (256, 256), (256, 256), (256, 2)]
    assert sum(isinstance(m, nn.SiLU) for m in net.net) == 3


def test_mlp_time_conditioning_matters() -> None:
    net = MLPDenoiser(dim=2, num_steps=T, hidden=32)
    x = torch.randn(1, 2).expand(2, 2)
    out = net(x, torch.tensor([0, T]))
    assert not torch.allclose(out[0], out[1])


def test_mlp_gradients_reach_all_parameters() -> None:
    net = MLPDenoiser(dim=2, num_steps=T, hidden=32)
    net(torch.randn(4, 2), torch.randint(0, T + 1, (4,))).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlp_overfits_tiny_batch() -> None:
    net = MLPDenoiser(dim=2, num_steps=T, hidden=64)
    x, t, target = torch.randn(16, 2), torch.randint(0, T + 1, (16,)), torch.randn(16, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = (net(x, t) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


def test_mlp_errors() -> None:
    net = MLPDenoiser(dim=2, num_steps=T, hidden=8)
    t = torch.zeros(3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"^x_t: expected a floating-point Tensor, got torch.int64"):
        net(torch.zeros(3, 2, dtype=torch.long), t)
    with pytest.raises(
        ValueError, match=r"^x_t: expected shape \(B, \.\.\.\) with 2 features per example, got \(3, 3\)"
    ):
        net(torch.randn(3, 3), t)
    with pytest.raises(
        TypeError, match=r"^t: expected dtype torch.int64 \(integer steps in 0\.\.T\), got torch.float32"
    ):
        net(torch.randn(3, 2), t.float())
    with pytest.raises(ValueError, match=r"^t: expected shape \(3,\) to match the batch, got \(2,\)"):
        net(torch.randn(3, 2), t[:2])
    with pytest.raises(ValueError, match=r"^num_steps: expected a positive int, got 0"):
        MLPDenoiser(dim=2, num_steps=0)


# ---------------------------------------------------------------------------------------------- transformer


def test_transformer_output_shape_and_dtype() -> None:
    net = small_transformer()
    out = net(torch.randint(0, 6, (3, 8)), torch.randint(0, T + 1, (3,)))
    assert out.shape == (3, 8, 5) and out.dtype == torch.float32
    assert net(torch.randint(0, 6, (3, 5)), torch.zeros(3, dtype=torch.long)).shape == (3, 5, 5)


def test_transformer_accepts_mask_state() -> None:
    """With an absorbing state, num_states = K + 1 and the mask id K is a valid input."""
    net = small_transformer(num_states=6, num_outputs=5)
    out = net(torch.full((2, 8), 5), torch.tensor([T, T]))
    assert out.shape == (2, 8, 5)


def test_adaln_block_is_identity_at_init() -> None:
    block = AdaLNBlock(d_model=16, heads=4)
    h, c = torch.randn(2, 5, 16), torch.randn(2, 16)
    torch.testing.assert_close(block(h, c), h, rtol=0, atol=0)


def test_transformer_is_permutation_equivariant_without_positions() -> None:
    net = randomize_zero_params_(small_transformer()).eval()
    with torch.no_grad():
        net.pos_embed.zero_()
    x, t = torch.randint(0, 6, (2, 8)), torch.tensor([3, 40])
    perm = torch.randperm(8)
    torch.testing.assert_close(net(x[:, perm], t), net(x, t)[:, perm], rtol=1e-5, atol=1e-5)


def test_transformer_is_not_causal() -> None:
    """Changing the last token changes the first position's output."""
    net = randomize_zero_params_(small_transformer()).eval()
    x, t = torch.randint(0, 6, (1, 8)), torch.tensor([10])
    x_changed = x.clone()
    x_changed[0, -1] = (x[0, -1] + 1) % 6
    assert not torch.allclose(net(x, t)[0, 0], net(x_changed, t)[0, 0])


def test_transformer_time_conditioning_matters() -> None:
    net = randomize_zero_params_(small_transformer()).eval()
    x = torch.randint(0, 6, (1, 8)).expand(2, 8)
    out = net(x, torch.tensor([0, T]))
    assert not torch.allclose(out[0], out[1])


def test_transformer_gradients_reach_all_parameters() -> None:
    net = small_transformer()
    x, t = torch.randint(0, 6, (2, 8)), torch.randint(0, T + 1, (2,))
    net(x, t).square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())  # connected even where adaLN-Zero gives 0
    net.zero_grad()
    randomize_zero_params_(net)
    net(x, t).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_transformer_learns_from_zero_init() -> None:
    """A few Adam steps leave the zero-init (uniform logits) and fit a t-dependent target."""
    net = small_transformer(depth=1)
    x, t = torch.randint(0, 6, (4, 8)), torch.tensor([0, 0, T, T])
    target = torch.where(t[:, None] == 0, x.clamp(max=4), 4 - x.clamp(max=4))  # (B, L)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = nn.functional.cross_entropy(net(x, t).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first
    out = net(x[:1].expand(2, 8), torch.tensor([0, T]))
    assert not torch.allclose(out[0], out[1])


def test_transformer_errors() -> None:
    net = small_transformer()
    t = torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"^x_t: expected int64 class ids, got dtype torch.float32"):
        net(torch.zeros(2, 8), t)
    with pytest.raises(ValueError, match=r"^x_t: expected ids in \[0, 6\) \(num_states=6\), got values in \[0, 6\]"):
        net(torch.tensor([[0, 6]]).expand(2, 2), t)
    with pytest.raises(ValueError, match=r"^x_t: expected ids in \[0, 6\) \(num_states=6\), got values in \[-1, 0\]"):
        net(torch.tensor([[0, -1]]).expand(2, 2), t)
    with pytest.raises(ValueError, match=r"^x_t: expected shape \(B, L\) with L <= 8, got \(2, 9\)"):
        net(torch.zeros(2, 9, dtype=torch.long), t)
    with pytest.raises(TypeError, match=r"^t: expected dtype torch.int64"):
        net(torch.zeros(2, 8, dtype=torch.long), t.int())
    with pytest.raises(ValueError, match=r"^heads: expected a divisor of d_model=30, got heads=4"):
        small_transformer(d_model=30)


# ---------------------------------------------------------------------------------------------- table


def test_table_output_fields_shapes_and_dtypes() -> None:
    net = small_table()
    batch = {**table_batch(6), "mask": torch.ones(6, dtype=torch.bool)}
    out = net(batch, torch.randint(0, T + 1, (6,)))
    assert set(out) == {"price", "age", "job", "city"}
    assert out["price"].shape == (6, 2) and out["age"].shape == (6, 1)
    assert out["job"].shape == (6, 4) and out["city"].shape == (6, 3)
    assert all(v.dtype == torch.float32 for v in out.values())


def test_table_accepts_awkward_field_names() -> None:
    net = TableDenoiser({"a.b": 1}, {"values": (3, 2)}, num_steps=T, hidden=8, depth=1)
    out = net({"a.b": torch.randn(2, 1), "values": torch.tensor([0, 2])}, torch.tensor([0, 1]))
    assert set(out) == {"a.b", "values"}


def test_table_time_conditioning_matters() -> None:
    net = small_table()
    batch = {name: v[:1].expand(2, *v.shape[1:]) for name, v in table_batch(1).items()}
    out = net(batch, torch.tensor([0, T]))
    assert all(not torch.allclose(v[0], v[1]) for v in out.values())


def test_table_gradients_reach_all_parameters() -> None:
    net = small_table()
    out = net(table_batch(6), torch.randint(0, T + 1, (6,)))
    sum(v.square().sum() for v in out.values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_table_errors() -> None:
    net = small_table()
    t = torch.zeros(6, dtype=torch.long)
    batch = table_batch(6)
    with pytest.raises(ValueError, match=r"^x_t: missing field\(s\) \['job'\]"):
        net({k: v for k, v in batch.items() if k != "job"}, t)
    with pytest.raises(TypeError, match=r"^x_t\['city'\]: expected int64 class ids, got dtype torch.float32"):
        net({**batch, "city": batch["city"].float()}, t)
    with pytest.raises(
        ValueError, match=r"^x_t\['job'\]: expected ids in \[0, 5\) \(num_states=5\), got values in \[0, 7\]"
    ):
        net({**batch, "job": torch.tensor([0, 7, 1, 1, 1, 1])}, t)
    with pytest.raises(TypeError, match=r"^x_t\['age'\]: expected a floating-point Tensor"):
        net({**batch, "age": torch.zeros(6, 1, dtype=torch.long)}, t)
    with pytest.raises(ValueError, match=r"^x_t\['price'\]: expected shape \(6, 2\), got \(6, 3\)"):
        net({**batch, "price": torch.randn(6, 3)}, t)
    with pytest.raises(ValueError, match=r"^x_t\['city'\]: expected shape \(6,\), got \(5,\)"):
        net({**batch, "city": torch.zeros(5, dtype=torch.long)}, t)
    with pytest.raises(TypeError, match=r"^x_t: expected a dict of field tensors, got Tensor"):
        net(batch["price"], t)
    with pytest.raises(ValueError, match=r"^numeric, categorical: expected distinct field names, got \['x'\] in both"):
        TableDenoiser({"x": 1}, {"x": (2, 2)}, num_steps=T)
