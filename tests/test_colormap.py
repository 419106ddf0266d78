"""The one Pascal VOC colour map, shared by data and inference."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pixelseg import data, inference
from pixelseg.colormap import label_colormap
from pixelseg.errors import InvalidInputError

# The first entries of the official Pascal VOC colour map.
VOC_FIRST = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
]


def test_label_colormap_is_voc_distinct_and_deterministic():
    cmap = label_colormap(256)
    assert cmap[:10] == VOC_FIRST
    assert cmap[15] == (192, 128, 128)  # VOC "person"
    assert cmap[20] == (0, 64, 128) and cmap[255] == (224, 224, 192)
    assert len(set(cmap)) == 256
    assert label_colormap(21) == cmap[:21]
    with pytest.raises(InvalidInputError, match="n=0"):
        label_colormap(0)


def test_data_and_inference_share_one_implementation():
    assert data.label_colormap is label_colormap
    assert inference.default_palette is label_colormap


def test_inference_does_not_import_the_data_stack():
    code = (
        "import sys, pixelseg.inference; "
        "print(sorted(m for m in ('pixelseg.data', 'albumentations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
