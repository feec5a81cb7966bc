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
"""
from __future__ import annotations

import os
import signal
import sys

ENV_KILL_AT = "CXR_TEST_KILL_AT"
PHASES = ("startup", "step", "checkpoint", "validate", "final")
KILL_MESSAGE = "fault point: killing the trainer at"


def _plan() -> tuple[str, int] | None:
    spec = os.environ.get(ENV_KILL_AT, "").strip()
    if not spec:
        return None
    phase, _, n = spec.partition(":")
    if phase not in PHASES or (n and not n.isdigit()):
        raise ValueError(f"{ENV_KILL_AT}={spec!r}: expected PHASE[:N] with PHASE one of {', '.join(PHASES)}")
    return phase, int(n or 1)


_PLAN = _plan()
_seen: dict[str, int] = {}


def fault_point(phase: str) -> None:
    """SIGKILL this process if the plan names `phase` and this is its N-th visit; else nothing."""
    if _PLAN is None or _PLAN[0] != phase:
        return
    _seen[phase] = _seen.get(phase, 0) + 1
    if _seen[phase] == _PLAN[1]:
        print(f"{KILL_MESSAGE} {phase}:{_PLAN[1]}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
