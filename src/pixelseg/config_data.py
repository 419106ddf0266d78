"""The ``data`` section of the experiment schema, and the base every section shares.

``data`` is the largest section: which source a dataset reads, how its validation split is
drawn (fixed files, a fraction, groups or folds), and which keys each source reads, so that
a key the chosen dataset would ignore is an error rather than a silent no-op. Re-exported
by :mod:`pixelseg.config`, where the rest of the schema lives; nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DataConfig", "SyntheticConfig"]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    """The embedded synthetic-shapes dataset (no files, no downloads)."""

    num_train: int = Field(800, ge=1)
    num_val: int = Field(100, ge=1)
    size: int = Field(96, ge=16)
    min_shapes: int = Field(1, ge=0)
    max_shapes: int = Field(4, ge=1)


class DataConfig(_Section):
    """Where images and masks come from and how they are augmented and batched."""

    dataset: Literal[
        "synthetic",
        "folder",
        "camvid",
        "voc",
        "membrane",
        "pennfudan",
        "coco",
        "coco_panoptic",
        "msd",
        "nifti",
    ] = "synthetic"
    root: str | None = None
    images: str | None = None
    masks: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    # COCO instances (task instance) or COCO panoptic JSONs (task panoptic): annotation
    # files, relative to root like the images. For coco_panoptic, masks / val_masks name the
    # PNG folders (default: the JSON path without .json, as panopticapi lays them out).
    annotations: str | None = None
    val_annotations: str | None = None
    # Instance data: keep training images without objects (they teach what is not one).
    keep_empty: bool = True
    classes: list[str] | None = None
    colors: list[tuple[int, int, int]] | None = None
    ignore_index: int | None = None
    mask_format: Literal["index", "palette", "rgb"] = "index"
    value_map: dict[int, int] | None = None
    in_channels: int = Field(3, ge=1)
    # Split files (folder datasets): one stem per line.
    train_split: str | None = None
    val_split: str | None = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    # The preset split that validation and eval read (CamVid: val or test; VOC: val, train
    # or trainval); None is the preset's validation split.
    eval_split: str | None = None
    # Group-aware splits: the first capture group of this regular expression over the file
    # stem names a file's group (a video, a patient); groups never straddle the split.
    # val_groups names the validation groups, else num_folds/fold pick a fold over groups,
    # else val_fraction of the groups validate (seeded by split_seed).
    group_by: str | None = None
    val_groups: list[str] | None = None
    num_folds: int | None = Field(None, ge=2)
    fold: int | None = Field(None, ge=0)
    strict: bool = False
    synthetic: SyntheticConfig = SyntheticConfig()
    batch_size: int = Field(8, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    normalize: Literal["imagenet", "none", "custom"] = "imagenet"
    mean: list[float] | None = None
    std: list[float] | None = None
    augment: list[dict[str, Any]] = Field(default_factory=list)
    val_transforms: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_sources(self) -> DataConfig:
        self._check_keys_have_effect()
        if self.fold is not None and self.num_folds is None:
            raise ValueError("data.fold needs data.num_folds")
        if self.fold is not None and self.num_folds is not None and self.fold >= self.num_folds:
            raise ValueError(f"data.fold must be in 0..{self.num_folds - 1}, got {self.fold}")
        if self.val_groups is not None and self.num_folds is not None:
            raise ValueError(
                "data.val_groups and data.num_folds choose the split two ways; keep one"
            )
        if (
            self.val_groups is not None
            and self.group_by is None
            and self.dataset not in ("camvid", "membrane")  # they know their groups
        ):
            raise ValueError("data.val_groups needs data.group_by (how stems name their group)")
        self._check_one_split_source()
        if self.dataset == "folder" and not (self.images and self.masks):
            raise ValueError("data.dataset 'folder' needs data.images and data.masks directories")
        if self.dataset == "nifti" and not self.images:
            raise ValueError(
                "data.dataset 'nifti' needs data.images (and data.masks) folders of NIfTI files"
            )
        if self.dataset in ("camvid", "voc", "membrane", "pennfudan", "msd") and not self.root:
            raise ValueError(f"data.dataset {self.dataset!r} needs data.root")
        if self.dataset == "coco_panoptic" and not (self.root or self.annotations):
            raise ValueError(
                "data.dataset 'coco_panoptic' needs data.root (a folder with panoptic.json, "
                "panoptic/ and images/) or data.annotations and data.images"
            )
        if self.dataset == "coco" and not (self.root or self.annotations):
            raise ValueError(
                "data.dataset 'coco' needs data.root (a folder with instances.json and images/) "
                "or data.annotations and data.images"
            )
        if self.dataset == "folder" and not self.classes:
            raise ValueError("data.dataset 'folder' needs data.classes (a list of class names)")
        if self.normalize == "custom" and (self.mean is None or self.std is None):
            raise ValueError("data.normalize 'custom' needs data.mean and data.std")
        return self

    def _check_one_split_source(self) -> None:
        """A fixed validation set and a drawn split are two answers to one question."""
        fixed = {
            "folder": "val_images"
            if self.val_images
            else "train_split"
            if self.train_split
            else None,
            "nifti": "val_images" if self.val_images else None,
            "coco": "val_annotations" if self.val_annotations else None,
            "coco_panoptic": "val_annotations" if self.val_annotations else None,
        }.get(self.dataset)
        if fixed is None:
            return
        # A folder's group pattern still checks that the two sets share no group.
        for key in ("val_groups", "num_folds", "fold") + (
            ("group_by",) if self.dataset != "folder" else ()
        ):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"data.{key} has no effect beside data.{fixed}, which fixes the validation "
                    "set; keep one of the two"
                )

    def _check_keys_have_effect(self) -> None:
        """A key the chosen dataset ignores is an error, not a silent no-op (a default value,
        as a dumped config spells out, is fine)."""
        used = _DATASET_KEYS[self.dataset]
        for key in _SOURCE_KEYS - used:
            if getattr(self, key) != type(self).model_fields[key].get_default(
                call_default_factory=True
            ):
                users = sorted(name for name, keys in _DATASET_KEYS.items() if key in keys)
                hint = _SOURCE_HINTS.get((self.dataset, key), "")
                raise ValueError(
                    f"data.{key} has no effect with data.dataset {self.dataset!r} (it is used by "
                    f"{', '.join(users)}){hint}"
                )


# Which of the data-source keys each dataset reads; the rest (batching, normalisation,
# augmentation) apply to every dataset.
_FOLDER_KEYS = frozenset(
    {
        "images", "masks", "val_images", "val_masks", "classes", "colors", "ignore_index",
        "mask_format", "value_map", "train_split", "val_split", "val_fraction", "split_seed",
        "group_by", "val_groups", "num_folds", "fold",
    }
)  # fmt: skip
_GROUP_KEYS = frozenset({"group_by", "val_groups", "num_folds", "fold", "split_seed"})
_DATASET_KEYS: dict[str, frozenset[str]] = {
    "synthetic": frozenset({"synthetic"}),
    "folder": _FOLDER_KEYS,
    "camvid": frozenset({"root", "eval_split"}) | _GROUP_KEYS,
    "voc": frozenset({"root", "eval_split"}),
    "membrane": frozenset({"root", "val_fraction"}) | _GROUP_KEYS,
    "pennfudan": frozenset({"root", "val_fraction", "keep_empty"}) | _GROUP_KEYS,
    "coco": frozenset(
        {"root", "images", "annotations", "val_images", "val_annotations", "val_fraction",
         "keep_empty"}
    ) | _GROUP_KEYS,
    "coco_panoptic": frozenset(
        {"root", "images", "annotations", "masks", "val_images", "val_annotations",
         "val_masks", "val_fraction", "keep_empty"}
    ) | _GROUP_KEYS,
    "msd": frozenset({"root", "val_fraction", "classes"}) | _GROUP_KEYS,
    "nifti": frozenset(
        {"root", "images", "masks", "val_images", "val_masks", "val_fraction", "classes"}
    ) | _GROUP_KEYS,
}  # fmt: skip
_SOURCE_KEYS = frozenset().union(*_DATASET_KEYS.values())
_SOURCE_HINTS = {
    ("camvid", "val_split"): "; to evaluate CamVid's test/ split use data.eval_split: test",
    ("voc", "val_split"): "; to evaluate another VOC split use data.eval_split: NAME",
    ("camvid", "val_fraction"): "; CamVid validates on val/ (data.eval_split picks another "
    "split), or on training videos named by data.val_groups or a fold (data.num_folds)",
}
