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
        b = bar["b"]
        if b is None or b.disable:  # first call, or a new phase after a closed bar
            # start at `done`: the rate counts only work seen while the bar is shown (no absurd first rate)
            b = bar["b"] = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                                  delay=1e-3)  # drawn from the next update: no extra line
            if done >= total:
                b.close()
            return
        b.total = total
        if done >= total:
            b.n = done  # not drawn here: close draws the final state, once
            b.close()
        else:
            b.update(done - b.n)

    return update
