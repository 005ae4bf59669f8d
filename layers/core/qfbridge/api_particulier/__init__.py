"""API Particulier: the monthly quotient familial refresh (client, query mapping, typed outcomes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfbridge.lazy import exports

if TYPE_CHECKING:
    from qfbridge.api_particulier.client import (
        QF_IDENTITE_PATH,
        ApiParticulierClient,
        ApiParticulierConfig,
        build_query,
        outcome_from_response,
    )
    from qfbridge.api_particulier.outcomes import (
        AlreadyRunning,
        FamilyNotFound,
        Forbidden,
        IdentityRejected,
        Maintenance,
        ProviderUnavailable,
        QfFound,
        RateLimitInfo,
        RefreshOutcome,
        Throttled,
        TokenExpired,
        TransportFailure,
        UnexpectedAnswer,
    )

__all__ = [
    "QF_IDENTITE_PATH",
    "AlreadyRunning",
    "ApiParticulierClient",
    "ApiParticulierConfig",
    "FamilyNotFound",
    "Forbidden",
    "IdentityRejected",
    "Maintenance",
    "ProviderUnavailable",
    "QfFound",
    "RateLimitInfo",
    "RefreshOutcome",
    "Throttled",
    "TokenExpired",
    "TransportFailure",
    "UnexpectedAnswer",
    "build_query",
    "outcome_from_response",
]

# Each name imports its submodule on first use: the models' readers do not load the clients (httpx).
__getattr__ = exports(
    __name__,
    {
        "AlreadyRunning": "outcomes",
        "ApiParticulierClient": "client",
        "ApiParticulierConfig": "client",
        "FamilyNotFound": "outcomes",
        "Forbidden": "outcomes",
        "IdentityRejected": "outcomes",
        "Maintenance": "outcomes",
        "ProviderUnavailable": "outcomes",
        "QF_IDENTITE_PATH": "client",
        "QfFound": "outcomes",
        "RateLimitInfo": "outcomes",
        "RefreshOutcome": "outcomes",
        "Throttled": "outcomes",
        "TokenExpired": "outcomes",
        "TransportFailure": "outcomes",
        "UnexpectedAnswer": "outcomes",
        "build_query": "client",
        "outcome_from_response": "client",
    },
)
