"""How training reports (minGPT's trainer callbacks, Lightning's `on_exception`): `fit` triggers
events, and whoever listens turns them into registry rows (the run's Reporter), progress bars (the
CLI) or nothing. A run ends through exactly one of `on_end` and `on_exception`.

The `CheckpointSaver` owns the order of an epoch end's writes, as timm's CheckpointSaver does."""
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
        """The run ended as `status` ("succeeded" or "cancelled"); a failure comes to on_exception."""

    def on_exception(self, exc: BaseException) -> None:
        """The run failed with `exc` (start-up included; a KeyboardInterrupt is a cancel); fit re-raises it."""


class Callbacks(Callback):
    """Several callbacks as one, called in order."""

    def __init__(self, items=()):
        self.items = [c for c in items if c is not None]

    def _each(self, event: str, *args) -> None:
        for c in self.items:  # a listener may implement only some hooks (duck-typed, like the Reporter)
            hook = getattr(c, event, None)
            if hook is not None:
                hook(*args)

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

    def on_exception(self, exc):
        self._each("on_exception", exc)


class CheckpointSaver:
    """The epoch end's writes in the one order that leaves a consistent run at every kill point:

        1. best-candidate.pt, when validation improved (a kill here: the old best.pt still stands);
        2. the epoch's record through the callbacks (metrics and the registry row);
        3. last.pt, the resume point, which now includes the recorded epoch;
        4. the candidate promoted to best.pt (a kill before it: the next start promotes it, since
           last.pt names the best epoch).

    It also writes last.pt on a cancel and every `checkpoint_minutes` within an epoch."""

    def __init__(self, run_dir, callbacks: Callback):
        self.run_dir = run_dir
        self.callbacks = callbacks

    def epoch_end(self, checkpoint: dict, record: dict, improved: bool) -> None:
        if improved:
            self.run_dir.save_best_candidate(checkpoint)
        self.callbacks.on_epoch(record)
        self.run_dir.save_last(checkpoint)
        self.run_dir.settle_best(record["best_epoch"])

    def save_last(self, checkpoint: dict) -> None:
        self.run_dir.save_last(checkpoint)
