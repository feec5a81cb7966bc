"""Subcommands on datasets: data summary, data download, prepare (the image cache)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..constants import DEFAULT_CACHE_SIZE, default_cache_dir
from ..data.roots import expand
from ..settings import save_setting
from .common import CLIError, add_roots, emit, progress_bar, resolve_roots


def cmd_data_summary(args) -> int:
    from ..data.summary import summarize_covid, summarize_nih

    nih, covid = resolve_roots(args)
    if not nih and not covid:
        raise CLIError("nothing to summarise: pass --nih-root and/or --covid-root (or set the environment variables)")
    out = {}
    if nih:
        out["nih"] = summarize_nih(nih, val_fraction=args.val_fraction, seed=args.seed)
    if covid:
        out["covid"] = summarize_covid(covid, seed=args.seed)

    def human(o):
        for name, s in o.items():
            print(f"{name}: {s['root']}")
            print(f"  metadata rows {s['rows']}, images present {s['present']}, missing {s['missing']}")
            print("  labels: " + ", ".join(f"{k} {v}" for k, v in s["labels"].items()))
            print("  splits: " + ", ".join(f"{k} {v['images']} images / {v['patients']} patients" for k,
                                           v in s["splits"].items()))
            print(f"  patients in more than one split: {s['patient_overlap']}")
            sk = {k: v for k, v in s["skipped"].items() if v}
            if sk:
                print("  skipped: " + ", ".join(f"{k} {v}" for k, v in sk.items()))
            d = s.get("duplicates")
            if d:
                print(f"  same film under two names (pHash distance <= {d['max_distance']}): {d['pairs']} pairs, "
                      f"{d['pairs_across_splits_before']} across splits before; {d['images_moved']} images moved "
                      f"to keep them together")
                for r in d["pairs_list"]:
                    print(f"    {r['patient_a']}/{r['image_a']} ({r['split_a']}) = {r['patient_b']}/{r['image_b']} "
                          f"({r['split_b']}), distance {r['distance']}")

    emit(out, args.json, human)
    return 0


def cmd_data_download(args) -> int:
    from ..data import download as dl  # urllib, ssl, email: only when downloading

    progress, close_bars = _byte_progress()
    checksums = dl.read_checksums(args.checksums) if args.checksums else None
    dest = expand(args.dest) if args.dest else dl.dataset_dir(args.dataset)
    if not args.json:
        print(f"{args.dataset}: {dl.SIZES[args.dataset]}; into {dest} (resumable: run again after a stop)",
              file=sys.stderr)
    try:
        if args.dataset == "covid":
            out = dl.download_covid(dest, url=args.url or dl.covid_url(), progress=progress)
        else:
            urls = tuple(args.url.split(",")) if args.url else dl.NIH_IMAGE_URLS
            out = dl.download_nih(dest, urls=urls, checksums=checksums, progress=progress)
    finally:
        close_bars()  # an error line starts on a line of its own
    if not args.no_save:  # the fetched root becomes the default of the dashboard and the CLI
        out["saved_as_default"] = str(save_setting(f"{args.dataset}_root", str(dest.resolve())))
    emit(out, args.json, lambda o: print("\n".join(f"{k}: {v}" for k, v in o.items() if v not in ("", [], None))))
    return 0


def _byte_progress():
    from tqdm import tqdm

    bars: dict = {}

    def update(name: str, done: int, total: int) -> None:
        b = bars.get(name)
        if b is None:
            b = bars[name] = tqdm(total=total or None, desc=name, unit="B", unit_scale=True, file=sys.stderr)
        b.n = done
        b.refresh()

    def close() -> None:
        for b in bars.values():
            b.close()

    return update, close


def cmd_prepare(args) -> int:
    from ..data.cache import CacheError, build_cache, cache_folder
    from ..data.covid import COVID19Collection
    from ..data.nih import NIHChestXray14

    nih, covid = resolve_roots(args)
    if not nih and not covid:
        raise CLIError("nothing to prepare: pass --nih-root and/or --covid-root")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    out, stopped = {}, ""
    for name, root, cls in (("nih", nih, NIHChestXray14), ("covid", covid, COVID19Collection)):
        if not root or stopped:
            continue
        ds = cls(root)
        folder = cache_folder(cache_dir, name, args.size)
        try:
            rep = build_cache(ds.frame["path"].tolist(), folder, size=args.size, workers=args.workers,
                              progress=None if args.json else progress_bar(f"prepare {name}"),
                              notice=lambda text, n=name: print(f"prepare {n}: {text}", file=sys.stderr))
        except CacheError as exc:
            raise CLIError(str(exc)) from None
        out[name] = {"folder": str(folder), **rep.as_dict()}
        stopped = rep.stopped

    def human(o):
        for name, r in o.items():
            print(f"{name}: {r['total']} images -> {r['folder']} ({r['decoded']} decoded, {r['reused']} reused, "
                  f"{len(r['failed'])} unreadable)")
            for f in r["failed"][:20]:
                print(f"  unreadable: {f['path']}: {f['reason']}")
            if len(r["failed"]) > 20:
                print(f"  ... and {len(r['failed']) - 20} more (--json lists them all)")
            if r["stopped"]:
                print(f"  stopped by {r['stopped']}: the {r['decoded']} images decoded so far are kept; "
                      "run prepare again to continue")

    emit(out, args.json, human)
    return {"SIGINT": 130, "SIGTERM": 143}.get(stopped, 0)


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect or download datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = dsub.add_parser("summary", help="counts per dataset, label and split; patient leakage check")
    add_roots(p)
    p.add_argument("--val-fraction", type=float, default=0.26,
                   help="NIH validation share of train_val_list (default 0.26: the study's 57/20/23)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_data_summary)
    p = dsub.add_parser("download", help="download a dataset (needs internet; resumable)")
    p.add_argument("dataset", choices=["covid", "nih"])
    p.add_argument("--dest", default=None, help="destination root (default: $CXR_DATA_DIR/DATASET, else "
                                                "~/.local/share/cxrlab/DATASET)")
    p.add_argument("--no-save", action="store_true", help="do not make the downloaded root the default of the "
                                                          "dashboard and the CLI (it is saved in the settings file)")
    p.add_argument("--url", default=None,
                   help="override the source URL (NIH: comma-separated archive URLs), e.g. a mirror")
    p.add_argument("--checksums", default=None, help="md5sum-format file of expected archive checksums")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_download)

    p = sub.add_parser("prepare", help="build the preprocessed image cache (decode once, memory-mapped uint8)")
    add_roots(p)
    p.add_argument("--size", type=int, default=DEFAULT_CACHE_SIZE,
                   help=f"cached side in pixels (default {DEFAULT_CACHE_SIZE})")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $CXR_CACHE_DIR or ~/.cache/cxrlab)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prepare)
