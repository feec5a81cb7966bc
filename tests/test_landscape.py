import json

import numpy as np
import pytest

from conftest import run_cli
from engine.landscape import som as som_mod
from engine.landscape.embeddings import (TsneMap, centroid_distances, display_label, knn_purity, nearest_neighbours,
                               neighbour_shares, select_images, silhouette)
from engine.landscape.som import cell_label_distribution, fit_som, study_sigma


def clusters(n_per=40, k=4, d=16, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    x = np.concatenate([c + rng.normal(scale=spread, size=(n_per, d)) for c in centres])
    labels = np.repeat([f"c{i}" for i in range(k)], n_per)
    return x.astype(np.float32), labels


def test_study_sigma_schedule_endpoints():
    assert study_sigma(3.0, 0, 50) == pytest.approx(3.0)
    assert study_sigma(3.0, 50, 50) == pytest.approx(0.25)
    assert study_sigma(7.0, 50, 50) == pytest.approx(0.25)
    assert study_sigma(3.0, 10, 50) > study_sigma(3.0, 20, 50)


def test_som_uses_the_study_schedule_and_is_deterministic(monkeypatch):
    calls = []
    real = som_mod.study_sigma
    monkeypatch.setattr(som_mod, "study_sigma", lambda s, t, T: calls.append((t, T)) or real(s, t, T))
    x, labels = clusters(n_per=10)
    a = fit_som(x, grid=(5, 5), epochs=4, seed=1)
    assert {t for t, _ in calls} == {0, 1, 2, 3} and {T for _, T in calls} == {4}
    b = fit_som(x, grid=(5, 5), epochs=4, seed=1)
    assert a.winners.shape == (40, 2) and a.umatrix.shape == (5, 5) and a.weights.shape == (5, 5, 16)
    np.testing.assert_array_equal(a.winners, b.winners)
    cells = cell_label_distribution(a.winners, labels, (5, 5))
    assert sum(c["n"] for c in cells) == 40 and all(abs(sum(c["shares"].values()) - 1) < 1e-9 for c in cells)
    with pytest.raises(ValueError, match="study, minisom"):
        fit_som(x, schedule="fast")


def test_neighbours_agree_with_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    q = np.array([0, 5, 17])
    mask = rng.random(60) < 0.7
    idx, sims = nearest_neighbours(x, q, 5, candidates=mask)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for row, qi in enumerate(q):
        s = u @ u[qi]
        order = [j for j in np.argsort(-s) if j != qi and mask[j]][:5]
        assert idx[row].tolist() == order
        np.testing.assert_allclose(sims[row], s[order])


def test_purity_is_one_on_separated_clusters_and_chance_on_shuffled_labels():
    x, labels = clusters()
    assert knn_purity(x, labels, k=10) == 1.0
    assert silhouette(x, labels) > 0.9
    shuffled = np.random.default_rng(0).permutation(labels)
    assert abs(knn_purity(x, shuffled, k=10) - 0.25) < 0.07
    assert silhouette(x, np.array(["a"] * len(x))) is None


def test_shares_and_centroids_find_the_nearest_class():
    x, labels = clusters(k=3, d=8)
    x[labels == "c2"] = x[labels == "c0"] + 0.3  # c2 sits right next to c0
    shares = neighbour_shares(labels, "c0", x, k=5)
    assert shares.iloc[0]["label"] == "c2" and shares["share"].sum() == pytest.approx(1.0)
    cents = centroid_distances(x, labels, "c0")
    assert cents.iloc[0]["label"] == "c2"


def test_tsne_is_deterministic_and_places_new_points_near_their_cluster():
    x, labels = clusters(n_per=30, k=3)
    a = TsneMap(x, perplexity=10, seed=0)
    b = TsneMap(x, perplexity=10, seed=0)
    assert a.coords.shape == (90, 2)
    np.testing.assert_allclose(a.coords, b.coords)
    new = x[labels == "c1"][:3] + 0.01
    placed = a.place(new)
    centre = a.coords[labels == "c1"].mean(0)
    others = [a.coords[labels == c].mean(0) for c in ("c0", "c2")]
    for p in placed:
        assert np.linalg.norm(p - centre) < min(np.linalg.norm(p - o) for o in others)


def test_selection_caps_each_label_and_drops_unlabelled(tiny_nih, tiny_covid):
    from engine.data import COVID19Collection, NIHChestXray14

    sel = select_images(NIHChestXray14(tiny_nih), COVID19Collection(tiny_covid), per_label=3, seed=0)
    assert sel.groupby("label").size().max() <= 3
    assert "COVID-19" in set(sel["label"]) and "Other pneumonia (COVID set)" in set(sel["label"])
    assert display_label({"dataset": "nih", "findings": "Effusion|Mass", "label_group": ""}) == "Effusion"


@pytest.mark.slow
def test_embed_and_neighbours_commands_on_the_pack(trained_run, data_pack):
    ck, run = trained_run
    env = {"CXR_CHECKPOINTS": str(ck)}

    def cli(*args):
        out = run_cli(*args, "--nih-root", data_pack / "nih", "--per-label", "15", "--json", env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    t = cli("embed", run, "--method", "tsne", "--space", "features")
    assert t["images"] == len(t["points"]) > 100 and {"knn_purity", "silhouette_label",
                                                      "silhouette_dataset"} <= set(t["numbers"])
    s = cli("embed", run, "--method", "som", "--space", "pixels", "--grid", "6", "--epochs", "5")
    assert len(s["som"]["umatrix"]) == 6 and s["som"]["cells"]
    n = cli("neighbours", run, "--label", "COVID-19", "--k", "5")
    assert set(n["spaces"]) == {"pixels", "features"} and len(n["neighbours"]) == 15
    assert all(nb["label"] != "COVID-19" for q in n["neighbours"] for nb in q["neighbours"])
    assert any(p.suffix == ".npz" for p in (ck / run / "landscape").iterdir())  # cached per run


def test_unreadable_images_are_left_out_and_counted(trained_run, tiny_nih, tmp_path):
    import shutil

    from engine.landscape.store import load_landscape
    from engine.runs import Registry

    ck, run = trained_run
    nih = tmp_path / "nih_broken"
    shutil.copytree(tiny_nih, nih)
    for p in (nih / "images").iterdir():
        p.write_bytes(b"not an image")  # every NIH file broken; the COVID images still read
    reg = Registry(ck)
    ls = load_landscape(reg.run_dir(run), reg.get(run).config, nih_root=nih, per_label=3, seed=0)
    n_nih = int((ls.frame["dataset"] == "nih").sum())
    assert n_nih == 0 and ls.unreadable > 0 and len(ls.frame) > 0
    # from the run's cache
    again = load_landscape(reg.run_dir(run), reg.get(run).config, nih_root=nih, per_label=3, seed=0)
    assert again.unreadable == ls.unreadable and len(again.frame) == len(ls.frame)


def test_the_landscape_cache_is_bounded_per_run_and_can_be_cleared(tmp_path):
    import numpy as np

    from engine.landscape.store import KEEP_CACHED, cache_entries, prune_cache

    folder = tmp_path / "run" / "landscape"
    folder.mkdir(parents=True)
    for k in range(KEEP_CACHED + 3):
        np.savez(folder / f"k{k}.npz", features=np.zeros((2, 2)))
        (folder / f"k{k}.csv").write_text("a\n1\n")
        import os
        os.utime(folder / f"k{k}.npz", (1000 + k, 1000 + k))
    assert prune_cache(tmp_path / "run") > 0
    assert [e[0] for e in cache_entries(tmp_path / "run")] == [f"k{k}" for k in range(KEEP_CACHED + 2, 2, -1)]
    prune_cache(tmp_path / "run", keep=0)
    assert cache_entries(tmp_path / "run") == [] and not list(folder.iterdir())


def _brute_neighbours(x, queries, k, candidates=None):
    """The N x N reference: every similarity, a stable full sort."""
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = u[queries] @ u.T
    allowed = np.ones(len(x), bool) if candidates is None else candidates
    sims = np.where(allowed[None, :], sims, -np.inf)
    sims[np.arange(len(queries)), queries] = -np.inf
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :min(k, int(allowed.sum()))]
    return idx, np.take_along_axis(sims, idx, axis=1)


def test_blocked_top_k_neighbours_equal_the_brute_force_ones_ties_included():
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(600, 12)), 1)
    x[100:140] = x[0]  # exact copies: many equal similarities
    for k in (1, 7, 30):
        for mask in (None, rng.random(600) > 0.5):
            q = np.arange(600)
            got = nearest_neighbours(x, q, k, candidates=mask, block_bytes=8 * 600 * 37)  # 37 queries a block
            want = _brute_neighbours(x, q, k, mask)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1])
    labels = np.repeat(np.arange(6), 100)
    assert knn_purity(x, labels, k=10) == float((labels[_brute_neighbours(x, np.arange(600), 10)[0]]
                                                == labels[:, None]).mean())


def test_landscape_numbers_say_when_the_silhouette_scores_a_sample():
    from engine.landscape.embeddings import SILHOUETTE_SAMPLE, landscape_numbers

    rng = np.random.default_rng(1)
    small = landscape_numbers(rng.normal(size=(50, 4)), np.repeat([0, 1], 25), np.repeat(["a", "b"], 25))
    assert small["silhouette_sample"] is None and small["points"] == 50
    n = SILHOUETTE_SAMPLE + 10
    big = landscape_numbers(rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % 3, np.arange(n) % 2)
    assert big["silhouette_sample"] == SILHOUETTE_SAMPLE and big["points"] == n
