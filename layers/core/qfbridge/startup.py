"""A Lambda execution environment's cold start: no cyclic garbage collection until it has answered.

A cold request loads ~250–450 modules and builds the models, clients and services the environment
keeps for its whole life. CPython's cyclic collector runs every ~2,000 new container objects and
walks the young ones each time: ~55 collections, ~40 ms of a ~420 ms cold request, spent finding
that freshly imported modules, classes and clients are alive (docs/performance.md, cold request).

Each handler module imports this module before anything else: in a Lambda execution environment
(``AWS_EXECUTION_ENV`` starts with ``AWS_Lambda_``) the collector is paused at once. ``settled``, the
handler's outermost decorator, ends the pause when the first invocation ends, returned or raised:
``gc.freeze()`` moves everything loaded so far to the permanent generation, which later collections
never walk, then collection resumes — the sequence the ``gc`` documentation gives for a process that
loads once and then serves (``gc.disable()`` early, ``gc.freeze()``, ``gc.enable()``).

What the pause costs: cyclic garbage made during the cold start is never reclaimed (a few hundred
objects, once per environment: measured in tests/unit/test_startup.py); reference counting frees
everything else as usual. Outside Lambda (tests, the laptop runtime's in-process environments, the
CLI) importing this module changes nothing.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_paused = False


def in_lambda() -> bool:
    """Whether this process is a Lambda execution environment (a variable the Lambda runtime sets)."""
    return os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def pause() -> bool:
    """Pause the collector for the cold start, in a Lambda execution environment only; whether it paused."""
    global _paused
    if _paused or not in_lambda() or not gc.isenabled():
        return False
    gc.disable()
    _paused = True
    return True


def settle() -> None:
    """End the cold start's pause: what it loaded is frozen out of later collections, which resume."""
    global _paused
    if not _paused:
        return
    _paused = False
    gc.freeze()
    gc.enable()


def settled(handler: Callable[P, R]) -> Callable[P, R]:
    """The handler's outermost decorator: the first invocation ends the cold start's pause."""

    @functools.wraps(handler)
    def invoke(*args: P.args, **kwargs: P.kwargs) -> R:
        if not _paused:
            return handler(*args, **kwargs)
        try:
            return handler(*args, **kwargs)
        finally:
            settle()

    return invoke


pause()
