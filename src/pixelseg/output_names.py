"""How ``predict`` names its outputs: unique per input, never onto an input.

Kept apart from the jobs in :mod:`pixelseg.workflows`: it is one rule (stems, then
extensions, then folders) with its own checks, and any task's ``predict`` uses it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from pixelseg.errors import InvalidInputError

__all__ = ["output_names", "refuse_overwriting_inputs"]


def output_names(images: list[Path]) -> list[str]:
    """One unique output name per image, in order (compared ignoring case, as some file
    systems do).

    The stem; when several inputs share a stem, ``<stem>_<ext>`` (``x.jpg`` -> ``x_jpg``);
    when they share the whole file name, ``<folders>_<stem>_<ext>`` with the folders relative
    to the one they have in common (``a/x.png``, ``b/x.png`` -> ``a_x_png``, ``b_x_png``).
    A name these rules still repeat is an error naming both inputs.
    """
    names = [path.stem for path in images]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, path in enumerate(images):
        groups[path.stem.lower()].append(index)
    for group in groups.values():
        if len(group) == 1:
            continue
        paths = [images[index] for index in group]
        if len({path.name.lower() for path in paths}) == len(paths):
            for index, path in zip(group, paths, strict=True):
                names[index] = f"{path.stem}_{path.suffix[1:].lower()}"
            continue
        resolved = [path.resolve() for path in paths]
        common = Path(os.path.commonpath(resolved))
        for index, path in zip(group, resolved, strict=True):
            folders = path.parent.relative_to(common).parts
            names[index] = "_".join([*folders, path.stem, path.suffix[1:].lower()])
    seen: dict[str, Path] = {}
    for path, name in zip(images, names, strict=True):
        first = seen.setdefault(name.lower(), path)
        if first != path:
            raise InvalidInputError(
                f"inputs {str(first)!r} and {str(path)!r} would both be written as "
                f"{name}_mask.png; rename one or predict them into separate folders"
            )
    return names


def refuse_overwriting_inputs(inputs: list[Path], outputs: list[list[Path]]) -> None:
    """Raise before writing anything if an output path is one of the inputs (say, the mask
    of ``x.png`` when ``x_mask.png`` from an earlier run into the same folder is an input
    too)."""
    resolved = {path.resolve(): path for path in inputs}
    for target in (path for paths in outputs for path in paths):
        if target.resolve() in resolved:
            raise InvalidInputError(
                f"output {str(target)!r} would replace the input "
                f"{str(resolved[target.resolve()])!r}; write into another folder, or leave "
                "earlier outputs out of the inputs"
            )
