"""`diffkit fit` from a file of each kind (the shipped examples/configs/files/*.yaml on the shipped
examples/data files), then `diffkit sample`, which writes the samples in the file's own format and
units, decoded with what the checkpoint stored; `diffkit evaluate-graphs` on a checkpoint trained from
a graph file with a validity rule given by import path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit.cli import main, sample_from_checkpoint
from diffkit.data._records import split_indices
from diffkit.data.graph_files import read_graph_lines
from diffkit.formats import read_csv

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs" / "files"
DATA = ROOT / "examples" / "data"

FAST = [
    "--trainer.max_steps=3",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.num_eval_samples=8",
    "--data.init_args.batch_size=16",
]


def fit_and_sample(name: str, data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(CONFIGS / f"{name}.yaml"), f"--data.init_args.path={DATA / data}", *FAST]
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)
    (ckpt,) = tmp_path.glob("runs/*/checkpoints/last.ckpt")
    sample_from_checkpoint(
        ckpt, num_samples=6, num_steps=5, output=tmp_path / "s.pt", plot=tmp_path / "s.png", progress=False
    )
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    return ckpt, torch.load(tmp_path / "s.pt", weights_only=False)


def train_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the default split's training rows (val 0.1, test 0.1, seed 0), written plainly."""
    train = x[split_indices(len(x), 0.1, 0.1, 0)["train"]]
    return train.mean(0), train.std(0)


@pytest.mark.parametrize("data", ["points.npy", "points.csv"])
def test_fit_on_an_array_file_and_sample_in_its_units(data: str, tmp_path: Path, monkeypatch) -> None:
    _, saved = fit_and_sample("points", data, tmp_path, monkeypatch)
    suffix = Path(data).suffix
    out = tmp_path / f"s{suffix}"
    values = np.load(out) if suffix == ".npy" else np.array([[float(c) for c in row] for row in read_csv(out)[1]])
    assert values.shape == (6, 2)
    mean, std = train_stats(np.load(DATA / "points.npy"))
    expected = saved["samples"].double().numpy() * std + mean  # standardization inverted
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-3)
    if suffix == ".csv":
        assert read_csv(out)[0] == ["x", "y"]


def test_fit_on_a_text_file_and_sample_text(tmp_path: Path, monkeypatch) -> None:
    _, saved = fit_and_sample("sums", "sums.txt", tmp_path, monkeypatch)
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 6
    vocab = sorted(set("".join((DATA / "sums.txt").read_text().split())))  # the file's characters
    ids = saved["samples"]
    for line, row in zip(lines, ids.tolist(), strict=True):
        real = [i for i in row if i != len(vocab) + 1]  # drop padding (id = vocab + <unk>)
        assert line == "".join((vocab + ["<unk>"])[i] for i in real)


def test_fit_on_a_csv_table_and_sample_rows(tmp_path: Path, monkeypatch) -> None:
    _, saved = fit_and_sample("people", "people.csv", tmp_path, monkeypatch)
    header, rows, _ = read_csv(tmp_path / "s.csv")
    assert header == ["height_cm", "sex", "weight_kg", "smoker"] and len(rows) == 6
    assert {r[1] for r in rows} <= {"F", "M"} and {r[3] for r in rows} <= {"no", "yes"}
    _, source, _ = read_csv(DATA / "people.csv")
    numeric = np.array([[float(r[0]), float(r[2])] for r in source])
    mean, std = train_stats(numeric)
    expected = saved["samples"]["numeric"].double().numpy() * std + mean
    got = np.array([[float(r[0]), float(r[2])] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    assert [r[1] for r in rows] == [["F", "M"][i] for i in saved["samples"]["sex"].tolist()]


def test_fit_on_a_graph_file_sample_and_evaluate(tmp_path: Path, monkeypatch) -> None:
    ckpt, saved = fit_and_sample("graphs", "graphs.g6", tmp_path, monkeypatch)
    graphs = read_graph_lines(tmp_path / "s.g6")
    assert [g.number_of_nodes() for g in graphs] == saved["samples"]["mask"].sum(1).tolist()
    # A user's validity rule, importable from the working directory (as the CLI runs it).
    (tmp_path / "my_rules.py").write_text(
        "import networkx as nx\n\ndef is_valid(g):\n    return g.number_of_nodes() > 0 and nx.is_connected(g)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [
        "evaluate-graphs",
        "--ckpt_path",
        str(ckpt),
        "--out",
        "eval",
        "--num_samples",
        "5",
        "--num_steps",
        "4",
        "--validity",
        "my_rules.is_valid",
    ]
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["dataset"].endswith("graphs.g6") and result["validity"] == "my_rules.is_valid"
    assert result["num_test"] == 20 and result["num_samples"] == 5
    import networkx as nx

    written = read_graph_lines(tmp_path / "eval" / "samples.g6")
    valid = sum(g.number_of_nodes() > 0 and nx.is_connected(g) for g in written) / len(written)
    assert result["valid"] == pytest.approx(valid)


def test_fit_on_pickled_labelled_graphs_and_sample_pickles(tmp_path: Path, monkeypatch) -> None:
    import pickle

    _, saved = fit_and_sample("molecules", "molecules.pkl", tmp_path, monkeypatch)
    with open(tmp_path / "s.pkl", "rb") as f:
        graphs = pickle.load(f)
    samples = saved["samples"]
    assert [g.number_of_nodes() for g in graphs] == samples["mask"].sum(1).tolist()
    for b, g in enumerate(graphs):  # node classes 0, 1, 2 are the sorted training values C, N, O
        assert [g.nodes[v]["atom"] for v in g] == [["C", "N", "O"][int(x)] for x in samples["X"][b][samples["mask"][b]]]
        assert all(d["bond"] == [1, 2][int(samples["E"][b, u, v]) - 1] for u, v, d in g.edges(data=True))


def test_fit_on_a_smiles_file_sample_smiles_and_evaluate_validity(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("rdkit")
    from diffkit.molecules import canonical_smiles, dense_to_mols

    ckpt, saved = fit_and_sample("smiles", "molecules.smi", tmp_path, monkeypatch)
    lines = (tmp_path / "s.smi").read_text().splitlines()
    assert len(lines) == 6 and all(line.endswith((" valid", " invalid")) for line in lines)
    for line, mol in zip(lines, dense_to_mols(saved["samples"], _vocabulary(ckpt)), strict=True):
        smiles = canonical_smiles(mol)  # what the line says, from the sampled tensors themselves
        if smiles is not None and "." not in smiles:
            assert line == f"{smiles} valid"
        else:
            assert line.endswith(" invalid")
    args = ["evaluate-graphs", "--ckpt_path", str(ckpt), "--out", "eval", "--num_samples", "5", "--num_steps", "4"]
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["validity"] == "diffkit.molecules.is_valid_molecule_graph"
    written = (tmp_path / "eval" / "samples.smi").read_text().splitlines()
    assert len(written) == 5
    assert result["valid"] == pytest.approx(sum(line.endswith(" valid") for line in written) / 5)


def _vocabulary(ckpt: Path):
    """The checkpoint's node classes (the training split's atom types, sorted) as an AtomVocabulary."""
    from diffkit.formats import sample_format_from_checkpoint
    from diffkit.molecules import AtomVocabulary

    fmt = sample_format_from_checkpoint(torch.load(ckpt, map_location="cpu", weights_only=False))
    assert fmt is not None and fmt.node_values == ["Br", "C", "Cl", "F", "N", "O", "S"] and fmt.edge_values == [1, 2, 3]
    return AtomVocabulary(tuple(fmt.node_values))


def test_documented_commands_parse(monkeypatch, capsys) -> None:
    """Every `diffkit fit` command of docs/data.md parses (--print_config), run from the repository root."""
    import shlex

    text = (ROOT / "docs" / "data.md").read_text()
    commands = [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith(("diffkit fit", "OMP_NUM_THREADS=1 diffkit fit"))
    ]
    assert len(commands) >= 6
    monkeypatch.chdir(ROOT)
    for command in commands:
        args = shlex.split(command.split("#")[0])
        args = args[args.index("diffkit") + 1 :] + ["--print_config"]
        monkeypatch.setattr(sys, "argv", ["diffkit", *args])
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code in (0, None), command
        assert "class_path: diffkit.data." in capsys.readouterr().out
