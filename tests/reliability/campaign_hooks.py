"""The fault campaign's instrumentation, run inside each execution environment (worker process).

The runtime imports this file in every environment of reconcile and hubee_poll (an environment
hook, see ``qfbridge_local.lambdas``) and calls the hook after the handler's import, as a test would
patch the module of a warm container. Everything the instrumentation observes is appended to files
of ``CAMPAIGN_DIR`` (small appends are atomic), which the campaign reads afterwards: they are
records the code under test did not write.

* Real crashes: at a seeded draw per (case, journal step) — and at least once per step — the
  environment SIGKILLs itself right after the step was journaled: no ``finally`` runs, the case's
  lease is not released, the batch comes back after the queue's visibility timeout.
* Stalls: a few cases stop for longer than their lease (still within the function's timeout) after
  a step; the campaign then delivers a duplicate of their message, which takes the expired lease
  while the first invocation still runs.
* The handlers' own clock (leases, journal times) is the runtime's: when the runtime jumps over a
  visibility timeout, a lease taken before it has expired, as it would have on AWS.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from qfbridge.domain.errors import QfbridgeError
from qfbridge.hubee import HubeeClient, HubeeConfig
from qfbridge.messages import DossierMessage, NotificationMessage
from qfbridge.store.dossiers import LeaseLost
from qfbridge_local.lambdas import current_invocation, environment_clock
from tests.support.journal_faults import CRASH_POINTS, AuditFaults, JournalFaults

CRASH_STEPS = CRASH_POINTS
CLIENT_READ_TIMEOUT_S = 0.5
STALL_SECONDS = 55  # at most (emulated): past the campaign's lease, within reconcile's 60 s timeout
STALL_MARGIN_MS = 4000  # the stall ends this long before the invocation's timeout, taken over or not
LEASE_SECONDS = 15  # the campaign's DOSSIER_LEASE_SECONDS (production: 300 s, beyond reconcile's timeout)
# A candidate stalls only with this much of its invocation left: the lease's expiry, then time for
# the duplicate to find a free environment (all may be busy with batches) and start.
STALL_NEEDS_MS = (LEASE_SECONDS + 10) * 1000  # the campaign's DOSSIER_LEASE_SECONDS


def _dir() -> Path:
    return Path(os.environ["CAMPAIGN_DIR"])


def _append(name: str, record: dict[str, Any]) -> None:
    with open(_dir() / name, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def _first(marker: str) -> bool:
    """True once across every environment of the campaign (an O_EXCL marker file)."""
    try:
        fd = os.open(_dir() / "markers" / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fast_hubee(config: HubeeConfig) -> HubeeConfig:
    """Same retry policy, shorter waits: the campaign must fit in the test suite's time."""
    return config.model_copy(
        update={"backoff_base_s": 0.01, "backoff_max_s": 0.05, "read_timeout_s": CLIENT_READ_TIMEOUT_S}
    )


def _taken_over(case_id: str, after: float) -> bool:
    path = _dir() / "starts.jsonl"
    if not path.exists():
        return False
    for line in path.read_text(encoding="utf-8").splitlines():
        start = json.loads(line)
        if start["case_id"] == case_id and start["pid"] != os.getpid() and start["at"] >= after:
            return True
    return False


def _stall_cases() -> set[str]:
    path = _dir() / "stall_cases.txt"
    return set(path.read_text(encoding="utf-8").split()) if path.exists() else set()


class _Current:
    """What this environment is working on (one invocation at a time per environment)."""

    case_id: str | None = None
    message: dict[str, Any] | None = None


def _stall_before_the_last_write(case_id: str, lease_taken: Any = None) -> bool:
    """The stalled invocation holds on before its last write (which would give the lease up), past
    its lease: it has posted the case's statuses, deleted the notification and published."""
    if case_id not in _stall_cases():
        return False
    invocation = current_invocation()
    if invocation is not None and invocation.get_remaining_time_in_millis() < STALL_NEEDS_MS:
        return False  # too late in its invocation for a takeover to happen before the timeout
    if (_dir() / "markers" / f"stall-{case_id}").exists():
        return False  # this case stalled once already (a later delivery of it takes no slot)
    if not any(_first(f"stall-slot-{n}") for n in range(int(os.environ["CAMPAIGN_STALLS"]))):
        return False  # enough invocations stalled already
    if not _first(f"stall-{case_id}"):
        return False
    clock = environment_clock()
    started = clock.time()
    _append(
        "stalls.jsonl", {"case_id": case_id, "at": started, "pid": os.getpid(), "message": _Current.message}
    )
    # Hold on until another environment has started on the case (its duplicate is delivered once the
    # lease expired), at most STALL_SECONDS of the runtime's clock: then this invocation's write meets
    # the lease it lost.
    while (
        clock.time() < started + STALL_SECONDS
        and not _taken_over(case_id, after=started + LEASE_SECONDS)
        and (invocation is None or invocation.get_remaining_time_in_millis() > STALL_MARGIN_MS)
    ):
        time.sleep(0.05)
    # The other environment works on the case meanwhile: wait until it has taken the lease (its first
    # write), within the same bounds — a fixed half second was not always enough on a loaded machine
    # (its HubEE calls retried first), and this write then met a lease nobody had taken yet.
    while (
        lease_taken is not None
        and not lease_taken()
        and clock.time() < started + STALL_SECONDS
        and (invocation is None or invocation.get_remaining_time_in_millis() > STALL_MARGIN_MS)
    ):
        time.sleep(0.05)
    time.sleep(0.1)
    _append("stalls.jsonl", {"case_id": case_id, "resumed_at": clock.time(), "pid": os.getpid()})
    return True


def _crash(case_id: str, step: str) -> None:
    """Right after ``step`` became durable (the dossier store's or the audit trail's write)."""
    if case_id != _Current.case_id or step not in CRASH_STEPS:
        return  # another case's write, or a step no resumption depends on
    seed = os.environ["CAMPAIGN_SEED"]
    draw = random.Random(f"{seed}:{case_id}:{step}").random()
    rate = float(os.environ["CAMPAIGN_CRASH_RATE"])
    if not (_first(f"step-{step}") or draw < rate):
        return
    if not _first(f"crash-{case_id}-{step}"):
        return
    _append("crashes.jsonl", {"case_id": case_id, "step": step, "pid": os.getpid()})
    os.kill(os.getpid(), signal.SIGKILL)  # mid-invocation: no finally, no lease release
    time.sleep(10)


class _StallingStore:
    """The dossier store, holding a stall case's last write while the lease is held (see above)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write(self, record: Any, steps: Any, *args: Any, **kwargs: Any) -> Any:
        if not (kwargs.get("release") and kwargs.get("lease") is not None):
            return self._store.write(record, steps, *args, **kwargs)
        held = kwargs["lease"]

        def lease_taken() -> bool:
            current = self._store.get(record.case_id)
            return current is None or current.lease_until != held

        if not _stall_before_the_last_write(record.case_id, lease_taken):
            return self._store.write(record, steps, *args, **kwargs)
        try:
            written = self._store.write(record, steps, *args, **kwargs)
        except LeaseLost:
            _append("stalls.jsonl", {"case_id": record.case_id, "write": "refused", "pid": os.getpid()})
            raise
        _append("stalls.jsonl", {"case_id": record.case_id, "write": "written", "pid": os.getpid()})
        return written


def instrument_reconcile(function: str, module: ModuleType) -> None:
    clock = environment_clock()
    service = module.service()
    service.dossiers = JournalFaults(_StallingStore(service.dossiers), _crash)
    if service.audit is not None:
        service.audit = AuditFaults(
            service.audit, lambda request_id, step: _crash(str(_Current.case_id), step)
        )
    service.hubee = fast_hubee(service.hubee)

    def counted_sleep(seconds: float) -> None:
        _append("retries.jsonl", {"pid": os.getpid()})
        time.sleep(min(seconds, 0.02))

    service.client_factory = partial(HubeeClient, sleep=counted_sleep)
    handle = service.handle

    def handle_and_log(message: DossierMessage) -> Any:
        notification = message.notification if isinstance(message, NotificationMessage) else None
        _Current.case_id = notification.case_id if notification else None
        _Current.message = message.model_dump(mode="json", by_alias=True)
        started = clock.time()
        _append("starts.jsonl", {"case_id": _Current.case_id, "pid": os.getpid(), "at": started})
        code = "ok"
        try:
            return handle(message)
        except Exception as exc:
            code = exc.code if isinstance(exc, QfbridgeError) else type(exc).__name__
            _append(
                "deliveries.jsonl",
                {"notification": str(notification.id if notification else None), "code": code},
            )
            raise
        finally:
            _append(
                "handled.jsonl",
                {
                    "case_id": _Current.case_id,
                    "pid": os.getpid(),
                    "start": started,
                    "end": clock.time(),
                    "code": code,
                },
            )
            _Current.case_id = None
            _Current.message = None

    service.handle = handle_and_log


def instrument_poll(function: str, module: ModuleType) -> None:
    poll = module.services()
    poll.hubee = fast_hubee(poll.hubee)
