"""File-backed data modules: each reads a file, splits it reproducibly, writes samples back in the
file's own format and units (read back and compared with the input rows), resumes mid-epoch
exactly, and refuses bad input with a message naming the problem."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from diffkit.data import ArrayDataModule, GraphFileDataModule, TableFileDataModule, TokenDataModule
from diffkit.data._records import split_indices
from diffkit.data.arrays import read_array
from diffkit.data.graph_files import read_graph_lines
from diffkit.formats import format_from_state, read_csv, sample_format_from_checkpoint


def rows_of(x: np.ndarray) -> set[tuple]:
    return {tuple(np.round(r, 6).tolist()) for r in x.reshape(len(x), -1)}


# ------------------------------------------------------------------------------------ splits


def test_split_indices_partition_and_reproducible() -> None:
    a = split_indices(103, 0.1, 0.2, seed=3)
    assert [len(a[k]) for k in ("train", "val", "test")] == [72, 10, 21]
    joined = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(joined.tolist()) == list(range(103))  # disjoint and complete
    b = split_indices(103, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = split_indices(103, 0.1, 0.2, seed=4)
    assert not np.array_equal(a["val"], c["val"])
    with pytest.raises(ValueError, match="no training row"):
        split_indices(2, 0.5, 0.4, seed=0)


# ------------------------------------------------------------------------------------ arrays


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_array_round_trip_in_original_units(tmp_path: Path, suffix: str) -> None:
    data = np.random.default_rng(0).normal([10.0, -3.0, 0.5], [2.0, 0.1, 5.0], size=(60, 3))
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, data)
    elif suffix == ".npz":
        np.savez(path, other=np.zeros(3), points=data)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(data), path)
    else:
        path.write_text("a,b,c\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in data))
    dm = ArrayDataModule(
        str(path), key="points" if suffix == ".npz" else None, val_fraction=0.2, test_fraction=0.1, seed=1
    )
    train = dm.split("train")
    assert train.dtype == torch.float32 and train.shape == (42, 3)
    assert torch.allclose(train.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(
        train.std(0, unbiased=False), torch.ones(3), atol=1e-4
    )
    # A checkpoint's state alone rebuilds the writer; the val rows come back in the file's units.
    fmt = format_from_state(dm.state_dict()["diffkit_sample_format"])
    out = fmt.write(dm.split("val"), tmp_path / f"samples{suffix}")
    assert out.suffix == suffix
    back = read_array(out, key="points" if suffix == ".npz" else None)
    if suffix == ".csv":
        assert read_csv(out)[0] == ["a", "b", "c"]
    idx = split_indices(60, 0.2, 0.1, seed=1)["val"]
    np.testing.assert_allclose(back, data[idx], rtol=1e-5, atol=1e-5)


def test_array_labels_become_cond_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(40, 2))
    labels = np.array(["cat", "dog"] * 20)
    path = tmp_path / "x.csv"
    path.write_text(
        "u,kind,v\n" + "".join(f"{float(a)!r},{k},{float(b)!r}\n" for (a, b), k in zip(data, labels, strict=True))
    )
    dm = ArrayDataModule(str(path), labels="kind", standardize=False, batch_size=8)
    x0, cond = next(iter(dm.train_dataloader()))
    assert x0.shape == (8, 2) and cond.dtype == torch.int64
    assert dm.sample_format.label_vocab == ["cat", "dog"] and dm.num_label_classes == 2
    # each pair keeps its row's label: look each x0 row up in the file
    lookup = {tuple(np.round(r, 5)): k for r, k in zip(data, labels, strict=True)}
    for row, c in zip(x0.numpy(), cond.tolist(), strict=True):
        assert lookup[tuple(np.round(row.astype(np.float64), 5))] == ["cat", "dog"][c]
    # without labels, batches stay plain tensors
    np.save(tmp_path / "plain.npy", data)
    plain = next(iter(ArrayDataModule(str(tmp_path / "plain.npy"), batch_size=8).train_dataloader()))
    assert isinstance(plain, torch.Tensor)


def test_array_labels_from_a_second_array(tmp_path: Path) -> None:
    data = np.arange(30.0).reshape(15, 2)
    np.save(tmp_path / "x.npy", data)
    np.save(tmp_path / "y.npy", np.arange(15) % 3)
    dm = ArrayDataModule(
        str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"), standardize=False, val_fraction=0.2, test_fraction=0.2
    )
    x0 = dm.split("train").numpy()
    assert np.array_equal(dm.labels("train").numpy(), (x0[:, 0] / 2).astype(int) % 3)
    np.save(tmp_path / "short.npy", np.arange(4))
    with pytest.raises(ValueError, match="4 labels for 15 rows"):
        ArrayDataModule(str(tmp_path / "x.npy"), labels=str(tmp_path / "short.npy")).setup()


def test_array_nonfinite_rows_error_or_drop(tmp_path: Path) -> None:
    data = np.ones((20, 2))
    data[3, 1], data[7, 0] = np.nan, np.inf
    np.save(tmp_path / "x.npy", data)
    with pytest.raises(ValueError, match=r"2 rows hold NaN or inf, first at rows \[3, 7\]"):
        ArrayDataModule(str(tmp_path / "x.npy")).setup()
    dm = ArrayDataModule(str(tmp_path / "x.npy"), nonfinite="drop", standardize=False)
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        dm.setup()
    assert dm.num_dropped == 2
    assert sum(len(dm.split(k)) for k in ("train", "val", "test")) == 18
    (tmp_path / "x.csv").write_text("a,b\n1,2\n3,\n5,6\n")
    with pytest.raises(ValueError, match=r"first at lines \[3\]"):
        ArrayDataModule(str(tmp_path / "x.csv"), val_fraction=0.0, test_fraction=0.0).setup()


@pytest.mark.parametrize(
    "name, content, error, match",
    [
        ("missing.npy", None, FileNotFoundError, "missing.npy"),
        ("x.json", "[1, 2]", ValueError, "unknown extension '.json'"),
        ("x.npy", "", ValueError, "is empty"),
        ("x.csv", "a,b\n1,x\n", ValueError, "line 2, column 'b': 'x' is not a number"),
        ("x.csv", "a,b\n", ValueError, "no data row"),
    ],
)
def test_array_bad_files(tmp_path: Path, name: str, content: str | None, error: type, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        ArrayDataModule(str(path)).setup()


def test_npz_key_is_required_when_ambiguous(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros((5, 2)), b=np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"holds arrays \['a', 'b'\]; pass key="):
        ArrayDataModule(str(tmp_path / "x.npz")).setup()


# ------------------------------------------------------------------------------------ tokens


def test_text_tokens_round_trip(tmp_path: Path) -> None:
    lines = ["hello world", "abc", "the cat sat", "zz top", "hi"] * 4
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    dm = TokenDataModule(str(tmp_path / "t.txt"), seq_len=11, val_fraction=0.2, test_fraction=0.2, seed=2)
    fmt = dm.sample_format
    assert fmt.vocab[-1] == "<unk>" and dm.num_classes == len(fmt.vocab) + 1
    val = dm.split("val")
    assert val.shape == (4, 11) and int(val.max()) <= dm.pad_id
    assert dm.mask(val).sum(1).tolist() == [len(lines[i]) for i in split_indices(20, 0.2, 0.2, 2)["val"]]
    out = format_from_state(dm.state_dict()["diffkit_sample_format"]).write(val, tmp_path / "s.txt")
    assert out.read_text().splitlines() == [lines[i] for i in split_indices(20, 0.2, 0.2, 2)["val"]]


def test_whitespace_tokens_and_unknown_tokens(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a b c\n" * 8 + "a q\n" + "b c\n")
    dm = TokenDataModule(
        str(tmp_path / "t.txt"), seq_len=3, tokenizer="whitespace", val_fraction=0.2, test_fraction=0.0, seed=0
    )
    val_lines = [(["a b c"] * 8 + ["a q", "b c"])[i] for i in split_indices(10, 0.2, 0.0, 0)["val"]]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        decoded = dm.sample_format.decode(dm.split("val"))
    train_tokens = set(dm.sample_format.vocab) - {"<unk>"}
    expected = [" ".join(t if t in train_tokens else "<unk>" for t in line.split()) for line in val_lines]
    assert decoded == expected
    assert (dm.num_unknown > 0) == any("q" in line for line in val_lines)


def test_long_sequences_crop_with_count_or_refuse(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("abcdef\nab\n\nabcdefgh\nabc\n")
    with pytest.warns(UserWarning, match="cropped 2 of 4 sequences to seq_len=4"):
        dm = TokenDataModule(str(tmp_path / "t.txt"), seq_len=4, val_fraction=0.0, test_fraction=0.0)
        dm.setup()
    assert dm.num_cropped == 2
    assert sorted(dm.sample_format.decode(dm.split("train"))) == ["ab", "abc", "abcd", "abcd"]
    with pytest.raises(ValueError, match=r"2 sequences .* longer than 4, first at lines \[1, 4\]"):
        TokenDataModule(str(tmp_path / "t.txt"), seq_len=4, too_long="error").setup()


def test_integer_id_tokens_round_trip(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 6, size=(30, 5))
    ids[::3, 3:] = -1  # padding
    np.save(tmp_path / "ids.npy", ids)
    dm = TokenDataModule(str(tmp_path / "ids.npy"), seq_len=5, val_fraction=0.2, test_fraction=0.1)
    assert dm.pad_id == int(ids.max()) + 1
    out = dm.sample_format.write(dm.split("val"), tmp_path / "s.npy")
    np.testing.assert_array_equal(np.load(out), ids[split_indices(30, 0.2, 0.1, 0)["val"]])


def test_bad_token_files(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no non-blank line"):
        TokenDataModule(str(tmp_path / "blank.txt"), seq_len=4).setup()
    (tmp_path / "bin.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match="line 2 is not UTF-8"):
        TokenDataModule(str(tmp_path / "bin.txt"), seq_len=4).setup()
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TokenDataModule(str(tmp_path / "nope.txt"), seq_len=4)


# ------------------------------------------------------------------------------------ tables


def _table(tmp_path: Path, n: int = 40) -> tuple[Path, list[list[str]]]:
    rng = np.random.default_rng(0)
    rows = [
        [
            repr(float(rng.normal(50, 10))),
            ["red", "green", "blue"][i % 3],
            repr(float(rng.normal())),
            ["yes", "no"][i % 2],
        ]
        for i in range(n)
    ]
    path = tmp_path / "t.csv"
    path.write_text("age,colour,score,member\n" + "".join(",".join(r) + "\n" for r in rows))
    return path, rows


def test_table_round_trip_with_original_names_and_values(tmp_path: Path) -> None:
    path, rows = _table(tmp_path)
    dm = TableFileDataModule(str(path), categorical=["colour", "member"], val_fraction=0.25, test_fraction=0.0)
    batch = dm.split("train")
    assert set(batch) == {"numeric", "colour", "member"} and batch["numeric"].shape == (30, 2)
    assert dm.categorical_fields() == {"colour": 3, "member": 2} and dm.numeric_fields() == {"numeric": 2}
    fmt = format_from_state(dm.state_dict()["diffkit_sample_format"])
    header, back, _ = read_csv(fmt.write(dm.split("val"), tmp_path / "s.csv"))
    assert header == ["age", "colour", "score", "member"]
    expected = [rows[i] for i in split_indices(40, 0.25, 0.0, 0)["val"]]
    for got, want in zip(back, expected, strict=True):
        assert got[1] == want[1] and got[3] == want[3]
        assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5) and float(got[2]) == pytest.approx(
            float(want[2]), abs=1e-5
        )
    marg = dm.class_marginals("colour")
    assert marg.sum().item() == pytest.approx(1.0)


def test_table_bad_columns(tmp_path: Path) -> None:
    path, _ = _table(tmp_path)
    with pytest.raises(ValueError, match=r"\['member'\] .* neither numeric nor categorical"):
        TableFileDataModule(str(path), categorical=["colour"], numeric=["age", "score"]).setup()
    with pytest.raises(ValueError, match=r"column 'member': 'yes' is not a number; declare the column in categorical="):
        TableFileDataModule(str(path), categorical=["colour"]).setup()
    with pytest.raises(ValueError, match=r"\['height'\] are not in"):
        TableFileDataModule(str(path), categorical=["height"]).setup()
    (tmp_path / "n.csv").write_text("a,b\n1,x\nnan,y\n2,x\ninf,x\n")
    with pytest.raises(ValueError, match=r"2 lines hold NaN or inf, first at lines \[3, 5\]"):
        TableFileDataModule(str(tmp_path / "n.csv"), categorical=["b"]).setup()
    dm = TableFileDataModule(
        str(tmp_path / "n.csv"), categorical=["b"], nonfinite="drop", val_fraction=0.0, test_fraction=0.0
    )
    with pytest.warns(UserWarning, match="dropped 2 lines"):
        dm.setup()
    assert len(dm.split("train")["b"]) == 2
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3 has 1 cells, the header has 2"):
        TableFileDataModule(str(tmp_path / "ragged.csv")).setup()


# ------------------------------------------------------------------------------------ graphs


def _graphs() -> list[nx.Graph]:
    return [nx.cycle_graph(n) for n in range(3, 9)] + [nx.path_graph(n) for n in range(2, 8)] + [nx.star_graph(4)]


@pytest.mark.parametrize("suffix", [".g6", ".s6"])
def test_graph_lines_round_trip(tmp_path: Path, suffix: str) -> None:
    graphs = _graphs()
    path = tmp_path / f"g{suffix}"
    write = nx.to_graph6_bytes if suffix == ".g6" else nx.to_sparse6_bytes
    path.write_bytes(b"".join(write(g, header=False) for g in graphs))
    dm = GraphFileDataModule(str(path), val_fraction=0.2, test_fraction=0.2)
    assert dm.max_nodes == 8 and dm.split("train")["E"].shape[1:] == (8, 8)
    fmt = format_from_state(dm.state_dict()["diffkit_sample_format"])
    out = fmt.write(dm.split("test"), tmp_path / f"s{suffix}")
    assert out.suffix == suffix
    back = read_graph_lines(out)
    expected = [graphs[i] for i in split_indices(len(graphs), 0.2, 0.2, 0)["test"]]
    assert len(back) == len(expected)
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(back, expected, strict=True))


def test_pickled_graphs_with_attributes_round_trip(tmp_path: Path) -> None:
    graphs = []
    for n in range(3, 15):
        g = nx.path_graph(n)
        nx.set_node_attributes(g, {v: "CNO"[v % 3] for v in g}, "atom")
        nx.set_edge_attributes(g, {e: (1 if e[0] % 2 else 2) for e in g.edges}, "bond")
        graphs.append(g)
    with open(tmp_path / "g.pkl", "wb") as f:
        pickle.dump(graphs, f)
    dm = GraphFileDataModule(
        str(tmp_path / "g.pkl"), node_attr="atom", edge_attr="bond", val_fraction=0.25, test_fraction=0.0
    )
    assert (dm.num_node_types, dm.num_edge_types) == (3, 3)
    assert dm.class_marginals("X").sum().item() == pytest.approx(1.0)
    out = dm.sample_format.write(dm.split("val"), tmp_path / "s.pkl")
    with open(out, "rb") as f:
        back = pickle.load(f)
    expected = [graphs[i] for i in split_indices(len(graphs), 0.25, 0.0, 0)["val"]]
    for a, b in zip(back, expected, strict=True):
        assert nx.utils.graphs_equal(a, b)  # nodes, edges and their attribute values


# every atom type in more molecules (>= 5) than the test split holds (4), so all are in training
SMILES = [
    "CCO", "c1ccccc1", "CC(=O)[O-]", "C[N+](C)(C)C", "C#N", "O=C(N)c1ccncc1", "CC(C)O", "c1ccc2ccccc2c1",
    "OC1CCCC1", "CC[O-]", "N#CC=CO", "CC(=O)Nc1ccc(O)cc1", "[O-]C(=O)c1ccccc1", "CC[N+](C)(C)C",
    "[O-]CC[N+](C)(C)C", "C[N+](C)(C)CCO",
]  # fmt: skip


def test_smiles_file_round_trips_as_labelled_graphs(tmp_path: Path) -> None:
    from diffkit.molecules import canonical_smiles, graph_to_mol, is_valid_molecule_graph, read_smiles_graphs

    pytest.importorskip("rdkit")
    from rdkit import Chem

    path = tmp_path / "mols.smi"
    path.write_text("SMILES name\n" + "".join(f"{s} m{i}\n" for i, s in enumerate(SMILES)))
    graphs = read_smiles_graphs(path)
    assert [g.number_of_nodes() for g in graphs] == [Chem.MolFromSmiles(s).GetNumAtoms() for s in SMILES]
    assert dict(graphs[2].nodes(data="atom"))[3] == "O-" and graphs[4].edges[0, 1]["bond"] == 3
    assert all(is_valid_molecule_graph(g) for g in graphs)
    # the graph encoding loses nothing a canonical SMILES sees (charges, Kekulé bonds -> aromaticity)
    assert [canonical_smiles(graph_to_mol(g)) for g in graphs] == [
        Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False) for s in SMILES
    ]
    dm = GraphFileDataModule(str(path), val_fraction=0.0, test_fraction=0.25)
    assert (dm.node_attr, dm.edge_attr) == ("atom", "bond")
    assert dm.validity is is_valid_molecule_graph
    assert dm.num_edge_types == 4 and dm.sample_format.node_values == ["C", "N", "N+", "O", "O-"]
    out = dm.sample_format.write(dm.split("test"), tmp_path / f"samples{dm.sample_format.suffix}")
    assert out.suffix == ".smi"
    lines = out.read_text().splitlines()
    expected = [SMILES[i] for i in split_indices(len(SMILES), 0.0, 0.25, 0)["test"]]
    assert lines == [f"{Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False)} valid" for s in expected]
    # an invalid graph (a pentavalent carbon) is written, marked invalid, never dropped
    bad = graphs[0].copy()
    bad.add_edges_from([(0, 9, {"bond": 3}), (0, 8, {"bond": 3})])
    nx.set_node_attributes(bad, {8: "C", 9: "C"}, "atom")
    assert not is_valid_molecule_graph(bad)
    from diffkit.molecules import write_smiles_graphs

    write_smiles_graphs([bad, graphs[1]], tmp_path / "two.smi")
    first, second = (tmp_path / "two.smi").read_text().splitlines()
    assert first.endswith(" invalid") and second == "c1ccccc1 valid"


def test_bad_graph_files(tmp_path: Path) -> None:
    lines = b"".join(nx.to_graph6_bytes(nx.path_graph(4), header=False) for _ in range(3))
    (tmp_path / "bad.g6").write_bytes(lines + b"this is not graph6 ~~~\n")
    with pytest.raises(ValueError, match="line 4 is not a g6 graph"):
        GraphFileDataModule(str(tmp_path / "bad.g6")).setup()
    pytest.importorskip("rdkit")
    (tmp_path / "m.smi").write_text("SMILES\nCCO\n\nc1ccccc1 benzene\nC1CC(\n")
    with pytest.raises(ValueError, match="line 5 is not a SMILES RDKit can parse: 'C1CC\\('"):
        GraphFileDataModule(str(tmp_path / "m.smi")).setup()
    with open(tmp_path / "d.pkl", "wb") as f:
        pickle.dump([nx.DiGraph([(0, 1)])] * 3, f)
    with pytest.raises(ValueError, match="graph 0 of .* is directed"):
        GraphFileDataModule(str(tmp_path / "d.pkl")).setup()
    with open(tmp_path / "noattr.pkl", "wb") as f:
        pickle.dump([nx.path_graph(3)] * 5, f)
    with pytest.raises(ValueError, match="has no attribute 'atom'"):
        GraphFileDataModule(str(tmp_path / "noattr.pkl"), node_attr="atom").setup()


# ------------------------------------------------------------------------------------ resume and checkpoints


def test_mid_epoch_resume_replays_the_same_batches(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(200.0).reshape(100, 2))
    make = lambda: ArrayDataModule(str(tmp_path / "x.npy"), batch_size=8, standardize=False)  # noqa: E731
    loader = make().train_dataloader()
    loader.sampler.set_epoch(2)
    full = [b.clone() for b in loader]
    loader.sampler.set_epoch(2)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    resumed = make().train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(full) - 4
    assert all(torch.equal(a, b) for a, b in zip(rest, full[4:], strict=True))


def test_changed_file_refuses_resume(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(20.0).reshape(10, 2))
    state = ArrayDataModule(str(tmp_path / "x.npy")).state_dict()
    assert sample_format_from_checkpoint({"ArrayDataModule": state, "epoch": 3}).kind == "array"
    ArrayDataModule(str(tmp_path / "x.npy")).load_state_dict(state)  # same file: fine
    np.save(tmp_path / "x.npy", np.arange(20.0).reshape(10, 2) + 1)
    with pytest.raises(ValueError, match="differs from the file this checkpoint was trained on"):
        ArrayDataModule(str(tmp_path / "x.npy")).load_state_dict(state)
