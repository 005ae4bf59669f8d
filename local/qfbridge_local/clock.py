"""The laptop runtime's clock: one source of time for every timer the runtime emulates.

Lambda's and SQS's timers — a function's ``Timeout``, a queue's ``VisibilityTimeout`` and
``DelaySeconds``, a handler's ``ChangeMessageVisibility``, a mapping's batching window, a schedule's
rate, API Gateway's integration timeout — all read this clock, so that their ratios stay those of
the template. Two options make tests fast without breaking a ratio:

* ``speed``: emulated seconds per real second (1 by default). Every timer shrinks by the same factor;
  handlers keep running at real speed, so a high speed makes real work look slow (a timeout fires
  sooner) — which is what a test of the timeouts wants, and what a functional test must avoid.
* ``advance(seconds)``: jump forward while nothing runs. The triggers use it when every queue holds
  only invisible or delayed messages and no invocation is in flight: a failed batch then comes back
  "after the visibility timeout" without waiting for it. Nothing can observe the jump but timers.

moto's SQS backend reads this clock (``install_sqs_clock``), so visibility and delays follow it.
Worker processes (execution environments) receive the clock's parameters and its shared offset.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any


class RuntimeClock:
    """Emulated epoch seconds: ``origin + (real - origin) * speed + offset``."""

    def __init__(self, speed: float = 1.0, *, offset: Any = None, origin: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("the clock's speed must be positive")
        self.speed = float(speed)
        self.origin = time.time() if origin is None else origin
        # A shared double, so that worker processes see the jumps of the parent's clock.
        self._offset = offset if offset is not None else multiprocessing.get_context("spawn").Value("d", 0.0)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def time(self) -> float:
        """Now, in emulated epoch seconds."""
        return self.origin + (time.time() - self.origin) * self.speed + float(self._offset.value)

    def millis(self) -> float:
        return self.time() * 1000.0

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long ``emulated_seconds`` lasts on the wall clock."""
        return max(0.0, emulated_seconds) / self.speed

    def sleep(self, emulated_seconds: float) -> None:
        time.sleep(self.real_seconds(emulated_seconds))

    # ------------------------------------------------------------------ jumping
    def advance(self, emulated_seconds: float) -> None:
        """Jump forward (only while nothing runs: a running handler would see time leap)."""
        if emulated_seconds <= 0:
            return
        with self._lock, self._offset.get_lock():
            self._offset.value += emulated_seconds

    @property
    def skipped(self) -> float:
        return float(self._offset.value)

    def parameters(self) -> tuple[float, float, Any]:
        """What a worker process needs to rebuild the same clock."""
        return self.speed, self.origin, self._offset


_SQS_CLOCK: RuntimeClock | None = None


def install_sqs_clock(clock: RuntimeClock) -> None:
    """Make moto's SQS backend (in this process) read ``clock`` for every timestamp and deadline."""
    global _SQS_CLOCK
    from moto.sqs import models

    _SQS_CLOCK = clock
    if getattr(models, "_qfbridge_clock", False):
        return

    def unix_time(_dt: Any = None) -> float:
        return _SQS_CLOCK.time() if _SQS_CLOCK is not None else time.time()

    def unix_time_millis(_dt: Any = None) -> float:
        return unix_time() * 1000.0

    models.unix_time = unix_time  # type: ignore[assignment]
    models.unix_time_millis = unix_time_millis  # type: ignore[assignment]
    models._qfbridge_clock = True  # type: ignore[attr-defined]


def sqs_messages(queue_name: str) -> list[Any]:
    """moto's messages of a queue (this process's backend), visible or not."""
    from moto.sqs.models import sqs_backends

    from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION

    queue = sqs_backends[LOCAL_ACCOUNT_ID][LOCAL_REGION].queues.get(queue_name)
    return [] if queue is None else list(queue._messages)


def next_sqs_due(queue_names: list[str], only: set[str] | None = None) -> float | None:
    """The earliest emulated time at which an invisible message of these queues is due again
    (among the message ids of ``only`` when given)."""
    due: list[float] = []
    for name in queue_names:
        for message in sqs_messages(name):
            if only is not None and message.id not in only:
                continue
            due.append(max(float(message.visible_at or 0), float(message.delayed_until or 0)) / 1000.0)
    return min(due) if due else None
