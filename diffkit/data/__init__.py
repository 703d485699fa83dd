"""Data modules over distributions drawn locally from a seed, each with exact reference quantities.

- ``toy2d``: four standardized 2-D toy sets (``TOY2D``) and ``Toy2DDataModule``.
- ``mixture``: ``GaussianMixture`` (exact log density, Monte Carlo entropy) and its data module.
- ``tokens``: ``MarkovChain`` (exact entropy rate, unigram, bigram) and ``MarkovTokensDataModule``.
- ``tables``: a mixed numeric / categorical table with real dependence and ``TableDataModule``.
- Your own files (docs/data.md): ``ArrayDataModule`` (.npy / .npz / .pt / numeric .csv),
  ``TokenDataModule`` (text or ids), ``TableFileDataModule`` (CSV with declared column kinds),
  ``GraphFileDataModule`` (graph6 / sparse6 / pickled networkx); ``DigitsDataModule`` (scikit-learn's digits).

Every data module draws its train / val / test splits once in ``setup()``, shuffles the train
split in an order fixed by (seed, epoch) through a loader that resumes mid-epoch
(``EpochShuffleSampler``, ``ResumableDataLoader``), and offers ``sample_reference(n, seed)`` for
fresh true data.
"""

from diffkit.data._base import EpochShuffleSampler, ResumableDataLoader, SampledDataModule, TensorDictDataset
from diffkit.data.arrays import ArrayDataModule
from diffkit.data.digits import DigitsDataModule
from diffkit.data.graph_files import GraphFileDataModule
from diffkit.data.graphs import GraphDataModule
from diffkit.data.mixture import EntropyEstimate, GaussianMixture, GaussianMixtureDataModule, well_separated_mixture
from diffkit.data.table_files import TableFileDataModule
from diffkit.data.tables import TableDataModule, categorical_fields, numeric_fields, sample_table, table_class_marginals
from diffkit.data.token_files import TokenDataModule
from diffkit.data.tokens import MarkovChain, MarkovTokensDataModule, random_transition_matrix, stationary_distribution
from diffkit.data.toy2d import TOY2D, Toy2DDataModule, checkerboard, eight_gaussians, swiss_roll, two_moons

__all__ = [
    "ArrayDataModule",
    "TokenDataModule",
    "TableFileDataModule",
    "GraphFileDataModule",
    "DigitsDataModule",
    "GraphDataModule",
    "SampledDataModule",
    "TensorDictDataset",
    "EpochShuffleSampler",
    "ResumableDataLoader",
    "TOY2D",
    "Toy2DDataModule",
    "swiss_roll",
    "eight_gaussians",
    "two_moons",
    "checkerboard",
    "GaussianMixture",
    "EntropyEstimate",
    "well_separated_mixture",
    "GaussianMixtureDataModule",
    "MarkovChain",
    "MarkovTokensDataModule",
    "random_transition_matrix",
    "stationary_distribution",
    "sample_table",
    "categorical_fields",
    "numeric_fields",
    "table_class_marginals",
    "TableDataModule",
]
