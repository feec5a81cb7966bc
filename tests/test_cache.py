import json
import os
import time

import numpy as np

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
    assert len(files) == 3  # meta + one pixels + one index: old builds are cleaned


def test_stale_entries_are_not_served(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    os.utime(paths[0], ns=(1, 1))
    cache = ImageCache(tmp_path / "c")
    assert cache.stale == 1 and paths[0] not in cache and paths[1] in cache


def test_killed_build_leaves_previous_cache_usable(tiny_nih, tmp_path):
    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths[:5], tmp_path / "c", size=32, workers=1)
    # a build killed before its commit point leaves only orphan files
    (tmp_path / "c" / "pixels-999-1.u8").write_bytes(b"\0" * 100)
    (tmp_path / "c" / "meta.json.999-1.tmp").write_text("{")
    cache = ImageCache(tmp_path / "c")
    assert len(cache) == 5
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["count"] == 5


def test_cache_survives_pickling_without_copying_pixels(tiny_nih, tmp_path):
    import pickle

    paths = list(NIHChestXray14(tiny_nih).frame["path"])
    build_cache(paths, tmp_path / "c", size=32, workers=1)
    cache = ImageCache(tmp_path / "c")
    _ = cache.get(paths[0])
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).get(paths[0]), cache.get(paths[0]))
