"""Planned fault points for the crash tests: the trainer kills itself at a named phase and count.

`CXR_TEST_KILL_AT=PHASE:N` (test only) makes the process SIGKILL itself the N-th time it reaches
PHASE (N defaults to 1), after saying so on stderr. A planned kill per phase proves what a random
kill only makes likely, and needs no sleep. Unset (always, outside tests) each point is one dict
lookup. Phases, in the order a run meets them:

- `startup`: the run is recorded and running, before its data or model are built;
- `step`: after the N-th optimiser step of this process;
- `checkpoint`: inside the N-th atomic checkpoint write, the temporary file complete but not yet renamed;
- `validate`: after the N-th validation batch;
- `final`: after the N-th batch of the final evaluation (val, then test).

`CXR_TEST_PAUSE_AT=PHASE:N[,PHASE:N...]` instead holds the trainer at each point named (for `step`:
after the run's N-th step, counted over its resumes; for `validate`: at the first batch of the
validation of the run's epoch N) until a stop is requested (a cancel's SIGTERM) or PAUSE_S pass, so a
test can look at, or cancel, a run at an exact point though its steps are too quick to catch (the tiny
test model), without a sleep in the test.
"""
from __future__ import annotations

import os
import signal
import sys
import time

ENV_KILL_AT, ENV_PAUSE_AT = "CXR_TEST_KILL_AT", "CXR_TEST_PAUSE_AT"
PAUSE_S = 300.0
PAUSE_MESSAGE = "fault point: pausing the trainer at"
PHASES = ("startup", "step", "checkpoint", "validate", "final")
KILL_MESSAGE = "fault point: killing the trainer at"


def _plans(var: str) -> list[tuple[str, int]]:
    out = []
    for spec in filter(None, (part.strip() for part in os.environ.get(var, "").split(","))):
        phase, _, n = spec.partition(":")
        if phase not in PHASES or (n and not n.isdigit()):
            raise ValueError(f"{var}={spec!r}: expected PHASE[:N] with PHASE one of {', '.join(PHASES)}")
        out.append((phase, int(n or 1)))
    return out


def _plan(var: str) -> tuple[str, int] | None:
    plans = _plans(var)
    if len(plans) > 1:
        raise ValueError(f"{var}: one kill point at a time")
    return plans[0] if plans else None


_PLAN, _PAUSES = _plan(ENV_KILL_AT), _plans(ENV_PAUSE_AT)
_seen: dict[str, int] = {}


def fault_point(phase: str, stop=None, count: int | None = None) -> None:
    """SIGKILL this process if the kill plan names `phase` and this is its N-th visit; hold it until
    `stop` is requested if a pause plan names `phase` and N is `count` (the run's own step, or the
    epoch being validated, so a resumed run does not pause again), else its N-th visit; otherwise
    nothing."""
    pauses = [n for p, n in _PAUSES if p == phase]
    if (_PLAN is None or _PLAN[0] != phase) and not pauses:
        return
    _seen[phase] = _seen.get(phase, 0) + 1
    if _PLAN is not None and _PLAN[0] == phase and _seen[phase] == _PLAN[1]:
        print(f"{KILL_MESSAGE} {phase}:{_PLAN[1]}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    at = count if count is not None else _seen[phase]
    if at in pauses and not (stop is not None and stop.requested):
        print(f"{PAUSE_MESSAGE} {phase}:{at}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + PAUSE_S
        while time.monotonic() < deadline and not (stop is not None and stop.requested):
            time.sleep(0.02)
