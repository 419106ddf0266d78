"""How a config splits named items (file stems, case names) into training and validation,
and the check that a run's saved split (``splits.json``) is the one the config draws.

Every task's data module calls these, so that ``data.group_by``, ``data.val_groups``,
``data.num_folds``/``data.fold`` and ``data.val_fraction``/``data.split_seed`` mean the
same for CamVid frames, membrane slices, Penn-Fudan images and CT cases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pixelseg.config import DataConfig
from pixelseg.data.groups import group_split
from pixelseg.data.split import random_split
from pixelseg.errors import ConfigError, DataError, InvalidInputError

__all__ = ["EACH_ITS_OWN_GROUP", "check_saved_split", "draw_split", "splits_by_group"]

log = logging.getLogger(__name__)

#: The pattern when folds are asked for without data.group_by: every item is its own group.
EACH_ITS_OWN_GROUP = r"^(.*)$"


def splits_by_group(data: DataConfig) -> bool:
    """Whether the config splits by whole groups (a pattern, named groups or folds)."""
    return data.group_by is not None or data.val_groups is not None or data.num_folds is not None


def draw_split(
    names: Sequence[str], data: DataConfig, what: str, pattern: str | None = None
) -> dict[str, Any]:
    """The split ``data`` asks for over ``names``, as ``splits.json`` records it.

    By group when :func:`splits_by_group` (``pattern`` is the dataset's own group pattern,
    used when ``data.group_by`` is unset), else a seeded ``data.val_fraction`` of ``names``.
    ``what`` names the items in messages ("images", "cases").
    """
    if splits_by_group(data):
        if data.group_by is not None:
            source = "data.group_by"
        elif pattern is not None:
            source = "the dataset's own group pattern (data.group_by is unset)"
        else:
            source = "the one-group-per-item pattern (data.group_by is unset)"
        split = group_split(
            names,
            data.group_by or pattern or EACH_ITS_OWN_GROUP,
            source=source,
            val_groups=data.val_groups,
            val_fraction=data.val_fraction,
            seed=data.split_seed,
            num_folds=data.num_folds,
            fold=data.fold,
        )
        log.info(
            "split by group (%s): training groups %s, validation groups %s",
            split.how,
            ", ".join(split.train_groups),
            ", ".join(split.val_groups),
        )
        return split.to_json()
    try:
        train, val = random_split(names, data.val_fraction, data.split_seed)
    except InvalidInputError:  # fewer items than sides
        train, val = list(names), []
    if not train or not val:
        raise DataError(
            f"data.val_fraction {data.val_fraction} of {len(names)} {what} leaves one side empty"
        )
    return {
        "how": f"seeded split of the {what}, val_fraction {data.val_fraction}, "
        f"split_seed {data.split_seed}",
        "train": train,
        "val": val,
    }


def check_saved_split(saved: dict[str, Any], drawn: dict[str, Any]) -> None:
    """A resumed or evaluated run must see the validation items it was trained beside."""
    if sorted(saved["val"]) != sorted(drawn["val"]):
        raise ConfigError(
            "the run's splits.json names other validation items than the config draws "
            f"({saved.get('how', 'saved')!r} against {drawn['how']!r}): restore the split "
            "settings the run was trained with (data.group_by, data.val_groups, "
            "data.num_folds/data.fold, data.val_fraction, data.split_seed)"
        )
