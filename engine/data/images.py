"""Reading chest X-ray files that survive real collections.

Files are opened by content, never by extension (the COVID-19 collection has PNG data in `.jpg`
files). Every mode (L, RGB, RGBA, P, CMYK, I;16, I, F) and DICOM (MONOCHROME1 inverted, VOI LUT
applied) becomes one 8-bit grayscale array; `to_rgb` replicates it to three channels.
"""
from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Largest image we agree to decode (pixels). NIH originals are 1024x1024 and the biggest COVID
# files about 5000x4000; anything far beyond is a decompression bomb, refused before decoding.
MAX_PIXELS = 60_000_000
MAX_SIDE = 16_384            # per side: a 70000x10 strip is under the pixel limit but breaks image encoders
MAX_DICOM_BYTES = 256 * 1024 * 1024  # a DICOM's inflated dataset and its declared pixel data, at most
INFLATE_CHUNK = 1 << 20  # the inflation guard's step
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
    _dicom_inflation_guard(path, data)
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageReadError(path, f"invalid DICOM ({exc.__class__.__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    rows, cols = int(getattr(header, "Rows", 0)), int(getattr(header, "Columns", 0))
    frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    bits, samples = int(getattr(header, "BitsAllocated", 8) or 8), int(getattr(header, "SamplesPerPixel", 1) or 1)
    if rows * cols > MAX_PIXELS or max(rows, cols) > MAX_SIDE:
        raise ImageReadError(path, f"DICOM of {cols}x{rows} pixels exceeds the limits ({MAX_PIXELS} pixels, "
                                   f"{MAX_SIDE} per side)")
    declared = rows * cols * frames * samples * -(-bits // 8)
    if declared > MAX_DICOM_BYTES:
        raise ImageReadError(path, f"DICOM declares {frames} frame(s) of {cols}x{rows}x{bits} bits "
                                   f"({declared / 2**20:.0f} MiB), over the {MAX_DICOM_BYTES // 2**20} MiB limit")
    try:
        arr = _first_frame(ds, frames)
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


def _dicom_inflation_guard(path: str, data: bytes) -> None:
    """A deflated DICOM is inflated whole by pydicom: inflate it here first, bounded, and refuse one
    that grows past MAX_DICOM_BYTES (a 400 KB file can hold 400 MB of zeros)."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:
        return  # no readable file meta: dcmread reports the file
    if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[fp.tell():], 0
    try:
        while pending and not inflater.eof:  # counted 1 MiB at a time and thrown away: no memory held
            total += len(inflater.decompress(pending, INFLATE_CHUNK))
            if total > MAX_DICOM_BYTES:
                raise ImageReadError(path, f"deflated DICOM of {len(data)} bytes inflates past the "
                                           f"{MAX_DICOM_BYTES // 2**20} MiB limit")
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ImageReadError(path, f"deflated DICOM is corrupt ({exc})") from exc


def _first_frame(ds, frames: int) -> np.ndarray:
    """The pixel array of the first frame only (a 200-frame file is not decoded whole)."""
    if frames > 1:
        try:
            from pydicom.pixels import pixel_array

            return pixel_array(ds, index=0)
        except (ImportError, TypeError):  # pydicom < 3
            pass
    return ds.pixel_array


def _decode_pil(source, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(name,
                                         f"{w}x{h} pixels exceeds the {MAX_PIXELS} pixel limit (decompression bomb?)")
                if max(w, h) > MAX_SIDE:
                    raise ImageReadError(name, f"{w}x{h} pixels: a side over {MAX_SIDE} is no radiograph")
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


DISPLAY_SIDE = 1024  # the longest side an upload is kept at for display, maps and the model


def decode_upload(data: bytes, name: str, side: int = DISPLAY_SIDE) -> tuple[np.ndarray, tuple[int, int], float]:
    """An uploaded file as (grayscale image whose longest side is at most `side`, original (width,
    height), colour score). The full-size pixels live only while decoding (bounded by MAX_PIXELS),
    so every later step (model, CAM, overlay, display) works on at most side x side pixels."""
    gray = decode_xray(data, name)
    h, w = gray.shape
    score = colour_score(data)
    if max(h, w) > side:
        import cv2

        scale = side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray), (w, h), score
