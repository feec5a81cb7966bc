"""A shareable report of the study: one self-contained HTML file (tables, ROC curves of the compared
runs as inline SVG, the statistics, settings and data fingerprints) that opens offline, plus the
same as JSON and Markdown."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import figures

from ..runs.card import build_card, markdown
from ..runs.folder import strict
from ..runs.predictions import read
from ..runs.store import Registry
from ..text import estimate, md_escape, number
from .results import study_caption

COLOURS = ("#1f77b4", "#d62728")


def _fmt(x) -> str:
    return number(x, missing="—")  # the tables' missing mark, as the model card's


def _est(value, low=None, high=None) -> str:
    return estimate(value, low, high, missing="–")


def _roc(reg: Registry, run: str, cls: str) -> tuple[np.ndarray, np.ndarray] | None:
    from ..metrics import roc_curves

    path = reg.folder(run).predictions("test")
    if not path.is_file() or cls == "mean":
        return None
    p = read(path)
    if not p.has(cls):
        return None
    curves = roc_curves(*p.columns([cls]), [cls])
    return (curves[0].fpr, curves[0].tpr) if curves else None


def _svg(curves: list[tuple[str, np.ndarray, np.ndarray]], size: int = 260) -> str:
    pad = 30
    inner = size - 2 * pad

    def pt(x, y):
        return f"{pad + x * inner:.1f},{pad + (1 - y) * inner:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 170}" height="{size}" role="img">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#ccc" stroke-dasharray="4"/>',
             f'<text x="{pad + inner / 2}" y="{size - 6}" font-size="11" text-anchor="middle">false positive rate</text>',
             f'<text x="10" y="{pad + inner / 2}" font-size="11" transform="rotate(-90 10 {pad + inner / 2})" '
             f'text-anchor="middle">true positive rate</text>']
    for k, (label, fpr, tpr) in enumerate(curves):
        colour = COLOURS[k % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{" ".join(pt(x, y) for x, y in zip(fpr, tpr))}"/>')
        parts.append(f'<text x="{size}" y="{pad + 14 + 16 * k}" font-size="11" fill="{colour}">{html.escape(label)}</text>')
    return "".join(parts) + "</svg>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose cells read as typed: a study file's labels cannot inject HTML or links."""
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows])


def _sections(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the report."""
    cells = [["table", "experiment", "run", "state", "class", "ours [95% CI]", "published", "source"]]
    cell_rows = [[r["table"], r["label"], r["name"], r["state"] + (f": {r['detail']}" if r["detail"] else ""),
                  r["class"],
                  _est(r["ours"], r["low"], r["high"]), _fmt(r["published"]), r["source"] or ""]
                 for r in results["cells"]]
    t1_keys = [r["key"] for r in results["cells"] if r["table"] == "Table 1"]
    t1_keys += [k for k in (results["table1"][0] if results["table1"] else {}) if k.startswith("torchxrayvision")
                and not k.endswith(" CI")]  # baselines on our test split
    t1 = [[row["class"], _fmt(row["study"])] + [_est(row.get(k), *(row.get(k + " CI") or (None, None)))
                                              for k in t1_keys] for row in results["table1"]]
    comps = [[c["what"], c["class"] or "", _fmt(c.get("auc_a")), _fmt(c.get("auc_b")),
              c["verdict"] + (f"; settings: {c['design']}" if c.get("design") else ""),
              c.get("test", "")] for c in results["comparisons"]]
    out = [("The study's experiments, ours beside the published values", cells[0], cell_rows),
           ("Table 1: ChestX-ray14 test AUC per class", ["class", "the study's DenseNet-121"] + t1_keys, t1),
           ("Comparisons (A - B on the same test images)", ["comparison", "class", "AUC A", "AUC B",
                                                            "difference [95% CI], p", "test"], comps)]
    if results.get("future_work"):
        keys = [k for k in results["future_work"][0] if k != "class" and not k.endswith(" CI")]
        out.append(("The study's future work: pneumonia types, test AUC per class", ["class"] + keys,
                    [[x["class"]] + [_est(x.get(k), *(x.get(k + " CI") or (None, None))) for k in keys]
                     for x in results["future_work"]]))
    within = [[r["label"], r["collection_only"]["text"]] for r in results["cells"] if r.get("collection_only")]
    if within:
        out.append(("The 15-class task's COVID-19 AUC within the COVID-19 collection",
                    ["experiment", "collection only"],
                    within))
    if results.get("learning_curves"):
        out.append(("Learning curve: test AUC against the share of training patients kept",
                    ["arm", "training patients", "training images", "test AUC [95% CI]", "each repeat", "run", "state"],
                    [[c["label"], f"{p['fraction']:.0%}", "–" if p["train_images"] is None else str(p["train_images"]),
                      _est(p["auc"], p["low"], p["high"]),
                      ", ".join(_fmt(v) for v in (p["repeats"] or {}).get("values", [])), p["run"], p["state"]]
                     for c in results["learning_curves"] for p in c["points"]]))
    if results.get("held_out"):
        out.append(("Leave one source out: trained without an origin of the COVID-19 collection, tested on it",
                    ["held-out origin", "test images (positive / negative)", "AUC on it [95% CI]",
                     "internal test AUC [95% CI]", "run", "state"],
                    [[r["origin"], "–" if r["positives"] is None else
                      f"{r['positives'] + r['negatives']} ({r['positives']} / {r['negatives']})",
                      _est(r["auc"], r["low"], r["high"]),
                      _est(r["internal_auc"], r["internal_low"], r["internal_high"]), r["run"], r["text"]]
                     for r in results["held_out"]]))
    k = results.get("repeats", 1)
    if k > 1:
        spread_rows = [[r["label"], r["class"], f"{r['repeats']['n']} of {k}", _fmt(r["repeats"]["mean"]),
                        _fmt(r["repeats"]["sd"]), f"{_fmt(r['repeats']['min'])} to {_fmt(r['repeats']['max'])}",
                        ", ".join(_fmt(v) for v in r["repeats"]["values"]), _fmt(r["published"])]
                       for r in results["cells"] if r.get("repeats")]
        across = [[c["what"], ", ".join("—" if d is None else f"{d:+.3f}" for d in c["across_repeats"]["diffs"]),
                   c["across_repeats"]["text"]] for c in results["comparisons"] if c.get("across_repeats")]
        out += [(f"Over {k} repeats: test AUC of each experiment", ["experiment", "class", "finished", "mean", "sd",
                                                                   "range", "each repeat (repeat 0 first)", "published"],
                 spread_rows),
                (f"Comparisons across {k} repeats (A - B per repeat)", ["comparison", "differences", "across repeats"],
                 across)]
    return out


def _cards(reg: Registry, runs: dict, out: Path) -> dict[str, Path]:
    """A model card (Markdown) for each finished run of the study, in out/cards/."""
    paths = {}
    for name, row in runs.items():
        if row.status == "succeeded":
            path = out / "cards" / f"{name}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(markdown(build_card(reg, name)), encoding="utf-8")
            paths[name] = path
    return paths


def _table_figures(results: dict, out: Path) -> dict[str, Path]:
    """One paper figure per study table with a finished experiment (figures.study_chart: ours with its
    interval beside the published value), as SVG and PNG in out/figures; {table: svg path}."""
    cells = pd.DataFrame([{k: r[k] for k in ("table", "label", "class", "ours", "low", "high", "published")}
                          for r in results["cells"]])
    dots = pd.DataFrame([{"table": r["table"], "label": r["label"], "class": r["class"], "repeat": k, "auc": v}
                         for r in results["cells"] for k, v in enumerate((r.get("repeats") or {}).get("values", []))
                         if v is not None], columns=["table", "label", "class", "repeat", "auc"])
    made = {}
    if cells.empty:
        return made
    (out / "figures").mkdir(exist_ok=True)
    for table, rows in cells.groupby("table", sort=False):
        if rows["ours"].isna().all():
            continue
        spec = figures.spec_of(figures.study_chart(rows, dots[dots["table"] == table]))
        stem = "study-" + re.sub(r"[^\w-]+", "-", table.lower()).strip("-")
        for fmt in figures.FORMATS:
            (out / "figures" / f"{stem}.{fmt}").write_bytes(figures.export(
                spec, fmt, theme="paper", title=f"{table}: ours beside the published value",
                caption=study_caption(results, table)))
        made[table] = out / "figures" / f"{stem}.svg"
    return made


def write_report(results: dict, reg: Registry, out: Path) -> dict[str, Path]:
    """study.html, study.json and study.md in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    runs = {r["name"]: reg.get(r["name"]) for r in results["cells"] if reg.get(r["name"])}
    settings = [[name, row.status, row.data_fingerprint or "", row.code_version or "",
                 json.dumps(row.config, sort_keys=True)] for name, row in runs.items()]
    sections = _sections(results)
    body = [f"<h1>Transfer learning for COVID-19 detection: the study at scale {html.escape(results['scale'])}</h1>",
            f"<p>{html.escape(results['description'])}</p>"]
    if results.get("repeat_note"):
        body.append(f"<p>{html.escape(results['repeat_note'])}</p>")
    for title, header, rows in sections:
        body += [f"<h2>{html.escape(title)}</h2>", _table(header, rows)]
    made = _table_figures(results, out)
    if made:
        body.append("<h2>The tables as figures (for a paper: SVG and PNG beside this file)</h2>")
        body += [f"<p><img src='figures/{html.escape(svg.name)}' alt='{html.escape(table)}' style='max-width:100%'></p>"
                 for table, svg in made.items()]
    body.append("<h2>ROC curves of the compared runs (test split)</h2>")
    for c in results["comparisons"]:
        curves = [(f"{run} ({_fmt(c.get(k))})", *roc) for run, k in ((c["a"], "auc_a"), (c["b"], "auc_b"))
                  if (roc := _roc(reg, run, c["class"] or "")) is not None]
        if curves:
            body += [f"<h3>{html.escape(c['what'])}</h3>", _svg(curves)]
    cards = _cards(reg, runs, out)
    if cards:
        body += ["<h2>Model cards</h2>", "<ul>" + "".join(f"<li><a href='cards/{html.escape(f.name)}'>"
                                                         f"{html.escape(n)}</a></li>" for n, f in cards.items()) + "</ul>"]
    body += ["<h2>Settings and data fingerprints</h2>",
             _table(["run", "status", "data fingerprint", "code", "config"], settings)]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin-bottom:1.5em;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
             "vertical-align:top}th{background:#f4f4f4}td:last-child{word-break:break-all}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Study report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    paths = {"html": out / "study.html", "json": out / "study.json", "md": out / "study.md"}
    paths["html"].write_text(page)
    paths["json"].write_text(json.dumps(strict({**results, "runs": runs}), indent=1, default=str))
    md = [f"# The study at scale {md_escape(results['scale'])}", "", md_escape(results["description"]), ""]
    if cards:
        md += ["Model cards: " + ", ".join(f"[{md_escape(n)}](cards/{f.name})" for n, f in cards.items()), ""]
    if results.get("repeat_note"):
        md += [md_escape(results["repeat_note"]), ""]
    if made:
        md += ["Figures: " + ", ".join(f"[{md_escape(t)}](figures/{f.name})" for t, f in made.items()), ""]
    for title, header, rows in sections + [("Settings and data fingerprints", ["run", "status", "data fingerprint",
                                                                                 "code", "config"], settings)]:
        md += [f"## {md_escape(title)}", "", _md(header, rows), ""]
    paths["md"].write_text("\n".join(md))
    return paths
