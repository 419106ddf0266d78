"""One case's montage: axial, coronal and sagittal slices through its largest lesion, with the
ground-truth and predicted outlines drawn on the image.

Arrays are in the model's axis order ``[D, H, W]`` (:func:`pixelseg.medical.patches.
volume_to_model` of a NIfTI ``[I, J, K]``: ``D`` runs along ``k``). The planes are named
for the usual axial acquisition, where ``k`` is the slice normal: a slice at fixed ``D`` is
axial, at fixed ``H`` coronal, at fixed ``W`` sagittal. Slices are drawn as stored, without
reorientation: the axial one with ``H`` downwards and ``W`` to the right (as the scanner's
own image for a DICOM series), coronal and sagittal with ``D`` upwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pixelseg._optional import import_optional
from pixelseg.errors import InvalidInputError
from pixelseg.reports.charts import new_figure, save_figure

__all__ = ["case_montage_figure", "lesion_center", "write_case_montage"]

TARGET_COLOR = "#00c000"
PREDICTION_COLOR = "#ff2020"
INTENSITY_PERCENTILES = (0.5, 99.5)
"""The image percentiles shown as black and white (over the three slices drawn)."""

# (name, fixed axis, (row axis, column axis), rows drawn upwards)
_PLANES = (
    ("axial", 0, (1, 2), False),
    ("coronal", 1, (0, 2), True),
    ("sagittal", 2, (0, 1), True),
)
_AXIS_NAMES = "DHW"


def _check_volumes(
    image: np.ndarray, target: np.ndarray, prediction: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(a) for a in (image, target, prediction)]
    shapes = ", ".join(
        f"{name} {a.shape}"
        for name, a in zip(("image", "target", "prediction"), arrays, strict=True)
    )
    if any(a.ndim != 3 for a in arrays):
        raise InvalidInputError(f"need 3D volumes [D, H, W], got {shapes}")
    if not arrays[0].shape == arrays[1].shape == arrays[2].shape:
        raise InvalidInputError(f"image, target and prediction must have one shape, got {shapes}")
    for name, labels in zip(("target", "prediction"), arrays[1:], strict=True):
        if labels.dtype.kind not in "biu":
            raise InvalidInputError(
                f"{name} must hold integer labels (bool or int), got dtype {labels.dtype}"
            )
    return arrays[0], arrays[1], arrays[2]


def lesion_center(target: np.ndarray, prediction: np.ndarray) -> tuple[int, int, int]:
    """The voxel ``(d, h, w)`` the montage's slices go through.

    The centre of the largest connected component (6-connected, ``scipy.ndimage.label``'s
    default) of ``target > 0``; if the target is empty, of ``prediction > 0``; if both are
    empty, the volume's centre. The centre is the component's centre of mass, rounded; when
    that voxel lies outside the component (a ring, a C shape), the component's voxel closest
    to it, so every plane cuts the lesion. Ties in size go to the first in raster order.
    """
    target, prediction = np.asarray(target), np.asarray(prediction)
    if target.ndim != 3 or target.shape != prediction.shape:
        raise InvalidInputError(
            f"target and prediction must be 3D [D, H, W] of one shape, got target "
            f"{target.shape}, prediction {prediction.shape}"
        )
    ndimage = import_optional("scipy.ndimage", "medical")
    for labels in (target, prediction):
        components, count = ndimage.label(labels > 0)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0  # background
        # Only the largest component's bounding box is searched from here on.
        box = ndimage.find_objects(components, max_label=int(sizes.argmax()))[-1]
        voxels = np.argwhere(components[box] == sizes.argmax())
        centre = np.rint(voxels.mean(axis=0))
        nearest = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
        offset = [s.start for s in box]
        return tuple(int(v + o) for v, o in zip(nearest, offset, strict=True))  # type: ignore[return-value]
    return tuple(int(s) // 2 for s in target.shape)  # type: ignore[return-value]


def _classes(
    target: np.ndarray, prediction: np.ndarray, class_names: Sequence[str] | None
) -> tuple[list[int], list[str]]:
    """Foreground label values to outline, and the name of each value 0..N-1."""
    top = int(max(target.max(initial=0), prediction.max(initial=0)))
    if class_names is None:
        names = ["background", *(f"class {v}" for v in range(1, top + 1))]
    else:
        names = [str(n) for n in class_names]
        if top >= len(names):
            raise InvalidInputError(
                f"label value {top} has no name: class_names (label 0 first) has "
                f"{len(names)} names {names!r}"
            )
    present = np.union1d(np.unique(target), np.unique(prediction))
    return [int(v) for v in present if v > 0], names


def _outline(ax: Axes, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, **style) -> None:
    """The boundary of ``mask`` [rows, cols] as a contour at 0.5 between voxel centres.

    One voxel of zeros around the mask closes outlines that touch the slice's edge.
    """
    if not mask.any():
        return
    ax.contour(xs, ys, np.pad(mask.astype(np.float32), 1), levels=[0.5], **style)


def _draw_plane(
    ax: Axes,
    index: int,
    plane: tuple[str, int, tuple[int, int], bool],
    volumes: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: tuple[float, float, float],
    classes: list[int],
    colors: dict[int, tuple[str, str]],
    window: tuple[float, float],
) -> None:
    name, axis, (row_axis, col_axis), upwards = plane
    image, target, prediction = (np.take(v, index, axis=axis) for v in volumes)
    rows, cols = image.shape
    height, width = rows * spacing[row_axis], cols * spacing[col_axis]
    # Extent in mm gives the physical aspect ratio (imshow's default aspect is "equal").
    extent = (0.0, width, 0.0, height) if upwards else (0.0, width, height, 0.0)
    ax.imshow(
        image,
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        extent=extent,
        origin="lower" if upwards else "upper",
        interpolation="nearest",
    )
    # Voxel centres in mm, with one padding voxel on each side (see _outline).
    xs = (np.arange(-1, cols + 1) + 0.5) * spacing[col_axis]
    ys = (np.arange(-1, rows + 1) + 0.5) * spacing[row_axis]
    for value in classes:
        target_color, prediction_color = colors[value]
        _outline(ax, target == value, xs, ys, colors=target_color, linewidths=1.2)
        _outline(
            ax,
            prediction == value,
            xs,
            ys,
            colors=prediction_color,
            linewidths=1.2,
            linestyles="dashed",
        )
    ax.set_xlim(0.0, width)
    ax.set_ylim((0.0, height) if upwards else (height, 0.0))
    ax.set_xlabel(f"{_AXIS_NAMES[col_axis]} (mm)")
    ax.set_ylabel(f"{_AXIS_NAMES[row_axis]} (mm)")
    ax.set_title(f"{name}: {_AXIS_NAMES[axis]} = {index} of {volumes[0].shape[axis]}")


def _legend_handles(
    classes: list[int],
    names: list[str],
    colors: dict[int, tuple[str, str]],
    multiclass: bool,
    named: bool,
) -> list[Line2D]:
    if multiclass:
        handles = [Line2D([], [], color=colors[v][0], label=names[v]) for v in classes]
        return [
            *handles,
            Line2D([], [], color="black", label="ground truth (solid)"),
            Line2D([], [], color="black", linestyle="dashed", label="prediction (dashed)"),
        ]
    which = f" ({names[1]})" if named and len(names) == 2 else ""
    return [
        Line2D([], [], color=TARGET_COLOR, label=f"ground truth{which}"),
        Line2D([], [], color=PREDICTION_COLOR, linestyle="dashed", label=f"prediction{which}"),
    ]


def case_montage_figure(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Three panels: axial, coronal and sagittal slices through the voxel
    :func:`lesion_center` picks, with outlines of the ground truth and the prediction.

    Args:
        image: ``[D, H, W]`` float intensities (shown in grey between the 0.5th and 99.5th
            percentiles of the three slices' finite values).
        target: ``[D, H, W]`` integer labels (0 background).
        prediction: ``[D, H, W]`` integer labels.
        spacing: mm per voxel along ``D, H, W``; the panels keep the physical aspect ratio
            and their axes are in mm.
        class_names: names of label values 0..N-1 (background first), for the legend.
        title: the figure's title, e.g. the case name and its Dice.

    With labels 0/1 only (and at most two ``class_names``), the ground truth is outlined in
    green and the prediction in red, dashed. With several foreground classes each class gets
    its own colour, the ground truth solid and the prediction dashed.

    Returns:
        The figure; :func:`write_case_montage` writes it.
    """
    image, target, prediction = _check_volumes(image, target, prediction)
    values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise InvalidInputError(
            f"spacing must be 3 positive finite numbers (mm along D, H, W), got {spacing!r}"
        )
    classes, names = _classes(target, prediction, class_names)
    centre = lesion_center(target, prediction)
    image = image.astype(np.float32, copy=False)
    shown = np.concatenate([np.take(image, centre[a], axis=a).ravel() for a in range(3)])
    shown = shown[np.isfinite(shown)]
    low, high = np.percentile(shown, INTENSITY_PERCENTILES) if shown.size else (0.0, 1.0)
    window = (float(low), float(high) if high > low else float(low) + 1.0)

    multiclass = len(names) > 2
    colors = {
        v: (f"C{(v - 1) % 10}",) * 2 if multiclass else (TARGET_COLOR, PREDICTION_COLOR)
        for v in classes
    }
    # Panels as wide as their slices' physical aspect, so none is squeezed to a strip.
    shape = image.shape
    ratios = [shape[c] * values[c] / (shape[r] * values[r]) for _, _, (r, c), _ in _PLANES]
    ratios = [min(max(r, 0.25), 4.0) for r in ratios]
    fig = new_figure(min(max(4.2 * sum(ratios) + 1.5, 9.0), 22.0), 5.6)
    axes = fig.subplots(1, 3, width_ratios=ratios)
    for ax, plane, index in zip(axes, _PLANES, centre, strict=True):
        _draw_plane(ax, index, plane, (image, target, prediction), values, classes, colors, window)

    handles = _legend_handles(classes, names, colors, multiclass, class_names is not None)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    d, h, w = centre
    fig.suptitle(title if title is not None else f"slices through (D, H, W) = ({d}, {h}, {w})")
    return fig


def write_case_montage(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    spacing: tuple[float, float, float],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write :func:`case_montage_figure` (arguments as there) as a PNG to ``path`` (parent
    folders created); returns ``path``."""
    fig = case_montage_figure(
        image, target, prediction, spacing, class_names=class_names, title=title
    )
    return save_figure(fig, path)
