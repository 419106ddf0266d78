"""The Pascal VOC colour map: default class colours for datasets, masks and overlays.

It sits at the bottom of the package with ``errors`` (NumPy only), so that data (default class
colours) and inference (palette PNGs, colourised masks) share one implementation without
inference importing the data stack (albumentations, OpenCV), which a prediction service
does not need.
"""

from __future__ import annotations

import numpy as np

from pixelseg.errors import InvalidInputError

__all__ = ["Color", "label_colormap"]

Color = tuple[int, int, int]


def label_colormap(n: int) -> list[Color]:
    """``n`` distinct, deterministic RGB colours: the Pascal VOC colour map.

    The bits of the class index are interleaved over the channels' high bits: class 0 is black
    (background), 1 dark red, 2 dark green, ...; the first ``2**24`` entries are all different,
    so VOC masks drawn with it look like the official ones. ``n`` must be in ``[1, 2**24]``.
    """
    if not 1 <= n <= 2**24:
        raise InvalidInputError(f"the colour map has 1 to 2**24 colours, got n={n}")
    idx = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for c in range(3):
            rgb[:, c] |= ((idx >> (3 * shift + c)) & 1) << (7 - shift)
    return [(int(r), int(g), int(b)) for r, g, b in rgb]
