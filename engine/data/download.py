"""Download the real datasets: resumable HTTP with checksums, then safe extraction.

- COVID-19 image data collection: the GitHub archive of ieee8023/covid-chestxray-dataset; only
  `metadata.csv` and `images/` are kept.
- NIH ChestX-ray14: the 12 official image archives (the links of NIH's `batch_download_zips.py`),
  each extracted to `DEST/images_NNN/images/`, the official layout the loader reads. The metadata
  files (`Data_Entry_2017_v2020.csv`, `train_val_list.txt`, `test_list.txt`, `BBox_List_2017.csv`)
  are on https://nihcc.app.box.com/v/ChestXray-NIHCC without stable direct links; the command says so.

Partial files are kept as `*.part` and resumed with an HTTP Range request. A finished file's
SHA-256 and URL are recorded in `DEST/.downloads/manifest.json` and checked on later runs (another
URL fetches afresh); an expected MD5 (from `--checksums`, md5sum format) is enforced when given.

Bounds (hostile round 4, S3/S4): an archive larger than `max_bytes`, a member that inflates more than
`MAX_RATIO` times its compressed size or past its declared size, and an extraction past
`max_extracted` bytes are refused; the free space is checked before a transfer starts. A refused or
unreadable archive is removed with its manifest entry, and the files extracted from it are removed, so
the next run starts afresh. Every failure is one `DownloadError` line.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import zlib
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
GB = 1 << 30
# Caps: the real archives are ~0.5 GB (COVID) and ~4 GB (each NIH archive) and hold PNGs, which do
# not compress further; the caps leave room for growth and refuse anything of another kind.
LIMITS = {"covid": {"max_bytes": 4 * GB, "max_extracted": 8 * GB},
          "nih": {"max_bytes": 8 * GB, "max_extracted": 12 * GB}}
MAX_RATIO = 100  # uncompressed / compressed, per member; a 1 GiB member of zeros in 1 MB is 1000
FREE_MARGIN = 1 * GB  # left free on the disk after a transfer


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


def _why(exc: BaseException) -> str:
    """One line, in words, for a transfer or archive failure."""
    text = " ".join(str(exc).split())
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data: {text[:80]}"
    if isinstance(exc, RuntimeError) and "encrypted" in text:
        return "an encrypted member, which the lab cannot open"
    if isinstance(exc, NotImplementedError):
        return f"an unsupported compression method: {text[:80]}"
    if isinstance(exc, zipfile.BadZipFile):
        return f"not a valid zip archive: {text[:80]}"
    if isinstance(exc, http.client.IncompleteRead):
        return "the body was cut short"
    return f"{type(exc).__name__}: {text[:100]}"


def _counted(src, start: int = 0):
    """(block, bytes so far) for each CHUNK read from `src` until it is empty: the one read loop of a
    bounded transfer and of a bounded extraction."""
    total = start
    while block := src.read(CHUNK):
        total += len(block)
        yield block, total


def _check_space(folder: Path, need: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if need + FREE_MARGIN > free:
        raise DownloadError(f"{url}: {need / GB:.1f} GB to download but {free / GB:.1f} GB free in {folder} "
                            f"(at least {FREE_MARGIN / GB:.0f} GB must stay free); free some space and run again")


def download_file(url: str, target: Path, *, expected_md5: str | None = None, progress: Progress | None = None,
                  timeout: float = 60.0, max_bytes: int = LIMITS["nih"]["max_bytes"]) -> Path:
    """Fetch `url` to `target`, resuming `target.part` if present; verify MD5 when given.

    More than `max_bytes` (announced or received) is refused and the partial file removed.
    """
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
    except http.client.HTTPException as exc:  # garbage status line, too many headers, ...
        raise DownloadError(f"{url}: the server's answer is not valid HTTP ({_why(exc)}); try another URL") from exc
    if resp is not None:
        with resp:
            _receive(resp, url, target, part, have, progress, max_bytes)
    if expected_md5:
        got = _hash(part, "md5")
        if got.lower() != expected_md5.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(f"{target.name}: MD5 {got} does not match the expected {expected_md5}; the file was removed")
    os.replace(part, target)
    return target


def _receive(resp, url: str, target: Path, part: Path, have: int, progress: Progress | None, max_bytes: int) -> None:
    if have and resp.status != 206:  # server ignored the Range header: start again
        have = 0
    length = resp.headers.get("Content-Length")
    try:
        total = have + int(length) if length else 0
    except ValueError:
        raise DownloadError(f"{url}: the server sent an invalid Content-Length {length[:40]!r}") from None
    if total > max_bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: announces {total / GB:.1f} GB, over the {max_bytes / GB:.1f} GB this "
                            "archive may have; refused, nothing kept")
    _check_space(part.parent, (total or max_bytes) - have, url)
    done = have
    try:
        with open(part, "ab" if have else "wb") as fh:
            for block, done in _counted(resp, have):
                if done > max_bytes:
                    raise DownloadError(f"{url}: sent more than {max_bytes / GB:.1f} GB, over what this archive "
                                        "may have; refused, the partial file removed")
                fh.write(block)
                if progress:
                    progress(target.name, done, total)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except (http.client.HTTPException, OSError) as exc:  # a chunked body cut mid-chunk, a reset, ...
        raise DownloadError(f"{url}: the transfer broke after {done} bytes ({_why(exc)}); the partial "
                            f"file is kept in {part}: run again to resume, or try another URL") from exc
    if total and done != total:
        raise DownloadError(f"{url}: connection closed after {done} of {total} bytes; run again to resume")


def _forget(archive: Path, dest: Path) -> None:
    """Remove a bad archive and its manifest entry, so the next run fetches afresh."""
    archive.unlink(missing_ok=True)
    archive.with_name(archive.name + ".part").unlink(missing_ok=True)
    mpath, manifest = _manifest(dest)
    if manifest.pop(archive.name, None) is not None:
        _save_manifest(mpath, manifest)


def _fetch_verified(url: str, target: Path, dest: Path, md5: str | None, progress: Progress | None,
                    max_bytes: int) -> Path:
    mpath, manifest = _manifest(dest)
    key = target.name
    if target.exists() and key in manifest:
        entry = manifest[key]
        if entry.get("url") == url and _hash(target, "sha256") == entry.get("sha256"):
            return target
        _forget(target, dest)  # another URL, or changed since it was downloaded: fetch afresh
        mpath, manifest = _manifest(dest)
    download_file(url, target, expected_md5=md5, progress=progress, max_bytes=max_bytes)
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


class _Extraction:
    """Bounded extraction: per-member ratio and declared size, a total budget; undone on failure."""

    def __init__(self, archive: Path, dest: Path, max_extracted: int):
        # the whole archive may not inflate past MAX_RATIO either (tar.gz members have no compressed size)
        self.archive, self.dest = archive, dest
        self.budget = min(max_extracted, archive.stat().st_size * MAX_RATIO + CHUNK)
        self.written: list[Path] = []
        self.total = 0

    def copy(self, src, out: Path, name: str, declared: int, compressed: int | None) -> None:
        limit = declared if declared >= 0 else self.budget
        if compressed is not None:
            limit = min(limit, max(compressed, 1) * MAX_RATIO + CHUNK)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(out)
        n = 0
        with open(out, "wb") as dst:
            for block, n in _counted(src):
                if n > limit:
                    raise DownloadError(f"{self.archive.name}: member {name!r} inflates past "
                                        f"{'its declared size' if limit == declared else f'{MAX_RATIO}x its compressed size'}"
                                        f" ({limit} bytes): a zip bomb or a corrupt archive; refused")
                if self.total + n > self.budget:
                    raise DownloadError(f"{self.archive.name}: extracting would write more than "
                                        f"{self.budget / GB:.1f} GB; refused")
                dst.write(block)
        self.total += n

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if not isinstance(exc, EXTRACT_ERRORS + (DownloadError,)):
            return False
        for f in self.written:  # a partial extraction is removed
            f.unlink(missing_ok=True)
        _forget(self.archive, self.dest)
        if isinstance(exc, DownloadError):
            return False
        # zlib.error (corrupt deflate), RuntimeError (an encrypted member), NotImplementedError (an
        # unsupported compression method), BadZipFile/TarError/EOFError (truncated), OSError
        raise DownloadError(f"{self.archive.name} cannot be extracted ({_why(exc)}); "
                            "the archive and what was extracted from it were removed: run again, or try another "
                            "URL") from exc


EXTRACT_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, RuntimeError, NotImplementedError, EOFError,
                  OSError, ValueError)


def download_covid(dest, *, url: str = COVID_ARCHIVE_URL, md5: str | None = None,
                   progress: Progress | None = None, limits: dict | None = None) -> dict:
    """Download the collection's archive and extract `metadata.csv` and `images/` into `dest`."""
    dest = Path(dest)
    lim = limits or LIMITS["covid"]
    archive = _fetch_verified(url, dest / ".downloads" / "covid-chestxray-dataset.zip", dest, md5, progress,
                              lim["max_bytes"])
    with _Extraction(archive, dest, lim["max_extracted"]) as ex, zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/", 1)  # strip the archive's top folder
            if len(parts) < 2 or info.is_dir():
                continue
            rel = parts[1]
            if rel != "metadata.csv" and not rel.startswith("images/"):
                continue
            out = _safe_target(dest, rel)
            with zf.open(info) as src:
                ex.copy(src, out, info.filename, info.file_size, info.compress_size)
    if not (dest / "metadata.csv").is_file():
        raise DownloadError(f"the archive from {url} has no metadata.csv at its top level")
    return {"dataset": "covid", "dest": str(dest), "files_extracted": len(ex.written)}


def download_nih(dest, *, urls=NIH_IMAGE_URLS, checksums: dict[str, str] | None = None,
                 progress: Progress | None = None, limits: dict | None = None) -> dict:
    """Download and extract the image archives into DEST/images_NNN/images/ (resumable)."""
    dest = Path(dest)
    checksums = checksums or {}
    lim = limits or LIMITS["nih"]
    extracted = 0
    for k, url in enumerate(urls, start=1):
        name = f"images_{k:03d}.tar.gz"
        folder = dest / f"images_{k:03d}"
        done_flag = folder / ".extracted"
        if done_flag.exists():
            continue
        archive = _fetch_verified(url, dest / ".downloads" / name, dest, checksums.get(name), progress,
                                  lim["max_bytes"])
        with _Extraction(archive, dest, lim["max_extracted"]) as ex, tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                out = _safe_target(folder, member.name)
                ex.copy(tf.extractfile(member), out, member.name, member.size, None)
        extracted += len(ex.written)
        done_flag.write_text(url)
    missing = [f for f in NIH_METADATA_FILES if not (dest / f).is_file()]
    return {"dataset": "nih", "dest": str(dest), "files_extracted": extracted, "archives": len(urls),
            "metadata_missing": missing,
            "note": (f"download {', '.join(missing)} from {NIH_PAGE} into {dest}" if missing else "")}
