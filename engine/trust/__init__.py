"""Can a result be trusted? Subgroup AUCs, operating points and
calibration, and the shortcut audit (source predictability, where the model looks, internal vs
external). Works on predictions tables and run folders; torch only where the audit runs the model."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "subgroup_table": "subgroups", "attributes": "subgroups",
    "operating_points": "operating", "choose_threshold": "operating", "rates_at": "operating",
    "calibration": "operating",
    "audit_run": "audit",
})
