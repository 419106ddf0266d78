"""Charts of per-case volumetric metrics (one row per case, as
:func:`pixelseg.metrics.surface_metrics` returns): histograms, Dice vs IoU, box plots, the
grade pie and cumulative distributions, each written as a PNG.

Values that are not finite are never drawn: NaN is left out silently (no value), +-inf (HD95
or ASSD of a case where exactly one side is empty) is left out and counted in the chart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pixelseg.errors import InvalidInputError
from pixelseg.reports.case_report import GRADE_LOWER_BOUNDS, GRADES, grade, metric_values
from pixelseg.reports.charts import new_figure, save_figure

__all__ = ["CASE_CHART_NAMES", "GRADE_COLORS", "write_case_charts"]

CASE_CHART_NAMES = (
    "dice_iou_histograms",
    "dice_vs_iou",
    "metric_boxplots",
    "grades",
    "metric_cdfs",
)
"""The file stems :func:`write_case_charts` writes, in order."""

GRADE_COLORS = {
    "Poor": "#d62728",
    "Fair": "#ff7f0e",
    "Good": "#bcbd22",
    "Excellent": "#2ca02c",
}
"""One fixed colour per grade, so the pies of two runs or two classes read alike."""

SCORE_METRICS = ("dice", "iou", "precision", "recall", "nsd")
"""Metrics on a 0..1 scale."""
DISTANCE_METRICS = ("hd95", "assd")
"""Metrics in mm."""
CDF_METRICS = ("dice", "iou", "nsd")
_NO_DATA = {"ha": "center", "va": "center", "color": "grey"}


def _file_suffix(class_name: str | None) -> str:
    """``""`` or ``"_<class_name>"`` with characters other than letters, digits, ``.``,
    ``-`` and ``_`` replaced by ``_`` (a class name may hold spaces or slashes)."""
    if class_name is None:
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9._-]", "_", str(class_name))


def _title(text: str, class_name: str | None, cases: int) -> str:
    where = f" ({class_name})" if class_name is not None else ""
    return f"{text}{where}, {cases} case{'s' if cases != 1 else ''}"


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _histograms_figure(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    fig = new_figure(10.0, 4.0)
    edges = np.linspace(0.0, 1.0, 21)
    for ax, name, color in zip(fig.subplots(1, 2), ("dice", "iou"), ("C0", "C1"), strict=True):
        values = _finite(metric_values(rows, name))
        ax.set(xlim=(0.0, 1.0), xlabel=name, ylabel="cases", title=name)
        if values.size == 0:
            ax.text(0.5, 0.5, f"no {name} values", transform=ax.transAxes, **_NO_DATA)
            continue
        ax.hist(values, bins=edges, color=color, alpha=0.7, edgecolor="white")
        mean = float(values.mean())
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(loc="best", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of cases
    fig.suptitle(title)
    return fig


def _dice_vs_iou_figure(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    dice, iou = metric_values(rows, "dice"), metric_values(rows, "iou")
    both = np.isfinite(dice) & np.isfinite(iou)
    # Per case, IoU = D / (2 - D) exactly; a point off the curve is a bookkeeping error.
    curve = np.linspace(0.0, 1.0, 201)
    ax.plot(curve, curve / (2.0 - curve), color="grey", linewidth=1, label="IoU = D / (2 - D)")
    ax.scatter(dice[both], iou[both], s=18, color="C0", alpha=0.8, label=f"cases ({both.sum()})")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="Dice", ylabel="IoU", aspect="equal")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    return fig


def _boxes(ax: Axes, names: Sequence[str], rows: Sequence[Mapping[str, float]]) -> list[int]:
    """Box plots of ``names`` in ``ax`` (finite values); returns each metric's inf count."""
    infinite = []
    for position, name in enumerate(names):
        values = metric_values(rows, name)
        finite = _finite(values)
        infinite.append(int(np.isinf(values).sum()))
        if finite.size:
            box = ax.boxplot(
                [finite],
                positions=[position],
                widths=0.6,
                patch_artist=True,
                showfliers=False,  # every case is drawn as a point below
                medianprops={"color": "black"},
            )
            box["boxes"][0].set(facecolor=f"C{position}", alpha=0.5)
            # Every case as a point: with a handful, a box alone hides how few there are.
            ax.scatter(np.full(finite.size, position), finite, s=8, color="black", alpha=0.4)
        else:
            where = ax.get_xaxis_transform()  # x in data, y in axes fractions
            ax.text(position, 0.5, "no finite\nvalues", transform=where, fontsize=8, **_NO_DATA)
    labels = [f"{n}\n({k} inf)" if k else n for n, k in zip(names, infinite, strict=True)]
    ax.set_xticks(range(len(names)), labels)
    ax.set_xlim(-0.6, len(names) - 0.4)
    return infinite


def _boxplots_figure(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    fig = new_figure(11.0, 4.5)
    ax_scores, ax_mm = fig.subplots(1, 2, width_ratios=(5, 2.6))
    _boxes(ax_scores, SCORE_METRICS, rows)
    ax_scores.set(ylim=(-0.02, 1.02), ylabel="score", title="overlap and surface scores")
    infinite = sum(_boxes(ax_mm, DISTANCE_METRICS, rows))
    left_out = f", {infinite} infinite left out" if infinite else ""
    ax_mm.set(ylabel="mm", title=f"distances{left_out}")
    if any(_finite(metric_values(rows, n)).size for n in DISTANCE_METRICS):
        ax_mm.set_ylim(bottom=0.0)
    else:
        ax_mm.set_ylim(0.0, 1.0)  # nothing to scale to
    fig.suptitle(title)
    return fig


def _grades_figure(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    dice = _finite(metric_values(rows, "dice"))
    counts = {name: 0 for name in GRADES}
    for value in dice:  # a loop over cases
        counts[grade(value)] += 1
    total = int(dice.size)
    shown = [name for name in GRADES if counts[name]]
    if shown:
        ax.pie(
            [counts[name] for name in shown],
            colors=[GRADE_COLORS[name] for name in shown],
            labels=[f"{counts[n]} ({100.0 * counts[n] / total:.0f}%)" for n in shown],
            startangle=90,
            counterclock=False,
            wedgeprops={"edgecolor": "white"},
        )
    else:
        ax.text(0.5, 0.5, "no Dice values", transform=ax.transAxes, **_NO_DATA)
        ax.set_axis_off()
    bounds = [*GRADE_LOWER_BOUNDS, 1.0]
    handles = []
    for i, name in enumerate(GRADES):  # every grade listed, also those with no case
        share = 100.0 * counts[name] / total if total else 0.0
        limits = f"{bounds[i]:g}-{bounds[i + 1]:g}"
        label = f"{name} ({limits}): {counts[name]} ({share:.0f}%)"
        handles.append(Patch(color=GRADE_COLORS[name], label=label))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def _cdfs_figure(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    for i, name in enumerate(CDF_METRICS):
        values = np.sort(_finite(metric_values(rows, name)))
        if values.size == 0:
            ax.plot([], [], color=f"C{i}", label=f"{name} (no values)")
            continue
        fractions = np.arange(1, values.size + 1) / values.size
        ax.step(
            np.concatenate([[0.0], values, [1.0]]),
            np.concatenate([[0.0], fractions, [1.0]]),
            where="post",
            color=f"C{i}",
            label=f"{name} (median {np.median(values):.3f})",
        )
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 1.02), xlabel="score", ylabel="fraction of cases <= x")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    return fig


def write_case_charts(
    rows: Sequence[Mapping[str, float]], out_dir: str | Path, *, class_name: str | None = None
) -> list[Path]:
    """Write the per-case charts of one foreground class as PNGs into ``out_dir``.

    Args:
        rows: one mapping per case with ``dice``, ``iou``, ``precision``, ``recall``,
            ``nsd`` (0..1) and ``hd95``, ``assd`` (mm), e.g. from
            :func:`~pixelseg.metrics.surface_metrics`; a missing metric counts as NaN.
        out_dir: the folder (created if needed).
        class_name: with several foreground classes, call once per class with its name:
            titles name it and each file name gets a ``_<class_name>`` suffix (characters
            other than letters, digits, ``.``, ``-``, ``_`` become ``_``), e.g.
            ``grades_tumour.png``. ``None`` (one class): no suffix.

    Returns:
        The written paths, in the order of :data:`CASE_CHART_NAMES`:
        ``dice_iou_histograms`` (Dice and IoU histograms, the mean as a dashed line),
        ``dice_vs_iou`` (scatter with the curve IoU = D / (2 - D)), ``metric_boxplots``
        (0..1 scores and, in a second panel, distances in mm with infinite values left out
        and counted), ``grades`` (pie of the Dice grades of :func:`grade`, empty grades left
        out of the pie but listed in the legend), ``metric_cdfs`` (empirical CDFs of Dice,
        IoU and NSD).
    """
    if len(rows) == 0:
        raise InvalidInputError("no cases: per-case charts need at least one row of metrics")
    out_dir = Path(out_dir)
    suffix = _file_suffix(class_name)
    count = len(rows)
    figures = (
        _histograms_figure(rows, _title("Dice and IoU per case", class_name, count)),
        _dice_vs_iou_figure(rows, _title("Dice vs IoU", class_name, count)),
        _boxplots_figure(rows, _title("Per-case metrics", class_name, count)),
        _grades_figure(rows, _title("Dice grades", class_name, count)),
        _cdfs_figure(rows, _title("Cumulative distributions", class_name, count)),
    )
    return [
        save_figure(fig, out_dir / f"{stem}{suffix}.png")
        for stem, fig in zip(CASE_CHART_NAMES, figures, strict=True)
    ]
