"""Write the small example files of docs/data.md (deterministic): python examples/data/make_examples.py

- points.npy / points.csv: 500 points on a noisy ring of radius 5 around (10, -3) (not standardized);
- sums.txt: 600 lines "a+b=c" with a, b in 0..49 and c = a + b (character-level tokens);
- people.csv: 500 rows: height_cm, weight_kg (numeric), sex, smoker (categorical), weight tied to height and sex;
- graphs.g6: 200 graphs, cycles and random trees of 6-12 nodes, one graph6 line each;
- molecules.pkl: 120 small labelled graphs (node attribute "atom" in C / N / O, edge attribute "bond" in 1 / 2);
- molecules.smi: the first 300 SMILES of MOSES's test split with at most 16 heavy atoms (needs RDKit and
  the molsets wheel: pip install --no-deps molsets==0.3.1; skipped without them).
"""

from pathlib import Path

import networkx as nx
import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 500)
    radius = 5 + 0.3 * rng.normal(size=500)
    points = np.stack([10 + radius * np.cos(angle), -3 + radius * np.sin(angle)], axis=1)
    np.save(HERE / "points.npy", points)
    (HERE / "points.csv").write_text("x,y\n" + "".join(f"{x:.4f},{y:.4f}\n" for x, y in points))

    a, b = rng.integers(0, 50, 600), rng.integers(0, 50, 600)
    (HERE / "sums.txt").write_text("".join(f"{i}+{j}={i + j}\n" for i, j in zip(a, b, strict=True)))

    sex = rng.choice(["F", "M"], 500)
    height = np.where(sex == "M", 178, 165) + 7 * rng.normal(size=500)
    weight = 0.9 * (height - 100) + 8 * rng.normal(size=500)
    smoker = rng.choice(["no", "yes"], 500, p=[0.8, 0.2])
    (HERE / "people.csv").write_text(
        "height_cm,sex,weight_kg,smoker\n"
        + "".join(f"{h:.1f},{s},{w:.1f},{k}\n" for h, s, w, k in zip(height, sex, weight, smoker, strict=True))
    )

    graphs = []
    for i in range(200):
        n = int(rng.integers(6, 13))
        graphs.append(nx.cycle_graph(n) if i % 2 else nx.from_prufer_sequence(rng.integers(0, n, n - 2).tolist()))
    (HERE / "graphs.g6").write_bytes(b"".join(nx.to_graph6_bytes(g, header=False) for g in graphs))

    import pickle

    molecules = []
    for _ in range(120):
        g = nx.path_graph(int(rng.integers(3, 9)))
        nx.set_node_attributes(g, {v: str(rng.choice(["C", "C", "N", "O"])) for v in g}, "atom")
        nx.set_edge_attributes(g, {e: int(rng.choice([1, 1, 2])) for e in g.edges}, "bond")
        molecules.append(g)
    with open(HERE / "molecules.pkl", "wb") as f:
        pickle.dump(molecules, f)

    try:
        from rdkit import Chem

        from diffkit.molecules import moses_file

        source = moses_file("test")
    except ImportError as err:
        print(f"molecules.smi skipped: {err}")
        return
    import gzip

    smiles = []
    with gzip.open(source, "rt") as f:
        next(f)  # header
        for line in f:
            text = line.strip().split(",")[0]
            mol = Chem.MolFromSmiles(text)
            if mol is not None and mol.GetNumAtoms() <= 16:
                smiles.append(text)
            if len(smiles) == 300:
                break
    (HERE / "molecules.smi").write_text("".join(f"{s}\n" for s in smiles))


if __name__ == "__main__":
    main()
