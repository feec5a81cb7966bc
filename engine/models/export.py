"""A run's model out of the lab: ONNX with a dynamic batch size and a JSON sidecar that says how to
feed it (input size, channels, normalisation), what it returns (class names, sigmoid probabilities)
and where it came from (run, data fingerprint, code version).

The export is checked as it is written: onnxruntime scores a random batch of another size than
the one traced and the largest difference from PyTorch is recorded in the sidecar; above 1e-4 the
export is refused. Files are written to temporary names and renamed.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from ..constants import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("onnx",)
TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| probability accepted
OPSET = 18


class ExportError(ValueError):
    pass


def _probabilities(model):
    import torch

    class Probabilities(torch.nn.Module):
        """The run's network with its sigmoid: one probability per class, as the lab reports them."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return torch.sigmoid(self.net(image))

    return Probabilities(model).eval()


def sidecar(row, loaded, onnx_name: str, check: dict) -> dict:
    cfg = row.config
    xrv_stem = any(k.startswith("body.features.conv0.0.") for k in loaded.model.state_dict())
    return {
        "format": "onnx", "file": onnx_name, "opset": OPSET, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime()),
        "input": {"name": "image", "shape": ["batch", 3, loaded.image_size, loaded.image_size], "dtype": "float32",
                  "channels": 3, "channel_note": "an 8-bit grayscale X-ray replicated to 3 identical channels",
                  "preprocessing": [f"decode to 8-bit grayscale; resize to {loaded.load_size}x{loaded.load_size}, then "
                                    f"to {loaded.image_size}x{loaded.image_size} (area interpolation when shrinking)",
                                    "x = (pixel / 255 - mean[c]) / std[c] per channel c"],
                  "normalisation": {"scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
                  "first_layer": ("converts this input to torchxrayvision's single channel in [-1024, 1024] itself"
                                  if xrv_stem else "a standard convolution")},
        "output": {"name": "probabilities", "shape": ["batch", len(loaded.class_names)], "activation": "sigmoid",
                   "class_names": loaded.class_names},
        "run": {"name": row.name, "preset": row.preset, "task": cfg.get("data", {}).get("task"), "arch": loaded.arch,
                "init": cfg.get("model", {}).get("init"), "best_epoch": loaded.epoch, "status": row.status,
                "data_fingerprint": row.data_fingerprint, "code_version": row.code_version, "test_auc": row.test_auc},
        "check": check,
        "intended_use": "research on chest X-ray transfer learning; not a medical device",
    }


def export_onnx(reg, run: str, out: Path | None = None) -> dict:
    """Write `run`'s best model as ONNX (dynamic batch) and its sidecar into `out` (default
    checkpoints/<run>/export/); returns the paths and the check."""
    import torch

    from ..explain.inference import LoadedModel
    from ..runs.folder import check_out, write_json

    row = reg.require(run)
    folder = reg.folder(run)
    if not folder.has_checkpoint():
        raise ExportError(f"{run} has no checkpoint to export yet (status {row.status})")
    loaded = LoadedModel(folder.best_checkpoint(), device="cpu")
    model = _probabilities(loaded.model)
    if out is not None:
        check_out(Path(out), folder=True)
    out = Path(out) if out else folder.export_dir
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{run}.onnx"
    tmp = out / f".{run}.onnx.partial"
    size = loaded.image_size
    try:
        # the exporter reports on stdout; --json stays clean
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            torch.onnx.export(model, (torch.zeros(2, 3, size, size),), str(tmp), input_names=["image"],
                              output_names=["probabilities"], opset_version=OPSET, dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False)
        check = _check(tmp, model, size)
        if check["max_abs_diff"] > TOLERANCE:
            raise ExportError(f"the ONNX model differs from PyTorch by {check['max_abs_diff']:.2e} (more than "
                              f"{TOLERANCE:g}) on {check['images']} images: not written")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    meta = out / f"{run}.onnx.json"
    write_json(meta, sidecar(row, loaded, target.name, check))
    return {"run": run, "onnx": str(target), "sidecar": str(meta), "bytes": target.stat().st_size, **check}


def _check(path: Path, model, size: int) -> dict:
    """onnxruntime vs PyTorch on 5 random images (a batch size other than the traced one)."""
    import numpy as np
    import torch

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"onnxruntime is not installed ({exc}): pip install onnxruntime") from exc
    x = np.random.default_rng(0).normal(size=(5, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return {"images": 5, "max_abs_diff": float(np.abs(got - want).max()), "onnxruntime": ort.__version__,
            "torch": torch.__version__}


def read_sidecar(path) -> dict:
    return json.loads(Path(path).read_text())
