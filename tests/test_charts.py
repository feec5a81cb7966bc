"""Chart specs: every class named whole in legends and axes, one distinct colour per class, COVID-19
standing out (checked on the Vega-Lite spec, so it holds in any browser)."""
import numpy as np
import pandas as pd

from engine import figures as charts
from engine.constants import COMBINED15_LABELS, COVID_LABEL

CLASSES = list(COMBINED15_LABELS)


def _enc(spec, channel="color"):
    """Every `channel` encoding of a (possibly layered) Vega-Lite spec."""
    out = []
    for layer in [spec, *spec.get("layer", [])]:
        enc = layer.get("encoding", {}).get(channel)
        if enc:
            out.append(enc)
    return out


def _check_colours(enc, labels):
    scale = enc["scale"]
    colours = dict(zip(scale["domain"], scale["range"]))
    assert set(labels) <= set(colours)
    assert len({colours[lab] for lab in labels}) == len(labels)  # no two classes share a hue
    legend = enc.get("legend")
    if legend is not None:
        assert legend["symbolLimit"] >= len(labels) and legend["labelLimit"] >= 300
    return colours


def test_roc_and_auc_charts_name_and_colour_all_15_classes():
    recs = pd.DataFrame([{"fpr": f, "tpr": f, "auc": 0.8, "label": f"{c} (0.800)"} for c in CLASSES for f in (0, 1)])
    colours = _check_colours(_enc(charts.roc_chart(recs).to_dict())[-1], list(recs["label"].unique()))
    assert colours[f"{COVID_LABEL} (0.800)"] == charts.CLASS_COLORS[COVID_LABEL] == "#FF1744"
    epochs = pd.DataFrame([{"epoch": 1, "val_auc": {c: 0.7 for c in CLASSES}, "val_auc_mean": 0.7}])
    spec = charts.auc_chart(charts.epoch_aucs(epochs)).to_dict()
    _check_colours(_enc(spec)[0], CLASSES + ["mean"])


def test_landscape_overview_and_probability_charts_show_every_label():
    labels = CLASSES + ["No Finding", "Other pneumonia (COVID set)"]
    pts = pd.DataFrame({"x": np.arange(len(labels)), "y": 0, "label": labels, "dataset": "nih", "image": labels,
                        "thumb": ""})
    spec = charts.embedding_chart(pts, "t").to_dict()
    colours = _check_colours(_enc(spec)[0], labels)
    assert colours[COVID_LABEL] == "#FF1744"
    som = charts.umatrix_chart(np.zeros((12, 12)), pts, "s").to_dict()
    for chart in (spec, som):  # every label listed, beside the plot, in a chart tall enough to hold them (N12)
        legend = next(e for e in _enc(chart) if e.get("field") == "label")["legend"]
        assert legend["orient"] == "right" and legend["symbolLimit"] >= len(labels) and legend["columns"] == 1
        assert chart["height"] >= charts.LEGEND_ROW_PX * len(labels)
    size = _enc(spec, "size")[0]
    assert size["condition"]["value"] > size["value"]  # COVID-19 drawn larger
    counts = pd.DataFrame({"label": labels, "images": range(len(labels))})
    spec = charts.label_counts_chart(counts).to_dict()
    assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False and spec["height"]["step"] >= 20  # a band per label
    probs = pd.DataFrame({"class": CLASSES, "probability": np.linspace(0, 1, len(CLASSES))})
    spec = charts.probability_chart(probs).to_dict()
    assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False and spec["encoding"]["y"]["axis"]["labelLimit"] >= 300
    assert spec["height"]["step"] >= 20


def test_the_palette_keeps_classes_apart():
    """No two of the 15 classes, nor of the pneumonia task's five, closer than a visible distance in RGB."""
    from engine.constants import PNEUMONIA_LABELS

    for classes in (CLASSES, PNEUMONIA_LABELS):
        assert all(c in charts.CLASS_COLORS for c in classes)  # none falls back to a spare colour
        rgb = np.array([[int(charts.CLASS_COLORS[c][i:i + 2], 16) for i in (1, 3, 5)] for c in classes], float)
        d = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        assert d.min() > 40, (classes, d.min())


def test_the_forest_plot_names_every_group_and_labels_the_small_ones():
    rows = pd.DataFrame([
        {"attribute": "sex", "group": "F", "auc": 0.7, "low": 0.6, "high": 0.8, "overall_auc": 0.75, "images": 50,
         "positives": 20, "status": "ok"},
        {"attribute": "view", "group": "AP supine", "auc": None, "low": None, "high": None, "overall_auc": 0.75,
         "images": 6, "positives": 6, "status": "one class"},
        {"attribute": "view", "group": "AP", "auc": None, "low": None, "high": None, "overall_auc": 0.75,
         "images": 10, "positives": 3, "status": "too small"}])
    spec = charts.forest_chart(rows).to_dict()
    assert spec["height"]["step"] >= 20
    layers = spec["layer"]
    assert all(layer["encoding"]["y"]["axis"]["labelOverlap"] is False for layer in layers if "y" in layer.get("encoding", {}))
    notes = next(layer for layer in layers if layer["mark"]["type"] == "text" if isinstance(layer["mark"], dict))
    assert notes["encoding"]["text"]["field"] == "note"
    notes_seen = {r.get("note") for rows in spec["datasets"].values() for r in rows}
    assert "one class only, no AUC: 6 images, 6 positive" in notes_seen  # issue 37 N15: not "too small"
    assert "too small to score: 10 images, 3 positive" in notes_seen


def test_the_loss_charts_x_axis_is_the_training_epoch_while_a_run_validates():
    """Issue 37, N2: a 2-epoch run caught in validation (4 validation steps, 10 training steps an epoch):
    its 20 logged steps end at epoch 2, not at 20 / 4 = 5."""
    import pandas as pd

    from engine import figures

    steps = pd.DataFrame({"step": range(1, 21), "epoch": [0] * 10 + [1] * 10, "train_loss": [0.5] * 20,
                          "lr": [1e-4] * 20, "time": [0.0] * 20})
    validating = {"phase": "validate", "epoch": 2, "epochs": 2, "step": 1, "steps": 4}
    assert figures.train_steps_per_epoch(validating, steps) == 10
    assert figures.train_steps_per_epoch({"phase": "train", "steps": 10, "step": 3}, steps.head(13)) == 10
    assert figures.train_steps_per_epoch({"phase": "final test", "steps": 2}, steps) == 10
    assert figures.train_steps_per_epoch(None, steps.head(0)) is None
    spec = figures.spec_of(figures.loss_chart(steps, pd.DataFrame(), figures.train_steps_per_epoch(validating, steps)))
    xs = [row["x"] for row in next(iter(spec["datasets"].values()))]
    assert max(xs) == 2.0
    assert spec["description"] == "BCE loss by training epoch, from epoch 0.1 to 2"  # what a screen reader hears


def test_one_class_is_not_hidden_under_its_own_mean_and_epochs_are_whole():
    """Issue 37, N12: a COVID-19-only run drew its thick white "mean" line over its one class; a run of
    one epoch had an x tick "1.000000"."""
    one = pd.DataFrame([{"epoch": 1, "val_auc": {COVID_LABEL: 0.7}, "val_auc_mean": 0.7}])
    assert list(charts.epoch_aucs(one)["class"]) == [COVID_LABEL]
    two = pd.DataFrame([{"epoch": 1, "val_auc": {COVID_LABEL: 0.7, "Mass": 0.5}, "val_auc_mean": 0.6}])
    assert sorted(charts.epoch_aucs(two)["class"]) == [COVID_LABEL, "Mass", "mean"]
    axis = charts.auc_chart(charts.epoch_aucs(one)).to_dict()["encoding"]["x"]["axis"]
    assert axis["format"] == "d" and axis["tickMinStep"] == 1
