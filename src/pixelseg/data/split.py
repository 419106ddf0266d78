"""Train/validation splits: reading split files and seeded random splits of file stems."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelseg.data.io import is_image_file
from pixelseg.errors import DataError, InvalidInputError

__all__ = ["random_partition", "random_split", "read_split_file"]

logger = logging.getLogger(__name__)


def read_split_file(path: str | Path) -> list[str]:
    """Read the file stems listed in a split file, one per line, in file order.

    Blank lines and lines starting with ``#`` are skipped. Only the first whitespace-separated
    token of a line counts, and a token that looks like a path (``train/0001TP_006690.png``, as
    in SegNet's CamVid lists) is reduced to its stem, so VOC ``ImageSets`` files and
    ``image mask`` pair lists both work. Duplicates are dropped with a warning.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read split file {str(path)!r}: {exc}") from exc
    stems: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token = line.split()[0]
        is_path = "/" in token or "\\" in token or is_image_file(token)
        stems.append(Path(token).stem if is_path else token)
    unique = list(dict.fromkeys(stems))
    if len(unique) < len(stems):
        logger.warning(
            "split file %s lists %d duplicate stems; each is used once",
            path,
            len(stems) - len(unique),
        )
    if not unique:
        raise DataError(f"split file {str(path)!r} lists no stems (only blank or comment lines)")
    return unique


def random_partition(
    stems: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> list[list[str]]:
    """Split ``stems`` into ``len(fractions)`` disjoint parts of the given sizes, seeded.

    The result depends only on the set of stems and ``seed`` (stems are sorted before the
    shuffle, so folder listing order does not matter); each part is returned sorted. Part sizes
    are ``round(fraction * n)`` with the rounding remainder going to the first part; every
    part with a positive fraction gets at least one stem when there are enough stems.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not np.isfinite(f) or f < 0 for f in fractions):
        raise InvalidInputError(f"fractions must be non-negative numbers, got {fractions!r}")
    total = sum(fractions)
    if abs(total - 1.0) > 1e-6:
        raise InvalidInputError(f"fractions must sum to 1, got {fractions!r} (sum {total:g})")
    ordered = sorted(set(stems))
    n = len(ordered)
    wanted = sum(1 for f in fractions if f > 0)
    if n < wanted:
        raise InvalidInputError(
            f"cannot split {n} stems into {wanted} non-empty parts (fractions {fractions!r})"
        )
    sizes = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
    first = n - sum(sizes)
    while first < (1 if fractions[0] > 0 else 0):
        # Rounding up small parts took too much: shrink the largest of the later parts.
        largest = int(np.argmax(sizes))
        sizes[largest] -= 1
        first += 1
    sizes = [first, *sizes]
    order = np.random.default_rng(seed).permutation(n)
    parts: list[list[str]] = []
    start = 0
    for size in sizes:
        parts.append(sorted(ordered[i] for i in order[start : start + size]))
        start += size
    return parts


def random_split(
    stems: Sequence[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split ``stems`` into ``(train, val)`` with ``round(val_fraction * n)`` val stems, seeded.

    Deterministic for a given set of stems and seed; ``0 <= val_fraction < 1``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InvalidInputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    train, val = random_partition(stems, [1.0 - val_fraction, val_fraction], seed=seed)
    return train, val
