"""torchxrayvision's chest X-ray DenseNet-121s (Cohen et al., MIDL 2022) as a starting point
(`--init xrv:NAME`) and as a baseline (`evaluate --model xrv:NAME`).

Their conventions differ from the engine's: one input channel, pixels scaled to [-1024, 1024], 224
px. The engine keeps its own preprocessing (grayscale replicated to 3 channels, ImageNet-normalised)
and maps the network into its DenseNet-121 with a fixed first layer, `XrvScale`, that turns that
input back into torchxrayvision's single channel in [-1024, 1024] (exactly: the three channels
are replicas). The conversion is part of the model, so training, evaluation, CAM, the landscape,
Diagnose and an ONNX export all see torchxrayvision's input without a second preprocessing path.

The weights file holds a pickled module. It is read with `torch.load(weights_only=True)` and an
allow-list of the module classes such files hold; a file that needs anything else is refused,
naming it. Offline, a missing file is refused before a run is recorded, naming the file, the folder
torchxrayvision caches into and the URL.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


PREFIX = "xrv:"
NAMES = ("densenet121-res224-all", "densenet121-res224-nih", "densenet121-res224-chex", "densenet121-res224-mimic_ch",
         "densenet121-res224-mimic_nb", "densenet121-res224-pc", "densenet121-res224-rsna")
# where the weights are looked for (default: torchxrayvision's ~/.torchxrayvision/models_data)
ENV_XRV_DIR = "CXR_XRV_DIR"
STEM = "body.features.conv0.0."  # the keys of XrvScale in a run's state dict


class XrvUnavailable(FileNotFoundError):
    """torchxrayvision or its weights are not here; the message says what to install or place where."""


def is_xrv(init: str | None) -> bool:
    return isinstance(init, str) and init.startswith(PREFIX)


def xrv_name(init: str) -> str:
    """"xrv:densenet121-res224-all" -> "densenet121-res224-all"; ValueError naming the choices."""
    name = init[len(PREFIX):] if is_xrv(init) else init
    if name not in NAMES:
        raise ValueError(f"unknown torchxrayvision weights {name!r}; available: {', '.join(PREFIX + n for n in NAMES)}")
    return name


def _library():
    try:
        import torchxrayvision  # seconds (scikit-image): only when an xrv model is asked for
    except ImportError as exc:
        raise XrvUnavailable(f"torchxrayvision is not installed ({exc}): pip install torchxrayvision") from exc
    return torchxrayvision


def cache_dir() -> Path:
    """The folder torchxrayvision's weights are read from: $CXR_XRV_DIR, else the library's own."""
    env = os.environ.get(ENV_XRV_DIR)
    return Path(env) if env else Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def weights_url(name: str) -> str:
    return _library().models.model_urls[xrv_name(name)]["weights_url"]


def weights_file(name: str) -> Path:
    return cache_dir() / os.path.basename(weights_url(name))


def labels(name: str) -> list[str]:
    """The classes the weights predict, in their output order ("" for an output they do not train)."""
    return list(_library().models.model_urls[xrv_name(name)]["labels"])


def weights_missing(name: str, fetch: bool = True) -> str | None:
    """None when the weights file is here (downloaded now when fetch is set and the network allows);
    else what to do, naming the file, the folder and the URL."""
    try:
        target, url = weights_file(name), weights_url(name)
    except XrvUnavailable as exc:
        return str(exc)
    if target.is_file():
        return None
    if fetch:
        try:  # the library downloads to a .part file and renames it when complete; it reports on stdout
            with contextlib.redirect_stdout(sys.stderr):
                _library().models.get_weights(xrv_name(name), cache_dir=str(target.parent))
            if target.is_file():
                return None
        except Exception:  # noqa: BLE001 - requests' errors, OSError: offline; the message below says what to do
            pass
    return (f"the torchxrayvision weights {PREFIX}{xrv_name(name)} are not here and cannot be downloaded: place "
            f"{target.name} in {target.parent} (download {url})")


def _allowed_globals() -> list:
    from torch import nn

    xrv = _library()
    m = xrv.models
    return [m.DenseNet, m._DenseBlock, m._DenseLayer, m._Transition, nn.Sequential, nn.Conv2d, nn.BatchNorm2d,
            nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Dropout, nn.Identity]


def load_state(name: str) -> dict:
    """The weights' state dict, read without running code from the file (weights_only=True with the
    allow-list above); XrvUnavailable when missing, ValueError naming what else the file needs."""
    import torch
    from torch import nn
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    missing = weights_missing(name, fetch=False)
    if missing:
        raise XrvUnavailable(missing)
    path = weights_file(name)
    allowed = _allowed_globals()
    known = {f"{g.__module__}.{g.__qualname__}" for g in allowed}
    try:  # a malformed pickle (protocol-0 INST/PERSID opcodes, a torn file) is refused in one line; no code runs
        extra = [g for g in get_unsafe_globals_in_checkpoint(str(path)) if g not in known]
        if not extra:
            with safe_globals(allowed):
                saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError and ValueError (not a zip), EOFError
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ValueError(f"{path} cannot be read as torchxrayvision weights ({exc.__class__.__name__}: {first}): "
                         "refused; download it again") from None
    if extra:
        raise ValueError(f"{path} needs {', '.join(extra[:5])} to load, which a torchxrayvision weights file does "
                         "not hold: refused (it would run code from the file)")
    state = saved.state_dict() if isinstance(saved, nn.Module) else saved
    return {k: v for k, v in state.items() if k != "op_threshs"}
