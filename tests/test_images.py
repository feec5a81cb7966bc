import io
import zlib
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from engine.data.images import ImageReadError, decode_xray, read_xray


def _png_bytes(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


GRAD = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64x64 horizontal ramp


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1"])
def test_every_8bit_mode_becomes_one_gray_uint8(mode):
    img = Image.fromarray(GRAD, "L").convert(mode)
    gray = decode_xray(_png_bytes(img))
    assert gray.dtype == np.uint8 and gray.shape == (64, 64)
    if mode in ("L", "RGB", "RGBA", "LA"):
        np.testing.assert_array_equal(gray, GRAD)


def test_16bit_png_is_windowed_to_full_range():
    arr = (GRAD.astype(np.uint16) * 16)  # 12-bit data in a 16-bit PNG
    gray = decode_xray(_png_bytes(Image.fromarray(arr)))
    assert Image.open(io.BytesIO(_png_bytes(Image.fromarray(arr)))).mode.startswith("I")
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray[0].astype(int)) >= 0)  # order kept


def test_cmyk_jpeg_decodes():
    img = Image.fromarray(GRAD, "L").convert("CMYK")
    gray = decode_xray(_png_bytes(img, "JPEG"))
    assert gray.shape == (64, 64)


def test_png_data_in_jpg_file_is_opened_by_content(tmp_path):
    p = tmp_path / "scan.jpg"
    p.write_bytes(_png_bytes(Image.fromarray(GRAD, "L")))
    np.testing.assert_array_equal(read_xray(p), GRAD)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is a text file, not an X-ray\n" * 10, "not an image"),
], ids=["zero-bytes", "text-file"])
def test_non_images_raise_naming_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as ei:
        read_xray(p)
    assert str(p) in str(ei.value)


def test_truncated_png_raises(tmp_path):
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8), "L"))
    p = tmp_path / "trunc.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_xray(p)


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="cannot open"):
        read_xray(tmp_path / "nope.png")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageReadError, match="bomb|pixel limit"):
        decode_xray(_png_header_only(50_000, 50_000), "bomb.png")


def _dicom(arr: np.ndarray, photometric="MONOCHROME2", with_pixels=True) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if with_pixels:
        ds.PixelData = arr.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_monochrome2_and_monochrome1_are_inverses():
    arr = GRAD.astype(np.uint16) * 16
    m2 = decode_xray(_dicom(arr, "MONOCHROME2"), "m2.dcm")
    m1 = decode_xray(_dicom(arr, "MONOCHROME1"), "m1.dcm")
    assert m2.shape == (64, 64) and m2.dtype == np.uint8
    assert m2[0, 0] < m2[0, -1]
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_voi_window_is_applied():
    arr = GRAD.astype(np.uint16) * 16
    raw = _dicom(arr)
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.WindowCenter, ds.WindowWidth = 500, 200  # narrow window: most pixels saturate
    buf = io.BytesIO()
    ds.save_as(buf)
    gray = decode_xray(buf.getvalue(), "win.dcm")
    full = decode_xray(raw, "full.dcm")
    assert (gray == 255).sum() > (full == 255).sum() + 500


def test_dicom_without_pixel_data_is_refused():
    with pytest.raises(ImageReadError, match="no pixel data"):
        decode_xray(_dicom(GRAD.astype(np.uint16), with_pixels=False), "empty.dcm")


def _dicom_file(rows, cols, frames, syntax):
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    shape = (frames, rows, cols) if frames > 1 else (rows, cols)
    ds.PixelData = (np.arange(rows * cols * frames, dtype=np.uint16) % 4096).reshape(shape).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_deflated_dicom_is_bounded_before_it_inflates_and_one_frame_is_read(monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    from engine.data import images

    data = _dicom_file(2000, 2000, 1, DeflatedExplicitVRLittleEndian)  # 59 KB on disk, 8 MB inflated
    monkeypatch.setattr(images, "MAX_DICOM_BYTES", 1 << 20)
    with pytest.raises(ImageReadError, match="inflates past the 1 MiB limit"):
        images.decode_xray(data, "deflated.dcm")
    many = _dicom_file(64, 64, 400, ExplicitVRLittleEndian)  # 3.3 MB declared: over the lowered limit
    with pytest.raises(ImageReadError, match="400 frame"):
        images.decode_xray(many, "frames.dcm")
    monkeypatch.setattr(images, "MAX_DICOM_BYTES", 256 << 20)
    assert images.decode_xray(data, "deflated.dcm").shape == (2000, 2000)
    assert images.decode_xray(many, "frames.dcm").shape == (64, 64)  # the first frame only


def test_refusing_a_deflated_dicom_bomb_costs_no_memory():
    """Issue 22: refusing a 387 KB deflated DICOM cost the server 530 MB (it was inflated to the limit)."""
    import io
    import tracemalloc

    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from engine.data import images

    ok = _dicom_file(8, 8, 1, DeflatedExplicitVRLittleEndian)
    fp = io.BytesIO(ok)
    read_preamble(fp, False)
    _read_file_meta_info(fp)  # the file meta group: where the deflated dataset starts
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"".join(packer.compress(b"\x00" * (1 << 20)) for _ in range(400)) + packer.flush()  # 400 MiB inflated
    bomb = ok[:fp.tell()] + body
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="inflates past the 256 MiB limit"):
        images._dicom_inflation_guard("bomb.dcm", bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(bomb) < 1_000_000 and peak < 16 << 20, (len(bomb), peak)  # before: 256 MiB held to refuse it
    import threading  # a stream that ends before the file does (DICOM pads to an even length) ends the count

    for tail in (b"", b"\x00", b"\x00\x00\x00"):
        t = threading.Thread(target=images._dicom_inflation_guard, args=("padded.dcm", ok[:fp.tell()] + zlib.compress(
            b"\x00" * 1000)[2:-4] + tail), daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), f"the count did not stop at the end of the stream (tail {tail!r})"


def test_a_side_over_the_limit_is_refused_though_the_pixel_count_is_small():
    import io

    img = Image.new("L", (70_000, 10))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert len(buf.getvalue()) < 2000
    with pytest.raises(ImageReadError, match="a side over 16384"):
        decode_xray(buf.getvalue(), "strip.png")


def test_an_upload_is_kept_at_display_size_whatever_its_size():
    import io

    from engine.data.images import decode_upload

    img = Image.new("L", (7740, 7740), 40)  # the red-team's 67 KB PNG: 60 MP under the pixel limit
    img.paste(200, (1000, 1000, 6000, 6000))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000
    gray, size, score = decode_upload(buf.getvalue(), "big.png")
    assert gray.shape == (1024, 1024) and size == (7740, 7740) and score == 0.0
    small, size, _ = decode_upload(_png_bytes(Image.fromarray(np.full((300, 200), 9, np.uint8))), "small.png")
    assert small.shape == (300, 200) and size == (200, 300)
