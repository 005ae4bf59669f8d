"""reconcile's use case: from a HubEE notification to a recorded, acknowledged dossier.

For a new dossier (docs/architecture.md, "The intake protocol"), each step is recorded in the dossier's journal
so that a retry resumes where the previous attempt stopped:

1. ``GET case`` — processCode must be FormulaireQF; the recipient must be a tenant of the polling
   credential. A collectivité the credential sees but qfbridge does not serve yet: the dossier is
   kept unread (``awaiting_onboarding``) and queued again once its credentials are stored; a case
   naming another recipient than its notification: rejected, ``foreign_recipient``.
2. ``GET attachment`` — ``FormulaireQF.json`` if RECEIVED (else the XML, parsed safely), size and
   digest checked, size-capped; parsed leniently.
3. reconcile — signed ``external_id`` first, identity matching otherwise — and persist in one
   transaction (dossier record + family QF), step ``persisted``.
4. ``POST SI_RECEIVED``, then ``POST DONE`` once the family is linked; an unusable dossier goes
   ``SI_RECEIVED`` → ``REFUSED`` with a message asking the usager to submit again (the form shows
   neither ``SI_INTG_ERROR`` nor anything else to the usager). Only transitions of HubEE's status
   table (``qfbridge.hubee.statuses``) are posted, never twice: a retry re-reads the case (step 1
   runs on every attempt) and skips a status the case already has. A status HubEE refuses (4xx)
   is recorded on the dossier (``status_refused``), counted (metric ``HubeeStatusRefused``) and
   not posted again until an operator asks for it (``kind: status_retry``).
5. ``DELETE notification``, then publish the event (and audit an automatic link).

That is five HubEE calls for a new dossier. An event notification (the form's CLOSED) costs three:
GET event, PATCH it RECEIVED, DELETE the notification.

An error that is not a dossier error (a DynamoDB refusal, a bug) fails the message, to be retried;
on the ``POISON_ATTEMPTS``-th such failure of a case that made no progress (no journal step
recorded by the attempt) it ends instead: the dossier is recorded
``rejected: unprocessable``, the usager told (``REFUSED``), the notification deleted and
``dossier.rejected`` published. Transient HubEE failures do not count: they end when HubEE recovers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx

from qfbridge.clock import Clock, utc_now
from qfbridge.domain.digest import verify_digest, verify_size
from qfbridge.domain.dossier import ParsedDossier, parse_formulaire_qf_json, parse_formulaire_qf_xml
from qfbridge.domain.errors import DossierError, LinkError
from qfbridge.domain.reference import reference_from_case_external_id
from qfbridge.hubee import (
    Case,
    CaseStatus,
    HubeeAuthError,
    HubeeBadRequestError,
    HubeeClient,
    HubeeConfig,
    HubeeCredentials,
    HubeeError,
    HubeeForbiddenError,
    HubeeNotFoundError,
    HubeeOutcomeUnknown,
    HubeeServerError,
    HubeeTransitionRefused,
    HubeeTransportError,
)
from qfbridge.hubee.models import FORMULAIRE_QF, Attachment, Download, Notification
from qfbridge.hubee.statuses import path_to, reached
from qfbridge.links.signing import LinkSigner
from qfbridge.matching.scoring import DossierIdentity, cross_check, match
from qfbridge.messages import (
    BusEvent,
    CaseEventMessage,
    DossierLinked,
    DossierMessage,
    DossierNeedsReview,
    DossierRejected,
    FollowUpMessage,
    LinkMethod,
    NewDossierMessage,
    NotificationMessage,
    OnboardedDossierMessage,
    ReviewResolvedMessage,
    StatusRetryMessage,
    qf_updated,
)
from qfbridge.observability import logger, metrics
from qfbridge.services.linking import (
    IdentityConflict,
    dossier_snapshot,
    persist_link,
    snapshot_parsed,
)
from qfbridge.services.ports import CredentialReader, EventSink
from qfbridge.store.audit import SERVICE_PRINCIPAL, AuditRecord, AuditTrail
from qfbridge.store.dossiers import (
    DossierBusy,
    DossierExists,
    DossierPatch,
    DossierRecord,
    DossierRepository,
    RejectionReason,
    Step,
    rejection_reason,
)
from qfbridge.store.families import FamilyGone, FamilyRecord, FamilyRepository, QfEntry, identity_key
from qfbridge.store.links import LinkRepository, StoredLink
from qfbridge.store.markers import MarkerRepository
from qfbridge.store.tenants import TenantRepository
from qfbridge.tls import tls_context

AUTHOR = "qfbridge"
JSON_ATTACHMENT = "FormulaireQF.json"
XML_ATTACHMENT = "FormulaireQF.xml"
MAX_ATTACHMENT_BYTES = 256 * 1024
INTEGRITY_ATTEMPTS = 2
"""Downloads of an attachment whose bytes do not match their size or digest, before giving up on it.

With the XML twin as fallback, an unusable dossier costs at most 4 downloads: with GET case, two
status posts and DELETE, at most 8 HubEE calls."""
RETRIED_INTEGRITY_ERRORS = frozenset({"digest_mismatch", "size_mismatch"})
XML_FALLBACK_ERRORS = frozenset(
    {"malformed_json", "not_an_object", "digest_mismatch", "digest_unreadable", "size_mismatch"}
)
"""JSON failures the intact XML twin rescues: bytes that cannot be read as the JSON they should be."""
POISON_ATTEMPTS = 3
"""Attempts of a case ending in an untyped error without recording any step, before it is rejected
(the queue allows 5 receives; an attempt that records a step before failing does not count)."""
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    DossierBusy,
    HubeeServerError,
    HubeeTransportError,
    HubeeOutcomeUnknown,
    HubeeAuthError,
)
"""Failures that say nothing about the dossier: retried without counting towards ``POISON_ATTEMPTS``."""
STATUS_REFUSALS: tuple[type[Exception], ...] = (
    HubeeBadRequestError,
    HubeeForbiddenError,
    HubeeNotFoundError,
    HubeeTransitionRefused,
)
"""A status post HubEE refused (4xx) or that its table forbids: recorded, never retried blindly."""

MESSAGES = {
    CaseStatus.SI_RECEIVED: "Dossier reçu par le logiciel de la collectivité.",
    CaseStatus.DONE: "Quotient familial enregistré sur le compte famille.",
    CaseStatus.REFUSED: "Dossier non rattaché : contactez votre collectivité.",
}
UNUSABLE_MESSAGE = (
    "Votre dossier n'a pas pu être exploité par le logiciel de la collectivité. "
    "Merci de le déposer à nouveau ; si le problème persiste, contactez votre collectivité."
)
"""The REFUSED message of an unusable dossier: the only status the form shows that says it failed."""


AWAITING_ONBOARDING = "awaiting_onboarding"
"""Outcome of a dossier for a collectivité the credential sees but qfbridge does not serve yet."""
TENANT_CACHE_SECONDS = 300.0
"""How long an execution environment trusts that a tenant it read exists (tenants are never deleted)."""
SIRET_SHAPE = re.compile(r"\d{14}")
AUTO_LINKS = ("external_id", "identity")
"""Link methods decided by the pipeline itself (audited with the service as actor)."""

# Rejections where the case is not one of our tenants' FormulaireQF: no status is posted on it.
NOT_OURS: frozenset[str] = frozenset({"foreign_recipient", "foreign_process_code"})
# The notification of another démarche belongs to its own consumer: it is never deleted.
LEFT_PENDING = frozenset({"foreign_process_code"})


def verify_download(download: Download, declared_size: int | None) -> None:
    """Size and digest of a downloaded attachment (``DossierError`` size_mismatch / digest_*).

    A body HubEE served gzipped without saying so is gunzipped by the client, and its digest may be
    that of the gzipped bytes: ``Download.digest_matches`` knows both, so it settles a mismatch.
    """
    verify_size(download.content, declared_size)
    try:
        verify_digest(download.content, download.digest)
    except DossierError as exc:
        if (
            exc.code != "digest_mismatch"
            or download.undecoded_sha256 is None
            or not download.digest_matches()
        ):
            raise


@dataclass
class ReconcileResult:
    kind: str
    outcome: str
    case_id: str | None = None
    resumed: bool = False


@dataclass
class Journal:
    """One attempt's record of a dossier: the record as stored, and what the attempt did since.

    Steps that need not be durable before the next one (a status posted — every attempt re-reads
    the case —, the notification deleted, the events published, the case verified and parsed) are
    noted here and written with the attempt's next write, at the latest with the last one, which
    also gives the lease up: a new dossier costs two or three journal writes, not nine.
    """

    record: DossierRecord
    leased: bool
    """This attempt holds the processing lease (taken by ``start``, or by a draft's first write)."""
    pending: list[Step] = field(default_factory=list)
    patch: DossierPatch = field(default_factory=DossierPatch)
    deleted: str | None = None
    """The notification this attempt acknowledged, journaled with the next write."""
    qf: QfEntry | None = None
    """The family's QF as this attempt's link left it (the ``qf.updated`` event's)."""
    persisted_here: bool = False

    @property
    def lease(self) -> float | None:
        """The lease this attempt holds on a stored record, which fences its writes (``LeaseLost``):
        an attempt that outlived its lease — another delivery took the case — writes nothing more."""
        return self.record.lease_until if self.leased and self.record.stored else None

    def done(self, step: Step) -> bool:
        return self.record.done(step) or step in self.pending

    def note(self, step: Step, patch: DossierPatch | None = None) -> None:
        if step not in self.pending:
            self.pending.append(step)
        if patch is not None:
            self.patch = self.patch.merged(patch)

    def view(self, now: Any) -> DossierRecord:
        """The record as it will be once the pending steps are written."""
        return self.record.applied(self.pending, now, self.patch)

    def has_pending(self) -> bool:
        return bool(self.pending) or self.deleted is not None or bool(self.patch.fields())


@dataclass
class ReconcileService:
    tenants: TenantRepository
    families: FamilyRepository
    dossiers: DossierRepository
    links: LinkRepository
    secrets: CredentialReader
    events: EventSink
    audit: AuditTrail | None
    hubee: HubeeConfig
    link_signing_secret_id: str
    clock: Clock = utc_now
    client_factory: Callable[..., HubeeClient] = HubeeClient
    """Called as ``client_factory(config, credentials, http=...)``, like ``HubeeClient``."""
    http: httpx.Client | None = None
    """One connection pool per process (created on first use): a client per message would open new
    TCP/TLS connections to HubEE for every dossier."""
    lease_seconds: int = 300
    markers: MarkerRepository | None = None
    """Remembers an event acknowledged and a notification deleted, so a second copy costs no call."""
    _tenants_seen: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ entry point
    def handle(self, message: DossierMessage) -> ReconcileResult:
        """A message of the dossiers queue, but ``repoll`` (a poll: ``PollService.repoll``)."""
        if isinstance(message, ReviewResolvedMessage | StatusRetryMessage):
            return self._finish_review(message)
        if not isinstance(message, NotificationMessage):
            raise TypeError(f"intake does not handle {message.kind} messages")
        notification = message.notification
        if notification.process_code not in (None, FORMULAIRE_QF):
            # Another démarche's notification: neither read, recorded nor deleted (its consumer's).
            logger.warning(
                "notification of another processCode ignored", extra={"case_id": notification.case_id}
            )
            return ReconcileResult(kind=message.kind, outcome="ignored", case_id=notification.case_id)
        holder = message.credential_holder
        allowed = set(message.credential_tenants)
        with self._client(holder) as client:
            if isinstance(message, CaseEventMessage):
                return self._acknowledge_event(client, notification)
            onboarded = isinstance(message, OnboardedDossierMessage)
            first_delivery = isinstance(message, NewDossierMessage) and message.receive_count == 1
            return self._intake_dossier(
                client, notification, holder, allowed, onboarded=onboarded, first_delivery=first_delivery
            )

    def _client(self, holder: str) -> HubeeClient:
        secret = self.secrets.read_tenant(holder)
        if not secret.hubee_client_id or secret.hubee_client_secret is None:
            raise DossierError(
                "HubEE credentials are missing for the polling tenant.", code="credentials_missing"
            )
        credentials = HubeeCredentials(
            client_id=secret.hubee_client_id, client_secret=secret.hubee_client_secret.get_secret_value()
        )
        if self.http is None:
            self.http = httpx.Client(timeout=self.hubee.timeout, verify=tls_context())
        return self.client_factory(self.hubee, credentials, http=self.http)

    # ------------------------------------------------------------------ events (CLOSED)
    def _acknowledge_event(self, client: HubeeClient, notification: Notification) -> ReconcileResult:
        marker = self.markers.get(notification.id) if self.markers is not None else None
        if marker is not None and marker.deleted:
            return ReconcileResult(
                kind="event", outcome="acknowledged", case_id=notification.case_id, resumed=True
            )
        acked = marker is not None and marker.acked
        if (
            notification.event_status != "RECEIVED"
            and notification.case_id
            and notification.event_id
            and not acked
        ):
            try:
                event = client.get_event(notification.case_id, notification.event_id)
                if not event.is_acknowledged:
                    client.patch_event_status(notification.case_id, notification.event_id, "RECEIVED")
            except HubeeNotFoundError:
                logger.info("event already gone", extra={"case_id": notification.case_id})
            if self.markers is not None:
                self.markers.flag(notification.id, "acked")
        client.delete_notification(notification.id)
        if self.markers is not None:
            self.markers.flag(notification.id, "deleted")
        return ReconcileResult(kind="event", outcome="acknowledged", case_id=notification.case_id)

    # ------------------------------------------------------------------ new dossiers
    def _intake_dossier(
        self,
        client: HubeeClient,
        notification: Notification,
        holder: str,
        allowed: set[str],
        *,
        onboarded: bool = False,
        first_delivery: bool = False,
    ) -> ReconcileResult:
        """A new dossier's notification.

        On a message's first delivery (SQS ``ApproximateReceiveCount`` 1) nothing is written before
        the first durable step: the attempt reads the case and the attachment, decides, and its
        first write creates the record with the processing lease, on condition that no other
        delivery (a HubEE duplicate, a concurrent batch) created it meanwhile. If one did, this
        attempt — which has only read so far — takes the lease the usual way and starts again.
        Every other delivery takes the lease first (``DossierRepository.start``).
        """
        case_id = str(notification.case_id)
        now = self.clock()
        recipient = notification.recipient.company_register if notification.recipient else None
        if (
            not onboarded
            and recipient is not None
            and recipient not in allowed
            and self._served_elsewhere(recipient, holder)
        ):
            # A tenant polled with its own credential, seen through another one (a delegation wider
            # at HubEE than here): its own credential handles it. Recording or acknowledging it here
            # would attribute the dossier to the wrong tenant and lose it for the right one.
            logger.info("notification left to its tenant's own credential", extra={"case_id": case_id})
            if self.markers is not None:
                # Its own credential's next poll queues it; this credential's keeps it in flight.
                self.markers.leave(notification.id, holder)
            return ReconcileResult(kind="dossier", outcome="ignored", case_id=case_id)
        tenant_siret = recipient if recipient in allowed else holder
        if first_delivery and not onboarded:
            draft = DossierRecord.draft(case_id, tenant_siret, notification.id, now, self.lease_seconds)
            try:
                return self._attempt(client, notification, draft, recipient, allowed, holder)
            except DossierExists:
                logger.info("dossier recorded by another delivery meanwhile", extra={"case_id": case_id})
        record = self.dossiers.start(case_id, tenant_siret, notification.id, now, self.lease_seconds)
        if record.outcome == AWAITING_ONBOARDING and not onboarded:
            # A second copy of a parked dossier's notification: it waits for its tenant, no HubEE call.
            self.dossiers.release(case_id, lease=record.lease_until)
            return ReconcileResult(kind="dossier", outcome=AWAITING_ONBOARDING, case_id=case_id, resumed=True)
        return self._attempt(client, notification, record, recipient, allowed, holder)

    def _attempt(
        self,
        client: HubeeClient,
        notification: Notification,
        record: DossierRecord,
        recipient: str | None,
        allowed: set[str],
        holder: str,
    ) -> ReconcileResult:
        journal = Journal(record, leased=record.stored)
        try:
            result = self._resume(client, notification, journal, recipient, allowed, holder)
        except DossierExists:
            raise  # a draft lost the race to create its record: nothing of this attempt is durable
        except TRANSIENT_ERRORS:
            self._settle(journal, quietly=True)
            raise
        except Exception as exc:
            if not journal.record.stored:
                # A first delivery failing before its first write: what it did (verified, parsed) is
                # recorded now, so its retry — which takes the lease first — resumes from there.
                self._settle(journal, quietly=True)
                logger.warning(
                    "dossier attempt failed, to be retried",
                    extra={"case_id": record.case_id, "error_code": _error_code(exc), "failures": 0},
                )
                raise
            self._settle(journal, quietly=True, release=False)
            try:
                # An attempt that recorded a step made progress (a crash between two steps): not poison.
                progressed = len(journal.record.steps) > len(record.steps)
                failures = 0 if progressed else self.dossiers.count_failure(record.case_id)
                if failures < POISON_ATTEMPTS:
                    logger.warning(
                        "dossier attempt failed, to be retried",
                        extra={
                            "case_id": record.case_id,
                            "error_code": _error_code(exc),
                            "failures": failures,
                        },
                    )
                    raise
                return self._give_up(client, notification, journal, exc)
            finally:
                self._settle(journal, quietly=True)
        self._settle(journal)
        return result

    def _write(
        self, journal: Journal, *steps: Step, patch: DossierPatch | None = None, release: bool = False
    ) -> DossierRecord:
        """Write ``steps`` with everything the attempt noted since its last write."""
        was_stored = journal.record.stored
        journal.record = self.dossiers.write(
            journal.record,
            [*journal.pending, *(s for s in steps if s not in journal.pending)],
            self.clock(),
            journal.patch.merged(patch) if patch is not None else journal.patch,
            # a draft's first write takes the lease unless it gives it up at once
            release=release and (journal.leased or not was_stored),
            deleted_notification=journal.deleted,
            lease=journal.lease,
        )
        journal.pending, journal.patch, journal.deleted = [], DossierPatch(), None
        journal.leased = (journal.leased or not was_stored) and not release
        return journal.record

    def _settle(self, journal: Journal, *, quietly: bool = False, release: bool = True) -> None:
        """The attempt's last write: what it noted since its last write, and the lease given up.

        A first delivery's draft that failed before its first write is created here, without a lease,
        when it has steps to keep (quietly: another delivery may have created it meanwhile).
        """
        try:
            if not journal.record.stored:
                if journal.has_pending():
                    self._write(journal, release=True)
            elif journal.has_pending():
                self._write(journal, release=release)
            elif release and journal.leased:
                self.dossiers.release(journal.record.case_id, lease=journal.lease)
                journal.leased = False
        except Exception as exc:
            if not quietly:
                raise
            # The attempt already failed: its retry finds the steps not written and redoes them.
            logger.warning(
                "could not journal a failed attempt",
                extra={"case_id": journal.record.case_id, "error_code": _error_code(exc)},
            )

    def _give_up(
        self, client: HubeeClient, notification: Notification, journal: Journal, exc: Exception
    ) -> ReconcileResult:
        """A case failing again and again for no dossier reason: rejected, the usager told, acknowledged."""
        case_id = journal.record.case_id
        logger.error(
            "dossier rejected after repeated failures",
            extra={"case_id": case_id, "error_code": _error_code(exc), "attempts": POISON_ATTEMPTS},
        )
        metrics.add_metric(name="DossiersPoisoned", unit="Count", value=1)
        try:
            case: Case | None = client.get_case(case_id)
        except HubeeError:
            case = None
        return self._reject(client, notification, journal, case, "unprocessable")

    def _served_elsewhere(self, recipient: str, holder: str) -> bool:
        """Whether ``recipient`` is a tenant polled with a HubEE credential other than ``holder``'s."""
        tenant = self.tenants.get(recipient)
        if tenant is None or not tenant.has_credentials or not tenant.hubee_client_id:
            return False
        holder_tenant = self.tenants.get(holder)
        return holder_tenant is None or holder_tenant.hubee_client_id != tenant.hubee_client_id

    def _resume(
        self,
        client: HubeeClient,
        notification: Notification,
        journal: Journal,
        recipient: str | None,
        allowed: set[str],
        holder: str,
    ) -> ReconcileResult:
        record = journal.record
        case_id = record.case_id
        resumed = bool(record.steps)

        if record.done(Step.NOTIFICATION_DELETED) and record.done(Step.PUBLISHED):
            # A duplicated notification of a dossier fully handled: acknowledge it only, and only if it
            # is not the one already deleted (a second copy of one queue message costs no call).
            if notification.id not in record.deleted_notification_ids:
                self._delete_notification(client, notification, journal)
            return ReconcileResult(kind="dossier", outcome=record.outcome, case_id=case_id, resumed=True)
        if record.done(Step.PUBLISHED) and record.reason in LEFT_PENDING:
            # Another démarche's case, already recorded: leave its notification to its consumer.
            return ReconcileResult(kind="dossier", outcome=record.outcome, case_id=case_id, resumed=True)

        case = client.get_case(case_id)
        if not record.done(Step.VERIFIED):
            problem = self._verify_case(case, recipient, allowed, holder)
            if problem == AWAITING_ONBOARDING:
                return self._park(client, notification, journal, case, holder)
            patch = DossierPatch(reference=case.reference) if case.reference else DossierPatch()
            if problem is None and record.outcome == AWAITING_ONBOARDING:
                patch = patch.merged(
                    DossierPatch(tenant_siret=record.tenant_siret, outcome="received", reason=None)
                )
            journal.note(Step.VERIFIED, patch)
            if problem is not None:
                return self._reject(client, notification, journal, case, problem)

        if record.outcome == "rejected":
            return self._reject(client, notification, journal, case, record.reason or "unprocessable")

        if not record.done(Step.PERSISTED):
            try:
                parsed = (
                    snapshot_parsed(record.parsed)
                    if record.parsed
                    else self._download_and_parse(client, case)
                )
                if not record.parsed:
                    journal.note(Step.PARSED, DossierPatch(parsed=dossier_snapshot(parsed)))
                self._reconcile_and_persist(journal, parsed)
            except DossierError as exc:
                return self._reject(client, notification, journal, case, rejection_reason(exc.code))

        record = journal.view(self.clock())
        if record.outcome == "linked" and record.link_method in AUTO_LINKS and not journal.done(Step.AUDITED):
            self._audit_auto_link(journal)

        # Statuses: SI_RECEIVED always, then DONE once linked (needs_review waits for an agent).
        target = CaseStatus.DONE if record.outcome == "linked" else CaseStatus.SI_RECEIVED
        self._advance(client, case, journal, target, MESSAGES[target])

        self._delete_notification(client, notification, journal)
        self._publish(journal)
        return ReconcileResult(kind="dossier", outcome=record.outcome, case_id=case_id, resumed=resumed)

    def _verify_case(self, case: Case, recipient: str | None, allowed: set[str], holder: str) -> str | None:
        if case.process_code != FORMULAIRE_QF:
            return "foreign_process_code"
        case_recipient = case.recipient.company_register if case.recipient else None
        if recipient is not None and case_recipient != recipient:
            return "foreign_recipient"  # the notification and its case disagree on the recipient
        if case_recipient not in allowed or not self._tenant_exists(str(case_recipient)):
            if (
                case_recipient is not None
                and SIRET_SHAPE.fullmatch(case_recipient)
                and not self._served_elsewhere(case_recipient, holder)
            ):
                return AWAITING_ONBOARDING
            return "foreign_recipient"
        try:
            reference_from_case_external_id(case.external_id)
        except DossierError:
            return "bad_reference"
        return None

    def _tenant_exists(self, siret: str) -> bool:
        """Whether qfbridge serves ``siret``; a tenant seen is trusted for ``TENANT_CACHE_SECONDS``
        (tenants are never deleted), one not seen is read every time (it may be onboarded now)."""
        seen = self._tenants_seen.get(siret)
        if seen is not None and time.monotonic() - seen < TENANT_CACHE_SECONDS:
            return True
        if self.tenants.get(siret) is None:
            return False
        self._tenants_seen[siret] = time.monotonic()
        return True

    def _download_verified(self, client: HubeeClient, case_id: str, attachment: Attachment) -> bytes:
        """The attachment's bytes, checked against its declared size and its digest.

        A mismatch is most often damage in transit: the download is tried again before the
        dossier is declared unreadable (a rejection posts SI_INTG_ERROR to the usager, for good).
        """
        attempt = 1
        while True:
            download = client.download_attachment(case_id, attachment.id, MAX_ATTACHMENT_BYTES)
            try:
                verify_download(download, attachment.size)
            except DossierError as exc:
                if exc.code not in RETRIED_INTEGRITY_ERRORS or attempt >= INTEGRITY_ATTEMPTS:
                    raise
                logger.info(
                    "attachment damaged in transit, downloading it again",
                    extra={"case_id": case_id, "error_code": exc.code, "attempt": attempt},
                )
                attempt += 1
                continue
            return download.content

    def _download_and_parse(self, client: HubeeClient, case: Case) -> ParsedDossier:
        json_attachment = case.attachment_named(JSON_ATTACHMENT)
        xml_attachment = case.attachment_named(XML_ATTACHMENT)
        if json_attachment is not None and json_attachment.is_downloadable:
            try:
                content = self._download_verified(client, case.id, json_attachment)
                return parse_formulaire_qf_json(content, max_bytes=MAX_ATTACHMENT_BYTES)
            except DossierError as json_error:
                # Bytes that are not the JSON they should be (malformed, or damaged beyond what a new
                # download fixes): the XML twin carries the same dossier.
                if xml_attachment is None or not xml_attachment.is_downloadable:
                    raise
                if json_error.code not in XML_FALLBACK_ERRORS:
                    raise
                logger.info(
                    "JSON attachment unusable, reading the XML twin",
                    extra={"case_id": case.id, "error_code": json_error.code},
                )
        if xml_attachment is not None and xml_attachment.is_downloadable:
            content = self._download_verified(client, case.id, xml_attachment)
            return parse_formulaire_qf_xml(content, max_bytes=MAX_ATTACHMENT_BYTES)
        raise DossierError(
            "No FormulaireQF attachment is available for download.", code="attachment_unavailable"
        )

    # ------------------------------------------------------------------ reconciliation
    def _signer(self) -> LinkSigner:
        keys, active = self.secrets.read_link_keys(self.link_signing_secret_id)
        return LinkSigner(keys, active)

    def _external_id_target(
        self, tenant_siret: str, external_id: str | None
    ) -> tuple[str, StoredLink | None]:
        """(status, link) of the dossier's external_id: only a ``valid`` one names a family."""
        if not external_id:
            return "absent", None
        try:
            verified = self._signer().verify(external_id, tenant_siret)
        except LinkError as exc:
            if exc.code != "bad_signature":
                return "forged", None
            # The MAC covers the SIRET: a link of another tenant fails like a forgery. One read tells them
            # apart for the record (it is never used for linking either way).
            other = self.links.get(external_id.split(".")[2])
            return ("foreign" if other is not None and other.tenant_siret != tenant_siret else "forged"), None
        stored = self.links.get(verified.link_id)
        if stored is None:
            return "expired", None
        if stored.tenant_siret != tenant_siret:
            return "foreign", None
        if stored.expires_at < int(self.clock().timestamp()):
            return "expired", None
        return "valid", stored

    def _reconcile_and_persist(self, journal: Journal, parsed: ParsedDossier) -> None:
        record = journal.record
        siret = record.tenant_siret
        identity = DossierIdentity.from_parts(parsed.pivot_identity, parsed.allocataires, parsed.enfants)
        link_status, link = self._external_id_target(siret, parsed.external_id)
        user_id = link.user_id if link is not None else None
        method: Literal["external_id", "identity"] | None = None
        existing: FamilyRecord | None = None
        candidates: list[dict[str, Any]] = []
        evidence: list[str] = []
        person = identity_key(parsed.pivot_identity)
        if link is not None and user_id is not None:
            existing = self.families.get(siret, user_id)
            if existing is None:
                user_id = None  # erased meanwhile: identity matching decides
            else:
                reasons: list[str] = []
                if existing.family is None:
                    # No directory identity vouches for the usager: the family takes one identity only.
                    if existing.identity_key not in (None, person):
                        reasons = ["family_holds_another_identity"]
                else:
                    check = cross_check(identity, existing.family)
                    evidence = [r.code for r in check.reasons]
                    if check.strong_mismatch:
                        reasons = evidence
                if not reasons and not self.links.bind(link.link_id, person):
                    # A form link serves the first usager who used it, never a second identity.
                    reasons = ["link_used_by_another_identity"]
                if reasons:
                    candidates = [
                        {"user_id": user_id, "score": 0.0, "reasons": reasons, "via": "external_id"}
                    ]
                    user_id = None
                else:
                    method = "external_id"
        if method is None and user_id is None and not candidates:
            decision = match(
                identity, lambda keys, limit: self.families.candidates_on(siret, keys, limit=limit)
            )
            candidates = [
                {"user_id": c.user_id, "score": round(c.score, 4), "reasons": [r.code for r in c.reasons]}
                for c in decision.candidates[:5]
            ]
            if decision.outcome == "linked" and decision.user_id is not None:
                user_id, method = decision.user_id, "identity"
                evidence = candidates[0]["reasons"] if candidates else []
        if parsed.quotient_familial is None:
            raise DossierError("The dossier carries no quotient familial.", code="missing_quotient_familial")

        now = self.clock()
        if user_id is not None and method is not None:
            # One transaction: the outcome, the family's QF and the journal's pending steps; an
            # automatic link's audit is journaled as started with it (the audit record follows).
            steps = (Step.PERSISTED, *journal.pending)
            if self.audit is not None:
                steps += (Step.AUDIT_STARTED,)
            patch = journal.patch.merged(
                DossierPatch(
                    link_method=method,
                    candidates=candidates,
                    evidence=evidence,
                    external_id_status=link_status,
                )
            )
            try:
                linked = persist_link(
                    self.families,
                    self.dossiers,
                    record,
                    parsed,
                    user_id,
                    source="dossier",
                    now=now,
                    patch=patch,
                    steps=steps,
                    guard_identity=method == "external_id",
                    current=existing if method == "external_id" else None,
                    lease=journal.lease,
                )
                if linked.applied:
                    journal.record = record.applied(
                        steps,
                        now,
                        patch.merged(DossierPatch(tenant_siret=siret, outcome="linked", user_id=user_id)),
                    )
                    journal.persisted_here = True
                else:  # an earlier attempt had stored it
                    journal.record = self.dossiers.get(record.case_id) or record
                journal.pending, journal.patch, journal.qf = [], DossierPatch(), linked.qf
                journal.leased = True
                metrics.add_metric(name=f"DossiersLinked_{method}", unit="Count", value=1)
                return
            except IdentityConflict:
                candidates = [
                    {
                        "user_id": user_id,
                        "score": 0.0,
                        "reasons": ["family_holds_another_identity"],
                        "via": "external_id",
                    }
                ]
            except FamilyGone:  # erased between the decision and the write: never recreated
                candidates = [c for c in candidates if c.get("user_id") != user_id]
        self._write(
            journal,
            Step.PERSISTED,
            patch=DossierPatch(
                tenant_siret=siret,
                outcome="needs_review",
                candidates=candidates,
                evidence=evidence,
                external_id_status=link_status,
            ),
        )
        metrics.add_metric(name="DossiersNeedReview", unit="Count", value=1)

    def _audit_auto_link(self, journal: Journal) -> None:
        """One audit record per automatic link, written again by a retry when it failed.

        ``audit_started`` is journaled before the write (with the link's transaction) and ``audited``
        after it: a retry that finds the first without the second looks the record up in the trail
        before writing it, so a crash between the write and the journal never leaves two records.
        """
        if self.audit is None:
            return
        record = journal.record
        action = f"dossier.auto_link.{record.link_method}"
        if not record.done(Step.AUDIT_STARTED):
            record = self._write(journal, Step.AUDIT_STARTED)
            written = False
        else:
            # Started by this attempt's own transaction: nothing can be in the trail yet.
            written = not journal.persisted_here and self.audit.contains(
                request_id=record.case_id, action=action
            )
        if not written:
            self.audit.write(
                AuditRecord(
                    request_id=record.case_id,
                    actor="service",
                    principal=SERVICE_PRINCIPAL,
                    tenant_siret=record.tenant_siret,
                    route="pipeline:reconcile",
                    action=action,
                    user_id=record.user_id,
                    reference=record.reference,
                    outcome="success",
                )
            )
        journal.note(Step.AUDITED)

    # ------------------------------------------------------------------ endings
    def _park(
        self,
        client: HubeeClient,
        notification: Notification,
        journal: Journal,
        case: Case,
        holder: str,
    ) -> ReconcileResult:
        """Keep a dossier of a collectivité this credential sees but qfbridge does not serve yet.

        HubEE never notifies a case twice: deleting its notification without processing it would
        lose the dossier for good. Nothing is downloaded and no status is posted (the case stays
        ``HUBEE_NOTIFIED``, so HubEE keeps its attachments); the record, under the recipient's
        SIRET with outcome ``awaiting_onboarding``, remembers the credential that saw it. The
        notification is acknowledged so that it never takes a place in a listing again; once the
        collectivité's credentials are stored, the editor service queues the dossier again
        (``kind: onboarded``) and it is processed like any other.
        """
        recipient = str(case.recipient.company_register if case.recipient else "")
        record = self._write(
            journal,
            Step.AWAITING_ONBOARDING,
            patch=DossierPatch(
                tenant_siret=recipient,
                outcome=AWAITING_ONBOARDING,
                reason=None,
                reference=case.reference,
                awaiting_holder=holder,
            ),
        )
        metrics.add_metric(name="DossiersAwaitingOnboarding", unit="Count", value=1)
        logger.warning(
            "dossier kept for a collectivité not onboarded yet",
            extra={"case_id": record.case_id, "recipient_siret": recipient},
        )
        self._delete_notification(client, notification, journal)
        return ReconcileResult(kind="dossier", outcome=AWAITING_ONBOARDING, case_id=record.case_id)

    def _reject(
        self,
        client: HubeeClient,
        notification: Notification,
        journal: Journal,
        case: Case | None,
        reason: RejectionReason | str,
    ) -> ReconcileResult:
        """Record the dossier as rejected, tell the usager (unless the case is not ours), acknowledge it.

        The usager learns it through ``REFUSED`` (reached through ``SI_RECEIVED``, as HubEE's table
        requires) with a message asking them to submit again: the form shows nothing else.
        """
        case_id = journal.record.case_id
        post_status = reason not in NOT_OURS
        if journal.record.outcome != "rejected":
            self._write(
                journal,
                Step.REJECTED,
                patch=DossierPatch(
                    tenant_siret=journal.record.tenant_siret, outcome="rejected", reason=reason
                ),
            )
        if post_status and case is not None:
            self._advance(client, case, journal, CaseStatus.REFUSED, UNUSABLE_MESSAGE)
        metrics.add_metric(name="DossiersRejected", unit="Count", value=1)
        logger.warning("dossier rejected", extra={"case_id": case_id, "reason": reason})
        if reason not in LEFT_PENDING:
            self._delete_notification(client, notification, journal)
        self._publish(journal)
        return ReconcileResult(kind="dossier", outcome="rejected", case_id=case_id)

    def _advance(
        self, client: HubeeClient, case: Case, journal: Journal, target: CaseStatus, message: str
    ) -> None:
        """Post the statuses that bring the case to ``target``, each allowed by HubEE's table, once.

        ``case`` was read in this attempt, under the lease: statuses it already has (posted by an
        earlier attempt) are skipped, so the journal needs no write between two posts — the steps
        are noted and written with the attempt's next write. A refusal (4xx, or a transition the
        table forbids) is written at once and stops every later post for the case until an operator
        retries it.
        """
        if journal.done(Step.STATUS_REFUSED):
            return
        case_id = journal.record.case_id
        current = case.status or CaseStatus.HUBEE_NOTIFIED.value
        if not reached(current, target):
            path = path_to(current, target)
            status = str(target)
            try:
                if path is None:
                    raise HubeeTransitionRefused(
                        f"no transition of HubEE's status table leads from {current} to {target}"
                    )
                for status in path:
                    text = message if status == target else MESSAGES[CaseStatus(status)]
                    client.post_status_event(case_id, current, status, text, author=AUTHOR)
                    current = status
                    if status == CaseStatus.SI_RECEIVED:
                        journal.note(Step.SI_RECEIVED, DossierPatch(hubee_status=status))
            except STATUS_REFUSALS as exc:
                self._status_refused(journal, current, status, exc)
                return
        if reached(current, CaseStatus.SI_RECEIVED) and not journal.done(Step.SI_RECEIVED):
            journal.note(Step.SI_RECEIVED, DossierPatch(hubee_status=current))
        if target != CaseStatus.SI_RECEIVED and not journal.done(Step.FINAL_STATUS):
            final = target.value if current == target else current
            journal.note(Step.FINAL_STATUS, DossierPatch(hubee_status=final))

    def _status_refused(self, journal: Journal, current: str, status: str, exc: Exception) -> None:
        """HubEE refused a status (or its table forbids it): record it, alarm, post nothing more."""
        refusal = {
            "status": status,
            "from": current,
            "error_code": _error_code(exc),
            "http_status": getattr(exc, "status", None),
            "hubee_code": getattr(exc, "hubee_code", None),
            "at": self.clock().isoformat(),
        }
        metrics.add_metric(name="HubeeStatusRefused", unit="Count", value=1)
        logger.error(
            "HubEE refused a status: the dossier waits for an operator",
            extra={"case_id": journal.record.case_id, **{k: v for k, v in refusal.items() if k != "at"}},
        )
        self._write(
            journal, Step.STATUS_REFUSED, patch=DossierPatch(status_refused=refusal, hubee_status=current)
        )

    def _delete_notification(self, client: HubeeClient, notification: Notification, journal: Journal) -> None:
        if notification.id in journal.record.deleted_notification_ids or journal.deleted == notification.id:
            return  # a second queue copy of a notification already acknowledged
        client.delete_notification(notification.id)
        if journal.deleted is not None:  # a second notification in one attempt: journal the first now
            self._write(journal)
        journal.note(Step.NOTIFICATION_DELETED)
        journal.deleted = notification.id

    def _publish(self, journal: Journal) -> None:
        record = journal.view(self.clock())
        if record.done(Step.PUBLISHED):
            return
        case = {"tenant_siret": record.tenant_siret, "case_id": record.case_id, "reference": record.reference}
        if record.outcome == "linked":
            events = self._linked_events(record, cast(LinkMethod, record.link_method), journal.qf)
        elif record.outcome == "needs_review":
            events = [
                DossierNeedsReview(
                    **case, candidates=len(record.candidates), external_id_status=record.external_id_status
                )
            ]
        else:
            events = [DossierRejected(**case, reason=record.reason)]
        self.events.publish_many(events)
        journal.note(Step.PUBLISHED)

    # ------------------------------------------------------------------ review follow-up
    def _linked_events(
        self, record: DossierRecord, link_method: LinkMethod, qf: QfEntry | None = None
    ) -> list[BusEvent]:
        """``dossier.linked``, and ``qf.updated`` with the family's current QF (``qf``: as the link
        this attempt made left it; else read from the family)."""
        user_id = str(record.user_id)
        events: list[BusEvent] = [
            DossierLinked(
                tenant_siret=record.tenant_siret,
                case_id=record.case_id,
                reference=record.reference,
                user_id=user_id,
                link_method=link_method,
            )
        ]
        if qf is None:
            family = self.families.get(record.tenant_siret, user_id)
            qf = family.qf if family is not None else None
        if qf is not None:
            events.append(qf_updated(record.tenant_siret, user_id, qf))
        return events

    def _finish_review(self, message: FollowUpMessage) -> ReconcileResult:
        """After an agent's decision (API): post DONE or REFUSED to HubEE and publish the event."""
        case_id = message.case_id
        record = self.dossiers.get(case_id)
        if record is None:
            return ReconcileResult(kind="review_resolved", outcome="gone", case_id=case_id)
        holder = message.credential_holder or record.tenant_siret
        retry = isinstance(message, StatusRetryMessage)
        if retry and record.done(Step.STATUS_REFUSED):
            return ReconcileResult(kind="status_retry", outcome="still_refused", case_id=case_id)
        journal = Journal(record, leased=False)
        if not record.done(Step.FINAL_STATUS):
            if record.outcome == "linked":
                target, text = CaseStatus.DONE, MESSAGES[CaseStatus.DONE]
            elif record.outcome == "needs_review":
                target, text = CaseStatus.SI_RECEIVED, MESSAGES[CaseStatus.SI_RECEIVED]
            elif record.resolved_by is None and record.reason not in NOT_OURS:
                target, text = CaseStatus.REFUSED, UNUSABLE_MESSAGE
            else:
                target, text = CaseStatus.REFUSED, MESSAGES[CaseStatus.REFUSED]
            if record.reason not in NOT_OURS or record.resolved_by is not None:
                with self._client(holder) as client:
                    case = client.get_case(case_id)
                    try:
                        self._advance(client, case, journal, target, text)
                    finally:
                        self._settle(journal, quietly=True)
        if retry:
            return ReconcileResult(kind="status_retry", outcome=record.outcome, case_id=case_id)
        record = journal.record
        if record.done(Step.REVIEW_PUBLISHED):
            return ReconcileResult(
                kind="review_resolved", outcome=record.outcome, case_id=case_id, resumed=True
            )
        events: list[BusEvent]
        if record.outcome == "linked":
            events = self._linked_events(record, "review")
        else:
            events = [
                DossierRejected(
                    tenant_siret=record.tenant_siret,
                    case_id=case_id,
                    reference=record.reference,
                    reason=record.reason or "review_rejected",
                )
            ]
        self.events.publish_many(events)
        journal.note(Step.REVIEW_PUBLISHED)
        self._settle(journal)
        return ReconcileResult(kind="review_resolved", outcome=record.outcome, case_id=case_id)


def _error_code(exc: Exception) -> str:
    """A technical name for a failure: its code when typed, else its class (never its message)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__
