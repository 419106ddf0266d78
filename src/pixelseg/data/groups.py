"""Splits that keep groups apart: frames of one video, slices of one patient, tiles of one
slide never fall on both sides of a train/validation split.

A group is named by the first capture group of a regular expression matched against the
file stem (CamVid: ``^([^_]+)_`` gives ``0001TP``, ``0006R0``, ``0016E5``). The validation
side is a list of named groups, a fraction of the groups drawn with a seed, or one fold of
a seeded k-fold over groups. The result records which groups went where, so that a run can
save it (``splits.json``, as nnU-Net keeps ``splits_final.json``) and ``eval`` or a resumed
run reuse it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pixelseg.errors import DataError, InvalidInputError

__all__ = ["GroupSplit", "group_split", "groups_of"]

_SHOWN = 8


@dataclass(frozen=True)
class GroupSplit:
    """Training and validation stems and the groups each side holds (all sorted)."""

    pattern: str
    train: list[str]
    val: list[str]
    train_groups: list[str]
    val_groups: list[str]
    how: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def groups_of(
    stems: Sequence[str], pattern: str, source: str = "data.group_by"
) -> dict[str, list[str]]:
    """Group name -> its stems (sorted), from ``pattern``'s first capture group.

    A pattern that is not a valid regular expression or has no capture group, that matches
    no stem, or that leaves a stem unmatched, is an error naming the pattern and the stem;
    ``source`` says where the pattern came from (a dataset's own pattern is not a key the
    user wrote).
    """
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InvalidInputError(
            f"{source} {pattern!r} is not a regular expression: {error}"
        ) from None
    if regex.groups < 1:
        raise InvalidInputError(
            f"{source} {pattern!r} has no capture group; the first group names the "
            "file's group, e.g. '^([^_]+)_'"
        )
    if not stems:
        raise DataError(f"no files to split by {source} {pattern!r}")
    groups: dict[str, list[str]] = {}
    unmatched = []
    for stem in sorted(stems):
        match = regex.search(stem)
        if match is None or match.group(1) is None:
            unmatched.append(stem)
            continue
        groups.setdefault(match.group(1), []).append(stem)
    if not groups:
        raise DataError(
            f"{source} {pattern!r} matches none of the {len(stems)} files "
            f"(e.g. {_few(sorted(stems)[:3])})"
        )
    if unmatched:
        raise DataError(
            f"{source} {pattern!r} does not match the file {unmatched[0]!r}"
            f"{f' (and {len(unmatched) - 1} more)' if len(unmatched) > 1 else ''}; groups "
            f"found: {_few(sorted(groups))}"
        )
    return groups


def group_split(
    stems: Sequence[str],
    pattern: str,
    *,
    val_groups: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_folds: int | None = None,
    fold: int | None = None,
    source: str = "data.group_by",
) -> GroupSplit:
    """Split ``stems`` into training and validation stems by whole groups.

    ``val_groups`` names the validation groups; otherwise with ``num_folds`` the groups are
    shuffled with ``seed`` and dealt into that many folds (largest groups first, each to
    the fold with the fewest files so far, so folds hold similar numbers of files) and fold
    ``fold`` validates; otherwise ``round(val_fraction * groups)`` groups (at least one)
    drawn with ``seed`` validate. Either side empty is an error naming the groups.
    ``source``: where the pattern came from, for messages (:func:`groups_of`).
    """
    groups = groups_of(stems, pattern, source)
    names = sorted(groups)
    if val_groups is not None:
        unknown = [g for g in val_groups if g not in groups]
        if unknown:
            raise DataError(
                f"data.val_groups names {', '.join(map(repr, unknown))}, which {source} "
                f"{pattern!r} does not find; groups found: {_few(names)}"
            )
        chosen, how = sorted(set(val_groups)), f"val_groups {sorted(set(val_groups))}"
    elif num_folds is not None:
        chosen = _fold(groups, num_folds, 0 if fold is None else fold, seed)
        how = f"fold {fold or 0} of {num_folds} over groups, seed {seed}"
    else:
        count = max(1, round(val_fraction * len(names)))
        order = np.random.default_rng(seed).permutation(len(names))
        chosen = sorted(names[i] for i in order[:count])
        how = f"val_fraction {val_fraction} of the groups, seed {seed}"
    train_groups = [g for g in names if g not in chosen]
    if not chosen or not train_groups:
        side = "validation" if not chosen else "training"
        raise DataError(
            f"the split by {source} {pattern!r} ({how}) leaves the {side} side empty; "
            f"groups found: {_few(names)}"
        )
    return GroupSplit(
        pattern=pattern,
        train=sorted(s for g in train_groups for s in groups[g]),
        val=sorted(s for g in chosen for s in groups[g]),
        train_groups=train_groups,
        val_groups=chosen,
        how=how,
    )


def _fold(groups: dict[str, list[str]], num_folds: int, fold: int, seed: int) -> list[str]:
    if num_folds < 2:
        raise InvalidInputError(f"data.num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise InvalidInputError(f"data.fold must be in 0..{num_folds - 1}, got {fold}")
    if len(groups) < num_folds:
        raise DataError(
            f"cannot make {num_folds} folds from {len(groups)} groups ({_few(sorted(groups))})"
        )
    names = sorted(groups)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    # Largest first (stable, so the shuffle breaks ties), each to the lightest fold.
    order.sort(key=lambda g: -len(groups[g]))
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    sizes = [0] * num_folds
    for name in order:
        lightest = min(range(num_folds), key=lambda f: (sizes[f], f))
        folds[lightest].append(name)
        sizes[lightest] += len(groups[name])
    return sorted(folds[fold])
