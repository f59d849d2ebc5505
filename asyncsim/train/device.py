"""Device choice: ``auto`` (CUDA when ``torch.cuda.is_available()``), ``cpu`` or ``cuda[:i]``."""

from __future__ import annotations

from ..errors import InputError


def resolve_device(device="auto"):
    """A ``torch.device`` for ``device``; asking for CUDA without one is an :class:`InputError`."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but torch.cuda.is_available() is False")
        return torch.device(name)
    raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")


def resolve_dtype(dtype, default):
    """``torch.float32``/``float64`` from a torch dtype, a name ('float32', 'float64') or None."""
    import torch

    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    names = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
             "float64": torch.float64, "double": torch.float64, "fp64": torch.float64}
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}") from None
