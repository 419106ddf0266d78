"""Evaluation charts written as PNG files: per-class IoU and PQ, confusion matrix, score
distributions.

Uses matplotlib's object-oriented API (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``: no
global figure state, no display needed, safe in threads and on headless servers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pixelseg.errors import InvalidInputError, unknown_choice

__all__ = [
    "NORMALIZE_MODES",
    "class_iou_figure",
    "confusion_matrix_figure",
    "new_figure",
    "normalize_confusion",
    "plot_class_iou",
    "plot_confusion_matrix",
    "plot_score_distributions",
    "pq_per_class_chart",
    "pq_per_class_figure",
    "save_figure",
    "score_distributions_figure",
]

NORMALIZE_MODES = ("true", "pred", "all", "none")
ANNOTATE_MAX_CLASSES = 25
"""Above this many classes the confusion-matrix cells are too small to hold numbers."""


def new_figure(width: float, height: float) -> Figure:
    """A figure (size in inches) bound to the Agg canvas, outside pyplot's global registry."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _names(class_names: Sequence[str] | None, count: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in class_names]
    if len(names) != count:
        raise InvalidInputError(f"got {len(names)} class names for {count} classes: {names!r}")
    return names


def class_iou_figure(
    iou: Sequence[float],
    class_names: Sequence[str] | None,
    miou: float | None,
    *,
    title: str = "IoU per class",
) -> Figure:
    """Horizontal bars of IoU per class in [0, 1] with a dashed line at mIoU.

    Each bar carries its value (NaN classes, absent from ground truth and prediction, get no
    bar and an "n/a" label); the mIoU legend sits above the axes, clear of every bar and label.
    ``miou=None`` draws the NaN-ignoring mean of ``iou``.
    """
    values = np.asarray(iou, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InvalidInputError("iou is empty: need one value per class")
    names = _names(class_names, values.size)
    finite = np.isfinite(values)
    if miou is None:
        miou = float(values[finite].mean()) if finite.any() else float("nan")
    fig = new_figure(7.0, max(2.5, 0.32 * values.size + 1.5))
    ax = fig.add_subplot()
    rows = np.arange(values.size)
    bars = ax.barh(rows, np.where(finite, values, 0.0), color="tab:blue", height=0.7)
    for row, value, bar in zip(rows, values, bars, strict=True):
        label = f"{value:.3f}" if np.isfinite(value) else "n/a"
        color = "black" if np.isfinite(value) else "grey"
        # A white backing keeps the value readable where the mIoU line crosses it.
        backing = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}
        ax.text(
            bar.get_width() + 0.01, row, label, va="center", fontsize=8, color=color, bbox=backing
        )
    if math.isfinite(miou):
        ax.axvline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.3f}", zorder=1.5)
        # Above the axes: inside, it would cover the value of whichever bar ends below it.
        fig.legend(loc="outside upper right", fontsize=8, frameon=False)
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()  # class 0 on top, as in a table
    ax.set_xlim(0.0, 1.12)  # room for the label of a bar at 1.0
    ax.set_xlabel("IoU")
    ax.set_title(title if math.isfinite(miou) else f"{title} (mIoU n/a)")
    return fig


def plot_class_iou(
    iou: Sequence[float],
    class_names: Sequence[str] | None,
    miou: float | None,
    path: str | Path,
    *,
    title: str = "IoU per class",
) -> Path:
    """Write :func:`class_iou_figure` as a PNG to ``path``; returns ``path``."""
    return save_figure(class_iou_figure(iou, class_names, miou, title=title), path)


def normalize_confusion(matrix: np.ndarray, normalize: str = "true") -> np.ndarray:
    """Normalise a confusion matrix ``[C, C]`` (rows = ground truth, columns = prediction).

    ``"true"``: each row sums to 1 (recall on the diagonal); ``"pred"``: each column sums to 1
    (precision on the diagonal); ``"all"``: the whole matrix sums to 1; ``"none"``: counts.
    Rows/columns with no pixels become NaN (nothing to normalise), as sklearn warns about.
    """
    if normalize not in NORMALIZE_MODES:
        raise unknown_choice("confusion normalisation", str(normalize), NORMALIZE_MODES)
    m = np.asarray(matrix, dtype=np.float64)
    if normalize == "none":
        return m
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            sums = m.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            sums = m.sum(axis=0, keepdims=True)
        else:
            sums = np.asarray(m.sum())
        return np.where(sums > 0, m / np.where(sums > 0, sums, 1.0), np.nan)


def confusion_matrix_figure(
    matrix: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str] | None,
    normalize: str | None = "true",
    *,
    title: str = "Confusion matrix",
) -> Figure:
    """Heat map of a confusion matrix ``[C, C]`` (rows = ground truth) with a colour bar.

    Row-normalised by default (see :func:`normalize_confusion`); cells carry their value when
    ``C <= 25``; empty rows show "n/a". Cells are near-square rather than forced square, so
    the layout can make room for long class names.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise InvalidInputError(f"confusion matrix must be square [C, C], got {counts.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise InvalidInputError("confusion matrix must hold finite, non-negative counts")
    mode = "none" if normalize is None else normalize
    values = normalize_confusion(counts, mode)
    size = counts.shape[0]
    names = _names(class_names, size)
    side = min(max(4.0, 0.45 * size + 2.5), 30.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = 1.0 if mode != "none" else max(float(counts.max()), 1.0)
    # aspect="auto": forced-square cells keep constrained layout from making room for long
    # class names (the y label was cut off at the figure's left edge).
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto"
    )
    fig.colorbar(
        image, ax=ax, fraction=0.046, pad=0.04, label="fraction" if mode != "none" else "pixels"
    )
    if size <= ANNOTATE_MAX_CLASSES:
        fmt = "{:.0f}" if mode == "none" else "{:.2f}"
        for (row, col), value in np.ndenumerate(values):  # at most 625 cells
            text = fmt.format(value) if np.isfinite(value) else "n/a"
            dark = np.isfinite(value) and value > 0.5 * vmax
            ax.text(
                col,
                row,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    if size <= 60:
        ax.set_xticks(range(size), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(size), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title if mode == "none" else f"{title} (normalised over {mode})")
    return fig


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str] | None,
    path: str | Path,
    normalize: str | None = "true",
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Write :func:`confusion_matrix_figure` as a PNG to ``path``; returns ``path``."""
    fig = confusion_matrix_figure(matrix, class_names, normalize, title=title)
    return save_figure(fig, path)


def score_distributions_figure(
    per_image: Mapping[str, Sequence[float]],
    *,
    bins: int = 20,
    title: str = "Per-image scores",
) -> Figure:
    """Three panels of per-image scores (e.g. ``{"dice": [...], "iou": [...]}``).

    Left: histograms (shared bins); middle: empirical CDFs (fraction of images scoring <= x);
    right: horizontal box plots on the same score axis. Each score keeps one colour in all
    panels; one legend below the panels names them, with the NaN scores that were dropped.
    """
    if not per_image:
        raise InvalidInputError(
            "per_image is empty: give at least one score list, e.g. {'dice': [...]}"
        )
    if bins < 1:
        raise InvalidInputError(f"bins must be >= 1, got {bins}")
    data: dict[str, np.ndarray] = {}
    labels: dict[str, str] = {}
    for name, scores in per_image.items():
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        kept = arr[np.isfinite(arr)]
        data[name] = kept
        dropped = arr.size - kept.size
        labels[name] = f"{name} (n={kept.size}" + (f", {dropped} NaN)" if dropped else ")")
    everything = np.concatenate(list(data.values()))
    lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # Dice/IoU/accuracy: show the whole scale
    elif lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    fig = new_figure(13.0, 4.0)
    ax_hist, ax_cdf, ax_box = fig.subplots(1, 3)
    names = list(data)
    # Explicit colours: an empty score list draws no histogram but must not shift the others'.
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for name, kept in data.items():
        if kept.size == 0:
            ax_cdf.plot([], [], color=colors[name], label=labels[name])
            continue
        ax_hist.hist(kept, bins=edges, alpha=0.5, color=colors[name])
        xs = np.sort(kept)
        ys = np.arange(1, xs.size + 1) / xs.size
        ax_cdf.step(
            np.concatenate([[lo], xs, [hi]]),
            np.concatenate([[0.0], ys, [1.0]]),
            where="post",
            color=colors[name],
            label=labels[name],
        )
    ax_hist.set(title="histogram", xlabel="score", ylabel="images", xlim=(lo, hi))
    ax_cdf.set(
        title="cumulative distribution",
        xlabel="score",
        ylabel="fraction of images <= x",
        xlim=(lo, hi),
        ylim=(0.0, 1.02),
    )
    rows = [i for i, n in enumerate(names) if data[n].size]
    if rows:
        boxes = ax_box.boxplot(
            [data[names[i]] for i in rows],
            positions=rows,
            orientation="horizontal",
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for i, patch in zip(rows, boxes["boxes"], strict=True):
            patch.set(facecolor=colors[names[i]], alpha=0.5)
    # Horizontal boxes: one name per row, so long names cannot run into each other.
    ax_box.set_yticks(range(len(names)), names)
    ax_box.set(title="box plot", xlabel="score", xlim=(lo, hi), ylim=(len(names) - 0.5, -0.5))
    # Below the panels: inside any of them it would cover bars or curves somewhere.
    fig.legend(loc="outside lower center", ncols=min(len(names), 4), fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def plot_score_distributions(
    per_image: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    bins: int = 20,
    title: str = "Per-image scores",
) -> Path:
    """Write :func:`score_distributions_figure` as a PNG to ``path``; returns ``path``."""
    return save_figure(score_distributions_figure(per_image, bins=bins, title=title), path)


def _pq_groups(
    per_class: Mapping[Any, Mapping[str, float]], categories: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[str], np.ndarray]]:
    """``[(group, names, pq)]`` for things then stuff, each sorted by PQ (best first, NaN
    last); a group without categories is left out."""
    if not categories:
        raise InvalidInputError("categories is empty: give the COCO panoptic categories")
    scores = {int(cid): value for cid, value in per_class.items()}
    known = {int(cat["id"]) for cat in categories}
    unknown = sorted(set(scores) - known)
    if unknown:
        raise InvalidInputError(f"per_class has category ids {unknown} that are not in categories")
    groups = []
    for group, isthing in (("things", True), ("stuff", False)):
        rows = []
        for cat in categories:
            if bool(cat["isthing"]) != isthing:
                continue
            pq = float(scores.get(int(cat["id"]), {}).get("pq", math.nan))
            rows.append((str(cat.get("name", cat["id"])), pq))
        rows.sort(key=lambda row: -row[1] if math.isfinite(row[1]) else math.inf)
        if rows:
            groups.append((group, [r[0] for r in rows], np.array([r[1] for r in rows])))
    return groups


def pq_per_class_figure(
    per_class: Mapping[Any, Mapping[str, float]],
    categories: Sequence[Mapping[str, Any]],
    *,
    title: str = "PQ per class",
) -> Figure:
    """Horizontal PQ bars (0-1 scale) per category, one panel for things and one for stuff.

    ``per_class``: ``{category id: {"pq": ...}}`` (``PanopticQuality.compute()["per_class"]``);
    ``categories``: COCO panoptic categories (``id``, ``isthing``, ``name``). Within a panel
    the best class is on top; a class that is NaN or missing from ``per_class`` gets no bar
    and an "n/a" label, at the bottom, and the panel title gives the mean over the others.
    """
    groups = _pq_groups(per_class, categories)
    rows = max(len(names) for _, names, _ in groups)
    fig = new_figure(6.0 * len(groups), max(2.5, 0.3 * rows + 1.5))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    backing = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}
    for ax, (group, names, values), color in zip(
        axes, groups, ("tab:orange", "tab:green"), strict=False
    ):
        finite = np.isfinite(values)
        positions = np.arange(values.size)
        bars = ax.barh(positions, np.where(finite, values, 0.0), color=color, height=0.7)
        for row, value, bar in zip(positions, values, bars, strict=True):
            label = f"{value:.3f}" if np.isfinite(value) else "n/a"
            ax.text(
                bar.get_width() + 0.01,
                row,
                label,
                va="center",
                fontsize=8,
                color="black" if np.isfinite(value) else "grey",
                bbox=backing,
            )
        ax.set_yticks(positions, names, fontsize=8)
        ax.set_ylim(rows - 0.5, -0.5)  # same row height in both panels, best on top
        ax.set_xlim(0.0, 1.12)
        ax.set_xlabel("PQ")
        mean = f"mean {values[finite].mean():.3f}" if finite.any() else "n/a"
        ax.set_title(f"{group} ({mean}, {int(finite.sum())}/{values.size} classes)", fontsize=10)
    fig.suptitle(title)
    return fig


def pq_per_class_chart(
    per_class: Mapping[Any, Mapping[str, float]],
    categories: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "PQ per class",
) -> Path:
    """Write :func:`pq_per_class_figure` as a PNG to ``path``; returns ``path``."""
    return save_figure(pq_per_class_figure(per_class, categories, title=title), path)
