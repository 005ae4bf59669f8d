"""A local HubEE serving the SI side of the swagger 1.2.7 (``/teledossiers/v1``) over real HTTP.

Why a sandbox and not mocks: intake must be exercised against what makes HubEE hard — OAuth2
tokens that expire, subscriptions that see only their recipients, notifications redelivered
until deleted and in no particular order, attachment digests in an unconfirmed format, status
rules, the form's ``CLOSED`` event, purged attachments, and failures at any step.

Served routes (path templates as in the swagger, under ``/teledossiers/v1``)::

    POST   /oauth2/token                              client credentials, Basic auth, scope SI
    GET    /notifications                             maxResult, processCode, eventDetails
    DELETE /notifications/{notificationId}
    GET    /cases/{caseId}                  PATCH (or POST + X-HTTP-Method-Override) {"status"}
    GET    /cases/{caseId}/attachments/{attachmentId}  bytes + ``digest`` header
    POST   /cases/{caseId}/events                     STATUS_UPDATE, status rules enforced
    GET    /cases/{caseId}/events/{eventId}  PATCH {"status": "RECEIVED"}

Status rules: HubEE's documented transition table (below, ``_ALLOWED_FROM``) — each status with the
statuses it may be reached from; the intake statuses HUBEE_NOTIFIED → SENT → SI_RECEIVED →
IN_PROGRESS may be skipped forward; anything else (going back, SI_INTG_ERROR straight from
HUBEE_NOTIFIED, DONE from SENT, any change after DONE/REFUSED) is answered 400. Only the form sets
CLOSED. ``caseCurrentStatus`` must be the case's status, except for a repeated status: HubEE accepts
a STATUS_UPDATE whose new status is the case's status and records it again (a blind retry
duplicates the history). Every ``POST …/events`` is recorded raw (``status_posts``), answered or
refused, so tests can assert what was sent. A PATCH of the case may precede its event: the event
then carries the status before the PATCH.

Everything is guarded by one lock and deterministic given ``seed`` (ids, references, page order,
faults), except for the interleaving of concurrent requests. Nothing is logged.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import hashlib
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import parse_qsl

from qfbridge_local.sandboxes import hubee_documents as documents
from qfbridge_local.sandboxes.hubee_faults import (
    ANSWERED_LATE_OR_NEVER,
    CALL_FAULTS,
    DEPOSIT_ROUTE,
    FAULT_KINDS,
    Fault,
    FaultKind,
    FaultPlan,
)
from qfbridge_local.sandboxes.hubee_http import SandboxHttpServer, SandboxReply, SandboxRequest

__all__ = ["FAULT_KINDS", "DepositedCase", "DigestFormat", "FaultKind", "HubeeSandbox"]

BASE_PATH = "/teledossiers/v1"
FORMULAIRE_QF = "FormulaireQF"
DINUM = {"type": "OSL", "companyRegister": "13002526500013", "branchCode": "75107"}
TOKEN_TTL_S = 3600.0
DEFAULT_MAX_RESULT = 50

DigestFormat = Literal["bare", "prefixed", "absent"]

# HubEE's functional specification: each status an SI sets, and the statuses it may be reached from.
_ALLOWED_FROM: dict[str, frozenset[str]] = {
    "SENT": frozenset({"HUBEE_NOTIFIED"}),
    "SI_RECEIVED": frozenset({"SENT"}),
    "IN_PROGRESS": frozenset({"SI_RECEIVED"}),
    "ADD_AWAITING": frozenset({"IN_PROGRESS"}),
    "DONE": frozenset({"SI_RECEIVED", "IN_PROGRESS", "ADD_AWAITING"}),
    "REFUSED": frozenset({"SI_RECEIVED", "IN_PROGRESS", "ADD_AWAITING"}),
    "SI_INTG_ERROR": frozenset({"SI_RECEIVED", "IN_PROGRESS", "ADD_AWAITING", "DONE"}),
}
# Intake statuses clients skip forward along (HUBEE_NOTIFIED -> SI_RECEIVED is accepted).
_FORWARD = ("HUBEE_NOTIFIED", "SENT", "SI_RECEIVED", "IN_PROGRESS")
# Rank of a status for the attachment purge (configured at IN_PROGRESS for every documented démarche).
_RANK = {
    "HUBEE_NOTIFIED": 0,
    "SENT": 1,
    "SI_RECEIVED": 2,
    "IN_PROGRESS": 3,
    "ADD_AWAITING": 3,
    "DONE": 4,
    "REFUSED": 4,
}
_FINAL = frozenset({"DONE", "REFUSED", "CLOSED"})
_SI_SETTABLE = frozenset(_ALLOWED_FROM)
_ATTACHMENT_STATUSES = frozenset({"PENDING", "RECEIVED", "CORRUPTED", "REJECTED", "DELETED"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CLOSING_MESSAGE = {"DONE": "Dossier traité par le service.", "REFUSED": "Dossier refusé par le service."}

_ROUTES: list[tuple[re.Pattern[str], str, frozenset[str]]] = [
    (re.compile(r"^/oauth2/token$"), "/oauth2/token", frozenset({"POST"})),
    (re.compile(rf"^{BASE_PATH}/notifications$"), "/notifications", frozenset({"GET"})),
    (
        re.compile(rf"^{BASE_PATH}/notifications/(?P<notificationId>[^/]+)$"),
        "/notifications/{notificationId}",
        frozenset({"DELETE"}),
    ),
    (re.compile(rf"^{BASE_PATH}/cases/(?P<caseId>[^/]+)$"), "/cases/{caseId}", frozenset({"GET", "PATCH"})),
    (
        re.compile(rf"^{BASE_PATH}/cases/(?P<caseId>[^/]+)/attachments/(?P<attachmentId>[^/]+)$"),
        "/cases/{caseId}/attachments/{attachmentId}",
        frozenset({"GET"}),
    ),
    (
        re.compile(rf"^{BASE_PATH}/cases/(?P<caseId>[^/]+)/events$"),
        "/cases/{caseId}/events",
        frozenset({"POST"}),
    ),
    (
        re.compile(rf"^{BASE_PATH}/cases/(?P<caseId>[^/]+)/events/(?P<eventId>[^/]+)$"),
        "/cases/{caseId}/events/{eventId}",
        frozenset({"GET", "PATCH"}),
    ),
]


@dataclass(frozen=True)
class DepositedCase:
    """What a test needs to know about a dossier the form deposited."""

    case_id: str
    reference: str
    external_id: str
    notification_id: str
    json_attachment_id: str
    xml_attachment_id: str
    pdf_attachment_id: str
    pdf_file_name: str


class _Problem(Exception):
    """An HTTP error answer, in the swagger's ``Error`` shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Subscription:
    client_id: str
    secret: str
    recipients: set[tuple[str, str]]


@dataclass
class _Token:
    client_id: str
    expires_at: float


@dataclass
class _Attachment:
    id: str
    file_name: str
    mime_type: str
    content: bytes
    type: str = FORMULAIRE_QF
    status: str = "RECEIVED"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "fileName": self.file_name,
            "type": self.type,
            "size": len(self.content),
            "mimeType": self.mime_type,
        }


@dataclass
class _Event:
    id: str
    action_type: str
    author: str | None
    notification: bool
    case_current_status: str | None
    case_new_status: str | None
    message: str | None
    comment: str | None
    transmitter: dict[str, str]
    created: str
    status: str = "SENT"
    updated: str = ""
    partner_attributes: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actionType": self.action_type,
            "author": self.author,
            "notification": self.notification,
            "status": self.status,
            "caseCurrentStatus": self.case_current_status,
            "caseNewStatus": self.case_new_status,
            "message": self.message,
            "comment": self.comment,
            "transmitter": dict(self.transmitter),
            "partnerAttributes": self.partner_attributes,
            "attachments": [],
            "createDateTime": self.created,
            "updateDateTime": self.updated or self.created,
        }


@dataclass
class _Case:
    id: str
    process_code: str
    external_id: str
    recipient: tuple[str, str]
    applicant: dict[str, Any]
    created: str
    status: str = "HUBEE_NOTIFIED"
    updated: str = ""
    closed: str | None = None
    attachments: list[_Attachment] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    status_events: list[str] = field(default_factory=list)
    status_before_patch: str | None = None
    close_pending: bool = False

    def as_json(self) -> dict[str, Any]:
        siret, cog = self.recipient
        return {
            "id": self.id,
            "status": self.status,
            "processCode": self.process_code,
            "externalId": self.external_id,
            "recipient": {"type": "SI", "companyRegister": siret, "branchCode": cog},
            "applicant": dict(self.applicant),
            "createDateTime": self.created,
            "updateDateTime": self.updated or self.created,
            "transmissionDateTime": self.created,
            "closeDateTime": self.closed,
            "partnerAttributes": None,
            "attachments": [a.as_json() for a in self.attachments],
            "events": [e.as_json() for e in self.events],
        }


@dataclass
class _Notification:
    id: str
    process_code: str
    case_id: str
    event_id: str | None
    recipient: tuple[str, str]
    date_time: str


class HubeeSandbox:
    """A HubEE on 127.0.0.1 for tests and the laptop runtime (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        auto_close: bool = True,
        purge_attachments_at: str | None = "IN_PROGRESS",
        digest_format: DigestFormat = "bare",
        gzip_responses: bool = False,
        gzip_attachments_unannounced: bool = False,
        shuffle_notifications: bool = True,
        latency_ms: float = 0.0,
        token_ttl_s: float = TOKEN_TTL_S,
        max_events_per_case: int = 50,
        fault_timeout_s: float = 1.0,
        request_queue_size: int = 1024,
    ) -> None:
        if purge_attachments_at is not None and purge_attachments_at not in _RANK:
            raise ValueError(f"purge_attachments_at must be one of {', '.join(_RANK)} or None")
        self.auto_close = auto_close
        self.purge_attachments_at = purge_attachments_at
        self.digest_format: DigestFormat = digest_format
        self.gzip_responses = gzip_responses
        self.gzip_attachments_unannounced = gzip_attachments_unannounced
        self.shuffle_notifications = shuffle_notifications
        self.latency_ms = latency_ms
        self.token_ttl_s = token_ttl_s
        self.max_events_per_case = max_events_per_case
        self._lock = threading.RLock()
        self._rng = random.Random(f"hubee:{seed}")
        self._faults = FaultPlan(seed, fault_timeout_s)
        self._clock_offset = 0.0
        self._subscriptions: dict[str, _Subscription] = {}
        self._tokens: dict[str, _Token] = {}
        self._cases: dict[str, _Case] = {}
        self._notifications: dict[str, _Notification] = {}
        self._calls: Counter[tuple[str, str]] = Counter()
        self._calls_by_case: dict[str, Counter[tuple[str, str]]] = {}
        self._token_calls: Counter[str] = Counter()
        self._status_posts: list[dict[str, Any]] = []
        self._http = SandboxHttpServer(self._serve, request_queue_size=request_queue_size)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        """API root without the base path, like ``HubeeConfig.api_url``."""
        return f"http://127.0.0.1:{self._http.port}"

    @property
    def token_url(self) -> str:
        return f"{self.api_url}/oauth2/token"

    # -- arranging the world ----------------------------------------------------------------

    def add_subscription(
        self, client_id: str, client_secret: str, recipients: Iterable[tuple[str, str]]
    ) -> None:
        """A credential and the recipients ``(siret, cog)`` it serves (several with a delegation)."""
        with self._lock:
            existing = self._subscriptions.get(client_id)
            if existing is not None and existing.secret != client_secret:
                raise ValueError("this client_id already exists with another secret")
            if existing is None:
                existing = self._subscriptions[client_id] = _Subscription(client_id, client_secret, set())
            existing.recipients.update((siret, cog) for siret, cog in recipients)

    def rotate_secret(self, client_id: str, new_secret: str) -> None:
        """The credential's secret is renewed: token requests with the old one are refused from now
        on; access tokens already issued stay valid until they expire (OAuth2 client credentials)."""
        with self._lock:
            self._subscriptions[client_id].secret = new_secret

    def deposit_formulaire_qf(
        self,
        recipient_siret: str,
        cog: str,
        formulaire: Mapping[str, Any],
        *,
        json_bytes: bytes | None = None,
    ) -> DepositedCase:
        """What the form does when a usager confirms: a FormulaireQF case with its 3 attachments.

        ``json_bytes`` replaces the JSON attachment's bytes (e.g. invalid JSON); the XML and PDF
        are still rendered from ``formulaire``.
        """
        identity = formulaire.get("pivot_identity") or {}
        family_name = str(identity.get("family_name") or "")
        given_name = str(identity.get("given_name") or "")
        with self._lock:
            reference = "".join(self._rng.choice("0123456789ABCDEF") for _ in range(13))
            content = json_bytes if json_bytes is not None else documents.formulaire_json(formulaire)
            if self._faults.draw(("malformed_json",), DEPOSIT_ROUTE, None) is not None:
                content = content[: max(1, len(content) // 2)]
            pdf_name = documents.pdf_file_name(family_name, given_name)
            attachments = [
                _Attachment(self._uuid(), documents.JSON_FILE_NAME, "application/json", content),
                _Attachment(
                    self._uuid(), documents.XML_FILE_NAME, "application/xml", documents.rails_xml(formulaire)
                ),
                _Attachment(
                    self._uuid(),
                    pdf_name,
                    "application/pdf",
                    documents.text_pdf(documents.summary_lines(formulaire, reference)),
                ),
            ]
            case = self._new_case(
                FORMULAIRE_QF,
                (recipient_siret, cog),
                f"Formulaire-QF-{reference}-01",
                {"firstName": given_name, "lastName": family_name, "email": None},
            )
            case.attachments = attachments
            notification = self._notify(case, None)
            return DepositedCase(
                case_id=case.id,
                reference=reference,
                external_id=case.external_id,
                notification_id=notification.id,
                json_attachment_id=attachments[0].id,
                xml_attachment_id=attachments[1].id,
                pdf_attachment_id=attachments[2].id,
                pdf_file_name=pdf_name,
            )

    def add_foreign_notification(
        self, process_code: str, recipient_siret: str, cog: str | None = None
    ) -> str:
        """A new case of another démarche for the same recipient; returns its notification id."""
        with self._lock:
            if cog is None:
                cog = next(
                    (
                        c
                        for sub in self._subscriptions.values()
                        for s, c in sub.recipients
                        if s == recipient_siret
                    ),
                    "00000",
                )
            reference = "".join(self._rng.choice("0123456789") for _ in range(13))
            case = self._new_case(
                process_code,
                (recipient_siret, cog),
                f"{process_code}-{reference}-01",
                {"firstName": "", "lastName": ""},
            )
            return self._notify(case, None).id

    def advance_clock(self, seconds: float) -> None:
        """Moves the sandbox's clock (token expiry, timestamps); the client's clock is its own."""
        with self._lock:
            self._clock_offset += seconds

    def revoke_tokens(self) -> int:
        """HubEE revokes every access token it issued (as on a key rotation): the next calls get 401."""
        with self._lock:
            revoked = len(self._tokens)
            self._tokens.clear()
            return revoked

    def set_attachment_status(self, case_id: str, attachment_id: str, status: str) -> None:
        """E.g. ``REJECTED`` or ``CORRUPTED``: such attachments are listed but cannot be downloaded."""
        if status not in _ATTACHMENT_STATUSES:
            raise ValueError(f"unknown attachment status {status!r}")
        with self._lock:
            self._attachment(self._cases[case_id], attachment_id).status = status

    def close_finished_cases(self) -> int:
        """With ``auto_close=False``: the form closes the cases that reached DONE/REFUSED now."""
        with self._lock:
            pending = [case for case in self._cases.values() if case.close_pending]
            for case in pending:
                self._close(case)
            return len(pending)

    # -- observing --------------------------------------------------------------------------

    def status_events(self, case_id: str) -> list[str]:
        """New statuses of the STATUS_UPDATE events the SI posted, in order (duplicates show)."""
        with self._lock:
            return list(self._cases[case_id].status_events)

    def status_posts(self, case_id: str | None = None) -> list[dict[str, Any]]:
        """Every ``POST /cases/{caseId}/events`` received, in order, with HubEE's answer.

        Items: ``case_id``, ``client_id`` (``None`` when unauthenticated), ``action_type``,
        ``current`` and ``new`` (the body's statuses), ``http_status`` (what was answered, faults
        included) and ``recorded`` (whether the event was added to the case).
        """
        with self._lock:
            return [dict(p) for p in self._status_posts if case_id is None or p["case_id"] == case_id]

    def case_status(self, case_id: str) -> str:
        with self._lock:
            return self._cases[case_id].status

    def case_snapshot(self, case_id: str) -> dict[str, Any]:
        """The case as ``GET /cases/{caseId}`` would serve it."""
        with self._lock:
            return self._cases[case_id].as_json()

    def pending_notification_ids(self, client_id: str | None = None) -> list[str]:
        """Notifications not deleted yet (visible to ``client_id`` when given), oldest first."""
        with self._lock:
            recipients = self._subscriptions[client_id].recipients if client_id else None
            return [
                n.id for n in self._notifications.values() if recipients is None or n.recipient in recipients
            ]

    @property
    def calls(self) -> Counter[tuple[str, str]]:
        """API calls by ``(method, path template)``, token calls excluded."""
        with self._lock:
            return Counter(self._calls)

    @property
    def token_calls(self) -> Counter[str]:
        """Token requests by presented client id (refused ones included)."""
        with self._lock:
            return Counter(self._token_calls)

    def calls_by_case(self, case_id: str) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self._calls_by_case.get(case_id, Counter()))

    @property
    def faults_injected(self) -> Counter[str]:
        with self._lock:
            return Counter(self._faults.injected)

    def reset_counters(self) -> None:
        with self._lock:
            self._calls.clear()
            self._calls_by_case.clear()
            self._token_calls.clear()
            self._status_posts.clear()
            self._faults.injected.clear()

    # -- faults -----------------------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind,
        *,
        route: str | None = None,
        times: int = 1,
        case_id: str | None = None,
        delay_s: float | None = None,
        drop: bool = False,
        after_processing: bool = False,
    ) -> None:
        """Arms a fault for the next ``times`` matching requests.

        ``route``: ``"GET /cases/{caseId}"`` or ``"/cases/{caseId}"`` (any method); ``None`` = any
        API route (name ``"POST /oauth2/token"`` to hit the token endpoint). ``timeout``: hang
        ``delay_s`` (default ``fault_timeout_s``) after processing, then answer or ``drop``.
        ``after_processing`` (http_500/503): the call takes effect before the error is returned.
        """
        with self._lock:
            self._faults.inject(
                kind,
                route=route,
                times=times,
                case_id=case_id,
                delay_s=delay_s,
                drop=drop,
                after_processing=after_processing,
            )

    def fault_rates(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        budget: int | None = None,
        timeout_s: float | None = None,
        drop: bool = False,
        **named_rates: float,
    ) -> None:
        """Random faults with these probabilities (seeded), at most ``budget`` of them in total."""
        with self._lock:
            self._faults.set_rates(
                {**(rates or {}), **named_rates}, budget=budget, timeout_s=timeout_s, drop=drop
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- HTTP -------------------------------------------------------------------------------

    def _serve(self, request: SandboxRequest) -> SandboxReply:
        method = request.method
        if method == "POST" and request.header("X-HTTP-Method-Override").upper() == "PATCH":
            method = "PATCH"
        template, params, allowed = _route(request.path)
        route = f"{method} {template}"
        case_id = params.get("caseId")
        with self._lock:
            if template != "/oauth2/token":  # token calls are counted by client id, in _issue_token
                self._calls[(method, template)] += 1
                if case_id is not None:
                    self._calls_by_case.setdefault(case_id, Counter())[(method, template)] += 1
            fault = self._faults.draw(CALL_FAULTS, route, case_id) if template != "<unknown>" else None
        if self.latency_ms > 0:
            self._http.stopping.wait(self.latency_ms / 1000)
        record = route == "POST /cases/{caseId}/events"
        if fault is not None and fault.kind not in ANSWERED_LATE_OR_NEVER and not fault.after_processing:
            reply = _fault_reply(fault)
            if record:
                self._record_post(request, case_id, reply.status, recorded=False)
            return reply
        events_before = self._event_count(case_id) if record else 0
        try:
            if template == "<unknown>":
                raise _Problem(404, "Resource is not found")
            if method not in allowed:
                raise _Problem(405, "Method not allowed")
            with self._lock:
                reply = self._dispatch(method, template, params, request)
        except _Problem as problem:
            reply = _error_reply(problem.status, problem.message)
        if record:
            recorded = self._event_count(case_id) > events_before
            answered = (
                _fault_reply(fault).status
                if fault is not None and fault.kind not in ANSWERED_LATE_OR_NEVER
                else reply.status
            )
            self._record_post(request, case_id, answered, recorded=recorded)
        if fault is not None and fault.kind not in ANSWERED_LATE_OR_NEVER:
            return _fault_reply(fault)
        if fault is not None:
            reply.delay_s, reply.drop = fault.delay_s, fault.drop
        return self._maybe_gzip(request, reply)

    def _event_count(self, case_id: str | None) -> int:
        with self._lock:
            case = self._cases.get(case_id or "")
            return len(case.events) if case is not None else 0

    def _record_post(
        self, request: SandboxRequest, case_id: str | None, status: int, *, recorded: bool
    ) -> None:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        scheme, _, value = request.header("Authorization").partition(" ")
        with self._lock:
            token = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
            self._status_posts.append(
                {
                    "case_id": case_id,
                    "client_id": token.client_id if token is not None else None,
                    "action_type": body.get("actionType"),
                    "current": body.get("caseCurrentStatus"),
                    "new": body.get("caseNewStatus"),
                    "http_status": status,
                    "recorded": recorded,
                }
            )

    def _dispatch(
        self, method: str, template: str, params: dict[str, str], request: SandboxRequest
    ) -> SandboxReply:
        if template == "/oauth2/token":
            return self._issue_token(request)
        client_id = self._authenticate(request)
        for name in ("notificationId", "caseId", "attachmentId", "eventId"):
            if name in params and not _UUID.match(params[name]):
                raise _Problem(
                    400,
                    "Bad Request : Validation failed. "
                    f"[ERROR][REQUEST][{method} {request.path} @path.{name}] "
                    "Input string is not a valid UUID",
                )
        if template == "/notifications":
            return self._list_notifications(client_id, request)
        if template == "/notifications/{notificationId}":
            return self._delete_notification(client_id, params["notificationId"])
        case = self._case_for(client_id, params["caseId"])
        if template == "/cases/{caseId}":
            if method == "GET":
                return _json_reply(200, case.as_json())
            return self._patch_case(case, _json_body(request))
        if template == "/cases/{caseId}/attachments/{attachmentId}":
            return self._download(case, params["attachmentId"])
        if template == "/cases/{caseId}/events":
            return self._post_event(case, client_id, _json_body(request))
        event = self._event(case, params["eventId"])
        if method == "GET":
            return _json_reply(200, event.as_json())
        return self._patch_event(event, _json_body(request))

    # -- auth -------------------------------------------------------------------------------

    def _issue_token(self, request: SandboxRequest) -> SandboxReply:
        client_id, secret = _basic_credentials(request.header("Authorization"))
        self._token_calls[client_id or "<none>"] += 1
        if not request.header("Content-Type").lower().startswith("application/x-www-form-urlencoded"):
            return _oauth_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form = dict(_parse_form(request.body))
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        subscription = self._subscriptions.get(client_id or "")
        if subscription is None or secret is None or not secrets.compare_digest(subscription.secret, secret):
            reply = _oauth_error(401, "invalid_client", "Client authentication failed")
            reply.headers["WWW-Authenticate"] = 'Basic realm="hubee"'
            return reply
        if form.get("scope") != "SI":
            return _oauth_error(400, "invalid_scope", "scope must be SI")
        value = secrets.token_urlsafe(32)
        self._tokens[value] = _Token(subscription.client_id, self._now() + self.token_ttl_s)
        return _json_reply(
            200,
            {
                "access_token": value,
                "token_type": "Bearer",
                "expires_in": int(self.token_ttl_s),
                "scope": "SI",
            },
        )

    def _authenticate(self, request: SandboxRequest) -> str:
        scheme, _, value = request.header("Authorization").partition(" ")
        token = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise _Problem(
                401, "Invalid Credentials. Make sure you have provided the correct security credentials"
            )
        if self._now() >= token.expires_at:
            del self._tokens[value.strip()]
            raise _Problem(401, "Access token expired")
        if token.client_id not in self._subscriptions:
            raise _Problem(401, "Invalid Credentials")
        return token.client_id

    def _recipients(self, client_id: str) -> set[tuple[str, str]]:
        return self._subscriptions[client_id].recipients

    # -- notifications ----------------------------------------------------------------------

    def _list_notifications(self, client_id: str, request: SandboxRequest) -> SandboxReply:
        raw_max = request.query.get("maxResult", [str(DEFAULT_MAX_RESULT)])[-1]
        try:
            max_result = int(float(raw_max))
        except ValueError:
            raise _Problem(
                400,
                "Bad Request : Validation failed. [ERROR][REQUEST][GET /teledossiers/v1/notifications "
                "@query.maxResult] Instance type (string) does not match any allowed primitive type "
                '(allowed: ["integer","number"]',
            ) from None
        if max_result < 1:
            raise _Problem(400, "Bad Request : maxResult must be positive")
        process_codes = {
            code for value in request.query.get("processCode", []) for code in value.split(",") if code
        }
        details = request.query.get("eventDetails", ["false"])[-1].lower() == "true"
        recipients = self._recipients(client_id)
        visible = [
            n
            for n in self._notifications.values()
            if n.recipient in recipients and (not process_codes or n.process_code in process_codes)
        ]
        page = visible[:max_result]
        if self.shuffle_notifications:
            self._rng.shuffle(page)
        route = "GET /notifications"
        if page and self._faults.draw(("reorder",), route, None) is not None:
            # Newest first, and events before the new dossiers: a CLOSED may precede its own case.
            page.reverse()
            page.sort(key=lambda n: n.event_id is None)
        if page and self._faults.draw(("duplicate_notification",), route, None) is not None:
            twin = page[self._faults.pick(len(page))]
            if len(page) < max_result:
                page.append(twin)
            else:
                page[-1 if page[-1] is not twin else 0] = twin
        return _json_reply(200, [self._notification_json(n, details) for n in page])

    def _notification_json(self, notification: _Notification, details: bool) -> dict[str, Any]:
        siret, cog = notification.recipient
        body: dict[str, Any] = {
            "id": notification.id,
            "processCode": notification.process_code,
            "caseId": notification.case_id,
            "eventId": notification.event_id,
            "dateTime": notification.date_time,
            "recipient": {"type": "SI", "companyRegister": siret, "branchCode": cog},
            "transmitter": dict(DINUM),
        }
        if details:
            event = None
            if notification.event_id is not None:
                case = self._cases.get(notification.case_id)
                event = (
                    next((e for e in case.events if e.id == notification.event_id), None) if case else None
                )
            body["eventActionType"] = event.action_type if event else None
            body["eventStatus"] = event.status if event else None
        return body

    def _delete_notification(self, client_id: str, notification_id: str) -> SandboxReply:
        notification = self._notifications.get(notification_id)
        if notification is None:
            raise _Problem(404, "Notification is not found")
        if notification.recipient not in self._recipients(client_id):
            raise _Problem(403, "Unauthorized user")
        del self._notifications[notification_id]
        return SandboxReply(204)

    # -- cases ------------------------------------------------------------------------------

    def _case_for(self, client_id: str, case_id: str) -> _Case:
        case = self._cases.get(case_id)
        if case is None:
            raise _Problem(404, "Case is not found")
        if case.recipient not in self._recipients(client_id):
            raise _Problem(403, "Unauthorized user")
        return case

    def _patch_case(self, case: _Case, body: Mapping[str, Any]) -> SandboxReply:
        status = body.get("status")
        if not isinstance(status, str) or not status:
            raise _Problem(400, "Bad request : status is required")
        if status == case.status and status in _SI_SETTABLE:
            return SandboxReply(204)  # a repeated status changes nothing
        self._check_transition(case.status, status)
        previous = case.status
        self._set_status(case, status)
        case.status_before_patch = previous
        return SandboxReply(204)

    def _post_event(self, case: _Case, client_id: str, body: Mapping[str, Any]) -> SandboxReply:
        action_type = body.get("actionType")
        if not isinstance(action_type, str) or not action_type:
            raise _Problem(400, "Bad request : actionType is required")
        for name, limit in (("message", 1000), ("comment", 1000), ("author", 255)):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise _Problem(400, f"Bad request : {name} must be a string of at most {limit} characters")
        if len(case.events) >= self.max_events_per_case:
            raise _Problem(400, "Bad request : maximum number of events reached for this case")
        current, new = body.get("caseCurrentStatus"), body.get("caseNewStatus")
        if action_type == "STATUS_UPDATE":
            if not isinstance(current, str) or not isinstance(new, str):
                raise _Problem(400, "Bad request : caseCurrentStatus and caseNewStatus are required")
            completes_patch = case.status_before_patch == current and case.status == new
            repeated = new == case.status and new in _SI_SETTABLE
            if not completes_patch and not repeated:
                if current != case.status:
                    raise _Problem(400, "Bad request : caseCurrentStatus does not match the case status")
                self._check_transition(current, new)
                self._set_status(case, new)
            case.status_before_patch = None
            case.status_events.append(new)
        siret, cog = case.recipient
        event = _Event(
            id=self._uuid(),
            action_type=action_type,
            author=body.get("author"),
            notification=bool(body.get("notification", True)),
            case_current_status=current if isinstance(current, str) else None,
            case_new_status=new if isinstance(new, str) else None,
            message=body.get("message"),
            comment=body.get("comment"),
            transmitter={"type": "SI", "companyRegister": siret, "branchCode": cog},
            created=self._timestamp(),
        )
        case.events.append(event)
        if action_type == "STATUS_UPDATE" and new in ("DONE", "REFUSED"):
            if self.auto_close:
                self._close(case)
            else:
                case.close_pending = True
        return _json_reply(201, event.as_json())

    def _check_transition(self, current: str, new: str) -> None:
        if new == "CLOSED" or new not in _SI_SETTABLE:
            raise _Problem(400, f"Bad request : status {new} cannot be set by an SI")
        if current in _FINAL:
            raise _Problem(400, f"Bad request : the case is {current}, its status can no longer change")
        if current in _ALLOWED_FROM[new]:
            return
        if new in _FORWARD and current in _FORWARD and _FORWARD.index(current) < _FORWARD.index(new):
            return
        raise _Problem(400, f"Bad request : transition {current} -> {new} is not allowed")

    def _set_status(self, case: _Case, status: str) -> None:
        case.status = status
        case.updated = self._timestamp()
        purge_rank = _RANK.get(self.purge_attachments_at or "")
        if purge_rank is not None and _RANK.get(status, -1) >= purge_rank:
            for attachment in case.attachments:
                attachment.status = "DELETED"
                attachment.content = b""

    def _close(self, case: _Case) -> None:
        """The form closes a finished case and tells the SI with a CLOSED event to acknowledge."""
        final = case.status
        now = self._timestamp()
        event = _Event(
            id=self._uuid(),
            action_type="STATUS_UPDATE",
            author="DINUM",
            notification=True,
            case_current_status=final,
            case_new_status="CLOSED",
            message=_CLOSING_MESSAGE.get(final, "Dossier clôturé."),
            comment="",
            transmitter=dict(DINUM),
            created=now,
        )
        case.events.append(event)
        case.status = "CLOSED"
        case.closed = case.updated = now
        case.close_pending = False
        self._notify(case, event.id)

    # -- attachments and events -------------------------------------------------------------

    def _download(self, case: _Case, attachment_id: str) -> SandboxReply:
        attachment = self._attachment(case, attachment_id)
        if attachment.status != "RECEIVED":
            raise _Problem(404, "File is not found")
        original = attachment.content
        served = original
        route = "GET /cases/{caseId}/attachments/{attachmentId}"
        if served and self._faults.draw(("corrupt_bytes",), route, case.id) is not None:
            position = self._faults.pick(len(served))
            served = served[:position] + bytes([served[position] ^ 0x5A]) + served[position + 1 :]
        headers = {"Content-Type": "application/octet-stream"}
        encoded = base64.b64encode(hashlib.sha256(original).digest()).decode("ascii")
        if self.digest_format == "bare":
            headers["digest"] = encoded
        elif self.digest_format == "prefixed":
            headers["digest"] = f"SHA-256={encoded}"
        if self.gzip_attachments_unannounced:
            return SandboxReply(200, gzip.compress(served, mtime=0), headers, compressible=False)
        return SandboxReply(200, served, headers)

    def _attachment(self, case: _Case, attachment_id: str) -> _Attachment:
        attachment = next((a for a in case.attachments if a.id == attachment_id), None)
        if attachment is None:
            raise _Problem(404, "File is not found")
        return attachment

    def _event(self, case: _Case, event_id: str) -> _Event:
        event = next((e for e in case.events if e.id == event_id), None)
        if event is None:
            raise _Problem(404, "event is not found")
        return event

    def _patch_event(self, event: _Event, body: Mapping[str, Any]) -> SandboxReply:
        status = body.get("status")
        if status not in ("SENT", "RECEIVED"):
            raise _Problem(400, "Bad request : status must be SENT or RECEIVED")
        event.status = status
        event.updated = self._timestamp()
        return SandboxReply(204)

    # -- internals --------------------------------------------------------------------------

    def _new_case(
        self, process_code: str, recipient: tuple[str, str], external_id: str, applicant: dict[str, Any]
    ) -> _Case:
        case = _Case(
            id=self._uuid(),
            process_code=process_code,
            external_id=external_id,
            recipient=recipient,
            applicant=applicant,
            created=self._timestamp(),
        )
        self._cases[case.id] = case
        return case

    def _notify(self, case: _Case, event_id: str | None) -> _Notification:
        notification = _Notification(
            id=self._uuid(),
            process_code=case.process_code,
            case_id=case.id,
            event_id=event_id,
            recipient=case.recipient,
            date_time=self._timestamp(),
        )
        self._notifications[notification.id] = notification
        return notification

    def _maybe_gzip(self, request: SandboxRequest, reply: SandboxReply) -> SandboxReply:
        accepts = "gzip" in request.header("Accept-Encoding").lower()
        if self.gzip_responses and accepts and reply.body and reply.compressible:
            reply.body = gzip.compress(reply.body, mtime=0)
            reply.headers["Content-Encoding"] = "gzip"
        return reply

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _now(self) -> float:
        return time.monotonic() + self._clock_offset

    def _timestamp(self) -> str:
        moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._clock_offset)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- pure helpers ---------------------------------------------------------------------------


def _route(path: str) -> tuple[str, dict[str, str], frozenset[str]]:
    for pattern, template, methods in _ROUTES:
        match = pattern.match(path)
        if match:
            return template, match.groupdict(), methods
    return "<unknown>", {}, frozenset()


def _json_body(request: SandboxRequest) -> Mapping[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise _Problem(400, "Bad request : body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Problem(400, "Bad request : body must be a JSON object")
    return body


def _json_reply(status: int, body: Any) -> SandboxReply:
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return SandboxReply(status, payload, {"Content-Type": "application/json"})


def _error_reply(status: int, message: str) -> SandboxReply:
    return _json_reply(status, {"errors": [{"code": status, "message": message}]})


def _oauth_error(status: int, error: str, description: str) -> SandboxReply:
    return _json_reply(status, {"error": error, "error_description": description})


def _fault_reply(fault: Fault) -> SandboxReply:
    if fault.kind == "http_503":
        return _error_reply(503, "Service unavailable")
    return _error_reply(500, "Internal server error, please retry in an hour")


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else (client_id, None)


def _parse_form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return []
