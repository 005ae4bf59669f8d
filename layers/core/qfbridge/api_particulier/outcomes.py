"""Typed outcomes of one QF refresh call to API Particulier.

Every answer of ``/v3/dss/quotient_familial/identite`` (and every transport failure) becomes exactly
one of these values, so the refresh use case decides with a ``match`` and never parses HTTP itself:

- ``QfFound`` (200, ``qf_found``): store value + history.
- ``FamilyNotFound`` (404, ``not_found``): retry next cycle, alert after N.
- ``IdentityRejected`` (422, ``identity_rejected``): stop, a new dossier is needed.
- ``TokenExpired`` (401, ``token_expired``): stop every refresh of the tenant, raise an event.
- ``Forbidden`` (403, ``forbidden``): stop the tenant, raise an event.
- ``Throttled`` (429, ``throttled``, retryable): wait ``retry_after_seconds`` (Retry-After).
- ``AlreadyRunning`` (409, ``already_running``, retryable): wait, retry.
- ``Maintenance`` (503, ``maintenance``, retryable): wait ``meta.retry_in``.
- ``ProviderUnavailable`` (502/504, ``provider_error``, retryable): back off, retry, then DLQ.
- ``TransportFailure`` (no answer, ``transport_error``, retryable): back off, retry.
- ``UnexpectedAnswer`` (anything else, ``unexpected``, retryable when 5xx): alert.

Personal data: ``QfFound`` carries the QF and the household because that is the data the caller
stores, but those fields are excluded from ``repr``/``str`` so an outcome can be logged as is.
Error ``detail`` texts are not kept (only the stable ``errors[].code`` values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qfbridge.domain.identity import Person
from qfbridge.domain.qf import QuotientFamilial

# Waits used when the answer does not say how long to wait. 429 is conservative on purpose:
# ignoring 429s earns a 12 h IP ban from API Particulier.
DEFAULT_THROTTLE_WAIT_SECONDS = 60.0
DEFAULT_ALREADY_RUNNING_WAIT_SECONDS = 10.0
DEFAULT_MAINTENANCE_WAIT_SECONDS = 900.0
DEFAULT_PROVIDER_WAIT_SECONDS = 30.0
DEFAULT_TRANSPORT_WAIT_SECONDS = 10.0

ERROR_CODE_JETON_EXPIRE = "00103"


@dataclass(frozen=True)
class RateLimitInfo:
    """The ``RateLimit-Limit/Remaining/Reset`` headers, for telemetry.

    ``reset`` is kept as sent: the IETF draft defines it as delta seconds, API Particulier's
    documentation as a Unix timestamp; ``seconds_until_reset`` accepts both readings.
    """

    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None

    def seconds_until_reset(self, now_epoch: float) -> float | None:
        if self.reset is None:
            return None
        if self.reset > 1_000_000_000:  # a Unix timestamp, not a delay
            return max(0.0, self.reset - now_epoch)
        return float(max(0, self.reset))


@dataclass(frozen=True, kw_only=True)
class RefreshOutcome:
    """Base of every outcome: what the server said about the call, never who was asked about."""

    kind: ClassVar[str] = "outcome"
    _retryable: ClassVar[bool] = False

    status: int | None = None
    request_id: str | None = None
    error_codes: tuple[str, ...] = ()
    retry_after_seconds: float | None = None
    rate_limit: RateLimitInfo | None = None

    @property
    def retryable(self) -> bool:
        """True when the same call may succeed later without any change on our side."""
        return self._retryable

    def log_fields(self) -> dict[str, Any]:
        """Fields safe to put in a log line or a metric dimension (no personal data, no token)."""
        fields: dict[str, Any] = {
            "outcome": self.kind,
            "status": self.status,
            "request_id": self.request_id,
            "retryable": self.retryable,
        }
        if self.error_codes:
            fields["error_codes"] = list(self.error_codes)
        if self.retry_after_seconds is not None:
            fields["retry_after_seconds"] = self.retry_after_seconds
        if self.rate_limit is not None:
            fields["ratelimit_limit"] = self.rate_limit.limit
            fields["ratelimit_remaining"] = self.rate_limit.remaining
        return fields


@dataclass(frozen=True, kw_only=True)
class QfFound(RefreshOutcome):
    """200: the family is known. ``quotient_familial`` is None when the token lacks its scope."""

    kind: ClassVar[str] = "qf_found"

    quotient_familial: QuotientFamilial | None = field(default=None, repr=False)
    allocataires: list[Person] = field(default_factory=list, repr=False)
    enfants: list[Person] = field(default_factory=list, repr=False)
    members_skipped: int = 0
    """Household members dropped because CAF/MSA sent them without a usable name."""


@dataclass(frozen=True, kw_only=True)
class FamilyNotFound(RefreshOutcome):
    """404: no allocataire file at CNAF/MSA for this identity (this month)."""

    kind: ClassVar[str] = "not_found"


@dataclass(frozen=True, kw_only=True)
class IdentityRejected(RefreshOutcome):
    """422 (or refused before calling): the identity cannot be used as it is stored."""

    kind: ClassVar[str] = "identity_rejected"


@dataclass(frozen=True, kw_only=True)
class TokenExpired(RefreshOutcome):
    """401: the tenant's token is not accepted; ``expired`` when the code is 00103."""

    kind: ClassVar[str] = "token_expired"

    expired: bool = False


@dataclass(frozen=True, kw_only=True)
class Forbidden(RefreshOutcome):
    """403: the token is valid but may not do this call (scopes, recipient)."""

    kind: ClassVar[str] = "forbidden"


@dataclass(frozen=True, kw_only=True)
class Throttled(RefreshOutcome):
    """429: over the rate limit; wait ``retry_after_seconds`` before the next call of this token."""

    kind: ClassVar[str] = "throttled"
    _retryable: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class AlreadyRunning(RefreshOutcome):
    """409: the same request is already being processed for this token."""

    kind: ClassVar[str] = "already_running"
    _retryable: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Maintenance(RefreshOutcome):
    """503: API Particulier is in maintenance (every Sunday 23:00–23:45 Paris)."""

    kind: ClassVar[str] = "maintenance"
    _retryable: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class ProviderUnavailable(RefreshOutcome):
    """502/504: CNAF/MSA did not answer properly."""

    kind: ClassVar[str] = "provider_error"
    _retryable: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class TransportFailure(RefreshOutcome):
    """No HTTP answer at all: ``reason`` is ``timeout`` or ``connection``."""

    kind: ClassVar[str] = "transport_error"
    _retryable: ClassVar[bool] = True

    reason: str = "connection"


@dataclass(frozen=True, kw_only=True)
class UnexpectedAnswer(RefreshOutcome):
    """Any other answer (or a 200 whose body breaks the contract: ``reason="invalid_payload"``)."""

    kind: ClassVar[str] = "unexpected"

    reason: str = "unexpected_status"

    @property
    def retryable(self) -> bool:
        return self.status is not None and self.status >= 500


def ceil_seconds(value: float) -> float:
    """Round a wait up to the next whole second (never wake up a hair too early)."""
    return float(math.ceil(max(0.0, value)))
