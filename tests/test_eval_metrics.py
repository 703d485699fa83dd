"""One metric stack: validation / test log the data module's ``sample_metrics()`` (torchmetrics
``Metric`` objects), and the logged values equal the functional reference computed here from the
very samples and held-out examples the module used.

The module draws ``num_eval_samples`` = n samples at a validation epoch end and buffers 2n
validation examples in loader order: the first n are the reference, the next n the floor's fresh
real draw. ``Recording`` keeps the samples it drew so the test can recompute every value.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import networkx as nx
import pytest
import torch
from torch.utils.data import DataLoader

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess
from diffkit.data import GraphDataModule, MarkovTokensDataModule, Toy2DDataModule
from diffkit.graphs import to_networkx
from diffkit.metrics import MMD, SlicedWasserstein, TokenFrequencyDistance, mmd_rbf, sliced_wasserstein, total_variation
from diffkit.metrics.functional import bigram_histogram, kl_divergence, token_histogram
from diffkit.metrics.graph_samples import GraphSampleMetrics
from diffkit.metrics.graphs import graph_mmds, is_planar_graph, vun
from diffkit.metrics.quality import default_sample_metrics
from diffkit.models import GraphTransformer, MLPDenoiser, TokenTransformer
from diffkit.module import DiffusionModule

N = 8  # num_eval_samples


class Recording(DiffusionModule):
    """DiffusionModule that keeps the samples of its last sample() call."""

    drawn = None

    def sample(self, *args, **kwargs):
        self.drawn = super().sample(*args, **kwargs)
        return self.drawn


def validate(model: DiffusionModule, dm, tmp_path: Path, **kw) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )
    (metrics,) = trainer.validate(model, dm, verbose=False)
    return metrics


def close(logged: float, expected: torch.Tensor | float) -> None:
    expected = float(expected)
    assert math.isfinite(expected)
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-6), (logged, expected)


def test_float_data_logs_mmd_and_swd_equal_to_the_functions(tmp_path) -> None:
    dm = Toy2DDataModule("swiss_roll", num_train=64, num_val=32, batch_size=16)
    model = Recording(GaussianProcess(10), MLPDenoiser(2, 10, hidden=16, depth=1), "eps", num_eval_samples=N)
    logged = validate(model, dm, tmp_path)
    dm.setup()
    reference, fresh = dm.split("val")[:N], dm.split("val")[N : 2 * N]
    samples = model.drawn.double()
    close(logged["val/mmd"], mmd_rbf(samples, reference.double()))
    close(logged["val/mmd_floor"], mmd_rbf(fresh.double(), reference.double()))
    directions = torch.Generator().manual_seed(0)
    close(logged["val/swd"], sliced_wasserstein(model.drawn, reference, 128, 2, directions))
    assert logged["val/mmd"] > logged["val/mmd_floor"]  # an untrained model is worse than real data


def test_token_data_logs_the_exact_reference_distances(tmp_path) -> None:
    dm = MarkovTokensDataModule(num_classes=4, seq_len=6, num_train=64, num_val=32, batch_size=16)
    process = CategoricalProcess(4, 10)
    net = TokenTransformer(process.num_states, 4, seq_len=6, num_steps=10, d_model=16, depth=1, heads=2)
    model = Recording(process, net, "x0", num_eval_samples=N)
    logged = validate(model, dm, tmp_path)
    unigram, bigram = dm.chain.unigram(), dm.chain.bigram()
    for drawn, suffix in ((model.drawn, ""), (dm.split("val")[N : 2 * N], "_floor")):
        close(logged[f"val/tokens/unigram_tv{suffix}"], total_variation(token_histogram(drawn, 4), unigram))
        close(logged[f"val/tokens/unigram_kl{suffix}"], kl_divergence(unigram, token_histogram(drawn, 4)))
        close(
            logged[f"val/tokens/bigram_tv{suffix}"],
            total_variation(bigram_histogram(drawn, 4).flatten(), bigram.flatten()),
        )


def test_graph_runs_log_graph_mmds_and_vun_during_validation(tmp_path) -> None:
    T = 5
    dm = GraphDataModule("planar_cpu", batch_size=2 * N, cache_dir=str(tmp_path / "cache"))
    process = ProductProcess({"X": CategoricalProcess(1, T), "E": CategoricalProcess(2, T, "uniform")}, symmetric=["E"])
    net = GraphTransformer(1, 2, 1, 2, T, hidden=8, edge_hidden=4, global_hidden=8, depth=1, heads=2)
    model = Recording(process, net, "x0", num_eval_samples=N)
    # sample() draws node counts from the training data's; validate() alone has none, so record them.
    dm.setup()
    model.size_counts = dm.node_count_distribution() * 1000
    logged = validate(model, dm, tmp_path, limit_val_batches=1)
    val = dm.split("val")
    reference = to_networkx({k: v[:N] for k, v in val.items()})
    fresh = to_networkx({k: v[N : 2 * N] for k, v in val.items()})
    for graphs, suffix in ((to_networkx(model.drawn), ""), (fresh, "_floor")):
        mmd = graph_mmds(graphs, reference)
        for name in ("degree", "clustering", "orbit", "spectre"):
            close(logged[f"val/graph/mmd/{name}{suffix}"], getattr(mmd, name))
        fractions = vun(graphs, dm.train_graphs(), is_planar_graph)
        for name in ("valid", "unique", "novel", "vun"):
            assert logged[f"val/graph/{name}{suffix}"] == pytest.approx(getattr(fractions, name)), name
    assert logged["val/graph/valid_floor"] == 1.0  # real planar graphs pass the planar rule
    assert logged["val/graph/mmd/degree"] > logged["val/graph/mmd/degree_floor"]


def test_a_data_module_without_the_hook_gets_the_defaults(tmp_path) -> None:
    class Plain(pl.LightningDataModule):
        def val_dataloader(self):
            return DataLoader(torch.randn(32, 3, generator=torch.Generator().manual_seed(1)), batch_size=16)

    model = Recording(GaussianProcess(10), MLPDenoiser(3, 10, hidden=16, depth=1), "eps", num_eval_samples=N)
    logged = validate(model, Plain(), tmp_path)
    reference = Plain().val_dataloader().dataset[:N]
    close(logged["val/mmd"], mmd_rbf(model.drawn.double(), reference.double()))


def test_default_sample_metrics_by_kind_of_data() -> None:
    assert set(default_sample_metrics(torch.randn(4, 1, 8, 8))) == {"mmd", "swd"}
    tokens = default_sample_metrics(torch.zeros(4, 6, dtype=torch.long), num_classes=3)
    assert isinstance(tokens["tokens"], TokenFrequencyDistance) and tokens["tokens"].num_classes == 3
    table = default_sample_metrics({"num": torch.randn(4, 2), "c": torch.zeros(4, dtype=torch.long)}, {"c": 5})
    assert table["columns"].categorical == {"c": 5} and table["columns"].numeric == ["num"]
    assert default_sample_metrics(torch.zeros(4, 6, dtype=torch.long))["tokens"].num_classes is None  # K from the ids
    with pytest.raises(ValueError, match="num_classes"):
        default_sample_metrics({"num": torch.randn(4, 2), "c": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(ValueError, match="sample_metrics"):
        default_sample_metrics({"X": torch.zeros(4, 3, dtype=torch.long), "mask": torch.ones(4, 3, dtype=torch.bool)})


def test_image_shaped_float_samples_are_flattened() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 4, 4, generator=g), torch.randn(30, 1, 4, 4, generator=g)
    metric = MMD()
    metric.update(x, y)
    close(float(metric.compute()), mmd_rbf(x.flatten(1), y.flatten(1)))
    swd = SlicedWasserstein(num_projections=16)
    swd.update(x, y)
    close(float(swd.compute()), sliced_wasserstein(x.flatten(1), y.flatten(1), 16, 2, torch.Generator().manual_seed(0)))


def test_token_frequency_distance_is_tv_of_pooled_histograms() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (30, 7), generator=g), torch.randint(0, 3, (40, 7), generator=g)
    metric = TokenFrequencyDistance(5)
    metric.update(a[:10], b[:25])
    metric.update(a[10:], b[25:])
    out = metric.compute()

    # Plain reference: frequencies counted with Python loops.
    def freq(ids, pairs):
        counts = torch.zeros(25 if pairs else 5, dtype=torch.float64)
        for row in ids.tolist():
            for i in range(len(row) - (1 if pairs else 0)):
                counts[row[i] * 5 + row[i + 1] if pairs else row[i]] += 1
        return counts / counts.sum()

    close(out["unigram_tv"], 0.5 * (freq(a, False) - freq(b, False)).abs().sum())
    close(out["bigram_tv"], 0.5 * (freq(a, True) - freq(b, True)).abs().sum())
    inferred = TokenFrequencyDistance()  # K = largest id + 1 = 5
    inferred.update(a, b)
    assert {k: float(v) for k, v in inferred.compute().items()} == {k: float(v) for k, v in out.items()}
    with pytest.raises(ValueError, match="ids in"):
        metric.update(a + 5, b)


def test_graph_sample_metrics_pool_updates() -> None:
    train = [nx.cycle_graph(5), nx.path_graph(4)]
    samples = [nx.complete_graph(4), nx.cycle_graph(5), nx.star_graph(3)]
    reference = [nx.path_graph(5), nx.cycle_graph(6), nx.wheel_graph(5)]
    from diffkit.graphs import to_dense

    metric = GraphSampleMetrics(train, max_nodes=6, validity="planar")
    metric.update(to_dense(samples[:2], max_nodes=6), to_dense(reference[:1], max_nodes=6))
    metric.update(to_dense(samples[2:], max_nodes=5), to_dense(reference[1:], max_nodes=6))
    out = metric.compute()
    mmd = graph_mmds(samples, reference)
    for name in ("degree", "clustering", "orbit", "spectre"):
        close(out[f"mmd/{name}"], getattr(mmd, name))
    assert float(out["novel"]) == pytest.approx(2 / 3)  # the 5-cycle is a training graph
    assert float(out["unique"]) == 1.0 and float(out["valid"]) == 1.0


class RecordingToDisk(Recording):
    """Saves, per rank, the samples and the buffered held-out examples of the last validation."""

    def __init__(self, *args, record_dir: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir

    def _eval_epoch_end(self, stage: str, metrics: bool = True) -> None:
        data = torch.cat(self._eval_buffer) if self._eval_buffer else None
        super()._eval_epoch_end(stage, metrics)
        torch.save({"samples": self.drawn, "data": data}, Path(self.record_dir) / f"rank{self.global_rank}.pt")


def test_two_processes_log_the_pooled_value(tmp_path) -> None:
    """Under DDP (2 CPU processes, gloo) every rank adds its own samples and held-out examples;
    the logged value is the metric of all of them together, not a mean of per-rank values.
    (~9 s alone on 2 cores, mostly the workers' imports.)"""
    from helpers.reliability import quiet_lightning

    quiet_lightning()
    dm = Toy2DDataModule("swiss_roll", num_train=64, num_val=64, batch_size=16)
    torch.manual_seed(0)
    model = RecordingToDisk(
        GaussianProcess(10), MLPDenoiser(2, 10, hidden=16, depth=1), "eps", num_eval_samples=N, record_dir=str(tmp_path)
    )
    logged = validate(model, dm, tmp_path, devices=2, strategy="ddp_spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    samples = torch.cat([r["samples"] for r in ranks]).double()
    reference = torch.cat([r["data"][:N] for r in ranks]).double()
    fresh = torch.cat([r["data"][N : 2 * N] for r in ranks]).double()
    assert not torch.equal(ranks[0]["samples"], ranks[1]["samples"]), "both ranks drew the same samples"
    close(logged["val/mmd"], mmd_rbf(samples, reference))
    close(logged["val/mmd_floor"], mmd_rbf(fresh, reference))
    close(
        logged["val/swd"],
        sliced_wasserstein(samples.float(), reference.float(), 128, 2, torch.Generator().manual_seed(0)),
    )
    per_rank = [float(mmd_rbf(r["samples"].double(), r["data"][:N].double())) for r in ranks]
    assert logged["val/mmd"] != pytest.approx(sum(per_rank) / 2)  # pooled, not averaged
