"""What every subcommand shares: the user-facing error, output (--json or text), data-root flags
and progress bars on stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..constants import ENV_COVID_ROOT, ENV_NIH_ROOT


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nih-root", default=None, help=f"NIH ChestX-ray14 root (default: ${ENV_NIH_ROOT})")
    p.add_argument("--covid-root", default=None, help=f"COVID-19 collection root (default: ${ENV_COVID_ROOT})")


def resolve_roots(args, need: tuple[str, ...] = ()) -> tuple[Path | None, Path | None]:
    """The --nih-root / --covid-root folders (or their environment variables), checked."""
    from ..data.roots import resolve_root

    return tuple(resolve_root(kind, getattr(args, f"{kind}_root"), required=kind in need)
                 for kind in ("nih", "covid"))


def emit(obj, as_json: bool, human) -> None:
    if as_json:
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        human(obj)


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def registry():
    from ..runs.registry import Registry

    return Registry()


def progress_bar(desc: str, unit: str = "img"):
    """A callback update(done, total) drawing one tqdm bar on stderr (closed when done == total)."""
    from tqdm import tqdm

    bar = {"b": None}

    def update(done: int, total: int) -> None:
        if bar["b"] is None:
            bar["b"] = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar["b"].total = total
        bar["b"].n = done
        bar["b"].refresh()
        if done >= total:
            bar["b"].close()

    return update
