"""Plots of generated samples next to data: point clouds, images, token sequences and mixed tables.

:func:`plot_samples` picks the plot from the kind of data and writes a PNG. It draws on a
``matplotlib.figure.Figure`` with its own Agg canvas, never through pyplot, so it neither
changes the global backend nor leaves figures open.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from diffkit.metrics.functional import bigram_histogram, token_histogram

__all__ = ["plot_samples", "samples_figure"]

MASK_KEY = "mask"  # a table's node / row mask: never plotted
NUM_BINS = 50  # histogram bins, shared by reference and samples
MAX_BARS = 64  # up to this many classes: side-by-side bars and bigram heatmaps; above: stairs only
MAX_COLUMNS = 8  # numeric columns drawn per table field
MAX_PANEL_COLUMNS = 3  # panels per figure row
MAX_IMAGES = 64  # images tiled per grid (8 x 8)
PANEL_INCHES = 4.0
MARKER_SIZE = 2.0
ALPHA = 0.5
COLORS = {"reference": "tab:blue", "samples": "tab:orange"}

Panel = Callable[[Axes], None]  # draws one subplot
Field = tuple[str, Tensor, Tensor | None]  # (key, samples, reference); key "" for a plain Tensor


def plot_samples(
    samples: Tensor | dict[str, Tensor],
    reference: Tensor | dict[str, Tensor] | None = None,
    path: str | Path = "samples.png",
    title: str | None = None,
    max_points: int = 5000,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Path:
    """Draw generated samples next to true data and write a PNG.

    - (N, C, H, W) float images (C = 1 or 3), (N, H, W) grayscale images, or (N, C * H * W) float
      with ``image_shape`` given: one grid of the first 64 images per set (reference | samples),
      all drawn on one intensity scale, the reference's range of finite values.
    - (N, 2) float: scatter plots (reference | samples) with the same axis limits; (N, 1):
      overlaid histograms; (N, D > 2): scatter of the first two coordinates.
    - (N, L) int64 token ids: unigram frequencies as side-by-side bars and, when K <= 64 and
      L >= 2, one bigram-frequency heatmap per set on a shared colour scale.
    - dict (table rows): per field, (N, ...) float -> one overlaid histogram panel per column
      (density, shared bins, first 8 columns); (N, ...) int64 -> class frequencies as bars.
      The "mask" key and keys in only one of the dicts are ignored.

    Non-finite values are left out and counted in the panel's label.

    Args:
        samples: generated data: (N, D) float, (N, L) int64, or dict of (N, ...) float / int64.
        reference: true data of the same kind and feature shape (its N may differ), or None to
            draw the samples alone.
        path: where to write the PNG; missing parent directories are created.
        title: figure title.
        max_points: at most this many evenly spaced rows of each set are scattered (histograms
            and frequencies use every row).
        num_classes: K for token ids, >= max id + 1; default max id + 1 over both sets.
        image_shape: (C, H, W) of flat (N, C * H * W) float samples that are images; they are
            then drawn as a grid.

    Returns:
        The path written.

    Raises:
        TypeError: ``samples`` is not a Tensor or dict of Tensors.
        ValueError: empty data, an unsupported dtype or shape, ``reference`` of another kind or
            feature shape, no field in common, negative ids, or a bad ``max_points`` /
            ``num_classes``.
    """
    figure = samples_figure(samples, reference, title, max_points, num_classes, image_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def samples_figure(
    samples: Tensor | dict[str, Tensor],
    reference: Tensor | dict[str, Tensor] | None = None,
    title: str | None = None,
    max_points: int = 5000,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Figure:
    """The drawn ``matplotlib`` Figure of :func:`plot_samples` (same arguments, no path), on its own
    Agg canvas."""
    _check_positive_int("max_points", max_points)
    if image_shape is not None:
        samples, reference = _as_images(samples, reference, image_shape)
    fields = _fields(samples, reference)
    kinds = [_check_field(key, s, r, table=isinstance(samples, dict)) for key, s, r in fields]
    if isinstance(samples, dict):
        panels, notes = _table_panels(fields, kinds)
    elif kinds[0] == "categorical":
        panels, notes = _token_panels(_named(samples, reference), num_classes)
    elif samples.ndim > 2:
        panels, notes = _image_panels(_named(samples, reference))
    else:
        panels, notes = _point_panels(_named(samples, reference), max_points)
    return _figure(panels, ", ".join(filter(None, [title, *notes])))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _fields(samples: object, reference: object) -> list[Field]:
    """The fields to draw: a plain Tensor, or the dict keys in both sets except MASK_KEY."""
    if isinstance(samples, Tensor):
        if reference is not None and not isinstance(reference, Tensor):
            raise ValueError(f"reference: expected a Tensor like samples, got {type(reference).__name__}")
        return [("", samples, reference)]
    if not isinstance(samples, dict):
        found = type(samples).__name__
        raise TypeError(f"samples: expected a Tensor or dict of Tensors, got {found}")
    if reference is not None and not isinstance(reference, dict):
        raise ValueError(f"reference: expected a dict like samples, got {type(reference).__name__}")
    keys = [k for k in samples if k != MASK_KEY and (reference is None or k in reference)]
    if not keys:
        found = list(samples) if reference is None else f"{list(samples)} and {list(reference)}"
        raise ValueError(f"samples: expected at least one field to plot besides {MASK_KEY!r}, got keys {found}")
    return [(k, samples[k], None if reference is None else reference[k]) for k in keys]


def _check_field(key: str, samples: object, reference: object, table: bool) -> str:
    """Check one field (and its reference); return "continuous" or "categorical"."""
    s_name, r_name = (f"{base}[{key!r}]" if table else base for base in ("samples", "reference"))
    kind = _kind(s_name, samples, table)
    if reference is None:
        return kind
    r_kind = _kind(r_name, reference, table)
    if r_kind != kind:
        raise ValueError(f"{r_name}: expected {kind} data like {s_name}, got {reference.dtype}")
    if reference.shape[1:] != samples.shape[1:]:
        raise ValueError(
            f"{r_name}: expected the feature shape {tuple(samples.shape[1:])} of {s_name}, "
            f"got {tuple(reference.shape[1:])}"
        )
    return kind


def _kind(name: str, x: object, table: bool) -> str:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    if (x.ndim < 1) if table else (x.ndim != 2 and not (x.is_floating_point() and _is_image(x))):
        expected = "(N, ...)" if table else "(N, D) float, (N, C, H, W) / (N, H, W) float images or (N, L) int64"
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(x.shape)}")
    if x.is_floating_point():
        return "continuous"
    if x.dtype != torch.int64:
        raise ValueError(f"{name}: expected a floating dtype or torch.int64, got {x.dtype}")
    if int(x.min()) < 0:
        raise ValueError(f"{name}: expected class ids >= 0, got {int(x.min())}")
    return "categorical"


def _is_image(x: Tensor) -> bool:
    """(N, H, W) or (N, C, H, W) with C = 1 or 3."""
    return x.ndim == 3 or (x.ndim == 4 and x.shape[1] in (1, 3))


def _as_images(samples: object, reference: object, image_shape: tuple[int, int, int]) -> tuple[Tensor, Tensor | None]:
    """Flat (N, C * H * W) samples (and reference) as (N, C, H, W)."""
    shape = tuple(image_shape)
    if (
        len(shape) != 3
        or shape[0] not in (1, 3)
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
    ):
        raise ValueError(f"image_shape: expected (C, H, W) with C 1 or 3 and H, W >= 1, got {image_shape!r}")
    out = []
    for name, x in (("samples", samples), ("reference", reference)):
        if x is None:
            out.append(None)
            continue
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or x[0].numel() != math.prod(shape):
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name}: expected {math.prod(shape)} float values per example for image_shape {shape}, got {found}"
            )
        out.append(x.reshape(len(x), *shape))
    return out[0], out[1]


def _image_panels(sets: list[tuple[str, Tensor]]) -> tuple[list[Panel], list[str]]:
    images = [(label, (x.unsqueeze(1) if x.ndim == 3 else x).double().numpy()) for label, x in sets]  # (N, C, H, W)
    values = images[0][1]
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    panels = [
        functools.partial(_grid_panel, images=x[:MAX_IMAGES], label=_label(label, x), limits=(low, high))
        for label, x in images
    ]
    count = len(images[-1][1])
    return panels, ([f"first {MAX_IMAGES} of {count} images"] if count > MAX_IMAGES else [])


def _tile(images: np.ndarray, fill: float) -> np.ndarray:
    """(n, C, H, W) -> one (rows * (H + 1) - 1, cols * (W + 1) - 1, C) mosaic, ``fill`` in the gaps."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), fill)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        mosaic[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = image.transpose(1, 2, 0)
    return mosaic


def _grid_panel(ax: Axes, images: np.ndarray, label: str, limits: tuple[float, float]) -> None:
    low, high = limits
    scaled = np.clip(np.nan_to_num((images - low) / max(high - low, 1e-12), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if images.shape[1] == 1:  # one channel: dark = high (ink on paper), white gaps
        ax.imshow(_tile(scaled, 0.0)[:, :, 0], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(_tile(scaled, 1.0), interpolation="nearest")
    ax.set_title(label)
    ax.set_axis_off()


def _named(samples: Tensor, reference: Tensor | None) -> list[tuple[str, Tensor]]:
    """[("reference", reference), ("samples", samples)], without reference when it is None."""
    pairs = [("reference", reference), ("samples", samples)]
    return [(label, x.detach().cpu()) for label, x in pairs if x is not None]


def _label(label: str, x: np.ndarray) -> str:
    dropped = int((~np.isfinite(x)).sum())
    return f"{label} ({dropped} non-finite left out)" if dropped else label


def _num_classes(sets: list[tuple[str, Tensor]], num_classes: int | None) -> int:
    observed = max(int(x.max()) for _, x in sets) + 1
    if num_classes is None:
        return observed
    _check_positive_int("num_classes", num_classes)
    if num_classes < observed:
        raise ValueError(f"num_classes: expected an int >= max id + 1 = {observed}, got {num_classes}")
    return num_classes


def _point_panels(sets: list[tuple[str, Tensor]], max_points: int) -> tuple[list[Panel], list[str]]:
    arrays = [(label, x.double().numpy()) for label, x in sets]
    dim = arrays[0][1].shape[1]
    if dim == 1:
        return [functools.partial(_histogram_panel, sets=[(label, x[:, 0]) for label, x in arrays], title="")], []
    arrays = [(label, x[:, :2]) for label, x in arrays]  # (N, 2)
    finite = np.concatenate([x[np.isfinite(x).all(axis=1)] for _, x in arrays])  # (M, 2)
    limits = [_limits(finite[:, i]) for i in range(2)]
    scatter = functools.partial(_scatter_panel, limits=limits, max_points=max_points)
    panels = [functools.partial(scatter, x=x, label=label) for label, x in arrays]
    return panels, ([f"first 2 of {dim} dims"] if dim > 2 else [])


def _limits(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) or 1.0
    return low - pad, high + pad


def _scatter_panel(ax: Axes, x: np.ndarray, label: str, limits: list, max_points: int) -> None:
    rows = np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int)
    ax.scatter(x[rows, 0], x[rows, 1], s=MARKER_SIZE, alpha=ALPHA, linewidths=0, color=COLORS[label])
    ax.set(xlim=limits[0], ylim=limits[1], title=_label(label, x))


def _histogram_panel(ax: Axes, sets: list[tuple[str, np.ndarray]], title: str) -> None:
    finite = [v[np.isfinite(v)] for _, v in sets]
    values = np.concatenate(finite)
    bins = np.histogram_bin_edges(values, bins=NUM_BINS) if values.size else NUM_BINS
    for (label, v), kept in zip(sets, finite, strict=True):
        if kept.size:
            style = dict(histtype="stepfilled", alpha=ALPHA, color=COLORS[label], label=_label(label, v))
            ax.hist(kept, bins=bins, density=True, **style)
    ax.set(title=title, ylabel="density")
    if any(kept.size for kept in finite):
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)


def _frequency_panel(ax: Axes, sets: list[tuple[str, np.ndarray]], title: str) -> None:
    """Class frequencies (K,) per set: side-by-side bars for K <= MAX_BARS, else stairs."""
    num_classes, width = len(sets[0][1]), 0.8 / len(sets)
    for i, (label, freqs) in enumerate(sets):
        if num_classes <= MAX_BARS:
            offset = (i - (len(sets) - 1) / 2) * width
            ax.bar(np.arange(num_classes) + offset, freqs, width=width, color=COLORS[label], label=label)
        else:
            ax.stairs(freqs, np.arange(num_classes + 1) - 0.5, color=COLORS[label], label=label)
    ax.set(title=title, xlabel="class", ylabel="frequency")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")


def _heatmap_panel(ax: Axes, freqs: np.ndarray, label: str, vmax: float) -> None:
    image = ax.imshow(freqs, vmin=0.0, vmax=vmax, cmap="viridis")
    ax.set(title=f"{label} bigram frequencies", xlabel="next class", ylabel="class")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _token_panels(sets: list[tuple[str, Tensor]], num_classes: int | None) -> tuple[list[Panel], list[str]]:
    k = _num_classes(sets, num_classes)
    unigrams = [(label, token_histogram(x, k).numpy()) for label, x in sets]
    panels = [functools.partial(_frequency_panel, sets=unigrams, title="unigram frequencies")]
    if k <= MAX_BARS and sets[0][1].shape[1] >= 2:
        bigrams = [(label, bigram_histogram(x, k).numpy()) for label, x in sets]  # (K, K) each
        vmax = max(float(f.max()) for _, f in bigrams)
        panels += [functools.partial(_heatmap_panel, freqs=f, label=label, vmax=vmax) for label, f in bigrams]
    return panels, []


def _table_panels(fields: list[Field], kinds: list[str]) -> tuple[list[Panel], list[str]]:
    panels, notes = [], []
    for (key, samples, reference), kind in zip(fields, kinds, strict=True):
        sets = _named(samples, reference)
        if kind == "categorical":
            k = _num_classes(sets, None)
            freqs = [(label, token_histogram(x, k).numpy()) for label, x in sets]
            panels.append(functools.partial(_frequency_panel, sets=freqs, title=key))
            continue
        columns = [(label, x.double().reshape(len(x), -1).numpy()) for label, x in sets]  # (N, D)
        dim = columns[0][1].shape[1]
        if dim > MAX_COLUMNS:
            notes.append(f"{key}: first {MAX_COLUMNS} of {dim} columns")
        for c in range(min(dim, MAX_COLUMNS)):
            title = f"{key}[{c}]" if dim > 1 else key
            sets_c = [(label, x[:, c]) for label, x in columns]
            panels.append(functools.partial(_histogram_panel, sets=sets_c, title=title))
    return panels, notes


def _figure(panels: list[Panel], title: str) -> Figure:
    """A Figure on its own Agg canvas (no pyplot) with one axes per panel, drawn."""
    ncols = min(len(panels), MAX_PANEL_COLUMNS)
    nrows = math.ceil(len(panels) / ncols)
    figure = Figure(figsize=(PANEL_INCHES * ncols, PANEL_INCHES * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):  # the last row may have spare axes, hidden below
        panel(ax)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return figure
