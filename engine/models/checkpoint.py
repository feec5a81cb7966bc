"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True.

A checkpoint holds model, optimizer, scheduler and scaler state, the epoch and step reached, the
config, class names, arch and the best score so far (torchvision references' layout). Loading never
unpickles code: a malicious pickle is refused by `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..faults import fault_point


class CheckpointError(ValueError):
    pass


def save_checkpoint(obj: dict, path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never a torn file. A write
    error (disk full) removes the temporary file and re-raises; the old checkpoint is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("checkpoint")
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, RuntimeError) and _looks_like_full_disk(exc, path):
            # torch's zip writer reports a full disk as "PytorchStreamWriter failed ... unexpected pos"
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path} "
                                        f"({_free(path)} free)") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown space"


def _looks_like_full_disk(exc: BaseException, path: Path) -> bool:
    text = str(exc)
    if isinstance(exc.__cause__ or exc.__context__, OSError) and \
            getattr(exc.__cause__ or exc.__context__, "errno", None) == errno.ENOSPC:
        return True
    if "unexpected pos" not in text and "PytorchStreamWriter" not in text and "file write failed" not in text:
        return False
    try:
        return shutil.disk_usage(path.parent).free < 64 * 2**20
    except OSError:
        return True


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint dict with weights_only=True; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, RuntimeError for torn files
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this project (no 'model' entry)")
    return obj
