"""Heatmaps: the CAM gallery of a run, split and class; click an image for all classes' maps."""
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import cache
from dashboard.ui.pickers import pick_run, runs_with_predictions
from engine import best_checkpoint, overlay_heatmap
from engine.constants import CAM_METHODS
from engine.explain.overlay import COLORMAPS
from engine.data.images import ImageReadError
from engine.explain.gallery import coarse_grid_note, top_k
from engine.explain.localize import NIH_BOX_SPACE

st.title("Heatmaps")
st.caption("Top predictions of a class with their activation maps, on one shared scale per class so they compare.")
reg = cache.registry()
runs = runs_with_predictions(reg, "test")
if not runs:
    st.info("No evaluated run yet: galleries are drawn from a run's saved test/val predictions.")
    st.stop()
c1, c2, c3, c4, c5 = st.columns([3, 1, 2, 2, 1])
run = pick_run(runs, "heatmaps.run", container=c1)
split = c2.radio("Split", ["test", "val"], key="heatmaps.split")
preds = cache.predictions(reg.run_dir(run), split)
if preds is None or "path" not in preds.info:
    st.warning("This run's predictions predate image paths; run `python -m engine evaluate RUN --split both` again.")
    st.stop()
classes = list(preds.classes)
cls = c3.selectbox("Class", classes, key="heatmaps.class")
method = c4.selectbox("Method", CAM_METHODS, key="heatmaps.method")
k = c5.number_input("Top k", 1, 48, 12, key="heatmaps.k")
o1, o2, o3 = st.columns(3)
scale = o1.radio("Scale", ["class", "image"], horizontal=True, key="heatmaps.scale",
                 help="class: one scale for the whole gallery, so maps compare; image: each map stretched to its own range")
cmap = o2.selectbox("Colormap", list(COLORMAPS), key="heatmaps.cmap")
alpha = o3.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="heatmaps.alpha")
rows = top_k(preds, cls, int(k))
try:
    checkpoint = best_checkpoint(reg.run_dir(run))
    model = cache.loaded_model(checkpoint)
    if coarse_grid_note(model.image_size):
        st.warning(coarse_grid_note(model.image_size))
    grays, maps = cache.gallery(str(checkpoint), split, cls, method, int(k), scale)
except (FileNotFoundError, ImageReadError, ValueError) as exc:
    st.error(f"Cannot draw the gallery: {exc}")
    st.stop()
cols = st.columns(4)
for i, (gray, m) in enumerate(zip(grays, maps)):
    r = rows.iloc[i]
    with cols[i % 4]:
        st.image(overlay_heatmap(gray, m, alpha=alpha, colormap=cmap), width="stretch",
                 caption=f"{ {'TP': '✔', 'FP': '✘'}.get(r.outcome, '?')} {r.outcome} · p={r.probability:.3f} · {r.image}")
        if st.button("Details", key=f"heatmaps.pick.{i}"):
            st.session_state["heatmaps.detail"] = (run, split, r.image)


@st.dialog("Every class of one image", width="large")
def details(r, gray) -> None:
    """All classes' probabilities and maps of one image, with the gallery's method and colours."""
    st.subheader(f"{r.image} · {r.dataset}")
    n = len(model.class_names)
    if method == "cam":
        probs, all_maps = model.predict(gray, method="cam", scale="image")
    else:  # gradient methods need a backward pass per class: show how far along
        bar = st.progress(0.0, text=f"{method}: 0/{n} classes")
        parts = []
        for j in range(n):
            probs, m = model.predict(gray, method=method, classes=[j], scale="image")
            parts.append(m[0])
            bar.progress((j + 1) / n, text=f"{method}: {j + 1}/{n} classes")
        bar.empty()
        all_maps = parts
    st.caption(f"Method {method}; each map scaled to its own range (one image: a per-class scale would be the same).")
    cache.chart("probability_chart", pd.DataFrame({"class": model.class_names, "probability": probs}))
    data = reg.get(run).config["data"]
    rsna = data.get("manifest_format") == "rsna"  # a run trained on the RSNA folder: its pneumonia boxes
    boxes = cache.boxes(data.get("manifest" if rsna else "nih_root") or "", "rsna" if rsna else "nih")
    mine = boxes[boxes["image"] == Path(r.image).name] if not boxes.empty else boxes
    h, w = gray.shape
    grid = st.columns(5)
    grid[0].image(gray, caption="original", width="stretch")
    sx, sy = w / NIH_BOX_SPACE, h / NIH_BOX_SPACE
    for j, name in enumerate(model.class_names):
        box = mine[mine["label"] == name]
        b = None if box.empty else tuple(box.iloc[0][["x", "y", "w", "h"]] * [sx, sy, sx, sy])
        grid[(j + 1) % 5].image(overlay_heatmap(gray, all_maps[j], box=b, alpha=alpha, colormap=cmap), width="stretch",
                                caption=f"{name} · {probs[j]:.2f}" + ((" · RSNA box" if rsna else " · NIH box") if b else ""))


picked = st.session_state.get("heatmaps.detail")
if picked is not None:
    st.session_state["heatmaps.detail"] = None  # shown once per click; closing the dialog forgets it
    p_run, p_split, p_image = picked
    names = list(rows["image"])
    if (p_run, p_split) == (run, split) and p_image in names:  # the same image, whatever its place now
        k = names.index(p_image)
        details(rows.iloc[k], grays[k])
