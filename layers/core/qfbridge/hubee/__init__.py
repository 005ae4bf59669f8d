"""HubEE client (SI side of the ``/teledossiers/v1`` API) and its token cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfbridge.lazy import exports

if TYPE_CHECKING:
    from qfbridge.hubee.client import AsyncHubeeClient, HubeeClient
    from qfbridge.hubee.config import HubeeConfig, HubeeCredentials, HubeeEnvironment
    from qfbridge.hubee.errors import (
        AttachmentTooLarge,
        HubeeAuthError,
        HubeeBadRequestError,
        HubeeError,
        HubeeForbiddenError,
        HubeeNotFoundError,
        HubeeOutcomeUnknown,
        HubeeProtocolError,
        HubeeServerError,
        HubeeTransitionRefused,
        HubeeTransportError,
    )
    from qfbridge.hubee.models import (
        FORMULAIRE_QF,
        Applicant,
        Attachment,
        AttachmentStatus,
        Case,
        CaseStatus,
        Download,
        Event,
        EventStatus,
        Notification,
        OrganizationIdentifier,
    )
    from qfbridge.hubee.tokens import PROCESS_TOKEN_CACHE, TokenCache

__all__ = [
    "FORMULAIRE_QF",
    "PROCESS_TOKEN_CACHE",
    "Applicant",
    "AsyncHubeeClient",
    "Attachment",
    "AttachmentStatus",
    "AttachmentTooLarge",
    "Case",
    "CaseStatus",
    "Download",
    "Event",
    "EventStatus",
    "HubeeAuthError",
    "HubeeBadRequestError",
    "HubeeClient",
    "HubeeConfig",
    "HubeeCredentials",
    "HubeeEnvironment",
    "HubeeError",
    "HubeeForbiddenError",
    "HubeeNotFoundError",
    "HubeeOutcomeUnknown",
    "HubeeProtocolError",
    "HubeeServerError",
    "HubeeTransitionRefused",
    "HubeeTransportError",
    "Notification",
    "OrganizationIdentifier",
    "TokenCache",
]

# Each name imports its submodule on first use: the models' readers do not load the clients (httpx).
__getattr__ = exports(
    __name__,
    {
        "Applicant": "models",
        "AsyncHubeeClient": "client",
        "Attachment": "models",
        "AttachmentStatus": "models",
        "AttachmentTooLarge": "errors",
        "Case": "models",
        "CaseStatus": "models",
        "Download": "models",
        "Event": "models",
        "EventStatus": "models",
        "FORMULAIRE_QF": "models",
        "HubeeAuthError": "errors",
        "HubeeBadRequestError": "errors",
        "HubeeClient": "client",
        "HubeeConfig": "config",
        "HubeeCredentials": "config",
        "HubeeEnvironment": "config",
        "HubeeError": "errors",
        "HubeeForbiddenError": "errors",
        "HubeeNotFoundError": "errors",
        "HubeeOutcomeUnknown": "errors",
        "HubeeProtocolError": "errors",
        "HubeeServerError": "errors",
        "HubeeTransitionRefused": "errors",
        "HubeeTransportError": "errors",
        "Notification": "models",
        "OrganizationIdentifier": "models",
        "PROCESS_TOKEN_CACHE": "tokens",
        "TokenCache": "tokens",
    },
)
