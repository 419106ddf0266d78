"""Encoders run torchvision's modules unchanged: same classes, same state dict, same numbers.

pixelseg's only BatchNorm folding is ConvBNReLU's explicit eval-mode ``forward``
(tests/models/test_models_base.py); torchvision's Conv2d/BatchNorm2d keep their own classes,
so exact-type matching (FX, quantisation) sees them as they are.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from torch import nn

from pixelseg.models import available_encoders, build_encoder

# (key count, sha256 prefix of the sorted state-dict keys) of every encoder as checkpoints
# written before the class-swapping fold was removed have them; old checkpoints must load.
STATE_DICT_KEYS = {
    "resnet18": (120, "ab46e8330b5d54f4"),
    "resnet34": (216, "6724cd72cb3d8bb8"),
    "resnet50": (318, "399a1207491d79e8"),
    "resnet101": (624, "cdcbaafc0943929f"),
    "vgg16": (26, "774b7ca757da11ee"),
    "vgg16_bn": (91, "e3776d423c4f2bb0"),
    "mobilenet_v3_large": (308, "5b65d146efe2ce90"),
}
HEADS = {"resnet": "fc.", "vgg": "classifier.", "mobilenet": "classifier."}


def _head(name: str) -> str:
    return next(head for prefix, head in HEADS.items() if name.startswith(prefix))


def _randomise_batchnorm(module: nn.Module) -> None:
    """Non-trivial statistics and affine maps, so any change to BatchNorm shows in the output."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def test_every_encoder_is_covered():
    assert set(STATE_DICT_KEYS) == set(available_encoders())


@pytest.mark.parametrize("name", sorted(STATE_DICT_KEYS))
def test_state_dict_keys_are_unchanged_and_torchvision_s(name):
    keys = sorted(build_encoder(name, 3, None, 32).state_dict())
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    assert (len(keys), digest) == STATE_DICT_KEYS[name]
    reference = getattr(torchvision.models, name)().state_dict()
    assert set(keys) == {k for k in reference if not k.startswith(_head(name))}


@pytest.mark.parametrize("name", sorted(STATE_DICT_KEYS))
def test_no_module_changes_class_and_fx_sees_every_batchnorm(name):
    encoder = build_encoder(name, 3, None, 32).eval()
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    assert all(type(m) is nn.BatchNorm2d for m in norms)
    traced = torch.fx.symbolic_trace(encoder)
    called = [
        node.target
        for node in traced.graph.nodes
        if node.op == "call_module" and type(traced.get_submodule(node.target)) is nn.BatchNorm2d
    ]
    assert len(called) == len(norms)


def _torchvision_features(name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The deepest encoder feature computed by torchvision's own model."""
    if name.startswith("resnet"):
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return net.features(x)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v3_large"])
def test_eval_output_equals_torchvision_s_conv_then_batchnorm(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, 3, None, 32).eval()
    _randomise_batchnorm(encoder)
    reference = getattr(torchvision.models, name)().eval()
    missing = reference.load_state_dict(encoder.state_dict(), strict=False).missing_keys
    assert all(key.startswith(_head(name)) for key in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x)[-1], _torchvision_features(name, reference, x))
