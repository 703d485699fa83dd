"""Molecules: SMILES <-> dense graphs, bad input, RDKit metrics on hand-built molecules, extra features,
the data module and an end-to-end tiny DiGress run on a MOSES subset."""

from __future__ import annotations

import math

import pytest
import torch

Chem = pytest.importorskip("rdkit.Chem")  # CI installs RDKit (the "molecules" extra); a guard only

from diffkit.data.molecules import MoleculeDataModule  # noqa: E402
from diffkit.metrics.molecules import MoleculeMetrics, canonical_set, molecule_stats, total_variation, type_frequencies  # noqa: E402
from diffkit.models.extra_features import molecular_features  # noqa: E402
from diffkit.molecules import (  # noqa: E402
    MOSES_ATOMS,
    AtomVocabulary,
    canonical_smiles,
    dense_to_mols,
    encode_smiles,
    load_moses,
    parse_atom_type,
    read_smiles_file,
)

VOCAB = AtomVocabulary(("C", "N", "O"))


def canon(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def dense(
    molecules: list[tuple[list[str], list[tuple[int, int, int]]]], vocab: AtomVocabulary = VOCAB, n: int = 8
) -> dict:
    """A dense batch written by hand: atoms by name, bonds (i, j, order)."""
    X = torch.zeros(len(molecules), n, dtype=torch.int64)
    E = torch.zeros(len(molecules), n, n, dtype=torch.int64)
    mask = torch.zeros(len(molecules), n, dtype=torch.bool)
    for b, (atoms, bonds) in enumerate(molecules):
        for i, name in enumerate(atoms):
            X[b, i] = vocab.names.index(name)
            mask[b, i] = True
        for i, j, k in bonds:
            E[b, i, j] = E[b, j, i] = k
    return {"X": X, "E": E, "mask": mask}


# ------------------------------------------------------------------------------------ encoding


def test_parse_atom_type():
    assert parse_atom_type("C") == ("C", 0)
    assert parse_atom_type("N+") == ("N", 1)
    assert parse_atom_type("O-") == ("O", -1)
    assert parse_atom_type("Fe+2") == ("Fe", 2)
    with pytest.raises(ValueError, match="atom type"):
        parse_atom_type("c")
    with pytest.raises(ValueError, match="distinct"):
        AtomVocabulary(("C", "C"))


def test_encoding_is_kekulized_with_implicit_hydrogens():
    enc = encode_smiles(["c1ccccc1", "C#N"], VOCAB, max_nodes=6)
    X, E, mask = enc.batch["X"], enc.batch["E"], enc.batch["mask"]
    assert mask.sum(1).tolist() == [6, 2]  # no hydrogen nodes
    ring = E[0]
    assert torch.equal(ring, ring.T)
    assert sorted(ring.sum(1).tolist()) == [3] * 6  # each ring carbon: one single + one double bond
    assert sorted(ring[ring > 0].tolist()) == [1] * 6 + [2] * 6  # 3 single and 3 double bonds, both directions
    assert X[1, :2].tolist() == [0, 1] and int(E[1, 0, 1]) == 3  # C#N triple bond


def test_round_trip_hand_picked_with_charges():
    smiles = ["CCO", "c1ccncc1", "C[N+](=O)[O-]", "O=C1NC(=O)C=C1", "C#CC(=O)N", "c1cc[nH]c1", "CC.O"]
    vocab = AtomVocabulary(("C", "N", "O", "N+", "O-"))
    enc = encode_smiles(smiles, vocab, max_nodes=10)
    assert enc.skipped == ()
    decoded = [canonical_smiles(m) for m in dense_to_mols(enc.batch, vocab)]
    assert decoded == [canon(s) for s in smiles]


def test_round_trip_moses_subset():
    enc = load_moses("train", limit=300)
    assert enc.skipped == () and len(enc.smiles) == 300
    assert int(enc.batch["mask"].sum(1).max()) <= 27
    decoded = [canonical_smiles(m) for m in dense_to_mols(enc.batch, AtomVocabulary(MOSES_ATOMS))]
    exact = sum(d == canon(s) for d, s in zip(decoded, enc.smiles, strict=True))
    assert exact == 300  # measured on 2,000 MOSES training molecules: 2,000 / 2,000 exact


def test_bad_input_is_counted_named_or_raised(tmp_path):
    smiles = ["CCO", "C1CC", "[Na+].[Cl-]", "CCCCCCCCCCCC", "not a smiles", "CN"]
    with pytest.warns(UserWarning, match="2 skipped \\(unparsable\\)"):
        enc = encode_smiles(smiles, VOCAB, max_nodes=8)
    assert enc.smiles == ["CCO", "CN"]
    reasons = {r.reason: r for r in enc.skipped}
    assert {k: r.count for k, r in reasons.items()} == {"unparsable": 2, "atom_type": 1, "too_large": 1}
    assert enc.num_skipped == 4 and len(enc.smiles) + enc.num_skipped == len(smiles)
    assert "2: 'C1CC'" in reasons["unparsable"].examples[0]
    assert "'Na+'" in reasons["atom_type"].examples[0]
    assert "12 heavy atoms > max_nodes = 8" in reasons["too_large"].examples[0]
    with pytest.raises(ValueError, match="unparsable.*2: 'C1CC'"):
        encode_smiles(smiles, VOCAB, max_nodes=8, on_error="raise")
    with pytest.raises(ValueError, match="atom_type"):
        encode_smiles(["CCO", "CCS"], VOCAB, max_nodes=8, on_error="raise")
    with pytest.raises(ValueError, match="too_large"):
        encode_smiles(["CCCCC"], VOCAB, max_nodes=4, on_error="raise")
    with pytest.raises(ValueError, match="unparsable.*at 17: 'C1CC'"):
        encode_smiles(["CCO", "C1CC"], VOCAB, max_nodes=8, on_error="raise", line_numbers=[12, 17])
    with pytest.raises(ValueError, match="line_numbers: expected one per SMILES \\(2\\), got 1"):
        encode_smiles(["CCO", "CN"], VOCAB, max_nodes=8, line_numbers=[1])
    # a user's file: header, names after the SMILES, blank lines; vocabulary from the file
    path = tmp_path / "mine.smi"
    path.write_text("SMILES name\nCCO ethanol\n\nC[N+](=O)[O-] nitromethane\nC1CC broken\nCCN\n")
    with pytest.warns(UserWarning, match="5: 'C1CC'"):  # its line in the file, counting the blank line
        enc, vocab = read_smiles_file(path, None, max_nodes=8)
    assert enc.smiles == ["CCO", "C[N+](=O)[O-]", "CCN"]
    assert set(vocab.names) == {"C", "O", "N", "N+", "O-"}


# ------------------------------------------------------------------------------------ metrics


HAND_BUILT = [
    (["C", "C", "O"], [(0, 1, 1), (1, 2, 1)]),  # ethanol: valid
    (["C"] * 6, [(0, k, 1) for k in range(1, 6)]),  # pentavalent carbon: invalid, connected
    (["C", "C", "O"], [(0, 1, 1)]),  # CC.O: valid (DiGress), disconnected; largest fragment CC
    (["C", "C", "C", "O", "O"], [(0, 1, 1), (1, 2, 1), (3, 4, 3)]),  # CCC.O#O: invalid whole, largest fragment valid
    (["C", "C", "O"], [(0, 1, 1), (1, 2, 1)]),  # ethanol again: a duplicate
    ([], []),  # an empty graph: invalid
]


def test_molecule_stats_on_hand_built_molecules():
    mols = dense_to_mols(dense(HAND_BUILT), VOCAB)
    stats = molecule_stats(mols, canonical_set(["OCC", "CCCO"]))  # ethanol is in the training set
    s = len(HAND_BUILT)
    assert stats.num_samples == s
    assert stats.valid == 3 / s  # ethanol x2, CC.O
    assert stats.valid_connected == 2 / s
    assert stats.relaxed_valid == 4 / s  # + CCC of CCC.O#O
    assert stats.connected == 3 / s  # ethanol x2 and the pentavalent carbon
    assert stats.unique == 2 / 3  # {CCO, CC} of 3 valid
    assert stats.novel == 1 / 2  # CC is novel, CCO is not
    assert stats.vun == 1 / s
    none_valid = molecule_stats(dense_to_mols(dense([HAND_BUILT[1]]), VOCAB), set())
    assert none_valid.valid == 0 and math.isnan(none_valid.unique) and math.isnan(none_valid.novel)


def test_molecule_metrics_metric_and_type_distances():
    train = encode_smiles(["CCO", "CCN", "CC=O"], VOCAB, max_nodes=8)
    metric = MoleculeMetrics(VOCAB, train.smiles, train.batch, max_nodes=8)
    batch = dense(HAND_BUILT)
    metric.update({k: v[:3] for k, v in batch.items()})
    metric.update(
        {k: v[3:, :6] if k == "mask" or k == "X" else v[3:, :6, :6] for k, v in batch.items()}
    )  # a narrower batch
    out = metric.compute()
    assert out["valid"].item() == pytest.approx(3 / 6) and out["vun"].item() == pytest.approx(1 / 6)
    assert out["filters"].item() == 1.0  # CCO, CC, CCO all pass MOSES's filters
    # type distances against the training molecules, counted by hand
    # train atoms: C 6, N 1, O 2 of 9; bonds: single 5, double 1 of 6
    # samples atoms: C 2+6+2+3+2 = 15, O 1+1+2+1 = 5 of 20; bonds: single 2+5+1+2+2 = 12, triple 1 of 13
    atoms_tv = (abs(6 / 9 - 15 / 20) + abs(1 / 9 - 0) + abs(2 / 9 - 5 / 20)) / 2
    bonds_tv = (abs(5 / 6 - 12 / 13) + abs(1 / 6 - 0) + abs(0 - 1 / 13)) / 2
    assert out["atom_tv"].item() == pytest.approx(atoms_tv, abs=1e-12)
    assert out["bond_tv"].item() == pytest.approx(bonds_tv, abs=1e-12)
    atoms, bonds = type_frequencies(train.batch, 3)
    assert total_variation(atoms, atoms).item() == 0.0 and bonds.tolist() == pytest.approx([5 / 6, 1 / 6, 0.0])


# ------------------------------------------------------------------------------------ features


def test_molecular_features_by_hand():
    # acetaldehyde C-C=O (valid) and an over-bonded O (C=O-C)
    batch = dense([(["C", "C", "O"], [(0, 1, 1), (1, 2, 2)]), (["C", "O", "C"], [(0, 1, 2), (1, 2, 1)])], n=4)
    valences = torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64)
    weights = torch.tensor([12.0, 14.0, 16.0], dtype=torch.float64)
    node, graph = molecular_features(batch["X"], batch["E"], batch["mask"], valences, weights)
    assert node[0, :3, 0].tolist() == [1, 3, 2] and node[0, :3, 1].tolist() == [3, 1, 0]
    assert node[1, :3, 0].tolist() == [2, 3, 1] and node[1, :3, 1].tolist() == [2, -1, 3]
    assert node[:, 3].abs().sum() == 0  # padding
    assert graph[:, 0].tolist() == pytest.approx([40 / 150, 40 / 150])


# ------------------------------------------------------------------------------------ data and end to end


def test_molecule_data_module_from_file(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("\n".join(["CCO", "CCN", "CC=O", "c1ccccc1", "CC(=O)O", "CCCC", "C1CC", "CNC"]) + "\n")
    with pytest.warns(UserWarning, match="1 skipped"):
        dm = MoleculeDataModule(str(path), num_train=None, num_val=2, num_test=2, max_nodes=8, batch_size=2)
        dm.setup()
    assert [len(dm.smiles(s)) for s in ("train", "val", "test")] == [3, 2, 2]
    assert sorted(dm.smiles("train") + dm.smiles("val") + dm.smiles("test")) == sorted(
        ["CCO", "CCN", "CC=O", "c1ccccc1", "CC(=O)O", "CCCC", "CNC"]
    )
    assert dm.num_edge_types == 4 and dm.num_node_types == 3
    assert dm.class_marginals("E").sum().item() == pytest.approx(1.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["X"].shape == (2, 8) and batch["E"].shape == (2, 8, 8)
    with pytest.raises(ValueError, match="SMILES file"):
        MoleculeDataModule(str(tmp_path / "missing.smi"))


def test_tiny_moses_run_end_to_end(tmp_path, monkeypatch):
    """moses_cpu.yaml shrunk to a few steps on 64 molecules via `diffkit fit`, then `diffkit evaluate-graphs`
    samples molecules and judges them with RDKit: metrics.json, samples.smi, the PNG grid."""
    import json
    import sys
    from pathlib import Path

    from PIL import Image

    from diffkit.cli import main

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "graphs" / "moses_cpu.yaml"
    tiny = [
        "--data.init_args.num_train=64", "--data.init_args.num_val=8", "--data.init_args.num_test=8",
        "--model.denoiser.init_args.hidden=16", "--model.denoiser.init_args.edge_hidden=8",
        "--model.denoiser.init_args.global_hidden=16", "--model.denoiser.init_args.depth=1",
        "--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for args in (
        ["fit", "--config", str(config), *tiny],
        [
            "evaluate-graphs",
            "--ckpt_path",
            "runs/moses_cpu/checkpoints/last.ckpt",
            "--out",
            "eval",
            "--num_samples",
            "6",
            "--num_steps",
            "10",
        ],
    ):
        monkeypatch.setattr(sys, "argv", ["diffkit", *args])
        main(args)
    ckpt = torch.load(tmp_path / "runs/moses_cpu/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    atom_pi = ckpt["state_dict"]["process.fields.X.kernel.pi"]
    assert int(atom_pi.argmax()) == 0 and atom_pi.sum().item() == pytest.approx(1.0)  # marginals filled: carbon first
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["num_samples"] == 6 and metrics["dataset"] == "moses"
    for key in ("valid", "valid_connected", "relaxed_valid", "connected", "vun", "atom_tv", "bond_tv", "test/atom_tv"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["valid_connected"] <= metrics["valid"] <= metrics["relaxed_valid"]
    lines = (tmp_path / "eval" / "samples.smi").read_text().splitlines()
    assert len(lines) == 6 and all(line.rsplit(" ", 1)[1] in ("valid", "invalid") for line in lines)
    assert sum(line.endswith(" valid") for line in lines) == round(6 * metrics["valid"])
    for name in ("samples.png", "train.png"):
        with Image.open(tmp_path / "eval" / name) as im:
            assert im.format == "PNG" and im.width >= 1000


def test_moses_gpu_config_parses_and_builds(tmp_path, monkeypatch):
    """moses.yaml (DiGress's GPU settings, not run here) builds its model and data module; no data is read."""
    from pathlib import Path

    from diffkit.cli import _cli_class, _prepare
    from diffkit.models import GraphTransformer

    monkeypatch.chdir(tmp_path)
    _prepare()
    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "graphs" / "moses.yaml"
    cli = _cli_class()(args=["--config", str(path)], run=False)
    assert isinstance(cli.datamodule, MoleculeDataModule) and cli.datamodule.num_train is None
    net = cli.model.denoiser
    assert isinstance(net, GraphTransformer) and len(net.blocks) == 12 and net.molecular is not None
    assert cli.model.process.num_steps == net.num_steps == 500
    assert "NOT RUN HERE" in path.read_text().split("seed_everything")[0]


def test_moses_filters_pass_moses_and_reject_by_rule():
    """MOSES's training set is defined by its filters, so its molecules pass; each rule rejects its case."""
    from diffkit.metrics.molecules import filters_fraction, moses_filter_patterns

    assert len(moses_filter_patterns()) == 502 and all(p is not None for p in moses_filter_patterns())
    assert filters_fraction(load_moses("train", limit=40).smiles) == 1.0
    cases = {"CCO": 1.0, "O=C1CCCCC1": 1.0, "C[N+](=O)[O-]": 0.0, "C1CCCCCCC1": 0.0, "CCCCCP": 0.0, "CCCCCl": 0.0}
    assert {s: filters_fraction([s]) for s in cases} == cases  # charge, 8-ring, phosphorus, MCF4 (primary halide)
    assert math.isnan(filters_fraction([]))


def test_molecule_grid_draws_valid_invalid_and_undrawable(tmp_path):
    """A sample of an early MOSES run that RDKit cannot lay out gets an empty cell instead of failing the grid."""
    from PIL import Image

    from diffkit.molecule_eval import draw_molecule_grid

    undrawable = Chem.MolFromSmiles(
        "Br1234#C56789=Cl%10%11%12%13#N=5%14%15%16%17#O15%18%19#C1%20%21%22=Br6%23%24%25#S#5=1%146%26%27%28%29=C15%14%30%31%32%33#C=%10=62%34%35%36%37#C=%11=126%10%38%39(#S%20%23#Br=%12=5=%34%21%151=O=7%2225%11#C=6=8=%3527%12#C=%26%141=C#%18=5=%27168(#C#3(=N#%10=%16=%30=24%361%28(=C=9=%37%38%29)Br=%31%396)(=C#%24)N=%32=8=7)=C=%13%11%17%25%12)C=%19%33",
        sanitize=False,
    )
    mols = [Chem.MolFromSmiles("c1ccccc1O"), dense_to_mols(dense([HAND_BUILT[1]]), VOCAB)[0], undrawable]
    draw_molecule_grid(mols, tmp_path / "grid.png", per_row=3)
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.size == (750, 200)
