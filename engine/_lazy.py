"""Lazy public surfaces (PEP 562): a package names what it exports; a name's module is imported
on first use, so importing a package never pulls torch in before it is needed."""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, namespace: dict, exports: dict[str, str]):
    """exports: public name -> submodule (relative to `package`). Returns (__getattr__, __all__)."""
    def __getattr__(name: str):
        if name in exports:
            value = getattr(import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
