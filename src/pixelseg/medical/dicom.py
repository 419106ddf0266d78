"""Read a DICOM series (a folder of single-frame slices, or one file) into a :class:`Volume`.

The rules, and why:

- Slices are grouped by SeriesInstanceUID; a folder holding several series is refused with the
  list of series unless ``series_uid`` names one (a scan folder often holds localisers,
  reformats and contrast phases side by side, and stacking them mixes scans).
- Every slice of the series must share ImageOrientationPatient (within 1e-4), Rows, Columns
  and PixelSpacing; radial or multi-plane localisers are refused, naming the orientations,
  instead of being stacked into a meaningless block.
- Slices are ordered by ImagePositionPatient projected on the slice normal (row direction x
  column direction), never by file name or InstanceNumber, which scanners and anonymisers do
  not keep in spatial order.
- The slice step is measured between positions, never taken from SliceThickness (thickness
  is the reconstruction kernel's width; slices may overlap or leave gaps). A step more than
  1.5x the median step means missing slices: :class:`DataError` naming the positions on both
  sides of the gap. Slices that are not evenly spaced within 1% (or 1e-3 mm) are refused the
  same way, since one affine cannot place them. A single slice takes SpacingBetweenSlices,
  else SliceThickness, else 1 mm as its k spacing (there is no second position to measure).
- Stored values become modality values with RescaleSlope/RescaleIntercept per slice
  (Hounsfield units for CT). A CT slice without them is refused: its numbers would be
  silently off by the intercept (usually -1024). Other modalities without them keep the
  stored values.
- The affine maps ``(i, j, k)`` (column, row, slice) to RAS+ mm: DICOM's LPS patient
  coordinates with x and y negated. Gantry tilt (positions not along the normal but still
  evenly spaced on a line) gives a sheared affine that places every voxel exactly.

Multi-frame (enhanced) DICOM and colour images are refused with a message saying so.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg._optional import import_optional
from pixelseg.errors import DataError
from pixelseg.medical.volume import Volume

__all__ = ["read_dicom"]

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_ATOL = 1e-4
GAP_FACTOR = 1.5
SPACING_RTOL = 0.01
SPACING_ATOL_MM = 1e-3


@dataclass(frozen=True)
class _Slice:
    """What the series rules need from one file's header (pixels are read later)."""

    path: Path
    series_uid: str
    series_number: Any
    description: str
    modality: str
    header: Any  # the pydicom Dataset read with stop_before_pixels


def read_dicom(path: Path, series_uid: str | None = None) -> Volume:
    """Read the DICOM series in folder ``path`` (or the single slice file ``path``)."""
    pydicom = import_optional("pydicom", "medical")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    series: dict[str, list[_Slice]] = defaultdict(list)
    skipped = 0
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError):
            skipped += 1
            continue
        if "Rows" not in ds:  # DICOMDIR, structured reports, presentation states
            skipped += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        series[uid].append(
            _Slice(
                path=file,
                series_uid=uid,
                series_number=ds.get("SeriesNumber"),
                description=str(ds.get("SeriesDescription", "")),
                modality=str(ds.get("Modality", "")),
                header=ds,
            )
        )
    if skipped:
        logger.debug("%s: skipped %d files that are not DICOM images", path, skipped)
    if not series:
        subfolders = [p.name for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
        hint = f"; it has subfolders {sorted(subfolders)[:10]}" if subfolders else ""
        raise DataError(f"no DICOM image files in {path} ({len(files)} files read){hint}")
    slices = _choose_series(path, series, series_uid)
    return _stack(path, slices)


def _describe(uid: str, slices: list[_Slice]) -> str:
    first = slices[0]
    desc = f", {first.description!r}" if first.description else ""
    return (
        f"  {uid or '<no SeriesInstanceUID>'} (series {first.series_number}, {first.modality}"
        f"{desc}, {len(slices)} file{'s' if len(slices) != 1 else ''})"
    )


def _choose_series(
    path: Path, series: dict[str, list[_Slice]], series_uid: str | None
) -> list[_Slice]:
    listing = "\n".join(_describe(uid, s) for uid, s in sorted(series.items()))
    if series_uid is not None:
        if series_uid not in series:
            raise DataError(f"series_uid {series_uid!r} is not in {path}; it holds:\n{listing}")
        return series[series_uid]
    if len(series) > 1:
        raise DataError(
            f"{path} holds {len(series)} DICOM series; choose one with series_uid=...:\n{listing}"
        )
    return next(iter(series.values()))


def _floats(s: _Slice, tag: str, count: int) -> np.ndarray:
    value = s.header.get(tag)
    if value is None:
        raise DataError(f"DICOM file {s.path} has no {tag}; its voxels cannot be placed")
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.empty(0)
    if out.shape != (count,) or not np.isfinite(out).all():
        raise DataError(f"DICOM file {s.path} has an invalid {tag}: {value!r}")
    return out


def _same(slices: list[_Slice], values: list[Any], what: str) -> None:
    distinct = {str(v): s.path.name for v, s in zip(values, slices, strict=True)}
    if len(distinct) > 1:
        listed = ", ".join(f"{v} in {name}" for v, name in distinct.items())
        raise DataError(
            f"series {slices[0].series_uid} in {slices[0].path.parent} mixes {what}: {listed}"
        )


def _check_orientations(slices: list[_Slice], orientations: np.ndarray) -> None:
    spread = np.abs(orientations - orientations[0]).max(axis=1)
    if spread.max() <= ORIENTATION_ATOL:
        return
    distinct: dict[str, list[str]] = defaultdict(list)
    for s, o in zip(slices, orientations, strict=True):
        distinct[np.array2string(o, precision=4, suppress_small=True)].append(s.path.name)
    listed = "\n".join(f"  {o}: {', '.join(names)}" for o, names in distinct.items())
    raise DataError(
        f"series {slices[0].series_uid} in {slices[0].path.parent} mixes "
        f"{len(distinct)} slice orientations (ImageOrientationPatient); a volume needs one. "
        f"Orientations and files:\n{listed}"
    )


def _slice_step(slices: list[_Slice], positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The LPS vector from one slice to the next; ``slices``/``positions`` sorted along normal."""
    where = f"series {slices[0].series_uid} in {slices[0].path.parent}"
    if len(slices) == 1:
        h = slices[0].header
        for tag in ("SpacingBetweenSlices", "SliceThickness"):
            if h.get(tag) is not None and float(h.get(tag)) > 0:
                return normal * float(h.get(tag))
        return normal
    along = positions @ normal
    steps = np.diff(along)
    dup = np.flatnonzero(steps < SPACING_ATOL_MM)
    if dup.size:
        i = dup[0]
        raise DataError(
            f"{where} has two slices at position {along[i]:.6g} mm along the normal "
            f"({slices[i].path.name}, {slices[i + 1].path.name}): repeated acquisitions or "
            "echoes in one series cannot be stacked"
        )
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if gaps.size:
        listed = ", ".join(
            f"{steps[i]:.6g} mm between {along[i]:.6g} and {along[i + 1]:.6g}" for i in gaps[:10]
        )
        raise DataError(
            f"{where} is missing slices: gap of {listed} mm along the slice normal "
            f"(median spacing {median:.6g} mm, a gap is over {GAP_FACTOR}x the median)"
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    expected = positions[0] + np.arange(len(slices))[:, None] * step
    error = np.linalg.norm(positions - expected, axis=1)
    tolerance = max(SPACING_RTOL * float(np.linalg.norm(step)), SPACING_ATOL_MM)
    if error.max() > tolerance:
        bad = np.flatnonzero(error > tolerance)
        listed = ", ".join(f"{along[i]:.6g}" for i in bad[:10])
        raise DataError(
            f"{where} is not evenly spaced: slice steps range {steps.min():.6g} to "
            f"{steps.max():.6g} mm (mean {np.linalg.norm(step):.6g} mm); slices at positions "
            f"{listed} mm along the normal are off the regular grid by up to "
            f"{error.max():.3g} mm"
        )
    return step


def _rescale(s: _Slice) -> tuple[float, float]:
    h = s.header
    slope, intercept = h.get("RescaleSlope"), h.get("RescaleIntercept")
    if slope is None or intercept is None:
        if s.modality == "CT":
            raise DataError(
                f"CT file {s.path} has no RescaleSlope/RescaleIntercept, so its stored values "
                "cannot be converted to Hounsfield units"
            )
        return 1.0, 0.0
    return float(slope), float(intercept)


def _pixels(s: _Slice) -> np.ndarray:
    pydicom = import_optional("pydicom", "medical")
    ds = pydicom.dcmread(s.path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{s.path} is a multi-frame DICOM ({frames} frames); only series of single-frame "
            "slices are supported"
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"{s.path} is a colour image; a volume needs one sample per pixel")
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            raise DataError(
                f"cannot decode {s.path}: transfer syntax {syntax.name} ({syntax}) needs "
                f"{_decoders_for(syntax)}"
            ) from exc
        raise DataError(f"cannot read the pixel data of {s.path}: {exc}") from exc


def _decoders_for(syntax: Any) -> str:
    """The packages that would decode ``syntax``, from pydicom's own decoder registry."""
    try:
        from pydicom.pixels import get_decoder

        missing = list(get_decoder(syntax).missing_dependencies)
    except (ImportError, NotImplementedError, ValueError):
        missing = []
    if missing:
        return "one of these installed: " + "; ".join(missing)
    return "a pixel data handler for it (pylibjpeg with its plug-ins, or gdcm)"


def _stack(path: Path, slices: list[_Slice]) -> Volume:
    # Orientation first: a multi-plane localiser often differs in size too, and the error
    # should name what makes it unstackable.
    orientations = np.stack([_floats(s, "ImageOrientationPatient", 6) for s in slices])
    _check_orientations(slices, orientations)
    _same(slices, [(int(s.header.Rows), int(s.header.Columns)) for s in slices], "image sizes")
    spacings = [_floats(s, "PixelSpacing", 2) for s in slices]
    _same(slices, [tuple(np.round(p, 6)) for p in spacings], "PixelSpacing")
    positions = np.stack([_floats(s, "ImagePositionPatient", 3) for s in slices])
    row_dir, col_dir = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    step = _slice_step(slices, positions, normal)
    rescale = np.asarray([_rescale(s) for s in slices], dtype=np.float32)

    stored = np.stack([_pixels(s) for s in slices])  # [K, rows=J, cols=I]
    hu = stored.astype(np.float32) * rescale[:, 0, None, None] + rescale[:, 1, None, None]
    row_spacing, col_spacing = spacings[0]  # PixelSpacing is (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: next column, along the row direction
    lps[:3, 1] = col_dir * row_spacing  # j: next row, down the column direction
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    logger.debug("%s: %d slices of series %s", path, len(slices), slices[0].series_uid)
    return Volume(np.ascontiguousarray(hu.transpose(2, 1, 0)), LPS_TO_RAS @ lps, str(path))
