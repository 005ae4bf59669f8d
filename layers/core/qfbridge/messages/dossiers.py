"""The ``dossiers`` queue (read by reconcile): six kinds of message, told apart by ``kind``.

The HubEE notification a message carries is HubEE's own model (``qfbridge.hubee.models.Notification``),
lenient on purpose: HubEE adds fields.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from qfbridge.hubee.models import Notification
from qfbridge.messages.base import STRICT


class _NotificationMessage(BaseModel):
    """A HubEE notification, with the credential that saw it and that credential's tenants (the
    dossier's recipient must be one of them)."""

    model_config = STRICT

    notification: Notification
    credential_holder: str
    """The tenant whose HubEE secret reads the case."""
    credential_tenants: tuple[str, ...]

    def body(self) -> str:
        return self.model_dump_json(by_alias=True)


class NewDossierMessage(_NotificationMessage):
    """A notification of a new case (no ``eventId``): a dossier to take in."""

    kind: Literal["dossier"] = "dossier"
    receive_count: SkipJsonSchema[int | None] = Field(default=None, exclude=True)
    """Set by reconcile's handler from the SQS record (``ApproximateReceiveCount``), never sent: a
    first delivery writes nothing before its first durable step (``ReconcileService``)."""


class CaseEventMessage(_NotificationMessage):
    """A notification of an event on a case (the form's ``CLOSED``): acknowledged, nothing else."""

    kind: Literal["event"] = "event"


class OnboardedDossierMessage(_NotificationMessage):
    """A dossier kept ``awaiting_onboarding``, queued again once its collectivité's credentials are
    stored: taken in like a new one."""

    kind: Literal["onboarded"] = "onboarded"


class RepollMessage(BaseModel):
    """Poll one credential again, after the batch of a full listing it follows on the queue."""

    model_config = STRICT

    kind: Literal["repoll"] = "repoll"
    credential_holder: str
    credential_tenants: tuple[str, ...]
    hop: int = Field(ge=1)
    """How many polls in a row this credential had a full listing."""
    delay_s: int = Field(ge=0)
    """The delay this message was sent with (the next repoll's starts from it)."""

    def body(self) -> str:
        return self.model_dump_json()


class _CaseFollowUp(BaseModel):
    """A dossier's HubEE case to act on again, with the tenant whose credential reaches it."""

    model_config = STRICT

    case_id: str = Field(min_length=1)
    credential_holder: str

    def body(self) -> str:
        return self.model_dump_json()


class ReviewResolvedMessage(_CaseFollowUp):
    """An agent resolved a dossier (API): post its final status to HubEE and publish its events."""

    kind: Literal["review_resolved"] = "review_resolved"


class StatusRetryMessage(_CaseFollowUp):
    """An operator cleared a status HubEE refused: post the dossier's statuses again, once."""

    kind: Literal["status_retry"] = "status_retry"


NotificationMessage = NewDossierMessage | CaseEventMessage | OnboardedDossierMessage
FollowUpMessage = ReviewResolvedMessage | StatusRetryMessage
DossierMessage = Annotated[
    NewDossierMessage
    | CaseEventMessage
    | OnboardedDossierMessage
    | RepollMessage
    | ReviewResolvedMessage
    | StatusRetryMessage,
    Field(discriminator="kind"),
]
"""Every message of the dossiers queue, told apart by ``kind``."""


@functools.cache
def _dossier_message() -> TypeAdapter[DossierMessage]:
    return TypeAdapter(DossierMessage)


def parse_dossier_message(body: str | bytes) -> DossierMessage:
    """The dossiers queue's message (pydantic ``ValidationError`` when the body is not one)."""
    return _dossier_message().validate_json(body)


def notification_message(
    notification: Notification, holder: str, tenants: tuple[str, ...]
) -> NewDossierMessage | CaseEventMessage:
    """The message of a listed notification: a new dossier, or an event on a case."""
    kind = NewDossierMessage if notification.is_new_dossier else CaseEventMessage
    return kind(notification=notification, credential_holder=holder, credential_tenants=tenants)
