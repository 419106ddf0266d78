"""Device, precision and memory-format choices, resolved once per run.

``auto`` means: CUDA when present with bf16 autocast (fp16 plus a gradient scaler where
bf16 is unsupported) and channels-last tensors; plain fp32 on CPU. ``bf16_if_native`` is
bf16 autocast wherever the device computes bf16 in hardware (CUDA with bf16; CPUs with
AVX512-BF16 or AMX, where oneDNN's bf16 convolutions train about twice as fast as fp32) and
fp32 elsewhere (a CPU without them converts bf16 in software, which gains nothing). It is
opt-in, not ``auto``, so that a config's numbers on CPU change only where a recipe was
measured with it. Every path can be forced on CPU too (``train.amp=bf16``), which is how
the tests exercise it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pixelseg.config import TrainConfig
from pixelseg.errors import ConfigError

__all__ = [
    "Runtime",
    "autocast_context",
    "cpu_has_native_bf16",
    "make_grad_scaler",
    "model_layout",
    "move_to_device",
    "resolve_device",
    "resolve_runtime",
]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: no autocast
    memory_format: torch.memory_format


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; otherwise the named device, checked.

    A CUDA index is checked here because torch only fails on first use, deep in a run and
    with an error that does not name the setting.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a device (use auto, cpu, cuda, cuda:0)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for CUDA but no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            valid = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ConfigError(
                f"device {name!r}: there is no CUDA device {device.index}, only {count} CUDA "
                f"device{'s' if count != 1 else ''} (use {valid})"
            )
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX tiles).

    torch's own probes are private; a torch without them counts as no hardware support.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_runtime(config: TrainConfig) -> Runtime:
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    if config.amp == "auto":
        amp = (
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        )
    elif config.amp == "bf16_if_native":
        native = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
        amp = torch.bfloat16 if native else None
    else:
        amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and cuda)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return Runtime(device=device, amp_dtype=amp, memory_format=memory_format)


def autocast_context(runtime: Runtime):
    """Autocast for the runtime's device and dtype, or a no-op context."""
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.amp_dtype)


def make_grad_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    enabled = runtime.amp_dtype == torch.float16
    return torch.amp.GradScaler(runtime.device.type, enabled=enabled)


def model_layout(model: nn.Module, runtime: Runtime) -> torch.memory_format:
    """Channels-last for 2-D convolutions, its 3-D form for a model with 5-D weights only
    (a model mixing both ranks keeps the default layout: neither form fits all its weights)."""
    ranks = {p.dim() for p in model.parameters()} & {4, 5}
    if ranks == {5}:
        return torch.channels_last_3d
    return runtime.memory_format if ranks == {4} else torch.contiguous_format


def move_to_device(
    batch: Any,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Any:
    """Move a batch (tensors in dicts, lists and tuples, at any depth) to ``device``.

    Float images take the run's memory layout where it is valid: channels-last for 4-D,
    channels-last-3d for 5-D, nothing for other ranks.
    """
    if isinstance(batch, torch.Tensor):
        value = batch.to(device, non_blocking=True)
        if memory_format is not torch.contiguous_format and value.is_floating_point():
            if value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            elif value.dim() == 5:
                value = value.contiguous(memory_format=torch.channels_last_3d)
        return value
    if isinstance(batch, dict):
        return {key: move_to_device(value, device, memory_format) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(value, device, memory_format) for value in batch)
    return batch
