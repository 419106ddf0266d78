"""Models that map a tensor to logits (semantic images, volumes): the dynamo export with
every axis but the channels dynamic, and the logit parity check against PyTorch.

The graph is captured by torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``),
which translates the antialiased resize of ``input_scale`` models through onnxscript (the
TorchScript exporter rejects it). Padding to a size multiple and the crop back happen inside
the model, so the graph is captured on an unaligned sample whose dynamic sizes are all
different (sizes 0 and 1 and repeated sizes would be specialised into the graph).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelseg.errors import ExportError, InvalidInputError
from pixelseg.export.deps import import_deploy
from pixelseg.inference import extract_logits

__all__ = [
    "LogitsModule",
    "check_logits",
    "distinct_sizes",
    "export_dynamic",
    "logits_parity",
]

log = logging.getLogger(__name__)


class LogitsModule(nn.Module):
    """``inputs [B, C, *spatial] -> logits [B, K, *spatial]``: the model with its output
    reduced to the logits tensor (deep-supervision lists and dicts have one graph output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        return extract_logits(self.model(inputs))


def distinct_sizes(starts: list[int], multiples: list[int], taken: set[int]) -> list[int]:
    """One sample size per spatial axis for the export: at least its start, not a multiple of
    the axis's size multiple (so the padding is captured as a general pad), and different
    from every other dynamic size and from ``taken`` (the batch and channel counts)."""
    sizes = []
    used = set(taken) | {0, 1}
    for start, multiple in zip(starts, multiples, strict=True):
        side = start
        while side in used or (multiple > 1 and side % multiple == 0):
            side += 1
        used.add(side)
        sizes.append(side)
    return sizes


def export_dynamic(
    module: nn.Module, path: Path, sample: Tensor, names: tuple[str, str], opset: int
) -> None:
    """Write ``module`` (``inputs -> logits``) as an ONNX file whose every input axis but the
    channels (axis 1) is dynamic; weights inside the file, no external data.
    ``names``: the graph's input and output names."""
    import_deploy("onnxscript")
    import_deploy("onnx")
    dynamic = torch.export.Dim.DYNAMIC
    axes = {axis: dynamic for axis in range(sample.ndim) if axis != 1}
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), torch.no_grad():
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=True,
                input_names=[names[0]],
                output_names=[names[1]],
                dynamic_shapes=(axes,),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except InvalidInputError:
        raise
    except Exception as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: {first}") from None
    finally:
        log.debug("torch.onnx.export said: %s", chatter.getvalue())


def logits_parity(
    module: nn.Module,
    session: Any,
    shapes: list[list[int]],
    names: tuple[str, str],
    seed: int = 0,
) -> list[float]:
    """Max absolute logit difference per shape, onnxruntime against ``module``, on seeded
    N(0, 1) inputs."""
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for shape in shapes:
        inputs = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = module(inputs).float()
        got = torch.from_numpy(session.run([names[1]], {names[0]: inputs.numpy()})[0])
        if got.shape != expected.shape:
            raise ExportError(
                f"parity check: the ONNX model returned logits {list(got.shape)} for input "
                f"{shape}; PyTorch returned {list(expected.shape)}"
            )
        diffs.append(float((got - expected).abs().max()))
    return diffs


def check_logits(
    module: nn.Module,
    path: Path,
    shapes: list[list[int]],
    names: tuple[str, str],
    tolerance: float,
    where: str,
) -> tuple[list[float], dict[str, Any]]:
    """Run the parity check of the graph at ``path``; ``(differences per shape, the
    sidecar's parity entry)``, or :class:`ExportError` naming the worst shape when its
    difference exceeds ``tolerance``."""
    from pixelseg.export.runtime import onnx_session

    diffs = logits_parity(module, onnx_session(path), shapes, names)
    # NaN compares false with everything: it must fail the check, and be the one named.
    worst = max(range(len(diffs)), key=lambda i: (math.isnan(diffs[i]), diffs[i]))
    if not all(d <= tolerance for d in diffs):
        raise ExportError(
            f"export of {where} failed its parity check: max |logit difference| "
            f"{diffs[worst]:.3g} (onnxruntime vs PyTorch, input {shapes[worst]}) exceeds "
            f"the tolerance {tolerance:g}; nothing was written"
        )
    parity = {
        "tolerance": tolerance,
        "max_abs_diff": max(diffs),
        "shapes": shapes,
        "max_abs_diff_per_shape": diffs,
    }
    return diffs, parity
