"""Turn a model into a predictor: the plain ``Tensor -> logits Tensor`` callable inference uses.

Models differ in what ``forward`` returns (a tensor; torchvision's ``{"out": ..., "aux": ...}``;
a list of deep-supervision outputs in training mode). :func:`as_predictor` hides that, moves
inputs to the model's device, and can run under autocast, so sliding windows and TTA only ever
see ``[N, C_in, *spatial] -> [N, K, *spatial]`` float32 logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pixelseg.errors import InvalidInputError
from pixelseg.inference.sliding_window import Predictor

__all__ = ["as_predictor", "extract_logits"]


def extract_logits(output: object, key: str = "out") -> Tensor:
    """The logits tensor from a model output: a tensor, ``output[key]``, or the last of a list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if key not in output:
            raise InvalidInputError(
                f"model returned a dict without key {key!r}; keys: {sorted(map(str, output))}"
            )
        return extract_logits(output[key], key)
    if isinstance(output, (list, tuple)) and output:
        # Deep supervision lists end with the full-resolution head.
        return extract_logits(output[-1], key)
    raise InvalidInputError(
        f"cannot find logits in a model output of type {type(output).__name__}; expected a "
        f"Tensor, a dict with {key!r}, or a non-empty list/tuple of Tensors"
    )


def as_predictor(
    model: nn.Module,
    *,
    device: torch.device | str | None = None,
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    output_key: str = "out",
) -> Predictor:
    """Wrap ``model`` as a predictor ``images [N, C, *spatial] -> float32 logits [N, K, *spatial]``.

    The model is put in eval mode. Inputs are moved to ``device`` (default: the device of the
    model's first parameter, CPU for parameter-free modules) and the logits come back on that
    device. With ``amp`` the forward pass runs under ``torch.autocast`` for that device type
    (float16 on CUDA, bfloat16 on CPU unless ``amp_dtype`` says otherwise); the logits are
    cast back to float32 so blending and averaging stay accurate.
    """
    model.eval()
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if amp_dtype is None:
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def predict(images: Tensor) -> Tensor:
        images = images.to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            output = model(images)
        logits = extract_logits(output, output_key)
        return logits.float()

    predict.__name__ = f"as_predictor({type(model).__name__})"
    return predict
