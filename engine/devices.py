"""The compute device: CUDA when present, CPU otherwise."""
from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu" / "cuda" / "cuda:N" are honoured or refused."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def describe_device() -> str:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
        return f"CUDA: {n} GPU(s): {names}"
    return f"CPU only ({torch.get_num_threads()} threads); training uses the CPU"


def check_device(device: str) -> None:
    """Refuse, before a run is recorded, a CUDA device this machine does not have."""
    if not device.startswith("cuda"):
        return
    from .config import ConfigError

    if not torch.cuda.is_available():
        raise ConfigError("device", device, "CUDA is not available on this machine; use auto or cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError("device", device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
