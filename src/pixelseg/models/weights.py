"""Local torchvision state dicts into pixelseg's backbones (nothing downloads).

Encoders of semantic models (``model.encoder_weights``) and detector backbones
(``backbone_weights``) read the same files, a torchvision classification model's
``state_dict()``, with the same checks: ``weights_only`` loading (a file cannot run code)
and a strict key and shape match apart from the classifier head, each failure a
:class:`CheckpointError` naming the option, the file and the first bad keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pixelseg.errors import CheckpointError

__all__ = ["load_matching", "read_state_dict"]


def read_state_dict(path: str | Path, option: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save(model.state_dict(), path)`` file; ``option`` is the
    config key that named it, for the error messages."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{option} file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"could not read {option} file {str(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{option} file {str(path)!r} is not a state dict (name -> tensor); save it "
            "with torch.save(torchvision_model.state_dict(), path)"
        )
    return state


def _listed(label: str, keys: list[str]) -> str:
    return f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"


def load_matching(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: str | Path,
    *,
    option: str,
    model_name: str,
    head: str,
    drop_suffixes: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``module``, every key but the classifier's (under ``head``) and
    those ending in ``drop_suffixes`` (e.g. BatchNorm statistics a GroupNorm model has no
    use for) required to match in name and shape."""
    state = {
        k: v for k, v in state.items() if not k.startswith(head) and not k.endswith(drop_suffixes)
    }
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(head)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            _listed(label, keys)
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise CheckpointError(
            f"{option} file {str(path)!r} does not match torchvision {model_name!r} "
            f"({'; '.join(problems)})"
        )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
