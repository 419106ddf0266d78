"""Every model in ``models.available()`` exports to ONNX and passes the parity check
(dynamic batch, height and width). A model added to the factory is exported here too,
with its defaults unless TINY makes it smaller."""

from __future__ import annotations

import pytest

from pixelseg import models
from pixelseg.export import export_checkpoint, onnx_session

from .conftest import untrained_checkpoint

#: Small variants so that each export takes seconds.
TINY = {
    "fcn32s": {"encoder": "resnet18", "fc_channels": 16},
    "fcn16s": {"encoder": "resnet18", "fc_channels": 16},
    "fcn8s": {"encoder": "resnet18", "fc_channels": 16},
    "unet": {"base_channels": 4},
    "unetpp": {"base_channels": 4, "deep_supervision": True},
    "deeplabv3plus": {"encoder": "resnet18", "aspp_channels": 16, "low_level_channels": 8},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(models.available()))
def test_every_model_exports_with_parity(name, tmp_path):
    options = dict(TINY.get(name, {}))
    encoder = options.pop("encoder", None)
    checkpoint = untrained_checkpoint(tmp_path / f"{name}.pt", name, encoder=encoder, **options)
    result = export_checkpoint(checkpoint, tmp_path / f"{name}.onnx")
    assert result.max_abs_diff <= result.tolerance
    assert len(result.shapes) == 3 and {shape[0] for shape in result.shapes} == {1, 3}
    (graph_input,) = onnx_session(result.model_path).get_inputs()
    assert [isinstance(dim, str) for dim in graph_input.shape] == [True, False, True, True]
