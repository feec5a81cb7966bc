"""`python -m engine ...`: the command line, one module per concern (data, train, runs, study,
explain, landscape). Every subcommand has --help; most take --json. Long work shows progress bars on
stderr; machine-readable output goes to stdout. Building the parser imports no torch."""
from __future__ import annotations

import argparse
import logging
import sys

from . import data, explain, landscape, runs, study, train, trust
from .common import CLIError, bound_numeric_flags

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Chest X-ray transfer-learning lab engine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, runs, trust, study, explain, landscape):
        module.register(sub)
    bound_numeric_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..data.download import DownloadError  # urllib, ssl, email: 0.1 s that --help does not pay
    from ..data.images import ImageReadError

    executor = getattr(args, "executor", None)
    if executor:  # --executor on queue, resume and study: the same as CXR_EXECUTOR for this command
        import os
        os.environ["CXR_EXECUTOR"] = executor
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except (CLIError, OSError, ValueError, DownloadError, ImageReadError, KeyError) as exc:
        # also ConfigError, RunError, CheckpointError (ValueError); DataRootError, WeightsUnavailable (FileNotFoundError);
        # a full disk or a read-only folder (OSError: its reason and path, no traceback)
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
