"""A Lambda execution environment's cold start: no cyclic garbage collection until it is wired.

A cold request loads ~250–450 modules and builds the models, clients and services the environment
keeps for its whole life. CPython's cyclic collector runs every ~2,000 new container objects and
walks the young ones each time: ~55 collections, ~40 ms of a ~420 ms cold request, spent finding
that freshly imported modules, classes and clients are alive (docs/performance.md, cold request).

Each handler module imports this module before anything else: in a Lambda execution environment
(``AWS_EXECUTION_ENV`` starts with ``AWS_Lambda_``) the collector is paused at once. ``settled``, the
handler's outermost decorator, ends the pause at the first invocation, before the request is
handled: it builds the handler's cached factories (settings, services: what the request would build
first), then ``gc.freeze()`` moves everything loaded so far to the permanent generation, which later
collections never walk, and collection resumes. The request itself runs with the collector on, its
cyclic garbage collected as usual; its collections walk only what was made since the freeze.

What the pause costs: the cyclic garbage of the import and the wiring is never reclaimed (a few
hundred objects, once per environment: tests/unit/test_startup.py measures it); reference counting
frees everything else as usual. Outside Lambda (tests, the laptop runtime's in-process
environments, the CLI) importing this module changes nothing.
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


def settled(*wiring: Callable[[], object]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The handler's outermost decorator: at the first invocation, build ``wiring`` (the handler's
    cached factories) with the collector still paused, then end the pause, then handle the request.

    A factory that fails is left to the request, which calls it again and reports the error as it
    always does (``functools.cache`` keeps no failure)."""

    def decorate(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def invoke(*args: P.args, **kwargs: P.kwargs) -> R:
            if _paused:
                try:
                    for factory in wiring:
                        try:
                            factory()
                        except Exception:  # noqa: S112 (the request calls it again and reports it)
                            continue
                finally:
                    settle()
            return handler(*args, **kwargs)

        return invoke

    return decorate


pause()
