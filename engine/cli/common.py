"""What every subcommand shares: the user-facing error, output (--json or text), data-root flags
and progress bars on stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..constants import ENV_COVID_ROOT, ENV_NIH_ROOT
from ..data.roots import resolve_root
from ..runs.registry import Registry
from ..text import number


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# Every numeric flag of the CLI has its range here, by its dest (one home): argparse refuses a value
# outside it with one line naming the flag, before any work starts (issue 22: --bootstrap 10^9 tried
# to allocate 7.45 GiB, 0 printed a [nan, nan] interval, -5 a numpy traceback).
NUMERIC_RANGES = {
    "bootstrap": (20, 100_000), "val_fraction": (0.01, 0.9), "seed": (0, 2**32 - 1), "size": (32, 2048),
    "workers": (1, 512), "wait": (0, 86_400), "sensitivity": (0.01, 1.0), "specificity": (0.01, 1.0),
    "per_source": (5, 10_000), "top_k": (1, 1000), "alpha": (0.0, 1.0), "threshold": (0.0, 1.0),
    "per_label": (1, 5000), "k": (1, 1000), "perplexity": (2.0, 500.0), "grid": (2, 100), "epochs": (1, 10_000),
    "repeats": (1, 50), "image_size": (32, 1024), "max_images_per_split": (0, 10_000_000),
}


def bounded(kind, lo, hi):
    """An argparse type: a number of `kind` within [lo, hi], else one clear error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or not lo <= value <= hi:  # NaN too
            raise argparse.ArgumentTypeError(f"must be between {lo:,} and {hi:,}, got {text}")
        return value

    parse.bounds = (lo, hi)
    parse.__name__ = kind.__name__
    return parse


def bound_numeric_flags(parser: argparse.ArgumentParser) -> None:
    """Give every int/float flag of `parser` and its subcommands its range from NUMERIC_RANGES;
    a numeric flag without one is a programming error, raised when the parser is built."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                bound_numeric_flags(sub)
        elif action.type in (int, float):
            if action.dest not in NUMERIC_RANGES:
                raise AssertionError(f"numeric flag {action.option_strings} has no range in NUMERIC_RANGES")
            action.type = bounded(action.type, *NUMERIC_RANGES[action.dest])


def add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nih-root", default=None, help=f"NIH ChestX-ray14 root (default: ${ENV_NIH_ROOT})")
    p.add_argument("--covid-root", default=None, help=f"COVID-19 collection root (default: ${ENV_COVID_ROOT})")


def resolve_roots(args, need: tuple[str, ...] = ()) -> tuple[Path | None, Path | None]:
    """The --nih-root / --covid-root folders (or their environment variables), checked."""
    return tuple(resolve_root(kind, getattr(args, f"{kind}_root"), required=kind in need)
                 for kind in ("nih", "covid"))


def emit(obj, as_json: bool, human) -> None:
    if as_json:
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        human(obj)


def fmt(x) -> str:
    """An AUC or a loss in the CLI's lines: four decimals (text.number)."""
    return number(x, 4)


def registry():
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


def staged_progress_bar(prefix: str, unit: str = "img"):
    """A callback update(stage, done, total) drawing one tqdm bar per stage, named "prefix: stage"
    (a new bar when the stage changes), for work whose stages run at different speeds."""
    bars = {"stage": None, "update": None}

    def update(stage: str, done: int, total: int) -> None:
        if stage != bars["stage"]:
            bars.update(stage=stage, update=progress_bar(f"{prefix}: {stage}", unit=unit))
        bars["update"](done, total)

    return update
