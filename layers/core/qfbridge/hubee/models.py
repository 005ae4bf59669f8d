"""HubEE resources as the SI side of the API sees them (swagger 1.2.7).

Models are lenient (``extra="ignore"``, most fields optional) because HubEE adds fields without
notice and a stricter model would block the intake of every dossier. Field names are the
swagger's camelCase names as aliases; Python code uses snake_case.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

FORMULAIRE_QF = "FormulaireQF"
"""The processCode of the Formulaire QF démarche."""

_REFERENCE = re.compile(r"^Formulaire-QF-([0-9A-F]{13})-\d{2}$")


class CaseStatus(StrEnum):
    """Case statuses. Only the form sets ``CLOSED``; ``qfbridge.hubee.statuses`` holds the transition table."""

    HUBEE_NOTIFIED = "HUBEE_NOTIFIED"
    SENT = "SENT"
    SI_RECEIVED = "SI_RECEIVED"
    IN_PROGRESS = "IN_PROGRESS"
    ADD_AWAITING = "ADD_AWAITING"
    DONE = "DONE"
    REFUSED = "REFUSED"
    SI_INTG_ERROR = "SI_INTG_ERROR"
    CLOSED = "CLOSED"


class AttachmentStatus(StrEnum):
    """Storage status of an attachment; only ``RECEIVED`` ones can be downloaded."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    CORRUPTED = "CORRUPTED"
    REJECTED = "REJECTED"
    DELETED = "DELETED"


class EventStatus(StrEnum):
    """Whether the recipient of an event has acknowledged it."""

    SENT = "SENT"
    RECEIVED = "RECEIVED"


class _HubeeModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class OrganizationIdentifier(_HubeeModel):
    """A HubEE organisation: for a FormulaireQF recipient, the collectivité's SIRET and COG code."""

    type: str | None = None
    company_register: str | None = None
    branch_code: str | None = None


class Applicant(_HubeeModel):
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None


class Attachment(_HubeeModel):
    id: str
    status: str | None = None
    file_name: str | None = None
    type: str | None = None
    size: int | None = None
    mime_type: str | None = None

    @property
    def is_downloadable(self) -> bool:
        """HubEE only serves the bytes of attachments it fully received."""
        return self.status == AttachmentStatus.RECEIVED


class Event(_HubeeModel):
    id: str
    action_type: str | None = None
    author: str | None = None
    notification: bool | None = None
    status: str | None = None
    case_current_status: str | None = None
    case_new_status: str | None = None
    message: str | None = None
    comment: str | None = None
    transmitter: OrganizationIdentifier | None = None
    partner_attributes: str | None = None
    attachments: list[Attachment] = []
    create_date_time: dt.datetime | None = None
    update_date_time: dt.datetime | None = None

    @property
    def is_acknowledged(self) -> bool:
        return self.status == EventStatus.RECEIVED


class Notification(_HubeeModel):
    id: str
    process_code: str | None = None
    case_id: str | None = None
    event_id: str | None = None
    event_action_type: str | None = None
    event_status: str | None = None
    date_time: dt.datetime | None = None
    recipient: OrganizationIdentifier | None = None
    transmitter: OrganizationIdentifier | None = None

    @property
    def is_new_dossier(self) -> bool:
        """A notification without an event announces a new case (a new dossier)."""
        return self.event_id is None

    @property
    def is_formulaire_qf(self) -> bool:
        return self.process_code == FORMULAIRE_QF


class Case(_HubeeModel):
    id: str
    status: str | None = None
    process_code: str | None = None
    external_id: str | None = None
    recipient: OrganizationIdentifier | None = None
    applicant: Applicant | None = None
    attachments: list[Attachment] = []
    events: list[Event] = []
    partner_attributes: str | None = None
    create_date_time: dt.datetime | None = None
    update_date_time: dt.datetime | None = None
    transmission_date_time: dt.datetime | None = None
    close_date_time: dt.datetime | None = None

    @property
    def reference(self) -> str | None:
        """The 13-hex-char reference the usager sees (``Formulaire-QF-<REF>-01``), if well formed."""
        match = _REFERENCE.match(self.external_id or "")
        return match.group(1) if match else None

    def attachment_named(self, file_name: str) -> Attachment | None:
        return next((a for a in self.attachments if a.file_name == file_name), None)


@dataclass(frozen=True)
class Download:
    """Bytes of an attachment and the ``digest`` header HubEE sent with them (if any).

    ``content`` is never shown in the repr: it is personal data.
    """

    content: bytes = field(repr=False)
    digest: str | None
    undecoded_sha256: bytes | None = field(default=None, repr=False)
    """SHA-256 of the body as served, when the client had to gunzip a body sent without header."""

    @property
    def size(self) -> int:
        return len(self.content)

    def digest_matches(self) -> bool | None:
        """``None`` without a digest header; otherwise whether it is the SHA-256 of the bytes.

        The header's format is unconfirmed (bare base64, ``SHA-256=`` prefixed, maybe hex), so all
        are accepted; a body that arrived gzipped without header may be digested either way.
        """
        if self.digest is None:
            return None
        expected = parse_sha256_digest(self.digest)
        if expected is None:
            return False
        candidates = {hashlib.sha256(self.content).digest()}
        if self.undecoded_sha256 is not None:
            candidates.add(self.undecoded_sha256)
        return expected in candidates


def parse_sha256_digest(value: str) -> bytes | None:
    """The 32 bytes of a SHA-256 ``digest`` header value, or ``None`` if it carries none."""
    for part in value.split(","):
        token = part.strip()
        algorithm, sep, encoded = token.partition("=")
        if sep and algorithm.strip().lower().replace("-", "") == "sha256":
            token = encoded.strip()
        elif sep and not token.endswith("="):
            continue  # another algorithm, e.g. "md5=..."
        if re.fullmatch(r"[0-9a-fA-F]{64}", token):
            return bytes.fromhex(token)
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    return None
