"""Downloads against a loopback HTTP server (never the internet)."""
import hashlib
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
