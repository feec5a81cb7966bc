"""The command-line reference (docs/cli.md), generated from the parser itself so it cannot go stale:

    python -m engine.cli.reference > docs/cli.md

`tests/test_docs.py` regenerates it and fails when the file differs."""
from __future__ import annotations

import argparse
import os
import sys

from . import build_parser

WIDTH = 100  # help is wrapped to this many columns whatever the terminal


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for name, sub in _subcommands(parser):
        yield from _walk(sub, path + (name,))


def reference() -> str:
    """Markdown: one section per command and subcommand, each with its `--help` text."""
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to the terminal's width
    out = ["# Command-line reference", "",
           "Generated from the parser by `python -m engine.cli.reference > docs/cli.md`; a test fails when "
           "this page differs from the parser. Every command also answers `--help`.", ""]
    for path, parser in _walk(build_parser()):
        title = " ".join(("python -m engine",) + path)
        out += [f"{'#' * min(2 + len(path), 4)} `{title}`" if path else "## `python -m engine`", "",
                "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference())
