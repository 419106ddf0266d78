"""as_predictor / extract_logits: any model output becomes float32 logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.inference import as_predictor, extract_logits, sliding_window_predict


class DictModel(nn.Module):
    """Returns torchvision-style ``{"out": logits, "aux": ...}``; dropout shows train mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.drop = nn.Dropout(0.9)

    def forward(self, x):
        out = self.drop(self.conv(x))
        return {"out": out, "aux": out * 0}


def test_dict_output_eval_mode_and_no_grad():
    model = DictModel().train()
    predictor = as_predictor(model)
    x = torch.randn(2, 3, 5, 6)
    out = predictor(x)
    assert not model.training
    assert not out.requires_grad
    expected = model.conv(x).detach()  # eval: dropout is the identity
    torch.testing.assert_close(out, expected)
    # The wrapped model works with the sliding window.
    torch.testing.assert_close(
        sliding_window_predict(predictor, x, (4, 4)), expected, atol=1e-5, rtol=0
    )


def test_extract_logits_variants():
    t = torch.ones(1, 2, 3, 3)
    assert extract_logits(t) is t
    assert extract_logits([t * 0, t]) is t  # deep supervision: last is full resolution
    assert extract_logits({"logits": t}, key="logits") is t
    with pytest.raises(InvalidInputError, match="'out'"):
        extract_logits({"logits": t})
    with pytest.raises(InvalidInputError, match="str"):
        extract_logits("nope")


def test_amp_on_cpu_returns_float32_close_to_fp32():
    model = nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    full = as_predictor(model)(x)
    mixed = as_predictor(model, amp=True)(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, atol=5e-2, rtol=5e-2)  # bfloat16 has ~3 digits


def test_parameter_free_model_defaults_to_cpu():
    out = as_predictor(nn.Identity())(torch.ones(1, 2, 2, 2, dtype=torch.float64))
    assert out.dtype == torch.float32 and out.device.type == "cpu"
