"""A tiny DiGress-style run end to end: graph data -> ProductProcess (X, symmetric E, mask) ->
GraphTransformer -> DiffusionModule training -> sampling with learned node counts -> networkx."""

import lightning.pytorch as pl
import networkx as nx
import torch

from diffkit import CategoricalProcess, ProductProcess
from diffkit.data import GraphDataModule
from diffkit.graphs import to_networkx
from diffkit.models import GraphTransformer
from diffkit.module import DiffusionModule


def test_tiny_graph_run_trains_and_samples_valid_graph_tensors(tmp_path) -> None:
    T = 10
    dm = GraphDataModule("sbm_cpu", batch_size=16, cache_dir=str(tmp_path / "cache"))
    process = ProductProcess(
        {"X": CategoricalProcess(1, T), "E": CategoricalProcess(2, T, "marginal")},
        weights={"E": 5.0},
        symmetric=["E"],
    )
    net = GraphTransformer(
        1, 2, 1, 2, T, hidden=16, edge_hidden=8, global_hidden=16, depth=1, heads=2, structural_features=True
    )
    model = DiffusionModule(process, net, "x0", ema_decay=0.9, num_eval_samples=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, dm)
    edge_pi = model.process.fields["E"].kernel.pi
    assert torch.isfinite(edge_pi).all() and 0 < edge_pi[1] < 0.5  # sparse graphs: few edges
    samples = model.sample(6, num_steps=5, generator=torch.Generator().manual_seed(0))
    E, mask = samples["E"], samples["mask"]
    assert torch.equal(E, E.transpose(1, 2))
    assert (E.diagonal(dim1=1, dim2=2) == 0).all()
    assert not E[~(mask[:, :, None] & mask[:, None, :])].any()  # padding untouched
    sizes = mask.sum(1)
    counts = model.size_counts
    assert all(counts[n] > 0 for n in sizes.tolist())  # sizes drawn from the training node counts
    graphs = to_networkx(samples)
    assert [g.number_of_nodes() for g in graphs] == sizes.tolist()
    assert all(isinstance(g, nx.Graph) for g in graphs)
