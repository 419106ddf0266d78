"""Exceptions raised by pixelseg.

Every error a user can cause derives from :class:`PixelsegError`, so the CLI can print it as
one clear line. Errors about bad values (shapes, names, label values, config keys) are also
``ValueError`` so plain Python code can catch them the usual way.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ExportError",
    "InvalidInputError",
    "NonFiniteError",
    "PixelsegError",
    "TrainingDivergedError",
    "closest_match",
    "unknown_choice",
]


class PixelsegError(Exception):
    """Base class of every error pixelseg raises on purpose."""


class InvalidInputError(PixelsegError, ValueError):
    """A bad value: wrong shape, NaN, label out of range, unknown name."""


class NonFiniteError(InvalidInputError):
    """NaN or Inf where finite numbers are required (input images, logits)."""


class ConfigError(InvalidInputError):
    """An invalid experiment configuration (unknown key, wrong type, bad override)."""


class DataError(InvalidInputError):
    """A dataset problem: unreadable file, size mismatch, mask values outside the classes."""


class CheckpointError(PixelsegError):
    """A checkpoint that is missing, corrupt or does not match the model."""


class ExportError(PixelsegError):
    """An export that did not verify (parity, accuracy guard) or cannot be made; nothing
    is left written."""


class TrainingDivergedError(PixelsegError):
    """The loss or the gradients became NaN or infinite; the message names the step."""


def closest_match(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to ``name`` (for 'did you mean' hints), or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> InvalidInputError:
    """Build the error for an unknown name: it names the value, a close match and all choices."""
    choices = sorted(choices)
    hint = closest_match(name, choices)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return InvalidInputError(
        f"unknown {kind} {name!r}.{did_you_mean} Valid choices: {', '.join(choices)}"
    )
