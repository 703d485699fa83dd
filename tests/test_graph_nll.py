"""The -log p(N) term of DiGress's per-graph NLL, by hand, and logged by validation on graph data."""

import math

import lightning.pytorch as pl
import pytest
import torch

from diffkit import CategoricalProcess, ProductProcess
from diffkit.data import GraphDataModule
from diffkit.graph_nll import graph_nll, node_count_nll
from diffkit.models import GraphTransformer
from diffkit.module import DiffusionModule


def test_node_count_nll_by_hand():
    counts = torch.tensor([0, 0, 1, 3])  # p(2) = 1/4, p(3) = 3/4
    mask = torch.tensor(
        [
            [True, True, False, False, False],
            [True, True, True, False, False],
            [True] * 5,
            [True, False, False, False, False],
        ]
    )
    nll = node_count_nll(mask, counts)
    assert nll[:2].tolist() == pytest.approx([math.log(4), -math.log(0.75)])
    assert math.isinf(nll[2]) and math.isinf(nll[3])  # sizes never seen in training
    bound = torch.tensor([10.0, 20.0, 0.0, 0.0])
    assert graph_nll(bound, mask, counts)[:2].tolist() == pytest.approx([10 + math.log(4), 20 - math.log(0.75)])
    with pytest.raises(ValueError, match="counts"):
        node_count_nll(mask, torch.zeros(3))


def test_validation_logs_the_per_graph_nll(tmp_path):
    T = 5
    dm = GraphDataModule("sbm_cpu", batch_size=16, cache_dir=str(tmp_path / "cache"))
    process = ProductProcess(
        {"X": CategoricalProcess(1, T), "E": CategoricalProcess(2, T, "marginal")}, weights={"E": 5.0}, symmetric=["E"]
    )
    net = GraphTransformer(1, 2, 1, 2, T, hidden=16, edge_hidden=8, global_hidden=16, depth=1, heads=2)
    model = DiffusionModule(process, net, "x0", num_eval_samples=2)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    per_graph, per_element = float(metrics["val/nll_nats_per_graph"]), float(metrics["val/nll_bits_per_element"])
    # the per-graph bound is the per-element one times the elements, plus -log p(N) >= 0
    assert math.isfinite(per_graph) and per_graph > per_element * math.log(2)


def test_rounded_ratios_by_hand():
    from diffkit.metrics.graph_ratios import rounded_ratios

    mmd = {"degree": 0.003, "clustering": 0.02, "orbit": 0.5}
    reference = {"degree": 0.00014, "clustering": 0.00004, "orbit": 0.00226}  # rounds to 0.0001, 0.0, 0.0023
    out = rounded_ratios(mmd, reference)
    assert out.dropped == ("clustering",)
    assert out.ratios == pytest.approx({"degree": 30.0, "orbit": 0.5 / 0.0023})
    assert out.mean == pytest.approx((30.0 + 0.5 / 0.0023) / 2)
    assert math.isnan(rounded_ratios({"a": 1.0}, {"a": 1e-6}).mean)
    with pytest.raises(ValueError, match="reference"):
        rounded_ratios({"a": 1.0}, {})
