"""HubEE client (SI side of the ``/teledossiers/v1`` API) and its token cache."""

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
