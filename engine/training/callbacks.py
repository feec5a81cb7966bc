"""How training reports (minGPT's trainer callbacks): `fit` triggers events, and whoever listens
turns them into registry rows (the run's Reporter), progress bars (the CLI) or nothing."""
from __future__ import annotations


class Callback:
    """Every hook is optional. Rows and records are plain data."""

    def on_start(self, info: dict) -> None:
        """Training begins (or resumes): device, data fingerprint, images per split, epoch/step reached."""

    def on_steps(self, rows: list[tuple[int, int, float, float]]) -> None:
        """Finished steps (step, epoch index, train loss, lr); always before a checkpoint holds them."""

    def on_progress(self, progress: dict) -> None:
        """phase (train, validate, test), epoch/epochs, step/steps, eta_s (epoch) and run_eta_s."""

    def on_epoch(self, record: dict) -> None:
        """An epoch ended: its losses, lr, validation AUCs, seconds, skipped images, best so far."""

    def on_end(self, status: str, summary: dict) -> None:
        """The run ended as `status` ("succeeded" or "cancelled"); failures raise instead."""


class Callbacks(Callback):
    """Several callbacks as one, called in order."""

    def __init__(self, items=()):
        self.items = [c for c in items if c is not None]

    def _each(self, event: str, *args) -> None:
        for c in self.items:
            getattr(c, event)(*args)

    def on_start(self, info):
        self._each("on_start", info)

    def on_steps(self, rows):
        self._each("on_steps", rows)

    def on_progress(self, progress):
        self._each("on_progress", progress)

    def on_epoch(self, record):
        self._each("on_epoch", record)

    def on_end(self, status, summary):
        self._each("on_end", status, summary)
