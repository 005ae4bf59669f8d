"""Crash points at the dossier store's boundary, for tests: the service under test carries no hook.

``JournalFaults`` wraps the dossier store a service was built with. Right after a write that left in
the record's ``steps`` a step new to its case (whatever the write: ``write``, which records every
step the attempt noted since its last write, the linking transaction, ``mark``), it calls
``on_step(case_id, step)`` for each such step, in the protocol's order (``Step``). ``on_step`` may
raise (a crash the handler sees: the write is durable, its answer lost) or block (a delivery held
there while another runs). When it raises, the crash has happened: the write's later steps are not
reported, then or ever (they are not new to the case any more). The audit trail's write is a fault
point too (``AuditFaults``): the record is in the trail, its step not journaled yet.

A step is durable when ``on_step`` runs: intake notes some steps (a status posted, the notification
deleted) and writes them with its next write, so their fault point is after that write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qfbridge.store.dossiers import DossierRecord, Step

OnStep = Callable[[str, str], None]
# Reads of the dossier store, and writes that journal no step: no fault point after them.
NO_STEP = frozenset(
    {
        "get",
        "by_reference",
        "require_for_tenant",
        "list_page",
        "in_review",
        "release",
        "count_failure",
        "strike_candidate",
        "erase_personal_data",
    }
)
AUDIT_WRITTEN = "audit_written"
# The intake's crash points: after each step of the journal that matters to a resumption, and after
# the audit record's write.
CRASH_POINTS = (
    "verified",
    "parsed",
    "persisted",
    AUDIT_WRITTEN,
    "si_received",
    "final_status",
    "notification_deleted",
)


ORDER = {str(step): index for index, step in enumerate(Step)}


def _case_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    first = args[0] if args else kwargs.get("case_id", kwargs.get("record"))
    if isinstance(first, DossierRecord):
        return first.case_id
    return first if isinstance(first, str) else None


class JournalFaults:
    """A dossier store whose step-journaling writes are followed by ``on_step``."""

    def __init__(self, store: Any, on_step: OnStep) -> None:
        self.store = store
        self.on_step = on_step
        self._known: dict[str, set[str]] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name in NO_STEP:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            case_id = _case_of(args, kwargs)
            if case_id is not None and case_id not in self._known:
                before = self.store.get(case_id)
                self._known[case_id] = set(before.steps) if before is not None else set()
            result = attribute(*args, **kwargs)
            if isinstance(result, DossierRecord):
                case_id = result.case_id
            if case_id is None:
                return result
            record = result if isinstance(result, DossierRecord) else self.store.get(case_id)
            if record is None:
                return result
            known = self._known.setdefault(case_id, set())
            new = sorted(set(record.steps) - known, key=lambda s: (ORDER.get(s, len(ORDER)), s))
            known.update(new)
            for step in new:
                self.on_step(case_id, step)
            return result

        return call


class AuditFaults:
    """An audit trail whose writes are followed by ``on_step(request_id, "audit_written")``."""

    def __init__(self, trail: Any, on_step: OnStep) -> None:
        self.trail = trail
        self.on_step = on_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trail, name)

    def write(self, record: Any) -> None:
        self.trail.write(record)
        self.on_step(str(record.request_id), AUDIT_WRITTEN)
