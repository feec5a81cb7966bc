"""Reading chest X-ray files that survive real collections.

Files are opened by content, never by extension (the COVID-19 collection has PNG data in `.jpg`
files). Every mode (L, RGB, RGBA, P, CMYK, I;16, I, F) and DICOM (MONOCHROME1 inverted, VOI LUT
applied) becomes one 8-bit grayscale array; `to_rgb` replicates it to three channels.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# Largest image we agree to decode (pixels). NIH originals are 1024x1024 and the biggest COVID
# files about 5000x4000; anything far beyond is a decompression bomb, refused before decoding.
MAX_PIXELS = 60_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024

_DICOM_MAGIC_OFFSET = 128


class ImageReadError(ValueError):
    """A file that cannot be read as an X-ray. The message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def is_dicom(head: bytes) -> bool:
    return len(head) >= _DICOM_MAGIC_OFFSET + 4 and head[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max window a high bit depth array into 0..255 (constant images become 0)."""
    arr = arr.astype(np.float64, copy=False)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip((arr - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _pil_to_gray(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_uint8(np.asarray(img))
    if mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.uint8)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode == "1":
        img = img.convert("L")
        return np.asarray(img, dtype=np.uint8)
    if img.mode == "RGBA":
        img = img.convert("RGB")  # X-rays store no meaning in alpha; NIH's few RGBA files are opaque
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _read_dicom(path: str, data: bytes) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is in requirements.txt
        raise ImageReadError(path, "DICOM file but pydicom is not installed") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageReadError(path, f"invalid DICOM ({exc.__class__.__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    rows, cols = int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageReadError(path, f"DICOM of {cols}x{rows} pixels exceeds the {MAX_PIXELS} pixel limit")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded ({exc.__class__.__name__}: {exc})") from exc
    try:
        from pydicom.pixels import apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_voi_lut
    try:
        arr = apply_voi_lut(arr, ds)
    except Exception:
        pass  # no usable VOI LUT / window: fall back to the full range
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour DICOM (secondary capture)
        arr = arr[..., :3].mean(axis=-1)
    elif arr.ndim == 3:  # multi-frame: first frame
        arr = arr[0]
    if arr.ndim != 2:
        raise ImageReadError(path, f"DICOM pixel array has unsupported shape {arr.shape}")
    gray = _scale_to_uint8(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _decode_pil(source, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(name, f"{w}x{h} pixels exceeds the {MAX_PIXELS} pixel limit (decompression bomb?)")
                img.load()  # force a full decode: truncated files fail here, not later in a worker
                gray = _pil_to_gray(img)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(name, f"decompression bomb refused ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(name, "not an image file (unrecognised content)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(name, f"corrupt or truncated image ({exc})") from exc
    if gray.ndim != 2 or gray.size == 0:
        raise ImageReadError(name, f"unexpected decoded shape {gray.shape}")
    return np.ascontiguousarray(gray)


def decode_xray(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes (PNG, JPEG, TIFF, BMP, DICOM...) into a grayscale uint8 array (H, W)."""
    if len(data) == 0:
        raise ImageReadError(name, "file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(name, f"file is {len(data)} bytes, over the {MAX_FILE_BYTES} byte limit")
    if is_dicom(data[: _DICOM_MAGIC_OFFSET + 4]):
        return _read_dicom(name, data)
    return _decode_pil(io.BytesIO(data), name)


def read_xray(path: str | os.PathLike) -> np.ndarray:
    """Read a file into a grayscale uint8 array (H, W); raises ImageReadError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageReadError(path, "file is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageReadError(path, f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        with open(path, "rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + 4)
            if is_dicom(head):
                return _read_dicom(str(path), head + fh.read())
            fh.seek(0)
            return _decode_pil(fh, str(path))
    except ImageReadError:
        raise
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc


def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale uint8 image to (size, size) with area interpolation (OpenCV)."""
    import cv2

    if gray.shape == (size, size):
        return gray
    interp = cv2.INTER_AREA if min(gray.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate a grayscale (H, W) image to (H, W, 3)."""
    return np.repeat(gray[..., None], 3, axis=-1)


def colour_score(data: bytes) -> float:
    """Mean absolute difference between colour channels (0 for a gray image, 255 max), measured on a
    128 px thumbnail. X-rays score near 0; photographs of scenes score far higher."""
    if is_dicom(data[: _DICOM_MAGIC_OFFSET + 4]):
        return 0.0
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
                return 0.0
            img.draft("RGB", (128, 128))
            rgb = np.asarray(img.convert("RGB").resize((128, 128)), dtype=np.int16)
    except Exception:
        return 0.0
    return float((np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).mean() / 2)


COLOUR_LIMIT = 12.0  # above this, an upload is almost surely a colour photo, not a radiograph
