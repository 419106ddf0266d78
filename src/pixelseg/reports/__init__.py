"""Evaluation reports: charts, the worst-cases gallery, the panoptic picture, per-case
volumetric summaries and slice montages, and metric tables (PNG, CSV, JSON)."""

from __future__ import annotations

from pixelseg.reports.case_charts import write_case_charts
from pixelseg.reports.case_montage import lesion_center, write_case_montage
from pixelseg.reports.case_report import GRADES, grade, summary_statistics
from pixelseg.reports.charts import (
    normalize_confusion,
    plot_class_iou,
    plot_confusion_matrix,
    plot_score_distributions,
    pq_per_class_chart,
)
from pixelseg.reports.gallery import (
    WorstK,
    error_map,
    select_worst_samples,
    worst_cases_gallery,
    worst_k_indices,
)
from pixelseg.reports.panoptic_overlay import render_panoptic
from pixelseg.reports.tables import to_jsonable, write_metrics_json, write_per_image_csv

__all__ = [
    "GRADES",
    "WorstK",
    "error_map",
    "grade",
    "lesion_center",
    "normalize_confusion",
    "plot_class_iou",
    "plot_confusion_matrix",
    "plot_score_distributions",
    "pq_per_class_chart",
    "render_panoptic",
    "select_worst_samples",
    "summary_statistics",
    "to_jsonable",
    "worst_cases_gallery",
    "worst_k_indices",
    "write_case_charts",
    "write_case_montage",
    "write_metrics_json",
    "write_per_image_csv",
]
