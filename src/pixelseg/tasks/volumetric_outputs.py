"""What volumetric segmentation writes: the evaluation report and ``predict``'s volumes.

Report: ``metrics.json`` (per metric the mean, std, median, min and max over cases, and per
class), ``per_case.csv``, the charts of :mod:`pixelseg.reports.case_report` (Dice and IoU
histograms, Dice against IoU, box plots, grades, CDFs) and ``montages/<case>.png`` for every
case (axial, coronal and sagittal slices through the largest lesion, ground truth and
prediction contours). Prediction: ``<name>_seg.nii.gz`` per input volume, on the input's own
grid and affine, so it overlays the input exactly in any viewer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg.errors import InvalidInputError
from pixelseg.reports import write_metrics_json, write_per_image_csv

__all__ = [
    "REPORT_FILES",
    "list_volumes",
    "prediction_paths",
    "write_volume_prediction",
    "write_volumetric_report",
]

log = logging.getLogger(__name__)

REPORT_FILES = {"metrics": "metrics.json", "per_case": "per_case.csv", "montages": "montages"}
_NIFTI = (".nii", ".nii.gz")


# ---------------------------------------------------------------------- the report
def write_volumetric_report(
    task: Any, out_dir: Path, metrics: dict[str, Any], accumulator: Any, rows: list[dict]
) -> dict[str, Any]:
    """Write every report file into ``out_dir``; returns the metrics as written: per metric
    ``{mean, std, median, min, max, count, infinite}`` over the case rows (the means equal
    the validation metrics), ``per_class`` the same per foreground class, ``num_cases``."""
    from pixelseg.reports.case_charts import write_case_charts
    from pixelseg.reports.case_report import summary_statistics
    from pixelseg.tasks.volumetric import METRIC_NAMES

    class_rows = accumulator.rows
    written: dict[str, Any] = dict(summary_statistics(class_rows, METRIC_NAMES))
    classes = task.class_names[1:]
    if len(classes) > 1:
        written["per_class"] = {
            name: summary_statistics([r for r in class_rows if r["class"] == name], METRIC_NAMES)
            for name in classes
        }
    written["num_cases"] = metrics.get("num_cases", len(rows))
    write_metrics_json(written, out_dir / REPORT_FILES["metrics"])
    for name in classes:
        subset = [r for r in class_rows if r["class"] == name]
        if subset:
            write_case_charts(subset, out_dir, class_name=name if len(classes) > 1 else None)
    if rows:
        montages = out_dir / REPORT_FILES["montages"]
        montages.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row.get("_montage_png"):
                (montages / f"{row['name']}.png").write_bytes(row["_montage_png"])
        table = [{k: v for k, v in r.items() if k not in ("score", "_montage_png")} for r in rows]
        write_per_image_csv(table, out_dir / REPORT_FILES["per_case"])
    log.info("report written to %s", out_dir)
    return written


def montage_png(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    class_names: Sequence[str],
    title: str,
) -> bytes:
    """A case's montage (axial, coronal, sagittal through its largest lesion) as PNG bytes."""
    import io

    from pixelseg.reports.case_montage import case_montage_figure

    fig = case_montage_figure(
        image, target, prediction, tuple(spacing), class_names=class_names, title=title
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# ---------------------------------------------------------------------- predict's files
def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def list_volumes(inputs: Sequence[str]) -> list[Path]:
    """The volumes ``predict`` reads: NIfTI files, DICOM series folders (a folder holding
    ``.dcm`` files or no NIfTI at all), and folders of NIfTI files (each file one volume)."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if not path.exists():
            raise InvalidInputError(f"input {text!r} does not exist")
        if path.is_file():
            found.append(path)
            continue
        niftis = sorted(p for p in path.iterdir() if p.is_file() and _is_nifti(p))
        found.extend(niftis if niftis else [path])  # no NIfTI inside: a DICOM series
    if not found:
        raise InvalidInputError(f"no volumes found in {list(inputs)}")
    return found


def _output_name(name: str) -> str:
    return name.removesuffix(".nii")  # "case.nii.gz" has the stem "case.nii"


def prediction_paths(out_dir: Path, name: str) -> list[Path]:
    """The label volume written for input ``name``."""
    return [out_dir / f"{_output_name(name)}_seg.nii.gz"]


def _to_source_grid(labels: np.ndarray, case: Any) -> np.ndarray:
    """Labels on the model grid (i, j, k) mapped onto the input's grid by nearest
    neighbour (a no-op unless the volume was resampled)."""
    from scipy import ndimage

    if labels.shape == tuple(case.source_shape) and np.allclose(case.affine, case.source_affine):
        return labels
    # source voxel -> world -> model voxel
    matrix = np.linalg.inv(case.affine) @ case.source_affine
    # 'grid-constant': a point up to half a model voxel past the last centre takes that
    # voxel's label ('constant' would give it 0, blanking the input's edge slices).
    return ndimage.affine_transform(
        labels,
        matrix[:3, :3],
        offset=matrix[:3, 3],
        output_shape=case.source_shape,
        order=0,
        mode="grid-constant",
    )


def write_volume_prediction(
    task: Any, out_dir: Path, name: str, case: Any, labels: Any
) -> list[Path]:
    """One input's labels as NIfTI on the input's grid and affine (uint8; written to a
    temporary file and renamed, so no half-written volume is left)."""
    from pixelseg.medical.nifti import write_nifti
    from pixelseg.medical.patches import model_to_volume

    array = model_to_volume(labels.cpu().numpy() if hasattr(labels, "cpu") else labels)
    array = _to_source_grid(np.asarray(array), case)
    if task.restrict_to_lung:
        from pixelseg.medical.preprocess import lung_mask

        volume = case.source_volume
        array = np.where(lung_mask(volume.array, volume.spacing), array, 0)
    (path,) = prediction_paths(out_dir, name)
    tmp = path.with_name(f".{path.name}.partial.nii.gz")
    write_nifti(array.astype(np.uint8), case.source_affine, tmp)
    os.replace(tmp, path)
    return [path]
