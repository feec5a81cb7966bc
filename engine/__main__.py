"""Entry point of `python -m engine`."""
import sys

if len(sys.argv) > 1 and sys.argv[1] in ("train", "worker"):
    from .training import signals

    signals.install()  # before the heavy imports: a cancel during start-up is remembered, not fatal

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
