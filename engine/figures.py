"""Figures: Altair chart builders (data in, charts out) for the dashboard, the run bundle and the
study report, and their export to PNG and SVG through vl-convert (no browser). No Streamlit here."""
from __future__ import annotations

import json

import altair as alt
import pandas as pd

from engine.constants import COVID_LABEL, NIH_LABELS, NO_FINDING, PNEUMONIA_LABELS

# One colour per class, the same on every chart: 14 hues chosen to stay apart on the dark theme
# (after Kelly's colours of maximum contrast), COVID-19 a vivid red that no other class comes near.
CLASS_COLORS = dict(zip(NIH_LABELS, (
    "#F3C300", "#A1CAF1", "#F38400", "#8DB600", "#E68FAC", "#3D8FD1", "#C2B280",
    "#B07CC6", "#2FA37A", "#F99379", "#A0A0A0", "#D4E157", "#B5651D", "#00B8D4"))) | {
    COVID_LABEL: "#FF1744", NO_FINDING: "#CFD8DC", "Other pneumonia (COVID set)": "#FFB300", "mean": "#FFFFFF",
    "other": "#9E9E9E"} | {  # the pneumonia task's types, apart from COVID-19's red and from each other
    PNEUMONIA_LABELS[1]: "#CE93D8", PNEUMONIA_LABELS[2]: "#4DB6AC", PNEUMONIA_LABELS[3]: "#BCAAA4"}
EXTRA = ("#66BB6A", "#26C6DA", "#AB47BC", "#FFA726", "#8D6E63", "#78909C")
LABEL_LIMIT = 320  # px: the longest class name ("Pleural_Thickening (0.812)") fits whole


def class_scale(labels, class_of=None) -> alt.Scale:
    """A colour scale giving each label its class's colour (labels may carry text after the class,
    e.g. "Effusion (0.812)": class_of maps a label to its class)."""
    labels = list(dict.fromkeys(labels))
    colors, spare = [], iter(EXTRA * 4)
    for lab in labels:
        cls = class_of(lab) if class_of else lab
        colors.append(CLASS_COLORS.get(cls) or next(spare))
    return alt.Scale(domain=labels, range=colors)


def legend(title=None, n: int = 20, **kw) -> alt.Legend:
    """A legend that lists every entry whole (no "…" after 10 symbols, no names cut mid-word)."""
    return alt.Legend(**{"title": title, "symbolLimit": max(n, 20), "labelLimit": LABEL_LIMIT, "columns": 1, **kw})


def train_steps_per_epoch(progress: dict | None, steps: pd.DataFrame) -> int | None:
    """The training steps of one epoch, the loss chart's unit of x in every phase: the trainer's own
    count while it trains; in validation and the final test (whose step counts are their own), the
    most steps an epoch has logged."""
    if progress and progress.get("phase") == "train" and progress.get("steps"):
        return int(progress["steps"])
    if steps.empty:
        return None
    return int(steps.groupby("epoch").size().max())


def loss_chart(steps: pd.DataFrame, epochs: pd.DataFrame, steps_per_epoch: int | None = None) -> alt.Chart:
    """Train loss per step (thin line, smoothed) and validation loss per epoch (points + line)."""
    layers = []
    if not steps.empty:
        s = steps.copy()
        s["smoothed"] = s["train_loss"].rolling(max(1, len(s) // 50), min_periods=1).mean()
        s["x"] = s["step"] / steps_per_epoch if steps_per_epoch else s["epoch"] + 0.0
        base = alt.Chart(s).encode(x=alt.X("x:Q", title="epoch"))
        layers.append(base.mark_line(opacity=0.25, color="#90caf9").encode(y=alt.Y("train_loss:Q", title="BCE loss"),
                                                                            tooltip=["step", "train_loss"]))
        layers.append(base.mark_line(color="#42a5f5").encode(y="smoothed:Q"))
    if not epochs.empty:
        e = epochs.melt(id_vars=["epoch"], value_vars=["train_loss", "val_loss"], var_name="curve", value_name="loss")
        layers.append(alt.Chart(e).mark_line(point=True).encode(
            x=alt.X("epoch:Q"), y=alt.Y("loss:Q", title="BCE loss"),
            color=alt.Color("curve:N", scale=alt.Scale(domain=["train_loss", "val_loss"], range=["#1e88e5", "#ff7043"]),
                            title="per epoch"),
            tooltip=["epoch", "curve", alt.Tooltip("loss:Q", format=".4f")]))
    if not layers:
        return alt.Chart(pd.DataFrame({"x": []})).mark_point()
    xs = pd.concat([*([s["x"]] if not steps.empty else []), *([epochs["epoch"]] if not epochs.empty else [])])
    # said to screen readers (the chart's aria-label), and read back by the live-chart journey
    return alt.layer(*layers).properties(height=280, description=f"BCE loss by training epoch, from epoch "
                                                                 f"{xs.min():g} to {xs.max():g}")


def epoch_aucs(epochs: pd.DataFrame) -> pd.DataFrame:
    """The registry's epochs (a dict of per-class AUCs per row) as one row per epoch and class, "mean"
    included: plain columns, which Streamlit's cache hashes without falling back to pickling."""
    rows = []
    for _, r in epochs.iterrows():
        scored = [(c, a) for c, a in (r["val_auc"] or {}).items() if a is not None]
        for c, a in scored:
            rows.append({"epoch": r["epoch"], "class": c, "auc": a})
        # one class: its mean is itself, and the thick mean line would hide it (issue 37, N12)
        if len(scored) > 1 and r["val_auc_mean"] is not None and pd.notna(r["val_auc_mean"]):
            rows.append({"epoch": r["epoch"], "class": "mean", "auc": r["val_auc_mean"]})
    return pd.DataFrame(rows, columns=["epoch", "class", "auc"])


def auc_chart(df: pd.DataFrame) -> alt.Chart:
    """Per-class validation AUC per epoch (epoch_aucs' rows), with the mean drawn thick."""
    sel = alt.selection_point(fields=["class"], bind="legend", on="pointerover", clear="pointerout")
    return alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=40)).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),  # whole epochs: never "1.000000"
        y=alt.Y("auc:Q", title="validation AUC", scale=alt.Scale(domain=[0.3, 1.0])),
        color=alt.Color("class:N", scale=class_scale(df["class"]), legend=legend(n=df["class"].nunique())),
        size=alt.condition((alt.datum["class"] == "mean") | (alt.datum["class"] == COVID_LABEL), alt.value(4),
                           alt.value(1.5)),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.15)),
        tooltip=["epoch", "class", alt.Tooltip("auc:Q", format=".4f")],
    ).add_params(sel).properties(height=280)


def roc_chart(records: pd.DataFrame, color: str = "label") -> alt.Chart:
    """ROC curves from records {fpr, tpr, label, auc}; the chance diagonal dashed."""
    diag = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="fpr:Q", y="tpr:Q")
    sel = alt.selection_point(fields=[color], bind="legend")
    labels = list(dict.fromkeys(records[color]))
    curves = alt.Chart(records).mark_line(interpolate="step-after").encode(
        x=alt.X("fpr:Q", title="false positive rate"), y=alt.Y("tpr:Q", title="true positive rate"),
        color=alt.Color(f"{color}:N", scale=class_scale(labels, lambda lab: str(lab).rsplit(" (", 1)[0]),
                        legend=legend(n=len(labels), orient="bottom", columns=2)),  # the plot keeps the width
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.12)),
        tooltip=[color, alt.Tooltip("auc:Q", format=".3f"), alt.Tooltip("fpr:Q", format=".3f"),
                 alt.Tooltip("tpr:Q", format=".3f")],
    ).add_params(sel)
    return (diag + curves).properties(height=420)


def probability_chart(probs: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of class probabilities, sorted."""
    return alt.Chart(probs).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT, labelOverlap=False)),
        color=alt.Color("probability:Q", scale=alt.Scale(scheme="orangered", domain=[0, 1]), legend=None),
        tooltip=["class", alt.Tooltip("probability:Q", format=".3f")],
    ).properties(height=alt.Step(22))


def embedding_chart(points: pd.DataFrame, title: str, highlight: str | None = None) -> alt.Chart:
    """Scatter of 2-D coordinates coloured by pathology; tooltips carry the thumbnail and labels.
    points: x, y, label, dataset, image, thumb (PNG data URI)."""
    sel = alt.selection_point(fields=["label"], bind="legend")
    base = alt.Chart(points).mark_circle(size=38, stroke="white", strokeWidth=0.2).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("label:N", legend=legend("pathology", points["label"].nunique(), orient="right"),
                        scale=class_scale(sorted(points["label"].unique()))),
        size=alt.condition(alt.datum.label == COVID_LABEL, alt.value(70), alt.value(38)),
        shape=alt.Shape("dataset:N", legend=alt.Legend(title="dataset", orient="right")),
        opacity=alt.condition(sel, alt.value(0.9), alt.value(0.08)),
        tooltip=[alt.Tooltip("thumb:N", title="image"), "label", "dataset", alt.Tooltip("image:N", title="file")],
    ).add_params(sel)
    layers = [base]
    if highlight is not None:
        layers.append(alt.Chart(points[points["image"] == highlight]).mark_point(
            size=400, color="white", strokeWidth=2.5).encode(x="x:Q", y="y:Q"))
    return alt.layer(*layers).properties(title=title, height=map_height(points)).interactive()


def umatrix_chart(umatrix, points: pd.DataFrame, title: str) -> alt.Chart:
    """SOM: the U-matrix as a gray background (light = far from neighbours) with winners on top."""
    um = pd.DataFrame([{"cx": i, "cy": j, "u": float(umatrix[i][j])} for i in range(len(umatrix))
                       for j in range(len(umatrix[0]))])
    n = len(umatrix)
    scale_x = alt.Scale(domain=[-0.5, n - 0.5])
    scale_y = alt.Scale(domain=[-0.5, len(umatrix[0]) - 0.5])
    bg = alt.Chart(um).mark_rect(opacity=0.85).encode(
        x=alt.X("x0:Q", scale=scale_x, axis=None), x2="x1:Q", y=alt.Y("y0:Q", scale=scale_y, axis=None), y2="y1:Q",
        color=alt.Color("u:Q", scale=alt.Scale(scheme="greys"), legend=alt.Legend(title="U-matrix", orient="right")),
    ).transform_calculate(x0="datum.cx - 0.5", x1="datum.cx + 0.5", y0="datum.cy - 0.5", y1="datum.cy + 0.5")
    sel = alt.selection_point(fields=["label"], bind="legend")
    pts = alt.Chart(points).mark_circle(size=30).encode(
        x=alt.X("x:Q", scale=scale_x), y=alt.Y("y:Q", scale=scale_y),
        color=alt.Color("label:N", scale=class_scale(sorted(points["label"].unique())),
                        legend=legend("pathology", points["label"].nunique(), orient="right")),
        opacity=alt.condition(sel, alt.value(0.9), alt.value(0.08)),
        tooltip=[alt.Tooltip("thumb:N", title="image"), "label", "dataset", alt.Tooltip("image:N", title="file")],
    ).add_params(sel)
    return alt.layer(bg, pts).resolve_scale(color="independent").properties(title=title, height=map_height(points))


LEGEND_ROW_PX = 30  # a legend entry's height on the page (symbol, label and padding), as measured in Chromium


def map_height(points: pd.DataFrame) -> int:
    """A map's plot height: 520 px, or more where its pathology legend (one entry a row, on the right)
    needs it with the dataset or U-matrix legend below, so no entry is ever clipped (the SOM's legend
    showed 12 of 17 labels when it sat below a plot of fixed height; issue 37, N12)."""
    return max(520, LEGEND_ROW_PX * (points["label"].nunique() + 3) + 200)  # + titles and the second legend


def shares_chart(shares: pd.DataFrame) -> alt.Chart:
    """Grouped bars: share of the query's nearest neighbours per pathology, pixels vs features."""
    return alt.Chart(shares).mark_bar().encode(
        y=alt.Y("label:N", sort=alt.EncodingSortField("share", op="max", order="descending"), title=None,
                axis=alt.Axis(labelLimit=LABEL_LIMIT)),
        x=alt.X("share:Q", title="share of nearest neighbours", axis=alt.Axis(format="%")),
        color=alt.Color("space:N", scale=alt.Scale(domain=["pixels", "features"], range=["#90a4ae", "#ff7043"])),
        yOffset="space:N", tooltip=["label", "space", alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=max(200, 34 * shares["label"].nunique()))


STATUS_COLORS = alt.Scale(domain=["ok", "flagged", "too small", "one class"],
                          range=["#1e88e5", "#e53935", "#9e9e9e", "#9e9e9e"])
UNSCORED = {"too small": "too small to score", "one class": "one class only, no AUC"}


def forest_chart(rows: pd.DataFrame) -> alt.Chart:
    """Subgroup AUCs as a forest plot: one row per group, the interval as a bar, the AUC as a point,
    the overall AUC as a dashed line; flagged groups red, groups too small to score grey at the axis
    start with their counts in the tooltip. rows: attribute, group, auc, low, high, overall_auc,
    images, positives, status."""
    df = rows.copy()
    df["row"] = df["attribute"] + ": " + df["group"]
    df["shown"] = df["auc"].fillna(0.0)  # a group too small to score sits at the axis start, labelled
    df["note"] = [f"{UNSCORED[st]}: {n} images, {p} positive" if st in UNSCORED else ""
                  for st, n, p in zip(df["status"], df["images"], df["positives"])]
    order = list(df["row"])
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT, labelOverlap=False))
    tip = ["row", "status", "images", "positives", alt.Tooltip("auc:Q", format=".3f"),
           alt.Tooltip("low:Q", format=".3f"),
           alt.Tooltip("high:Q", format=".3f")]
    x_scale = alt.Scale(domain=[0, 1])
    ci = alt.Chart(df.dropna(subset=["low", "high"])).mark_rule(strokeWidth=2.5).encode(
        x=alt.X("low:Q", scale=x_scale, title="AUC (95 % patient-bootstrap interval)"), x2="high:Q", y=y,
        color=alt.Color("status:N", scale=STATUS_COLORS, title="group"), tooltip=tip)
    unscored = alt.FieldOneOfPredicate(field="status", oneOf=list(UNSCORED))
    pts = alt.Chart(df).mark_point(filled=True, size=70).encode(
        x=alt.X("shown:Q", scale=x_scale), y=y, shape=alt.condition(unscored, alt.value("cross"), alt.value("circle")),
        color=alt.Color("status:N", scale=STATUS_COLORS, title="group"), tooltip=tip)
    overall = alt.Chart(df.head(1)).mark_rule(strokeDash=[5, 4], color="#B0BEC5").encode(
        x="overall_auc:Q", tooltip=[alt.Tooltip("overall_auc:Q", title="overall AUC", format=".3f")])
    chance = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(color="#616161").encode(x="x:Q")
    notes = alt.Chart(df[df["note"] != ""]).mark_text(align="left", dx=10, color="#9e9e9e").encode(
        x=alt.X("shown:Q", scale=x_scale), y=y, text="note:N")
    return alt.layer(chance, overall, ci, pts, notes).properties(height=alt.Step(26))


def study_chart(cells: pd.DataFrame, repeats: pd.DataFrame | None = None) -> alt.Chart:
    """The study's tables as one figure: per experiment our AUC (point) with its 95 % interval (bar),
    the published value (diamond) and, with repeats, every repeat's AUC as a small open dot.
    cells: table, label, class, ours, low, high, published; repeats: table, label, class, repeat, auc."""
    df = cells.copy()
    df["row"] = df["table"] + " · " + df["label"] + " (" + df["class"] + ")"
    order = list(df["row"])
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT + 120, labelOverlap=False))
    x_scale = alt.Scale(domain=[0, 1])
    tip = ["row", alt.Tooltip("ours:Q", format=".3f"), alt.Tooltip("low:Q", format=".3f"),
           alt.Tooltip("high:Q", format=".3f"), alt.Tooltip("published:Q", format=".2f")]
    chance = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(color="#616161").encode(x="x:Q")
    ci = alt.Chart(df.dropna(subset=["low", "high"])).mark_rule(strokeWidth=2.5, color="#42a5f5").encode(
        x=alt.X("low:Q", scale=x_scale, title="test AUC (ours: point and 95 % interval; published: diamond)"),
        x2="high:Q", y=y, tooltip=tip)
    ours = alt.Chart(df.dropna(subset=["ours"])).mark_point(filled=True, size=80, color="#42a5f5").encode(
        x=alt.X("ours:Q", scale=x_scale), y=y, tooltip=tip)
    published = alt.Chart(df.dropna(subset=["published"])).mark_point(shape="diamond", size=110, color="#FFB300",
                                                                      strokeWidth=2).encode(
        x=alt.X("published:Q", scale=x_scale), y=y, tooltip=tip)
    layers = [chance, ci, ours, published]
    if repeats is not None and len(repeats):
        r = repeats.copy()
        r["row"] = r["table"] + " · " + r["label"] + " (" + r["class"] + ")"
        layers.insert(1, alt.Chart(r).mark_point(size=30, color="#B0BEC5", opacity=0.9).encode(
            x=alt.X("auc:Q", scale=x_scale), y=y, tooltip=["row", "repeat", alt.Tooltip("auc:Q", format=".3f")]))
    return alt.layer(*layers).properties(height=alt.Step(28))


def learning_curve_chart(points: pd.DataFrame, repeats: pd.DataFrame | None = None) -> alt.Chart:
    """Test AUC against the share of training patients kept, one line per arm: repeat 0's AUC with its
    95 % interval, and with repeats, every repeat's AUC as a small open dot.
    points: arm, fraction, auc, low, high; repeats: arm, fraction, repeat, auc."""
    x = alt.X("fraction:Q", scale=alt.Scale(domain=[0, 1.05]), axis=alt.Axis(format="%"),
              title="training patients kept")
    y_scale = alt.Scale(domain=[0, 1])
    colour = alt.Color("arm:N", legend=legend("arm"))
    tip = ["arm", alt.Tooltip("fraction:Q", format=".0%"), alt.Tooltip("auc:Q", format=".3f"),
           alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")]
    chance = alt.Chart(pd.DataFrame({"y": [0.5]})).mark_rule(color="#616161", strokeDash=[4, 4]).encode(y="y:Q")
    have = points.dropna(subset=["auc"])
    line = alt.Chart(have).mark_line(point=alt.OverlayMarkDef(filled=True, size=70)).encode(
        x=x, y=alt.Y("auc:Q", scale=y_scale, title="test AUC (repeat 0 with 95 % interval)"), color=colour, tooltip=tip)
    ci = alt.Chart(have.dropna(subset=["low", "high"])).mark_errorbar(ticks=True).encode(
        x=x, y=alt.Y("low:Q", scale=y_scale, title="test AUC (repeat 0 with 95 % interval)"), y2="high:Q",
        color=colour, tooltip=tip)
    layers = [chance, ci, line]
    if repeats is not None and len(repeats):
        layers.append(alt.Chart(repeats).mark_point(size=30, opacity=0.8).encode(
            x=x, y=alt.Y("auc:Q", scale=y_scale), color=colour,
            tooltip=["arm", "repeat", alt.Tooltip("auc:Q", format=".3f")]))
    return alt.layer(*layers).properties(height=300)


def reliability_chart(bins: pd.DataFrame) -> alt.Chart:
    """Reliability diagram: observed positive rate against mean predicted probability per bin
    (point size = images in the bin), with the diagonal of perfect calibration."""
    diag = alt.Chart(pd.DataFrame({"p": [0, 1], "o": [0, 1]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x=alt.X("p:Q", scale=alt.Scale(domain=[0, 1]), title="mean predicted probability"),
        y=alt.Y("o:Q", scale=alt.Scale(domain=[0, 1]), title="observed positive rate"))
    line = alt.Chart(bins).mark_line(point=False, color="#1e88e5").encode(x="mean_predicted:Q", y="observed:Q")
    pts = alt.Chart(bins).mark_circle(color="#1e88e5").encode(
        x="mean_predicted:Q", y="observed:Q", size=alt.Size("images:Q", title="images in bin"),
        tooltip=[alt.Tooltip("mean_predicted:Q", format=".3f"), alt.Tooltip("observed:Q", format=".3f"), "images"])
    return alt.layer(diag, line, pts).properties(height=300)


def confusion_chart(counts: dict) -> alt.Chart:
    """2x2 confusion matrix as labelled cells: rows truth, columns prediction."""
    df = pd.DataFrame([{"truth": "positive", "prediction": "positive", "n": counts["tp"], "cell": "TP"},
                       {"truth": "positive", "prediction": "negative", "n": counts["fn"], "cell": "FN"},
                       {"truth": "negative", "prediction": "positive", "n": counts["fp"], "cell": "FP"},
                       {"truth": "negative", "prediction": "negative", "n": counts["tn"], "cell": "TN"}])
    df["text"] = df["cell"] + " " + df["n"].astype(str)
    base = alt.Chart(df).encode(x=alt.X("prediction:N", sort=["positive", "negative"], title="prediction",
                                        axis=alt.Axis(labelAngle=0)),
                                y=alt.Y("truth:N", sort=["positive", "negative"], title="truth"))
    cells = base.mark_rect().encode(color=alt.Color("n:Q", scale=alt.Scale(scheme="blues"), legend=None),
                                    tooltip=["cell", "n"])
    text = base.mark_text(fontSize=16).encode(text="text:N", color=alt.condition(
        alt.datum.n > df["n"].max() / 2, alt.value("white"), alt.value("black")))
    return (cells + text).properties(height=200)


def source_chart(per_source: pd.DataFrame) -> alt.Chart:
    """How well the run's features (and raw pixels) pick out each source: one-vs-rest probe AUC."""
    df = per_source.melt(id_vars=["source", "images", "positive_rate"], value_vars=["source_auc", "pixel_source_auc"],
                         var_name="features", value_name="auc")
    df["features"] = df["features"].map({"source_auc": "the run's features", "pixel_source_auc": "raw pixels"})
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y("source:N", title=None, sort="-x"), x=alt.X("auc:Q", scale=alt.Scale(domain=[0, 1]),
                                                            title="probe AUC picking out the source"),
        yOffset="features:N",
        color=alt.Color("features:N", scale=alt.Scale(domain=["the run's features", "raw pixels"],
                                                      range=["#ff7043", "#90a4ae"]), title=None),
        tooltip=["source", "features", alt.Tooltip("auc:Q", format=".3f"), "images",
                 alt.Tooltip("positive_rate:Q", format=".0%", title="positives in this source")],
    ).properties(height=max(160, 40 * per_source["source"].nunique()))


def label_counts_chart(counts: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of images per label, every label named (counts: label, images)."""
    return alt.Chart(counts).mark_bar().encode(
        x=alt.X("images:Q", title="images"),
        y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT, labelOverlap=False)),
        color=alt.Color("label:N", scale=class_scale(counts["label"]), legend=None),
        tooltip=["label", alt.Tooltip("images:Q", format=",")],
    ).properties(height=alt.Step(22))


# --- export ---------------------------------------------------------------------------------------

FORMATS = ("png", "svg")
MIME = {"png": "image/png", "svg": "image/svg+xml"}
# The dashboard draws on a dark theme and the class colours were chosen for it (the mean is white), so
# an exported figure keeps that background rather than Vega's default white, on which the mean vanishes.
EXPORT_CONFIG = {
    "background": "#0e1117", "padding": 12,
    "axis": {"labelColor": "#fafafa", "titleColor": "#fafafa", "gridColor": "#31333f", "domainColor": "#808495",
             "tickColor": "#808495"},
    "legend": {"labelColor": "#fafafa", "titleColor": "#fafafa"},
    "title": {"color": "#fafafa"}, "header": {"labelColor": "#fafafa", "titleColor": "#fafafa"},
    "view": {"stroke": "#31333f"}, "text": {"color": "#fafafa"},
}


# "paper": for a journal page. White background, black serif text at print sizes, light grid, fewer
# ticks; the colours drawn for the dark screen that vanish on white (the mean's white line, No Finding's
# pale grey) darkened; a title and a caption (what n, which interval, which run) above the plot.
THEMES = ("screen", "paper")
PAPER_FONT = "Times New Roman, Times, serif"
PAPER_CONFIG = {
    "background": "#ffffff", "padding": 14, "font": PAPER_FONT,
    "axis": {"labelColor": "#000000", "titleColor": "#000000", "gridColor": "#e6e6e6", "domainColor": "#000000",
             "tickColor": "#000000", "labelFontSize": 10, "titleFontSize": 11, "titleFontWeight": "normal",
             "tickCount": 6, "labelFont": PAPER_FONT, "titleFont": PAPER_FONT},
    "legend": {"labelColor": "#000000", "titleColor": "#000000", "labelFontSize": 10, "titleFontSize": 10,
               "labelFont": PAPER_FONT, "titleFont": PAPER_FONT},
    "title": {"color": "#000000", "fontSize": 12, "font": PAPER_FONT, "anchor": "start", "subtitleColor": "#333333",
              "subtitleFontSize": 9.5, "subtitleFont": PAPER_FONT, "offset": 10},
    "header": {"labelColor": "#000000", "titleColor": "#000000"}, "view": {"stroke": "#000000"},
    "text": {"color": "#000000", "font": PAPER_FONT},
}
PAPER_COLOURS = {"#ffffff": "#000000", "white": "#000000", "#fafafa": "#000000", "#cfd8dc": "#78909c",
                 "#b0bec5": "#607d8b", "#616161": "#9e9e9e"}
MAX_PAPER_TICKS = 7


def _for_paper(node):
    """The spec redrawn for white paper: screen colours swapped (PAPER_COLOURS) wherever a colour is
    given (a scale's range, a mark's or a value's color or fill; outlines are left), and an axis listing
    more than MAX_PAPER_TICKS values left to choose about six."""
    if isinstance(node, list):
        return [_for_paper(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("color", "fill") and isinstance(v, str):
            out[k] = PAPER_COLOURS.get(v.lower(), v)
        elif k == "range" and isinstance(v, list):
            out[k] = [PAPER_COLOURS.get(c.lower(), c) if isinstance(c, str) else c for c in v]
        elif k == "axis" and isinstance(v, dict) and len(v.get("values") or []) > MAX_PAPER_TICKS:
            out[k] = {**{a: b for a, b in v.items() if a != "values"}, "tickCount": 6}
        else:
            out[k] = _for_paper(v)
    return out


def roc_caption(run: str, split: str, split_metrics: dict, config: dict) -> str:
    """The paper figure's caption of a run's ROC curves: n, the interval method, the run."""
    n = split_metrics.get("images")
    boot = (config.get("train") or {}).get("bootstrap")
    rows = [r for r in split_metrics.get("auc", []) if r.get("low") is not None and r.get("class") != "mean"]
    what = "; ".join(f"{r['class']} {r['auc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in rows[:4])
    return "\n".join(filter(None, [
        f"Run {run}, {split} split" + (f": {n} images" if n else "") + ".",
        f"AUC [95 % interval, percentile bootstrap over patients{f', {boot} resamples' if boot else ''}]"
        + (f": {what}" + ("; ..." if len(rows) > 4 else "") if what else "") + "."]))


def spec_of(chart: alt.TopLevelMixin) -> dict:
    """A chart's Vega-Lite spec with its data inline (no row limit, no theme)."""
    with alt.theme.enable("none"), alt.data_transformers.enable("default", max_rows=None):
        return chart.to_dict()


def export(spec: dict, fmt: str, width: int = 640, scale: float = 2.0, *, theme: str = "screen",
           title: str | None = None, caption: str | None = None) -> bytes:
    """A Vega-Lite spec drawn as PNG (at `scale` x for print) or SVG bytes: with the dashboard's colours
    (theme "screen") or for a journal page ("paper", PAPER_CONFIG). `title` and `caption` (lines split
    on newlines) go above the plot. A spec drawn "as wide as its column" gets `width` px instead."""
    import vl_convert  # a 60 MB native renderer: loaded only when a figure is exported

    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; formats: {', '.join(FORMATS)}")
    if theme not in THEMES:
        raise ValueError(f"unknown figure theme {theme!r}; themes: {', '.join(THEMES)}")
    spec = json.loads(json.dumps(spec))  # a copy: the caller's spec may be a cached one
    if spec.get("width") in (None,
                             "container") and not any(k in spec for k in ("hconcat", "vconcat", "concat", "facet")):
        spec["width"] = width
    if theme == "paper":
        spec = _for_paper(spec)
    spec["config"] = {**(PAPER_CONFIG if theme == "paper" else EXPORT_CONFIG), **spec.get("config", {})}
    if title or caption:
        spec["title"] = {"text": title or "", **({"subtitle": caption.split("\n")} if caption else {})}
    if fmt == "svg":
        return vl_convert.vegalite_to_svg(spec).encode("utf-8")
    return vl_convert.vegalite_to_png(spec, scale=scale)
