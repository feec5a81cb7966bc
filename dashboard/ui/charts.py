"""Altair chart builders: data in, charts out (no Streamlit calls here)."""
from __future__ import annotations

import altair as alt
import pandas as pd


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
    return alt.layer(*layers).properties(height=280)


def auc_chart(epochs: pd.DataFrame) -> alt.Chart:
    """Per-class validation AUC per epoch, with the mean drawn thick."""
    rows = []
    for _, r in epochs.iterrows():
        for c, a in (r["val_auc"] or {}).items():
            if a is not None:
                rows.append({"epoch": r["epoch"], "class": c, "auc": a})
        if r["val_auc_mean"] is not None and pd.notna(r["val_auc_mean"]):
            rows.append({"epoch": r["epoch"], "class": "mean", "auc": r["val_auc_mean"]})
    df = pd.DataFrame(rows, columns=["epoch", "class", "auc"])
    sel = alt.selection_point(fields=["class"], bind="legend")
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("epoch:Q"), y=alt.Y("auc:Q", title="validation AUC", scale=alt.Scale(domain=[0.3, 1.0])),
        color=alt.Color("class:N", legend=alt.Legend(columns=1, symbolLimit=20)),
        size=alt.condition(alt.datum["class"] == "mean", alt.value(4), alt.value(1.5)),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.15)),
        tooltip=["epoch", "class", alt.Tooltip("auc:Q", format=".4f")],
    ).add_params(sel).properties(height=280)


def roc_chart(records: pd.DataFrame, color: str = "label") -> alt.Chart:
    """ROC curves from records {fpr, tpr, label, auc}; the chance diagonal dashed."""
    diag = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="fpr:Q", y="tpr:Q")
    sel = alt.selection_point(fields=[color], bind="legend")
    curves = alt.Chart(records).mark_line(interpolate="step-after").encode(
        x=alt.X("fpr:Q", title="false positive rate"), y=alt.Y("tpr:Q", title="true positive rate"),
        color=alt.Color(f"{color}:N", title=None, legend=alt.Legend(columns=1, labelLimit=260)),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.12)),
        tooltip=[color, alt.Tooltip("auc:Q", format=".3f"), alt.Tooltip("fpr:Q", format=".3f"),
                 alt.Tooltip("tpr:Q", format=".3f")],
    ).add_params(sel)
    return (diag + curves).properties(height=420)


def probability_chart(probs: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of class probabilities, sorted."""
    return alt.Chart(probs).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("class:N", sort="-x", title=None),
        color=alt.Color("probability:Q", scale=alt.Scale(scheme="orangered", domain=[0, 1]), legend=None),
        tooltip=["class", alt.Tooltip("probability:Q", format=".3f")],
    ).properties(height=max(120, 24 * len(probs)))
