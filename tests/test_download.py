"""Downloads against a loopback HTTP server (never the internet)."""
import hashlib
import os
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.cli import main
from engine.data import download as dl


class _Handler(BaseHTTPRequestHandler):
    files: dict = {}
    requests: list = []
    cut_after: dict = {}  # path -> bytes to send before dropping the connection (once)

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.requests.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.files, _Handler.requests, _Handler.cut_after = {}, [], {}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}", _Handler
    srv.shutdown()


def _covid_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("covid-chestxray-dataset-master/metadata.csv",
                    "patientid,finding,view,modality,filename\n1,COVID-19,PA,X-ray,a.png\n")
        zf.writestr("covid-chestxray-dataset-master/images/a.png", b"\x89PNG fake")
        zf.writestr("covid-chestxray-dataset-master/volumes/big.nii", b"skip me")
    return buf.getvalue()


def _nih_tar(names) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for n in names:
            data = n.encode() * 1000
            info = tarfile.TarInfo(f"images/{n}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_covid_archive_keeps_metadata_and_images_only(server, tmp_path):
    base, h = server
    h.files["/covid.zip"] = _covid_zip()
    out = dl.download_covid(tmp_path / "covid", url=base + "/covid.zip")
    assert (tmp_path / "covid" / "metadata.csv").is_file()
    assert (tmp_path / "covid" / "images" / "a.png").is_file()
    assert not (tmp_path / "covid" / "volumes").exists()
    assert out["files_extracted"] == 2


def test_nih_archives_extract_to_the_official_layout_and_resume(server, tmp_path):
    base, h = server
    h.files["/a.gz"] = _nih_tar(["00000001_000.png", "00000002_000.png"])
    h.files["/b.gz"] = _nih_tar(["00000003_000.png"])
    h.cut_after["/b.gz"] = 100  # the first try of archive 2 drops mid-way
    with pytest.raises(dl.DownloadError, match="resume"):
        dl.download_nih(tmp_path / "nih", urls=(base + "/a.gz", base + "/b.gz"))
    assert (tmp_path / "nih" / ".downloads" / "images_002.tar.gz.part").stat().st_size == 100
    out = dl.download_nih(tmp_path / "nih", urls=(base + "/a.gz", base + "/b.gz"))
    assert (tmp_path / "nih" / "images_001" / "images" / "00000002_000.png").is_file()
    assert (tmp_path / "nih" / "images_002" / "images" / "00000003_000.png").is_file()
    assert ("/b.gz", "bytes=100-") in h.requests  # resumed, not restarted
    assert out["files_extracted"] == 1  # archive 1 was already extracted on the first run
    assert "Data_Entry_2017_v2020.csv" in out["metadata_missing"]


def test_checksum_mismatch_is_refused(server, tmp_path):
    base, h = server
    h.files["/a.gz"] = _nih_tar(["x.png"])
    with pytest.raises(dl.DownloadError, match="MD5"):
        dl.download_nih(tmp_path / "nih", urls=(base + "/a.gz",), checksums={"images_001.tar.gz": "0" * 32})
    good = hashlib.md5(h.files["/a.gz"]).hexdigest()
    dl.download_nih(tmp_path / "nih", urls=(base + "/a.gz",), checksums={"images_001.tar.gz": good})


def test_archive_escaping_the_destination_is_refused(server, tmp_path):
    base, h = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("../../evil.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    h.files["/evil.gz"] = buf.getvalue()
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.download_nih(tmp_path / "nih", urls=(base + "/evil.gz",))
    assert not (tmp_path / "evil.txt").exists()


def test_offline_fails_with_a_clear_message(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc = main(["data", "download", "covid", "--dest", str(tmp_path / "c"), "--url", f"http://127.0.0.1:{port}/x.zip"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach" in err and "internet" in err


def test_a_download_without_dest_goes_to_the_data_folder_and_becomes_the_default_root(server, tmp_path, monkeypatch,
                                                                                        capsys):
    from engine.data.roots import resolve_root
    from engine.settings import saved

    base, h = server
    h.files["/covid.zip"] = _covid_zip()
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_COVID_URL", base + "/covid.zip")  # the mirror variable the dashboard uses too
    assert main(["data", "download", "covid", "--no-save"]) == 0
    assert (tmp_path / "data" / "covid" / "metadata.csv").is_file() and saved("covid_root") == ""
    assert "0.5 GB" in capsys.readouterr().err  # the size is said before the download starts
    assert main(["data", "download", "covid"]) == 0  # again: the manifest's checksum says it is there
    assert saved("covid_root") == str((tmp_path / "data" / "covid").resolve())
    assert resolve_root("covid") == (tmp_path / "data" / "covid").resolve()  # the CLI's default from now on
    assert [r for r in h.requests if r[0] == "/covid.zip"] == [("/covid.zip", None)]  # fetched once


# --- hostile round 4, S3 and S4: bad archives and transfers, and bounds -------------------------------

def _raw_server(answers: dict):
    """A loopback TCP server that answers each request path with the raw bytes (or generator) given."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    req += chunk
                path = req.split(b" ")[1].decode() if b" " in req else "/"
                body = answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                try:
                    for part in ([body] if isinstance(body, bytes) else body()):
                        if stop.is_set():
                            break
                        conn.sendall(part)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", lambda: (stop.set(), t.join(5), srv.close())


def _zip_with(flag_bits: int = 0, method: int | None = None, corrupt: bool = False) -> bytes:
    """The collection's archive, altered in its headers or its deflate data."""
    import random
    rnd = random.Random(0)
    png = bytes(rnd.getrandbits(8) for _ in range(20000)) + b"a" * 40000  # compressible tail
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/metadata.csv", "patientid,finding,view,modality,filename\n1,COVID-19,PA,X-ray,a.png\n")
        zf.writestr("top/images/a.png", png)
    data = bytearray(buf.getvalue())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(sig)
        while at >= 0:
            if flag_bits:
                data[at + flag_at] |= flag_bits
            if method is not None:
                data[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(sig, at + 4)
    if corrupt:  # overwrite the middle of the image member's deflate stream
        start = data.find(b"top/images/a.png") + 40
        data[start + 5000:start + 5400] = bytes(range(256)) + bytes(144)
    return bytes(data)


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("kind", ["deflate", "encrypted", "method", "chunked-cut", "status-line", "headers"])
def test_a_bad_archive_or_transfer_is_one_line_removed_and_another_url_installs(kind, tmp_path, capsys):
    good = _covid_zip()
    archives = {"deflate": _zip_with(corrupt=True), "encrypted": _zip_with(flag_bits=1), "method": _zip_with(method=99)}
    bad = {
        "chunked-cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 300,
        "status-line": b"HELLO THERE\r\n\r\n",
        "headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n",
    }.get(kind) or _ok(archives[kind])
    base, stop = _raw_server({"/bad.zip": bad, "/good.zip": _ok(good)})
    try:
        dest = tmp_path / "covid"
        rc = main(["data", "download", "covid", "--dest", str(dest), "--url", base + "/bad.zip", "--no-save"])
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and "Traceback" not in err and len(said) == 1 and err.rstrip().endswith(said[0]), err
        if kind in archives:
            assert "removed" in err and not (dest / ".downloads" / "covid-chestxray-dataset.zip").exists()
            assert not (dest / "images" / "a.png").exists()  # the partial extraction went too
        assert main(["data", "download", "covid", "--dest", str(dest), "--url", base + "/good.zip", "--no-save"]) == 0
        assert (dest / "images" / "a.png").read_bytes() == b"\x89PNG fake"
    finally:
        stop()


def test_the_same_url_fetches_afresh_after_a_bad_archive(server, tmp_path):
    base, h = server
    h.files["/covid.zip"] = _zip_with(flag_bits=1)
    with pytest.raises(dl.DownloadError, match="removed"):
        dl.download_covid(tmp_path / "c", url=base + "/covid.zip")
    h.files["/covid.zip"] = _covid_zip()  # the mirror fixed it
    dl.download_covid(tmp_path / "c", url=base + "/covid.zip")
    assert (tmp_path / "c" / "metadata.csv").is_file()


def test_a_one_gib_zip_bomb_is_refused_leaving_no_big_file(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("top/metadata.csv", "patientid,finding,view,modality,filename\n")
        with zf.open("top/images/bomb.png", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(1024):
                fh.write(block)
    assert len(buf.getvalue()) < 20 << 20
    base, h = server
    h.files["/bomb.zip"] = buf.getvalue()
    with pytest.raises(dl.DownloadError, match="zip bomb"):
        dl.download_covid(tmp_path / "c", url=base + "/bomb.zip")
    sizes = [p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert max(sizes, default=0) < 200 << 20
    assert not (tmp_path / "c" / "images").exists() or not any((tmp_path / "c" / "images").iterdir())


def test_a_lying_header_an_endless_stream_and_a_big_total_are_refused(tmp_path):
    def endless():
        yield b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
        while True:
            yield bytes(1 << 16)

    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\nConnection: close\r\n\r\n" + bytes(1000)
    base, stop = _raw_server({"/huge.zip": huge, "/endless.zip": endless})
    try:
        with pytest.raises(dl.DownloadError, match="announces"):
            dl.download_covid(tmp_path / "a", url=base + "/huge.zip")
        with pytest.raises(dl.DownloadError, match="more than"):
            dl.download_covid(tmp_path / "b", url=base + "/endless.zip",
                              limits={"max_bytes": 4 << 20, "max_extracted": 1 << 30})
        for d in ("a", "b"):  # nothing partial kept
            assert not [p for p in (tmp_path / d).rglob("*") if p.is_file()]
    finally:
        stop()
    buf = io.BytesIO()  # 3 members of 1 MB of random bytes: within the ratio, over a 2 MB total
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("top/metadata.csv", "x\n")
        for k in range(3):
            zf.writestr(f"top/images/{k}.png", os.urandom(1 << 20))
    (tmp_path / "c" / ".downloads").mkdir(parents=True)
    archive = tmp_path / "c" / ".downloads" / "covid-chestxray-dataset.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(dl.DownloadError, match="more than 0.0 GB|more than"), dl._Extraction(
            archive, tmp_path / "c", 2 << 20) as ex, zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            with zf.open(info) as src:
                ex.copy(src, tmp_path / "c" / info.filename, info.filename, info.file_size, info.compress_size)
    assert not archive.exists() and not list((tmp_path / "c" / "top").rglob("*.png"))


def test_too_little_free_space_is_refused_before_the_transfer(server, tmp_path, monkeypatch):
    base, h = server
    h.files["/covid.zip"] = _covid_zip()
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: type("U", (), {"free": 10 << 20})())
    with pytest.raises(dl.DownloadError, match="free"):
        dl.download_covid(tmp_path / "c", url=base + "/covid.zip")
    assert h.requests  # it asked for the size, then wrote nothing
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
