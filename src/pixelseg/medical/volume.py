"""A 3D image on a physical grid: the voxel array, its affine, and checks on image/label pairs.

Axis convention (NIfTI's): ``array[i, j, k]``; for DICOM, ``i`` runs along a row (the column
index), ``j`` down a column (the row index), ``k`` along the slice normal. ``affine`` maps the
voxel index ``(i, j, k, 1)`` to RAS+ millimetres (+x towards the patient's right, +y anterior,
+z superior; DICOM's LPS has x and y flipped), exactly as nibabel and NIfTI viewers read it,
so an array written with the same affine overlays its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixelseg.errors import DataError, InvalidInputError

__all__ = ["Volume", "check_label_values", "check_same_grid"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A voxel array with its geometry.

    Attributes:
        array: ``[I, J, K]`` numpy array (float32 Hounsfield units for CT read from DICOM;
            the stored dtype for NIfTI).
        affine: ``[4, 4]`` float64, voxel index ``(i, j, k)`` to RAS+ millimetres.
        source: the file or folder the volume came from ("" when built in memory); error
            messages name it.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    spacing: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        where = f" ({self.source})" if self.source else ""
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise InvalidInputError(f"affine must be a finite 4x4 matrix{where}, got {affine!r}")
        if np.asarray(self.array).ndim != 3:
            raise InvalidInputError(
                f"a Volume array must be 3D [I, J, K]{where}, got shape "
                f"{tuple(np.shape(self.array))}"
            )
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise InvalidInputError(f"affine is singular{where}: {affine.tolist()}")
        object.__setattr__(self, "affine", affine)
        # mm per voxel step along i, j, k: the lengths of the affine's columns.
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        object.__setattr__(self, "spacing", tuple(float(s) for s in norms))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(I, J, K)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]


def check_same_grid(image: Volume, label: Volume, atol_mm: float = 1e-3) -> None:
    """Raise :class:`DataError` unless ``label`` lies on ``image``'s voxel grid.

    Shapes must be equal and the affines equal within ``atol_mm`` (millimetres), otherwise a
    label drawn for one grid would be scored against, or trained on, the wrong voxels.
    """
    names = f"image {image.source or '<memory>'} and label {label.source or '<memory>'}"
    if image.shape != label.shape:
        raise DataError(f"{names} differ in shape: {image.shape} vs {label.shape}")
    diff = np.abs(image.affine - label.affine)
    if diff.max() > atol_mm:
        raise DataError(
            f"{names} differ in affine (largest difference {diff.max():.4g} mm):\n"
            f"{np.array2string(image.affine, precision=4)}\nvs\n"
            f"{np.array2string(label.affine, precision=4)}"
        )


def check_label_values(label: Volume, num_classes: int) -> None:
    """Raise :class:`DataError` unless every voxel of ``label`` is an integer in [0, num_classes)."""
    if num_classes < 1:
        raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}")
    name = label.source or "<memory>"
    values = np.unique(label.array)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError(f"label volume {name} holds NaN or infinite values")
    bad = values[(values < 0) | (values >= num_classes) | (values != np.round(values))]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:10].tolist())
        more = f" (and {bad.size - 10} more)" if bad.size > 10 else ""
        raise DataError(
            f"label volume {name} holds values {shown}{more} outside the classes "
            f"0..{num_classes - 1}"
        )
