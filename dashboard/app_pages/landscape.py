"""Landscape: t-SNE and SOM of raw pixels vs the network's features, and COVID-19's neighbours."""
import time

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, guard, state
from dashboard.ui import tables
from dashboard.ui.pickers import pick_run, runs_with_checkpoint
from engine import COVID_LABEL, best_checkpoint
from engine.text import human_bytes

st.title("Pathology landscape")
st.caption("The study's figure 7: before training, maps separate the two datasets; after, they cluster by disease. "
           "The numbers below test that claim instead of only picturing it.")
reg = cache.registry()
names = runs_with_checkpoint(reg)
if not names:
    st.info("No trained model yet: the landscape maps a run's latent features.")
    st.stop()
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
run = pick_run(names, "landscape.run", container=c1, reg=reg)
per_label = c2.number_input("Images per label", 10, 500, 60, 10, key="landscape.per_label")
perplexity = c3.number_input("Perplexity", 2.0, 100.0, 30.0, 1.0, key="landscape.perplexity")
seed = c4.number_input("Seed", 0, 10_000, 0, key="landscape.seed")
space = st.radio("Space", ["features", "pixels"], horizontal=True, key="landscape.space",
                 format_func=lambda s: "network features (after training)" if s == "features" else "raw pixels (before)")

ckpt = best_checkpoint(reg.run_dir(run))
with st.sidebar.expander("Landscape cache of this run"):
    from engine.landscape.store import KEEP_CACHED, cache_entries, prune_cache

    entries = cache_entries(reg.run_dir(run))
    st.caption(f"{len(entries)} cached landscape(s), {human_bytes(sum(e[1] for e in entries))}; the newest "
               f"{KEEP_CACHED} are kept.")
    if guard.action("Clear", key="landscape.clear", disabled=not entries):
        freed = prune_cache(reg.run_dir(run), keep=0)
        cache.landscape.clear()
        st.caption(f"Cleared {human_bytes(freed)}.")
roots = (st.session_state[state.NIH_ROOT], st.session_state[state.COVID_ROOT])
try:
    ready = cache.landscape_ready(run, *roots, int(per_label), int(seed))
    if not ready:
        st.info(f"The landscape of **{run}** with {int(per_label)} images per label is not built yet: the model "
                "reads each selected image once, then it is cached in the run folder and opens at once. For the pack "
                f"(up to about {int(per_label) * 17:,} images: {int(per_label)} for each of up to 17 labels) that is "
                "minutes on a 2-core CPU, seconds on a GPU; the bar says how long each stage has left.")
        if not guard.action("Build the landscape", type="primary", key="landscape.build"):
            st.stop()
        bar = st.progress(0.0, text="selecting images…")
        started = {"t": time.monotonic(), "stage": "selecting images", "t0": time.monotonic()}

        def on_stage(text: str) -> None:
            started.update(t=time.monotonic(), stage=text)
            bar.progress(0.0, text=f"{text}…")

        def progress(done: int, total: int) -> None:
            """Each stage's own bar and estimate: reading an image and running the model on it take
            different times, so one rate for both misled (issue 23 N3)."""
            spent = time.monotonic() - started["t"]
            left = spent / max(done, 1) * (total - done)
            bar.progress(min(done / max(total, 1), 1.0),
                         text=f"{started['stage']}: {done}/{total}, about {left:.0f} s left in this stage"
                              + ("; then the model reads them" if started["stage"].startswith("reading") else ""))

        cache.build_landscape(run, *roots, int(per_label), int(seed), progress, on_stage)
        st.toast(f"Landscape built in {time.monotonic() - started['t0']:.0f} s; drawing the maps (t-SNE, SOM)…")
        st.rerun()  # draw the page afresh, without the prompt
    ls = cache.landscape(run, cache.mtime(ckpt), *roots, int(per_label), int(seed))
except (FileNotFoundError, ValueError) as exc:
    st.error(f"Cannot build the landscape: {exc}")
    st.stop()
frame = ls.frame
labels, datasets = frame["label"].to_numpy(), frame["dataset"].to_numpy()
if len(frame) < 10:
    st.warning(f"Only {len(frame)} images selected; set both data roots in the sidebar.")
    st.stop()
if ls.unreadable:
    st.caption(f"{ls.unreadable} selected image(s) could not be decoded and are left out.")
thumbs = cache.thumbnails(ls.key, tuple(frame["path"]))
x = ls.space(space)

numbers = {s: cache.landscape_numbers(ls.key, s, 10, ls.space(s), labels, datasets) for s in ("pixels", "features")}
m = st.columns(3)
for col, (key, title, better) in zip(m, (("knn_purity", "10-NN label purity", "higher = clustered by disease"),
                                         ("silhouette_label", "silhouette by pathology",
                                          "higher = clustered by disease"),
                                         ("silhouette_dataset", "silhouette by dataset", "lower = datasets mixed"))):
    f, p = numbers["features"][key], numbers["pixels"][key]
    col.metric(title, "—" if f is None else f"{f:.3f}", None if f is None or p is None else f"{f - p:+.3f} vs pixels",
               delta_color="inverse" if key == "silhouette_dataset" else "normal", help=better)

if numbers["features"].get("silhouette_sample"):
    st.caption(f"Silhouettes are scored on a seeded sample of {numbers['features']['silhouette_sample']:,} of "
               f"{len(frame):,} images (the score compares every pair of points); the purity uses them all.")

covid_idx = np.flatnonzero(labels == COVID_LABEL)
pick = None
if len(covid_idx):
    pick = st.selectbox("Highlight a COVID-19 image", covid_idx, key="landscape.pick",
                        format_func=lambda i: frame.at[i, "image"])

pts = pd.DataFrame({"label": labels, "dataset": datasets, "image": frame["image"], "thumb": thumbs})
left = right = st.container()  # one map under the other, each as wide as the page (issue 37, N12: squashed side by side)
with left:
    coords = cache.tsne_coords(ls.key, space, float(perplexity), int(seed), x)
    tsne_pts = pts.assign(x=coords[:, 0], y=coords[:, 1])
    cache.chart("embedding_chart", tsne_pts, f"t-SNE · {space}", None if pick is None else frame.at[pick, "image"],
                name=f"{run}_tsne_{space}")
with right:
    som = cache.som_result(ls.key, space, 12, 50, int(seed), x)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, som.winners.shape)
    som_pts = pts.assign(x=som.winners[:, 0] + jitter[:, 0], y=som.winners[:, 1] + jitter[:, 1])
    cache.chart("umatrix_chart", som.umatrix, som_pts, f"SOM 12x12 · {space}", name=f"{run}_som_{space}")
    st.caption(f"quantisation error {som.quantization_error:.3f}, topographic error {som.topographic_error:.3f}; "
               "study schedule sigma_t = sigma_0 exp(-t^2 log(4 sigma_0) / T^2)")

st.subheader("Which pathologies lie nearest COVID-19")
if not len(covid_idx):
    st.info("No COVID-19 image in the selection: set the COVID-19 root in the sidebar.")
    st.stop()
k = st.slider("k nearest neighbours (other labels only)", 3, 30, 10, key="landscape.k")
shares, cents = cache.covid_neighbourhood(ls.key, k, {s: ls.space(s) for s in ("pixels", "features")}, labels,
                                         COVID_LABEL)
a, b = st.columns([3, 2])
cache.chart("shares_chart", shares, container=a, name=f"{run}_covid_neighbours_k{k}")
b.dataframe(tables.safe(cents.pivot_table(index="label", columns="space", values="distance").sort_values("features")),
            width="stretch", column_config={s: st.column_config.NumberColumn(format="%.3f") for s in ("pixels",
                                                                                                      "features")})
b.caption("Cosine distance between class centroids (standardised features); smaller = closer to COVID-19.")

idx, sims = cache.nearest_images(ls.key, space, int(pick), k, x, labels, COVID_LABEL)
st.markdown(f"**Nearest {k} images to {frame.at[pick, 'image']}** ({space})")
cols = st.columns(min(k, 5))  # five a row: a class name ("Other pneumonia (COVID set)") wraps between words
for j, (i, s) in enumerate(zip(idx[0], sims[0])):
    with cols[j % len(cols)]:
        if thumbs[i]:
            st.image(thumbs[i], width="stretch")
        st.caption(f"{labels[i]} · {s:.2f}")
