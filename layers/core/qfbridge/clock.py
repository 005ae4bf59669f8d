"""Time, injectable: services take a ``Clock`` so tests and the demo control "now".

Every timer of Lambda code reads one source — leases and journal times (``utc_now``), the poll's
in-flight markers and the markers' retention (``epoch``), the audit trail's timestamps. On Lambda
it is the system clock. The laptop runtime emulates time (a fast clock, jumps over a visibility
timeout while nothing runs) and installs its clock with ``use_source`` in each execution
environment, so that a lease taken before a jump has expired after it, as it would have on AWS.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

Clock = Callable[[], dt.datetime]

_source: Callable[[], float] = time.time


def epoch() -> float:
    """Now, in epoch seconds."""
    return _source()


def utc_now() -> dt.datetime:
    return dt.datetime.fromtimestamp(_source(), dt.UTC)


def current_source() -> Callable[[], float]:
    return _source


def use_source(source: Callable[[], float] | None) -> None:
    """Read ``source`` (epoch seconds) from now on; ``None`` goes back to the system clock."""
    global _source
    _source = source if source is not None else time.time


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
