"""What the functions say to each other: the queue messages and the events of the bus.

One pydantic model per message. Producers build a model and send its body; consumers parse the
body back into the model. A field renamed on one side and not on the other fails the parse (every
model forbids unknown fields and requires what the consumer reads), never passes as a missing value:
the record fails, is retried, then dead-lettered.

* The ``dossiers`` queue (read by reconcile, :mod:`qfbridge.messages.dossiers`) carries six kinds,
  told apart by ``kind`` (:data:`DossierMessage`, a discriminated union): a HubEE notification of a
  new dossier (``dossier``) or of a case event (``event``), a kept dossier queued again once its
  collectivité is onboarded (``onboarded``), a ``repoll`` of one credential after a full listing, an
  agent's decision to carry to HubEE (``review_resolved``) and an operator's ``status_retry``.
* The ``refresh`` queue (read by qf_refresh, :mod:`qfbridge.messages.refresh`) carries
  :class:`RefreshMessage`.
* The EventBridge bus (:mod:`qfbridge.messages.events`) carries one :class:`BusEvent` per
  ``detail-type``; ``docs/events/*.schema.json`` are generated from these models
  (:func:`event_schema`, ``make openapi``). Events carry ids and QF values, never identities.

Bodies never appear in logs or errors: a body names the usager's case (``hide_input_in_errors``).

Each name is imported from its module when first used (:mod:`qfbridge.lazy`): qf_refresh reads
refresh messages and publishes events, and does not load HubEE's models for the dossiers queue's
messages (docs/performance.md, cold request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfbridge.lazy import exports

if TYPE_CHECKING:
    from qfbridge.messages.dossiers import (
        CaseEventMessage,
        DossierMessage,
        FollowUpMessage,
        NewDossierMessage,
        NotificationMessage,
        OnboardedDossierMessage,
        RepollMessage,
        ReviewResolvedMessage,
        StatusRetryMessage,
        notification_message,
        parse_dossier_message,
    )
    from qfbridge.messages.events import (
        EVENT_MODELS,
        EVENT_TYPES,
        EVENTS,
        SOURCE,
        BusEvent,
        CaseId,
        Date,
        DateTime,
        DossierLinked,
        DossierNeedsReview,
        DossierRejected,
        LinkMethod,
        QfUpdated,
        Reference,
        RefreshFailed,
        Siret,
        TenantHubeeAuthFailed,
        TenantTokenExpired,
        TenantTokenExpiring,
        UserId,
        event_schema,
        parse_event,
        qf_updated,
    )
    from qfbridge.messages.refresh import (
        RefreshMessage,
        parse_refresh_message,
    )

__all__ = [
    "EVENTS",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "SOURCE",
    "BusEvent",
    "CaseEventMessage",
    "CaseId",
    "Date",
    "DateTime",
    "DossierLinked",
    "DossierMessage",
    "DossierNeedsReview",
    "DossierRejected",
    "FollowUpMessage",
    "LinkMethod",
    "NewDossierMessage",
    "NotificationMessage",
    "OnboardedDossierMessage",
    "QfUpdated",
    "Reference",
    "RefreshFailed",
    "RefreshMessage",
    "RepollMessage",
    "ReviewResolvedMessage",
    "Siret",
    "StatusRetryMessage",
    "TenantHubeeAuthFailed",
    "TenantTokenExpired",
    "TenantTokenExpiring",
    "UserId",
    "event_schema",
    "notification_message",
    "parse_dossier_message",
    "parse_event",
    "parse_refresh_message",
    "qf_updated",
]

__getattr__ = exports(
    __name__,
    {
        "NewDossierMessage": "dossiers",
        "CaseEventMessage": "dossiers",
        "OnboardedDossierMessage": "dossiers",
        "RepollMessage": "dossiers",
        "ReviewResolvedMessage": "dossiers",
        "StatusRetryMessage": "dossiers",
        "NotificationMessage": "dossiers",
        "FollowUpMessage": "dossiers",
        "DossierMessage": "dossiers",
        "parse_dossier_message": "dossiers",
        "notification_message": "dossiers",
        "RefreshMessage": "refresh",
        "parse_refresh_message": "refresh",
        "SOURCE": "events",
        "Siret": "events",
        "UserId": "events",
        "CaseId": "events",
        "Reference": "events",
        "DateTime": "events",
        "Date": "events",
        "LinkMethod": "events",
        "BusEvent": "events",
        "DossierLinked": "events",
        "DossierNeedsReview": "events",
        "DossierRejected": "events",
        "QfUpdated": "events",
        "qf_updated": "events",
        "RefreshFailed": "events",
        "TenantTokenExpiring": "events",
        "TenantTokenExpired": "events",
        "TenantHubeeAuthFailed": "events",
        "EVENTS": "events",
        "EVENT_TYPES": "events",
        "EVENT_MODELS": "events",
        "parse_event": "events",
        "event_schema": "events",
    },
)
