"""The study as one step: its experiments as a graph of runs (scales/pack.json, scales/full.json or
a user's file), their tables filled with our numbers beside the published ones, the paired
statistics of every comparison, and a shareable report."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "load_spec": "spec", "StudySpec": "spec", "SpecError": "spec", "changes_from_full": "spec", "SCALES": "spec",
    "plan": "graph", "status": "graph", "watch": "graph", "unfinished": "graph", "Cell": "graph",
    "study_results": "results", "write_report": "report",
})
