"""Package namespaces that import a submodule when one of its names is first used (PEP 562).

``qfbridge.hubee`` and ``qfbridge.api_particulier`` name their clients beside their models. Importing
a package runs its ``__init__`` first, so a function that only reads the models (the API reads
HubEE's notifications and API Particulier's outcomes, never calls either service) would otherwise
import the clients, httpx and asyncio on its cold request (docs/performance.md, cold request).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each exported name to the submodule
    (relative to ``package``) that defines it; the value is cached in the package once read."""

    def __getattr__(name: str) -> Any:
        submodule = names.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
