import json
import os
import time

import numpy as np

from conftest import REPO
from engine.data import ImageCache, NIHChestXray14, build_cache, read_xray, resize_gray


def test_cache_holds_the_same_pixels_as_decoding(tiny_nih, tmp_path):
    ds = NIHChestXray14(tiny_nih, load_size=64)
    rep = build_cache(ds.frame["path"], tmp_path / "c", size=64, workers=2)
    assert rep.decoded == len(ds) and rep.reused == 0 and not rep.failed
    cache = ImageCache(tmp_path / "c")
    for p in ds.frame["path"][:5]:
        np.testing.assert_array_equal(cache.get(p), resize_gray(read_xray(p), 64))
    ds.attach_cache(cache)
    direct = NIHChestXray14(tiny_nih, load_size=64)
    np.testing.assert_array_equal(ds.read_gray(3), direct.read_gray(3))


def test_rebuild_decodes_only_changed_files_and_lists_unreadable(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    changed = paths[0]
    time.sleep(0.01)
    from PIL import Image
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(changed, format="PNG")
    with open(paths[1], "wb") as fh:
        fh.write(b"not an image")
    rep = build_cache(paths, tmp_path / "c", size=32, workers=1)
    assert rep.reused == len(paths) - 2 and rep.decoded == 1
    assert [p for p, _ in rep.failed] == [paths[1]]
    cache = ImageCache(tmp_path / "c")
    assert cache.get(changed).mean() == 200
    assert cache.get(paths[1]) is None  # unreadable: not served from the cache
    files = sorted(f.name for f in (tmp_path / "c").iterdir())
    assert files == [".lock", "index.csv", "meta.json", "pixels.u8"]  # rewritten in place: one pixels file


def test_stale_entries_are_not_served(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    os.utime(paths[0], ns=(1, 1))
    cache = ImageCache(tmp_path / "c")
    assert cache.stale == 1 and paths[0] not in cache and paths[1] in cache


def test_a_torn_journal_line_is_ignored_and_cut_before_the_next_append(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths[:5], tmp_path / "c", size=32, workers=1)
    with open(tmp_path / "c" / "index.csv", "a") as fh:  # a kill in the middle of a line
        fh.write(f'"{paths[5]}",123,4')
    cache = ImageCache(tmp_path / "c")
    assert len(cache) == 5 and paths[5] not in cache
    rep = build_cache(paths[:7], tmp_path / "c", size=32, workers=1)
    assert (rep.reused, rep.decoded) == (5, 2)
    assert len(ImageCache(tmp_path / "c")) == 7


def test_a_rerun_with_nothing_changed_writes_nothing(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "c").iterdir()}
    time.sleep(0.02)
    rep = build_cache(paths, tmp_path / "c", size=32, workers=1)
    assert rep.reused == len(paths) and rep.decoded == 0 and rep.bytes_written == 0
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "c").iterdir()} == before


def test_new_images_extend_the_same_file_and_keep_old_rows(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths[:10], tmp_path / "c", size=32, workers=1)
    rows = dict(ImageCache(tmp_path / "c").rows)
    rep = build_cache(paths, tmp_path / "c", size=32, workers=1)
    assert (rep.reused, rep.decoded) == (10, len(paths) - 10)
    cache = ImageCache(tmp_path / "c")
    assert all(cache.rows[p] == r for p, r in rows.items())
    assert (tmp_path / "c" / "pixels.u8").stat().st_size == len(paths) * 32 * 32
    for p in paths[8:12]:
        np.testing.assert_array_equal(cache.get(p), resize_gray(read_xray(p), 32))


def test_a_full_disk_is_refused_with_the_figure_before_anything_is_written(tiny_nih, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from engine.data.cache import CacheError

    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    try:
        build_cache(paths, tmp_path / "c", size=256, workers=1)
    except CacheError as exc:
        assert "2.5 MiB" in str(exc) and "only 0.0 MiB is free" in str(exc) and "--cache-dir" in str(exc)
    else:
        raise AssertionError("a cache larger than the free disk was not refused")
    assert not (tmp_path / "c" / "pixels.u8").exists()


def test_a_format_1_cache_is_read_and_migrated_without_decoding(tiny_nih, tmp_path, monkeypatch):
    import pandas as pd

    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    c = tmp_path / "c"  # turn it into the old layout: one copy per build, named in meta.json
    (c / "pixels.u8").rename(c / "pixels-1-2.u8")
    pd.read_csv(c / "index.csv").drop(columns="ok").to_csv(c / "index-1-2.csv", index=False)
    (c / "index.csv").unlink()
    (c / "meta.json").write_text(json.dumps({"size": 32, "count": len(paths), "failed": 0,
                                             "pixels": "pixels-1-2.u8", "index": "index-1-2.csv"}))
    assert len(ImageCache(c)) == len(paths)
    import engine.data.cache as cache_mod

    monkeypatch.setattr(cache_mod, "read_xray", lambda p: (_ for _ in ()).throw(AssertionError("decoded")))
    rep = build_cache(paths, c, size=32, workers=1)
    assert rep.reused == len(paths) and rep.decoded == 0
    assert sorted(f.name for f in c.iterdir()) == [".lock", "index.csv", "meta.json", "pixels.u8"]
    assert json.loads((c / "meta.json").read_text())["format"] == 2
    monkeypatch.undo()
    np.testing.assert_array_equal(ImageCache(c).get(paths[3]), resize_gray(read_xray(paths[3]), 32))


def test_sigterm_stops_prepare_and_its_workers_and_the_rerun_reuses_the_work(data_pack, tmp_path):
    """The issue's check at a smaller size: a linked ChestX-ray14 root, prepare stopped mid-way."""
    import signal
    import subprocess
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from common import link_nih_root

    root, _ = link_nih_root(tmp_path / "nih", 3000, pack=data_pack)
    cmd = [sys.executable, "-m", "engine", "prepare", "--nih-root", str(root), "--size", "64",
           "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    index = tmp_path / "cache" / "nih-64px" / "index.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not index.is_file() or index.stat().st_size < 20_000):
        time.sleep(0.05)  # wait until a few chunks are committed
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    first = json.loads(out)["nih"]
    assert first["stopped"] == "SIGTERM" and 0 < first["decoded"] < 3000
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "cache")], capture_output=True, text=True).stdout.split()
    assert left == [], f"prepare left processes behind: {left}"
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout)["nih"]
    assert second["reused"] >= first["decoded"] and second["reused"] + second["decoded"] == 3000


def test_cache_survives_pickling_without_copying_pixels(tiny_nih, tmp_path):
    import pickle

    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    cache = ImageCache(tmp_path / "c")
    _ = cache.get(paths[0])
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).get(paths[0]), cache.get(paths[0]))
