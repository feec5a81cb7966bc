"""Entry point of `python -m engine`."""
import sys

from . import signals

signals.install()  # before the heavy imports: a cancel during start-up is remembered, not fatal

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
