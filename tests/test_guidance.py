"""Classifier-free guidance: the combinations against hand computation, and the denoiser call of sample()."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess, sample
from diffkit.guidance import cfg_linear, cfg_log_probs, combine_guided, drop_cond, guided_output, split_cond_batch
from diffkit.models.conditioning import NULL_CLASS, ConditionEmbedding


def test_linear_combination_by_hand() -> None:
    out_c, out_null = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    # out_c + w (out_c - out_null), w = 2: [1 + 2 * 1, -2 + 2 * (-3), 0.5 + 0] = [3, -8, 0.5]
    assert torch.equal(cfg_linear(out_c, out_null, 2.0), torch.tensor([3.0, -8.0, 0.5]))
    assert torch.equal(cfg_linear(out_c, out_null, 0.0), out_c)


def test_log_prob_combination_by_hand() -> None:
    p_c, p_null = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    w = 1.5
    # p proportional to p_c^(1 + w) p_null^(-w), written out term by term
    unnorm = [a ** (1 + w) * b ** (-w) for a, b in zip(p_c, p_null, strict=True)]
    expected = torch.tensor([u / sum(unnorm) for u in unnorm], dtype=torch.float64)
    # logits of any normalization: log p + a constant
    logits_c = torch.tensor([math.log(p) + 3.0 for p in p_c], dtype=torch.float64)
    logits_null = torch.tensor([math.log(p) - 1.0 for p in p_null], dtype=torch.float64)
    got = cfg_log_probs(logits_c, logits_null, w)
    torch.testing.assert_close(got.exp(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # w = 0 gives back p_c exactly (normalized)
    torch.testing.assert_close(cfg_log_probs(logits_c, logits_null, 0.0).exp(), torch.tensor(p_c, dtype=torch.float64))


def test_product_combination_is_per_field() -> None:
    process = ProductProcess({"num": GaussianProcess(10), "cat": CategoricalProcess(3, 10)})
    param = process.get_parametrization({"num": "eps", "cat": "x0"})
    out_c = {"num": torch.tensor([[1.0, 2.0]]), "cat": torch.tensor([[0.0, 1.0, 2.0]])}
    out_null = {"num": torch.tensor([[0.0, 0.0]]), "cat": torch.tensor([[2.0, 1.0, 0.0]])}
    got = combine_guided(param, out_c, out_null, 1.0)
    assert torch.equal(got["num"], torch.tensor([[2.0, 4.0]]))  # linear
    lp_c, lp_n = out_c["cat"].log_softmax(-1), out_null["cat"].log_softmax(-1)
    torch.testing.assert_close(got["cat"], (2 * lp_c - lp_n).log_softmax(-1))  # log-probabilities


class Recording(torch.nn.Module):
    """A conditional denoiser that returns a known function of cond and records its calls."""

    from diffkit.models.conditioning import ConditionSpec

    cond_spec = ConditionSpec(num_classes=4)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def forward(self, x_t, t, cond=None):
        self.calls.append(None if cond is None else cond.clone())
        shift = torch.zeros(x_t.shape[0]) if cond is None else cond.float() + 1
        return torch.zeros_like(x_t) + shift[:, None]


def test_guided_output_calls_conditional_and_null() -> None:
    net, param = Recording(), GaussianProcess(10).get_parametrization("eps")
    x, t, cond = torch.zeros(3, 2), torch.full((3,), 5), torch.tensor([0, 1, 3])
    out = guided_output(net, x, t, cond, 0.5, param)
    assert len(net.calls) == 2 and torch.equal(net.calls[0], cond) and net.calls[1] is None
    # out_c = cond + 1, out_null = 0: out = (cond + 1) * 1.5
    torch.testing.assert_close(out, ((cond.float() + 1) * 1.5)[:, None].expand(3, 2))
    net.calls.clear()
    assert torch.equal(guided_output(net, x, t, cond, 0.0, param), (cond.float() + 1)[:, None].expand(3, 2))
    assert len(net.calls) == 1  # w = 0: the plain conditional model, one call


def test_sample_with_guidance_equals_manual_loop() -> None:
    """sample(cond, w) is the reverse chain driven by the hand-combined output."""
    process = GaussianProcess(8)
    net = Recording()
    cond = torch.tensor([0, 2])
    got = sample(process, net, (2, 3), "eps", cond=cond, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    x = process.prior_sample((2, 3), generator=gen)
    for t in range(8, 0, -1):
        out = (cond.float() + 1)[:, None].expand(2, 3) * 3.0  # (1 + w) out_c - w out_null, out_null = 0
        x = process.step(out, x, t, t - 1, "eps", generator=gen)
    torch.testing.assert_close(got, x)


def test_categorical_guidance_sharpens_towards_the_condition() -> None:
    """With a null model uniform over 3 classes and a conditional one preferring the class, the
    guided x0 distribution at the last step is p_c^(1+w) / sum: sampled frequencies match it."""
    process = CategoricalProcess(3, 1, "absorbing")
    p_c = torch.tensor([0.6, 0.3, 0.1])

    class Net(torch.nn.Module):
        from diffkit.models.conditioning import ConditionSpec

        cond_spec = ConditionSpec(num_classes=1)

        def forward(self, x_t, t, cond=None):
            probs = torch.full((3,), 1 / 3) if cond is None else p_c
            return probs.log().expand(*x_t.shape, 3)

    n, w = 40000, 1.0
    xs = sample(process, Net(), (n, 1), "x0", cond=0, guidance_scale=w, generator=torch.Generator().manual_seed(0))
    expected = p_c ** (1 + w) / (p_c ** (1 + w)).sum()
    freq = torch.bincount(xs.flatten(), minlength=3).float() / n
    assert (freq - expected).abs().max() < 0.01, (freq, expected)


def test_condition_embedding_null_markers() -> None:
    emb = ConditionEmbedding(num_classes=3, dim=4)
    null = emb(None, 1)
    ids = emb(torch.tensor([NULL_CLASS, 1]), 2)
    assert torch.equal(ids[0], null[0]) and not torch.equal(ids[1], null[0])
    feat = ConditionEmbedding(cond_dim=2, dim=4)
    with torch.no_grad():
        feat.null.fill_(7.0)
    out = feat(drop_cond(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([True, False])), 2)
    assert torch.equal(out[0], torch.full((4,), 7.0)) and not torch.equal(out[1], out[0])
    assert torch.equal(feat(None, 2), torch.full((2, 4), 7.0))


def test_split_cond_batch() -> None:
    x, c = torch.zeros(2, 3), torch.tensor([1, 0])
    assert split_cond_batch(x) == (x, None)
    assert split_cond_batch((x,))[1] is None
    assert split_cond_batch([x, c])[1] is c
    d, cond = split_cond_batch({"a": x, "cond": c})
    assert list(d) == ["a"] and cond is c
    with pytest.raises(ValueError, match="batch"):
        split_cond_batch((x, c, c))
