"""API Particulier: the monthly quotient familial refresh (client, query mapping, typed outcomes)."""

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
