"""The verdict in words: the drop to each external evaluation, each kind of evidence as sentences, and
the summary (shortcut suspected, confounded data, or neither)."""
from __future__ import annotations


from ...text import estimate, number
from .rules import DROP_FLAG


def drop_evidence(folder, headline: str) -> list[dict]:
    rows = []
    for name in folder.externals():
        e = folder.read_external(name)
        r = next((x for x in e.get("auc", []) if x["class"] == headline and x.get("labelled")), None)
        if r is None or r.get("auc") is None:
            rows.append({"name": name, "class": headline, "auc": None, "flag": False,
                         "note": f"{headline} is not labelled in {name}"})
            continue
        drop = r.get("drop")
        flag = bool(drop is not None and drop >= DROP_FLAG and r.get("high") is not None
                    and r["internal_auc"] is not None and r["high"] < r["internal_auc"])
        rows.append({"name": name, "class": headline, "images": e.get("images"), "auc": r["auc"], "low": r.get("low"),
                     "high": r.get("high"), "internal_auc": r.get("internal_auc"), "drop": drop,
                     "shared_with_training": e.get("overlap", {}).get("shared_images"), "flag": flag,
                     "auc_unseen": next((u["auc"] for u in (e.get("unseen") or {}).get("auc", [])
                                         if u["class"] == headline), None)})
    return rows


def _source_lines(sources: list[dict]) -> list[tuple[str, bool | None]]:
    """(sentence, flagged) per source probe; flagged None when nothing was measured."""
    out = []
    for s in sources:
        if s["source_auc"] is None:
            out.append((f"Source probe ({s['title']}): not measured, {s['reason']}.", None))
            continue
        text = (f"The run's features tell {s['title']} apart with AUC {s['source_auc']:.2f} (raw pixels "
                f"{_fmt(s['pixel_source_auc'])}); ")
        if s["label_from_source"] is None:
            text += "this run's labels all come from one of them, so here the source cannot give a label away."
        else:
            text += f"the source alone predicts {s['class']} with AUC {s['label_from_source']:.2f}."
        for p in s.get("per_source", []):
            if p["source"] in s.get("telltale", []):
                text += (f" It picks out {p['source']} with AUC {p['source_auc']:.2f}, and {_pct(p['positive_rate'])} of "
                         f"that source's images are {s['class']} against {_pct(p['positive_rate_elsewhere'])} elsewhere.")
        if s["flag"]:
            text += " Source and label are confounded and the model can see the source: its AUC may measure the source."
        out.append((text, bool(s["flag"])))
    return out


def _map_lines(cams: dict) -> list[tuple[str, bool | None]]:
    out = [("Where the model looks: " + cams[key] + ".", None) for key in ("too_coarse", "band_too_coarse")
           if cams.get(key)]
    for c, d in cams.get("classes", {}).items():
        tp, fp = d["TP"], d["FP"]
        if not tp["maps"]:
            out.append((f"{c}: no true positive among the {fp['maps']} most confident test images.", None))
            continue
        parts = []
        if tp["border"] is not None:
            parts.append(f"{_pct(tp['border'])} of the map lies in the border band ({_pct(cams['border_area'])} of the "
                         f"image) and {_pct(tp['outside_lung'])} outside the lung field")
        if tp["corner_focus"] is not None:
            parts.append(f"the most loaded corner cell holds {tp['corner_focus']:.1f}x its share of the area")
        parts.append(f"blanking the border band {_change(tp['drop_border_blanked'], f'the {c} probability')}, "
                     f"blanking a central box of the same area {_change(tp['drop_centre_blanked'])}")
        if tp.get("patch"):
            pt = tp["patch"]
            parts.append(f"blanking a square a quarter of the side at each of {pt['places']} places, the worst one "
                         f"({_where(pt['where'])}) {_change(pt['drop'])}, {pt['ratio']:.1f}x the typical place, and is "
                         f"the worst place on {_pct(pt['consistency'])} of the images")
        text = f"{c}, on the {tp['maps']} most confident true positives: " + "; ".join(parts) + "."
        if fp["maps"]:
            text += (f" False positives: blanking the border {_change(fp['drop_border_blanked'])}, the centre "
                     f"{_change(fp['drop_centre_blanked'])}.")
        if d["flag"]:
            text += (" The model reads one place of the image, where a marker or letters could sit, more than the "
                     "disease (" + "; ".join(d["reasons"]) + ").")
        out.append((text, bool(d["flag"])))
    return out


def _drop_lines(drops: list[dict]) -> list[tuple[str, bool | None]]:
    if not drops:
        return [("No external evaluation yet: `python -m engine evaluate RUN --on ROOT` measures the drop.", None)]
    out = []
    for d in drops:
        if d["auc"] is None:
            out.append((f"External {d['name']}: {d['note']}.", None))
            continue
        text = (f"External {d['name']}: {d['class']} AUC {estimate(d['auc'], d['low'], d['high'])} on "
                f"{d['images']} images vs {_fmt(d['internal_auc'])} internally (drop {_fmt(d['drop'])}).")
        if d.get("shared_with_training"):
            text += f" {d['shared_with_training']} of its images are the same film as training images"
            text += (f"; without them the AUC is {_fmt(d['auc_unseen'])}." if d.get("auc_unseen") is not None
                     else ".")
        if d["flag"]:
            text += " The result does not hold outside its source."
        out.append((text, bool(d["flag"])))
    return out


def verdict(sources: list[dict], cams: dict, drops: list[dict]) -> dict:
    """Plain sentences naming the evidence; `shortcut` is True (suspected), False (nothing found in
    what was measured) or None (nothing could be measured). The source probe speaks of the data (is
    the source visible and does it give the label away?); the maps, the occlusion tests and the
    external drop speak of the model (does it use the source?). A confounded source that no
    model-based check points at is said so (`confounded`), not called a shortcut."""
    data, model = _source_lines(sources), _map_lines(cams) + _drop_lines(drops)
    found = data + model
    measured = sum(f is not None for _, f in found)
    model_flags = sum(bool(f) for _, f in model)
    confounded = any(bool(f) for _, f in data)
    if model_flags:
        flagged = model_flags + sum(bool(f) for _, f in data)
        summary = f"Shortcut suspected: {flagged} of {measured} measurements point at the source rather than the disease."
        shortcut = True
    elif confounded:
        tested = any(d["auc"] is not None for d in drops)
        summary = ("Confounded data, no sign the model uses it: a source gives the label away and is visible to the "
                   "model, but its maps, the occlusion tests and " + ("the external evaluation" if tested else
                   "(not yet run) an external evaluation") + " do not point at it. An evaluation on images from "
                   "elsewhere (`evaluate RUN --on ROOT`) is the test that settles it.")
        shortcut = False
    elif measured:
        summary = f"No sign of a shortcut in the {measured} measurements made (which is not proof of none)."
        shortcut = False
    else:
        summary = "Cannot tell: nothing could be measured for this run."
        shortcut = None
    return {"shortcut": shortcut, "confounded": confounded, "summary": summary,
            "evidence": [text for text, _ in found]}


def _where(box) -> str:
    """A place of the image in words: "x 38-62 %, y 38-62 % of the side, mid-field"."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    edge = min(cx, cy, 1 - cx, 1 - cy) < 0.2
    return (f"x {100 * x0:.0f}-{100 * x1:.0f} %, y {100 * y0:.0f}-{100 * y1:.0f} % of the side, "
            + ("at the edge" if edge else "mid-field"))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


_fmt = number  # three decimals, "n/a" when missing: the one formatter (engine.text)


def _change(drop, what: str = "it") -> str:
    """A probability drop in words, its sign read naturally, `what` in its place: 0.003 -> "lowers it by
    0.003", -0.003 -> "raises it by 0.003" (never "lowers by -0.003", never "raises by 0.003 it")."""
    if drop is None:
        return f"changes {what} by an unmeasured amount"
    if abs(drop) < 5e-4:
        return f"leaves {what} unchanged"
    return f"{'lowers' if drop > 0 else 'raises'} {what} by {abs(drop):.3f}"

