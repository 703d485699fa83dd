"""Tests for diffkit.plotting: every data kind writes a PNG with the expected panels, inputs are checked."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from diffkit import plotting
from diffkit.data.tables import sample_table
from diffkit.plotting import plot_samples

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # a blank 400 x 400 PNG is about 2 kB; any drawn panel is larger


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed))


def _tokens(n: int, length: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n, length), generator=_gen(seed))


def _table(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    return sample_table(n, generator=_gen(seed))


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_PNG_BYTES


@pytest.fixture(autouse=True)
def _no_global_matplotlib_state():
    backend = matplotlib.get_backend()
    yield
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == []


# (name, samples, reference, expected panels with reference, without reference)
CASES = [
    ("points_2d", _points(600, 2), _points(500, 2, seed=1), 2, 1),
    ("points_1d", _points(600, 1), _points(500, 1, seed=1), 1, 1),
    ("points_5d", _points(600, 5), _points(500, 5, seed=1), 2, 1),
    ("tokens_small_k", _tokens(300, 12, 6), _tokens(200, 12, 8, seed=1), 3, 2),
    ("tokens_large_k", _tokens(300, 12, 100), _tokens(200, 12, 100, seed=1), 1, 1),
    ("tokens_length_1", _tokens(300, 1, 6), _tokens(200, 1, 6, seed=1), 1, 1),
    ("table", _table(600), _table(500, seed=1), 5, 5),  # num[0..2], cluster, bucket
]


@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "alone"])
@pytest.mark.parametrize(
    ("name", "samples", "reference", "panels_ref", "panels_alone"), CASES, ids=[c[0] for c in CASES]
)
def test_each_kind_writes_png_with_expected_panels(
    tmp_path, name, samples, reference, panels_ref, panels_alone, with_reference
):
    target = tmp_path / f"{name}.png"
    path = plot_samples(samples, reference if with_reference else None, path=target, title=name)
    assert path == target
    _check_png(path)
    panels = panels_ref if with_reference else panels_alone
    width, height = Image.open(path).size
    columns, rows = min(panels, 3), -(-panels // 3)
    assert width * rows == height * columns, (width, height, panels)


def test_table_ignores_mask_and_unshared_keys(tmp_path):
    samples = {"flat": _points(300, 1)[:, 0], "c": _tokens(300, 1, 4)[:, 0]}  # (N,) numeric, (N,) categorical
    reference = {"flat": _points(200, 1, seed=1)[:, 0], "c": _tokens(200, 1, 4, seed=1)[:, 0]}
    samples["mask"] = torch.ones(300, dtype=torch.bool)  # bool is neither kind: would raise if plotted
    samples["only_in_samples"] = torch.zeros(300, dtype=torch.bool)
    reference["only_in_reference"] = "not a tensor"
    before = {k: v.clone() for k, v in samples.items()}
    path = plot_samples(samples, reference, path=tmp_path / "t.png")
    _check_png(path)
    width, height = Image.open(path).size
    assert width == 2 * height, "expected two panels: flat and c"
    assert all(torch.equal(samples[k], before[k]) for k in before), "inputs were modified"


def test_table_draws_at_most_max_columns_per_numeric_field(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "MAX_COLUMNS", 2)
    path = plot_samples({"wide": _points(100, 3)}, path=tmp_path / "wide.png")
    _check_png(path)
    width, height = Image.open(path).size
    assert width == 2 * height, "expected the first 2 of 3 columns"


def test_non_finite_samples_still_plot_without_warnings(tmp_path):
    samples = _points(300, 2)
    samples[:5] = float("nan")
    samples[5, 0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_png(plot_samples(samples, _points(300, 2, seed=1), path=tmp_path / "nan2d.png"))
        _check_png(plot_samples(samples[:, :1], _points(300, 1, seed=1), path=tmp_path / "nan1d.png"))
        _check_png(plot_samples(torch.full((50, 1), float("nan")), path=tmp_path / "all_nan.png"))


def test_creates_parent_directories_and_accepts_str_path(tmp_path):
    target = tmp_path / "a" / "b" / "samples.png"
    path = plot_samples(_points(100, 2), path=str(target), max_points=10)
    assert path == target
    _check_png(target)


def test_num_classes_keyword_widens_classes(tmp_path):
    _check_png(plot_samples(_tokens(100, 4, 3), path=tmp_path / "k.png", num_classes=10))


@pytest.mark.parametrize(
    ("samples", "reference", "kwargs", "match"),
    [
        (_points(10, 2), {"x": _points(10, 2)}, {}, "^reference: expected a Tensor like samples, got dict"),
        ({"x": _points(10, 2)}, _points(10, 2), {}, "^reference: expected a dict like samples, got Tensor"),
        (_points(10, 2), _tokens(10, 2, 3), {}, "^reference: expected continuous data like samples"),
        (_tokens(10, 2, 3), _points(10, 2), {}, "^reference: expected categorical data like samples"),
        (_points(10, 2), _points(10, 3), {}, r"feature shape \(2,\) of samples, got \(3,\)"),
        (_tokens(10, 4, 3), _tokens(10, 5, 3), {}, r"feature shape \(4,\)"),
        ({"num": _points(10, 3)}, {"num": _points(10, 2)}, {}, r"^reference\['num'\]: expected the feature shape"),
        ({"c": _tokens(10, 1, 3)[:, 0]}, {"c": _points(10, 1)[:, 0]}, {}, r"^reference\['c'\]: expected categ"),
        (_points(0, 2), None, {}, "^samples: expected a non-empty tensor"),
        (_points(10, 2), _points(0, 2), {}, "^reference: expected a non-empty tensor"),
        ({"x": _points(0, 2)}, None, {}, r"^samples\['x'\]: expected a non-empty tensor"),
        ({}, None, {}, "at least one field"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, None, {}, "at least one field to plot besides 'mask'"),
        ({"a": _points(10, 1)}, {"b": _points(10, 1)}, {}, r"\['a'\] and \['b'\]"),
        (_points(10, 2)[:, 0], None, {}, r"^samples: expected shape \(N, D\)"),
        (_tokens(10, 2, 3).int(), None, {}, "torch.int32"),
        (torch.ones(10, 2, dtype=torch.bool), None, {}, "torch.bool"),
        (-_tokens(10, 2, 3) - 1, None, {}, "ids >= 0"),
        (_tokens(10, 2, 5), None, {"num_classes": 3}, "^num_classes: expected an int >= max id"),
        (_tokens(10, 2, 5), None, {"num_classes": 0}, "^num_classes: expected an int >= 1, got 0"),
        (_points(10, 2), None, {"max_points": 0}, "^max_points: expected an int >= 1, got 0"),
    ],
)
def test_bad_inputs_raise_value_error_naming_them(tmp_path, samples, reference, kwargs, match):
    path = tmp_path / "never.png"
    with pytest.raises(ValueError, match=match):
        plot_samples(samples, reference, path=path, **kwargs)
    assert not path.exists()


@pytest.mark.parametrize("samples", [[[0.0, 1.0]], None, "samples"])
def test_samples_of_wrong_type_raise_type_error(tmp_path, samples):
    with pytest.raises(TypeError, match="^samples: expected a Tensor or dict"):
        plot_samples(samples, path=tmp_path / "never.png")


def test_table_field_not_a_tensor_raises_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"^samples\['x'\]: expected a Tensor"):
        plot_samples({"x": [1.0, 2.0]}, path=tmp_path / "never.png")


def _images(figure) -> list:
    return [im for ax in figure.axes if ax.get_visible() for im in ax.images]


@pytest.mark.parametrize(
    "shape, image_shape", [((70, 1, 8, 8), None), ((70, 8, 8), None), ((70, 64), (1, 8, 8)), ((5, 3, 4, 6), None)]
)
def test_image_like_data_is_drawn_as_a_grid_of_images(shape, image_shape, tmp_path):
    samples, reference = torch.rand(*shape, generator=_gen(0)), torch.rand(*shape, generator=_gen(1))
    figure = plotting.samples_figure(samples, reference, image_shape=image_shape)
    images = _images(figure)
    assert len(images) == 2 and not any(ax.collections for ax in figure.axes)  # two grids, no scatter
    c, h, w = image_shape or ((1, *shape[1:]) if len(shape) == 3 else shape[1:])
    n = min(shape[0], plotting.MAX_IMAGES)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mosaic = images[1].get_array()
    assert mosaic.shape[:2] == (rows * (h + 1) - 1, cols * (w + 1) - 1)
    # The first tile is the first sample, scaled by the reference's range.
    first = samples.reshape(shape[0], c, h, w)[0].double()
    low, high = float(reference.min()), float(reference.max())
    expected = ((first - low) / (high - low)).clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
    assert abs(mosaic[:h, :w] - expected).max() < 1e-6
    _check_png(plot_samples(samples, reference, tmp_path / "grid.png", image_shape=image_shape))


def test_image_shape_must_match_the_data():
    with pytest.raises(ValueError, match="image_shape"):
        plotting.samples_figure(torch.rand(4, 64), image_shape=(1, 7, 8))
    with pytest.raises(ValueError, match="image_shape"):
        plotting.samples_figure(torch.rand(4, 64), image_shape=(2, 4, 8))
