"""Download the real datasets: resumable HTTP with checksums, then safe extraction.

- COVID-19 image data collection: the GitHub archive of ieee8023/covid-chestxray-dataset; only
  `metadata.csv` and `images/` are kept.
- NIH ChestX-ray14: the 12 official image archives (the links of NIH's `batch_download_zips.py`),
  each extracted to `DEST/images_NNN/images/`, the official layout the loader reads. The metadata
  files (`Data_Entry_2017_v2020.csv`, `train_val_list.txt`, `test_list.txt`, `BBox_List_2017.csv`)
  are on https://nihcc.app.box.com/v/ChestXray-NIHCC without stable direct links; the command says so.

Partial files are kept as `*.part` and resumed with an HTTP Range request. A finished file's
SHA-256 is recorded in `DEST/.downloads/manifest.json` and checked on later runs; an expected MD5
(from `--checksums`, md5sum format) is enforced when given.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..constants import default_data_dir

COVID_ARCHIVE_URL = "https://github.com/ieee8023/covid-chestxray-dataset/archive/refs/heads/master.zip"
NIH_PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
NIH_IMAGE_URLS = tuple(f"https://nihcc.box.com/shared/static/{k}.gz" for k in (
    "vfk49d74nhbxq3nqjg0900w5nvkorp5c", "i28rlmbvmfjbl8p2n3ril0pptcmcu9d1", "f1t00wrtdk94satdfb9olcolqx20z2jp",
    "0aowwzs5lhjrceb3qp67ahp0rd1l1etg", "v5e3goj22zr6h8tzualxfsqlqaygfbsn", "asi7ikud9jwnkrnkj99jnpfkjdes7l6l",
    "jn1b4mw4n6lnh74ovmcjb8y48h8xj07n", "tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j", "upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj",
    "l6nilvfa9cg3s28tqv1qc1olm3gnz54p", "hhq8fkdgvcari67vfhs7ppg2w6ni4jze", "ioqwiy20ihqwyr8pf4c24eazhh281pbu",
))
NIH_METADATA_FILES = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv")
ENV_COVID_URL = "CXR_COVID_URL"  # a mirror of the collection's archive (the dashboard's download uses it too)
# What a newcomer is told before a download starts (sizes from the sources; speed at 100 Mbit/s).
SIZES = {
    "covid": "about 0.5 GB to download (the repository's GitHub archive; metadata.csv and images/ are kept, "
             "about 950 images), a few minutes at 100 Mbit/s",
    "nih": "about 45 GB in 12 archives (112,120 PNGs at 1024 px), about an hour at 100 Mbit/s; with the archives "
           "kept in .downloads/ (delete them once extracted) the folder needs about 90 GB",
}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total or 0)


def _hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(dest: Path) -> tuple[Path, dict]:
    p = dest / ".downloads" / "manifest.json"
    try:
        return p, json.loads(p.read_text())
    except (OSError, ValueError):
        return p, {}


def _save_manifest(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def download_file(url: str, target: Path, *, expected_md5: str | None = None, progress: Progress | None = None,
                  timeout: float = 60.0) -> Path:
    """Fetch `url` to `target`, resuming `target.part` if present; verify MD5 when given."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "cxrlab-downloader"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            resp = None
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url} ({reason}). Check the internet connection "
                            f"(this machine may be offline); partial data, if any, is kept in {part}") from exc
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored the Range header: start again
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length else 0
            done = have
            with open(part, "ab" if have else "wb") as fh:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(target.name, done, total)
            if total and done != total:
                raise DownloadError(f"{url}: connection closed after {done} of {total} bytes; run again to resume")
    if expected_md5:
        got = _hash(part, "md5")
        if got.lower() != expected_md5.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(f"{target.name}: MD5 {got} does not match the expected {expected_md5}; the file was removed")
    os.replace(part, target)
    return target


def _fetch_verified(url: str, target: Path, dest: Path, md5: str | None, progress: Progress | None) -> Path:
    mpath, manifest = _manifest(dest)
    key = target.name
    if target.exists() and key in manifest:
        if _hash(target, "sha256") == manifest[key]["sha256"]:
            return target
        target.unlink()  # changed since it was downloaded: fetch again
    download_file(url, target, expected_md5=md5, progress=progress)
    manifest[key] = {"url": url, "sha256": _hash(target, "sha256"), "bytes": target.stat().st_size}
    _save_manifest(mpath, manifest)
    return target


def _safe_target(root: Path, name: str) -> Path:
    out = (root / name).resolve()
    if not str(out).startswith(str(root.resolve()) + os.sep) and out != root.resolve():
        raise DownloadError(f"archive member {name!r} would be written outside {root}; refusing")
    return out


def read_checksums(path) -> dict[str, str]:
    """md5sum-format file -> {file name: md5}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[os.path.basename(parts[-1].lstrip("*"))] = parts[0]
    return out


def covid_url() -> str:
    """The collection's archive: $CXR_COVID_URL (a mirror), else GitHub."""
    return os.environ.get(ENV_COVID_URL) or COVID_ARCHIVE_URL


def dataset_dir(kind: str) -> Path:
    """The default folder of a downloaded dataset: <default data dir>/<kind>."""
    return default_data_dir() / kind


def download_covid(dest, *, url: str = COVID_ARCHIVE_URL, md5: str | None = None,
                   progress: Progress | None = None) -> dict:
    """Download the collection's archive and extract `metadata.csv` and `images/` into `dest`."""
    dest = Path(dest)
    archive = _fetch_verified(url, dest / ".downloads" / "covid-chestxray-dataset.zip", dest, md5, progress)
    n = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/", 1)  # strip the archive's top folder
                if len(parts) < 2 or info.is_dir():
                    continue
                rel = parts[1]
                if rel != "metadata.csv" and not rel.startswith("images/"):
                    continue
                out = _safe_target(dest, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                n += 1
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise DownloadError(f"{archive} is not a valid zip archive ({exc}); removed, run again") from exc
    if not (dest / "metadata.csv").is_file():
        raise DownloadError(f"the archive from {url} has no metadata.csv at its top level")
    return {"dataset": "covid", "dest": str(dest), "files_extracted": n}


def download_nih(dest, *, urls=NIH_IMAGE_URLS, checksums: dict[str, str] | None = None,
                 progress: Progress | None = None) -> dict:
    """Download and extract the image archives into DEST/images_NNN/images/ (resumable)."""
    dest = Path(dest)
    checksums = checksums or {}
    extracted = 0
    for k, url in enumerate(urls, start=1):
        name = f"images_{k:03d}.tar.gz"
        folder = dest / f"images_{k:03d}"
        done_flag = folder / ".extracted"
        if done_flag.exists():
            continue
        archive = _fetch_verified(url, dest / ".downloads" / name, dest, checksums.get(name), progress)
        try:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    out = _safe_target(folder, member.name)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    with src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    extracted += 1
        except tarfile.TarError as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{archive} is not a valid tar archive ({exc}); removed, run again") from exc
        done_flag.write_text(url)
    missing = [f for f in NIH_METADATA_FILES if not (dest / f).is_file()]
    return {"dataset": "nih", "dest": str(dest), "files_extracted": extracted, "archives": len(urls),
            "metadata_missing": missing,
            "note": (f"download {', '.join(missing)} from {NIH_PAGE} into {dest}" if missing else "")}
