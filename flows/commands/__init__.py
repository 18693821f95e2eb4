"""Subcommands of the `fusionrx` console script, one module per command (or family of commands).

Each module defines ``register(sub)`` that adds its parser(s) to the argparse sub-parsers object and
sets ``func`` on them; `flows.cli` finds every module here, so a new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(sub: argparse._SubParsersAction) -> None:
    """Import every module of this package (sorted by name) and let it register its commands."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
