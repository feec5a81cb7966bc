"""The same film under two names: found by content (pHash), kept in one split, reported."""
import io
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from engine.data import COVID19Collection, patient_overlap
from engine.data.covid import view_key
from engine.data.duplicates import cross_pairs, duplicate_pairs, image_hashes, keep_together
from engine.data.summary import summarize_covid


def _pair_names(ds):
    return {frozenset((r["image_a"], r["image_b"])) for r in ds.duplicates["pairs_list"]}


def test_the_packs_named_duplicates_are_found_and_kept_in_one_split(data_pack):
    ds = COVID19Collection(data_pack / "covid")
    pairs = _pair_names(ds)
    assert frozenset(("AR-1.jpg", "extubation-1.jpg")) in pairs
    shared = [r for r in ds.duplicates["pairs_list"] if {r["patient_a"], r["patient_b"]} == {"covid-97", "covid-178"}]
    assert len(shared) == 4
    assert ds.duplicates["pairs_across_splits_before"] > 0  # the patient-wise split alone leaked
    split = dict(zip(ds.frame["image"], ds.frame["split"]))
    for r in ds.duplicates["pairs_list"]:
        assert split[r["image_a"]] == split[r["image_b"]], r
    # only the linked groups moved: every other image keeps the plain patient-wise split
    plain = COVID19Collection(data_pack / "covid", dedupe=False)
    changed = (plain.frame["split"].to_numpy() != ds.frame["split"].to_numpy()).sum()
    assert changed == ds.duplicates["images_moved"] > 0
    assert plain.fingerprint() != ds.fingerprint()
    assert patient_overlap(ds.frame["patient_id"], ds.frame["split"]) == 0


def test_resized_and_reencoded_copies_are_found(tmp_path, data_pack):
    """A copy shrunk to 60 %, saved as JPEG at quality 70 under another patient, is the same film;
    two different patients' films are not."""
    src = data_pack / "covid" / "images"
    names = sorted(p.name for p in src.iterdir())[:40]
    copies = []
    for n in names[:5]:
        img = Image.open(src / n).convert("L")
        small = img.resize((int(img.width * 0.6), int(img.height * 0.6)))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=70)
        out = tmp_path / f"copy-{n}.jpg"
        out.write_bytes(buf.getvalue())
        copies.append(str(out))
    hashes, bad = image_hashes([str(src / n) for n in names] + copies)
    assert not bad
    found = {(i, j) for i, j, _ in duplicate_pairs(hashes)}
    for k in range(5):
        assert (k, 40 + k) in found
    assert len(cross_pairs(hashes[:5], hashes[40:])) >= 5


def test_keep_together_moves_only_linked_groups_and_never_grows_test_on_a_tie():
    pids = ["a", "a", "b", "c", "d", "e"]
    splits = ["train", "train", "test", "val", "test", "val"]
    # a's first image = b's image (train 2 vs test 1 -> train); d = e (test 1, val 1 -> val on a tie)
    new, rep = keep_together(pids, splits, [(0, 2, 0), (4, 5, 3)])
    assert list(new) == ["train", "train", "train", "val", "val", "val"]
    assert rep["images_moved"] == 2 and rep["groups_moved"] == 2 and rep["pairs_across_splits_before"] == 2


def test_views_match_case_and_space_insensitively_and_drops_are_counted(tmp_path, data_pack):
    assert view_key(" AP  erect ") == view_key("AP Erect") == "ap erect"
    root = tmp_path / "covid"
    (root / "images").mkdir(parents=True)
    img = sorted((data_pack / "covid" / "images").iterdir())[0]
    rows = []
    for k, (view, modality) in enumerate([("AP erect", "X-ray"), ("ap  supine", "X-ray"), ("PA", "X-ray"),
                                          ("", "X-ray"), ("L", "X-ray"), ("Axial", "CT"), ("Coronal", "X-ray")]):
        shutil.copy(img, root / "images" / f"{k}.jpg")
        rows.append({"patientid": k, "finding": "COVID-19", "view": view, "modality": modality,
                     "folder": "images", "filename": f"{k}.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    s = summarize_covid(root)
    ds = COVID19Collection(root, dedupe=False)
    assert sorted(ds.frame["view"]) == ["AP Erect", "AP Supine", "PA"]
    assert s["skipped"]["no_view"] == 1 and s["skipped"]["lateral"] == 1
    assert s["skipped"]["not_xray"] == 1 and s["skipped"]["not_frontal"] == 1
    # seven copies of one film under seven patients: all in one split
    assert s["duplicates"]["pairs"] == 3 and len(set(COVID19Collection(root).frame["split"])) == 1
    assert np.all(ds.targets == 1)


def _brute(a, b=None, max_distance=4):
    """Every pair compared: the reference the multi-index search must equal."""
    ia = np.array([int(h, 16) if h else 0 for h in a], dtype=np.uint64)
    ib = ia if b is None else np.array([int(h, 16) if h else 0 for h in b], dtype=np.uint64)
    d = np.bitwise_count(ia[:, None] ^ ib[None, :])
    ok = d <= max_distance
    ok &= np.array([bool(h) for h in a])[:, None]
    ok &= np.array([bool(h) for h in (a if b is None else b)])[None, :]
    if b is None:
        ok = np.triu(ok, 1)
    i, j = np.nonzero(ok)
    return [(int(x), int(y), int(d[x, y])) for x, y in zip(i, j)]


def _random_hashes(n, seed, planted=300):
    """Random 64-bit hashes with planted near copies (1-8 bits flipped) and exact repeats, and a missing one."""
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for _ in range(planted):
        i, j = rng.integers(0, n, 2)
        flips = rng.choice(64, rng.integers(0, 9), replace=False)
        v = int(vals[i])
        for f in flips:
            v ^= 1 << int(f)
        vals[j] = np.uint64(v)
    hexes = [f"{int(v):016x}" for v in vals]
    hexes[5] = ""
    return hexes


def test_the_multi_index_search_equals_brute_force_on_random_hashes():
    for seed, dist in ((0, 4), (1, 0), (2, 7), (3, 12)):
        hashes = _random_hashes(1500, seed)
        assert duplicate_pairs(hashes, dist) == _brute(hashes, max_distance=dist)
        other = _random_hashes(700, seed + 10) + hashes[:50]
        assert cross_pairs(other, hashes, dist) == _brute(other, hashes, max_distance=dist)
    many = ["00000000000000ff"] * 40 + ["00000000000000fe"] * 3  # large groups of equal hashes
    assert duplicate_pairs(many) == _brute(many)


def test_hashing_in_a_pool_equals_serial_hashing_and_is_cached_in_a_journal(data_pack, tmp_path):
    paths = sorted(str(p) for p in (data_pack / "nih" / "images").glob("*.png"))[:90]
    paths.append(str(tmp_path / "missing.png"))
    pooled, bad = image_hashes(paths, cache_dir=tmp_path / "a", workers=2)
    serial, _ = image_hashes(paths, cache_dir=tmp_path / "b", workers=1)
    assert pooled == serial and bad == [paths[-1]] and all(pooled[:-1])
    lines = (tmp_path / "a" / "phash-v2.tsv").read_text().splitlines()
    assert len(lines) == 90
    from engine.data import duplicates

    duplicates._memo.clear()
    with open(tmp_path / "a" / "phash-v2.tsv", "a") as fh:
        fh.write("torn\t12")  # a kill mid-line: skipped, and the next append starts a new line
    calls = []
    again, _ = image_hashes(paths, cache_dir=tmp_path / "a", workers=2, progress=lambda k, n: calls.append(k))
    assert again == pooled and calls[0] == 90  # all read back from the journal


def test_a_long_hash_is_announced_with_its_count_and_time(tmp_path, monkeypatch):
    """evaluate --on says, before hashing many images, how many and about how long (and how to skip)."""
    from engine.data import duplicates

    monkeypatch.setattr(duplicates, "_hash_file", lambda job: (job[0], f"{job[0]:016x}"))
    said = []
    paths = [str(tmp_path / f"{k}.png") for k in range(300)]
    hashes, _ = image_hashes(paths, cache_dir=tmp_path / "c", workers=1, notice=said.append)
    assert len(said) == 1 and said[0].startswith("hashing 300 images (0 cached) with 1 processes: about ")
    assert hashes[7] == f"{7:016x}"
    said.clear()
    image_hashes(paths[:50], cache_dir=tmp_path / "c", workers=1, notice=said.append)
    assert said == []  # a short hash is not announced


def test_patients_linked_by_a_shared_film_are_one_bootstrap_cluster(data_pack):
    """Issue 24: patients 97/178 and 192/196 of the collection share films; every bootstrap must resample
    them together (one cluster), not as two independent people."""
    import numpy as np
    import pandas as pd

    from engine.data.duplicates import linked_clusters
    from engine.data.tasks import open_collection
    from engine.runs.predictions import Predictions

    assert list(linked_clusters(["a", "b", "c", "b"], [(0, 1, 2)])) == ["a+b", "a+b", "c", "a+b"]
    frame = open_collection("covid", data_pack / "covid").frame
    clusters = dict(zip(frame["patient_id"].astype(str), frame["cluster_id"]))
    assert clusters["covid-97"] == clusters["covid-178"] == "covid-178+covid-97"
    assert clusters["covid-192"] == clusters["covid-196"]
    info = pd.DataFrame({"image": ["x", "y", "z"], "patient_id": ["p1", "p2", "p3"],
                         "cluster_id": ["p1+p2", "p1+p2", None]})
    preds = Predictions.build(info, ["COVID-19"], np.array([[1.0], [0.0], [1.0]]), np.array([[0.9], [0.2], [0.4]]))
    assert list(preds.clusters) == ["p1+p2", "p1+p2", "p3"]  # the unit every bootstrap of the product resamples


def test_a_hash_match_is_a_film_only_when_its_pixels_agree(data_pack):
    """Issue 24: a pHash distance of 4 matched different patients' films. The second test (pixel
    correlation at 32 px) keeps the same film re-scaled (the pack's 512-px image and its 64-px copy)
    and the collection's re-encoded duplicates, and rejects the different films the hash matched
    (measured: bench/bench_duplicates.py)."""
    from engine.data.duplicates import confirm_pairs

    nih = data_pack / "nih"
    a = [str(nih / "images" / "00003450_000.png"), str(nih / "images" / "00010924_000.png")]
    b = [str(nih / "images_64px" / "00000176_002.png"), str(nih / "images_64px" / "00000067_002.png")]
    kept, rejected = confirm_pairs(a, b, [(0, 0, 4), (1, 1, 4)])  # different patients the hash matched
    assert kept == [] and all(0.8 < r < 0.95 for *_, r in rejected)
    same = sorted(p.name for p in (nih / "images_64px").iterdir())
    both = [n for n in same if (nih / "images" / n).is_file()][:3]
    assert both, "the pack's two NIH sets share some files"
    kept, rejected = confirm_pairs([str(nih / "images" / n) for n in both],
                                   [str(nih / "images_64px" / n) for n in both],
                                   [(k, k, 0) for k in range(len(both))])
    assert len(kept) == len(both) and rejected == [] and min(r for *_, r in kept) > 0.99
    cov = data_pack / "covid" / "images"
    kept, _ = confirm_pairs([str(cov / "AR-1.jpg")], [str(cov / "extubation-1.jpg")], [(0, 0, 4)])  # one film
    assert len(kept) == 1
    kept, rejected = confirm_pairs([str(cov / "AR-1.jpg")], [str(cov / "no-such-file.jpg")], [(0, 0, 0)])
    assert kept == [] and len(rejected) == 1  # an unreadable image never confirms a match
