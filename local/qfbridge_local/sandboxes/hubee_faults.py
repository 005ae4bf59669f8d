"""Fault injection for the HubEE sandbox: one-shot faults and seeded, bounded random ones.

A fault is drawn at the point of the exchange where it makes sense:
* ``http_500`` / ``http_503`` / ``timeout``: on any API call (the token endpoint only when a fault
  names its route explicitly); ``timeout`` processes the call, then hangs past the client's read
  timeout and answers late — or drops the connection;
* ``lost_response``: on any API call: the call takes effect, then the connection is closed without an
  answer (a POST HubEE accepted whose response never reached the client);
* ``duplicate_notification`` / ``reorder``: on ``GET /notifications``;
* ``corrupt_bytes``: on an attachment download (the ``digest`` stays that of the original bytes);
* ``malformed_json``: when the form deposits a dossier (``POST /folders``): the stored
  ``FormulaireQF.json`` is truncated, and its size and digest are those of the truncated bytes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

FaultKind = Literal[
    "http_500",
    "http_503",
    "timeout",
    "lost_response",
    "duplicate_notification",
    "corrupt_bytes",
    "malformed_json",
    "reorder",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
CALL_FAULTS = ("http_500", "http_503", "timeout", "lost_response")
ANSWERED_LATE_OR_NEVER = ("timeout", "lost_response")  # processed first, then the reply is held or dropped
TOKEN_ROUTE = "POST /oauth2/token"  # noqa: S105 - a route, not a secret
DEPOSIT_ROUTE = "POST /folders"


@dataclass(frozen=True)
class Fault:
    kind: str
    delay_s: float = 0.0
    """``timeout``: how long the server hangs before answering (or dropping)."""
    drop: bool = False
    """``timeout``: close the connection instead of answering after the delay."""
    after_processing: bool = False
    """``http_500``/``http_503``: the call takes effect, then the error is returned (outcome unknown)."""


@dataclass
class _Armed:
    fault: Fault
    route: str | None
    case_id: str | None
    remaining: int


class FaultPlan:
    """Faults waiting to happen. Not thread-safe by itself: the sandbox calls it under its lock."""

    def __init__(self, seed: int, default_timeout_s: float) -> None:
        self._rng = random.Random(f"hubee-faults:{seed}")
        self._armed: list[_Armed] = []
        self._rates: dict[str, float] = {}
        self._budget: int | None = None
        self._timeout_s = default_timeout_s
        self._timeout_drops = False
        self.injected: Counter[str] = Counter()

    def inject(
        self,
        kind: str,
        *,
        route: str | None,
        times: int,
        case_id: str | None,
        delay_s: float | None,
        drop: bool,
        after_processing: bool,
    ) -> None:
        _check_kind(kind)
        if times < 1:
            raise ValueError("times must be at least 1")
        if kind == "lost_response":
            fault = Fault(kind, 0.0 if delay_s is None else delay_s, True, True)
        else:
            fault = Fault(kind, self._timeout_s if delay_s is None else delay_s, drop, after_processing)
        self._armed.append(_Armed(fault, route, case_id, times))

    def set_rates(
        self, rates: Mapping[str, float], *, budget: int | None, timeout_s: float | None, drop: bool
    ) -> None:
        for kind, rate in rates.items():
            _check_kind(kind)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate of {kind} must be within [0, 1]")
        self._rates = {kind: rate for kind, rate in rates.items() if rate > 0}
        self._budget = budget
        self._timeout_drops = drop
        if timeout_s is not None:
            self._timeout_s = timeout_s

    def clear(self) -> None:
        self._armed.clear()
        self._rates.clear()
        self._budget = None

    def draw(self, kinds: tuple[str, ...], route: str, case_id: str | None) -> Fault | None:
        """The fault (if any) that hits this point of a call on ``route`` (``"GET /cases/{caseId}"``)."""
        for armed in self._armed:
            if armed.fault.kind in kinds and _route_matches(armed.route, route):
                if armed.case_id is not None and armed.case_id != case_id:
                    continue
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
                self.injected[armed.fault.kind] += 1
                return armed.fault
        if route == TOKEN_ROUTE:
            return None
        for kind in kinds:
            rate = self._rates.get(kind, 0.0)
            if rate and (self._budget is None or self._budget > 0) and self._rng.random() < rate:
                if self._budget is not None:
                    self._budget -= 1
                self.injected[kind] += 1
                if kind == "lost_response":
                    return Fault(kind, 0.0, True, True)
                return Fault(kind, self._timeout_s, self._timeout_drops)
        return None

    def pick(self, population: int) -> int:
        """A seeded index (which notification to duplicate, which byte to corrupt)."""
        return self._rng.randrange(population)

    @property
    def pending(self) -> int:
        return sum(armed.remaining for armed in self._armed)


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")


def _route_matches(wanted: str | None, route: str) -> bool:
    """``None`` = any API route (the token endpoint must be named); ``"/cases/{caseId}"`` = any method."""
    if wanted is None:
        return route != TOKEN_ROUTE
    if " " in wanted:
        return wanted == route
    return route.split(" ", 1)[1] == wanted
