"""Evaluate a checkpoint trained on a ``MoleculeDataModule``: sample molecules, judge them with RDKit.

``diffkit evaluate-graphs --ckpt_path runs/moses_cpu/checkpoints/last.ckpt`` comes here when the
checkpoint was trained on molecules (``diffkit.graph_eval`` dispatches), and writes into ``--out``:

- ``samples.smi``: one generated molecule a line, "SMILES valid" or "SMILES invalid"; a valid
  molecule is written as RDKit's canonical SMILES (no stereo; fragments joined by "."), an invalid one
  as RDKit writes the unsanitized graph ("*" if even that fails);
- ``metrics.json``: :class:`diffkit.metrics.molecules.MoleculeMetrics` (validity, relaxed
  validity, uniqueness, novelty, V.U.N., connectivity, atom / bond type TV) against the training
  molecules, plus the same type distances of the test molecules (the floor), the checkpoint's
  step and the wall times;
- ``samples.png``: a grid of generated molecules drawn by RDKit (legend: valid / invalid), and
  ``train.png``: as many training molecules.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["evaluate_molecule_checkpoint", "write_smiles", "draw_molecule_grid"]


def _smiles_line(mol: Any) -> str:
    from diffkit.molecules import _rdkit, canonical_smiles

    Chem = _rdkit()
    smiles = canonical_smiles(mol)
    if smiles is not None:
        return f"{smiles} valid"
    try:
        raw = Chem.MolToSmiles(mol, canonical=False) or "*"
    except Exception:  # RDKit may fail to write a chemically broken graph
        raw = "*"
    return f"{raw} invalid"


def write_smiles(mols: list[Any], path: str | Path) -> Path:
    """Write molecules to ``path`` as "SMILES valid|invalid" lines (module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_smiles_line(m) + "\n" for m in mols))
    return path


def draw_molecule_grid(mols: list[Any], path: str | Path, per_row: int = 4, max_mols: int = 16) -> Path:
    """Draw up to ``max_mols`` molecules with RDKit (``Draw.MolsToGridImage``) into a PNG, legend valid / invalid.

    A valid molecule is drawn sanitized (aromatic rings perceived); an invalid one as its raw graph,
    or as an empty cell labelled "not drawable" when RDKit cannot lay it out (dense invalid graphs
    can make its depiction fail).
    """
    from rdkit.Chem import Draw

    from diffkit.molecules import _rdkit

    Chem = _rdkit()
    shown, legends = [], []
    for mol in mols[:max_mols]:
        copy = Chem.Mol(mol)
        try:
            Chem.SanitizeMol(copy)
            legend = "valid"
        except Exception:  # RDKit raises several sanitization exception types
            copy = Chem.Mol(mol)
            copy.UpdatePropertyCache(strict=False)
            legend = "invalid"
        try:
            Draw.MolToImage(copy, size=(50, 50))  # RDKit cannot lay out every invalid graph
        except (RuntimeError, ValueError):
            copy, legend = Chem.Mol(), f"{legend}, not drawable"
        shown.append(copy)
        legends.append(f"{legend}, {mol.GetNumAtoms()} atoms")
    image = Draw.MolsToGridImage(shown, molsPerRow=per_row, subImgSize=(250, 200), legends=legends)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def evaluate_molecule_checkpoint(
    ckpt_path: str | Path,
    checkpoint: dict,
    out: str | Path | None = None,
    num_samples: int | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
    per_side: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample molecules from a checkpoint and score them (module docstring).

    Args:
        ckpt_path: a checkpoint written by ``diffkit fit`` on a ``MoleculeDataModule``.
        checkpoint: that checkpoint's dict (read once by the caller; only metadata is used).
        out: output folder (default ``<run folder>/eval``).
        num_samples: molecules to generate (default: the test split's size).
        num_steps: reverse steps (default: all T).
        seed: seeds the sampler.
        device: "cpu", "cuda", ...
        batch_size: molecules sampled per call.
        per_side: molecules drawn in samples.png and train.png.
        progress: progress bar over the reverse steps.

    Returns:
        The metrics dict written to metrics.json.
    """
    import torch

    from diffkit.cli import load_model
    from diffkit.data.molecules import MoleculeDataModule
    from diffkit.metrics.molecules import total_variation, type_frequencies
    from diffkit.molecules import dense_to_mols

    ckpt_path = Path(ckpt_path)
    model = load_model(ckpt_path, device)
    dm = MoleculeDataModule(**checkpoint["MoleculeDataModule"])
    dm.setup()
    test = dm.split("test")
    num_samples = int(test["mask"].shape[0]) if num_samples is None else num_samples
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    out = ckpt_path.resolve().parent.parent / "eval" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    gen = torch.Generator(device).manual_seed(seed)
    metric = dm.sample_metrics()["molecules"]
    parts = []
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        samples = {
            k: v.cpu() for k, v in model.sample(n, num_steps=num_steps, generator=gen, progress=progress).items()
        }
        parts.append(samples)
        done += n
    sample_s = time.perf_counter() - start

    start = time.perf_counter()
    batch = {k: torch.cat([p[k] for p in parts]) for k in ("X", "E", "mask")}
    metric.update(batch)
    values = {k: float(v) for k, v in metric.compute().items()}
    atoms, bonds = type_frequencies(test, len(dm.atom_vocabulary))
    values["test/atom_tv"] = float(total_variation(atoms, metric.train_atoms))
    values["test/bond_tv"] = float(total_variation(bonds, metric.train_bonds))
    mols = dense_to_mols(batch, dm.atom_vocabulary)
    write_smiles(mols, out / "samples.smi")
    metric_s = time.perf_counter() - start
    steps = num_steps or model.process.num_steps
    result = {
        **values,
        "dataset": str(dm.source),
        "checkpoint": str(ckpt_path),
        "global_step": int(checkpoint.get("global_step", -1)),
        "ema": "current_model_state" in checkpoint,
        "num_samples": num_samples,
        "num_steps": steps,
        "seed": seed,
        "sample_wall_s": round(sample_s, 2),
        "metric_wall_s": round(metric_s, 2),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    draw_molecule_grid(mols, out / "samples.png", max_mols=per_side)
    draw_molecule_grid(
        dense_to_mols(dm.split("train"), dm.atom_vocabulary)[:per_side], out / "train.png", max_mols=per_side
    )
    return result
