"""The editor API's use cases: onboarding, credentials, form links, directory, refresh-now, review, erasure.

No HTTP here: every function takes and returns domain or store models and raises typed domain
errors (``qfbridge.domain.errors``); ``qfbridge.api`` turns them into routes and problem responses.

Tenant scoping: every use case first requires the tenant, then reaches the resource *through* that
tenant (the families' partition key, the dossier's ``tenant_siret``, the link's signature and
stored tenant). A resource of another tenant is reported exactly like a missing one
(``ForeignResource`` is a ``NotFoundError`` with the same code): the API never reveals that it exists.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict

from qfbridge.clock import Clock, utc_now
from qfbridge.domain.errors import (
    ConflictError,
    LinkError,
    NotFoundError,
    QfbridgeError,
    RuleViolation,
    ValidationError,
)
from qfbridge.domain.identity import Family
from qfbridge.domain.reference import normalise_reference
from qfbridge.domain.siret import validate_cog_commune, validate_siret
from qfbridge.hubee.models import FORMULAIRE_QF, Notification, OrganizationIdentifier
from qfbridge.links.signing import KeyConfigurationError, LinkSigner
from qfbridge.links.urls import build_form_url, normalise_host, validate_redirect_uri
from qfbridge.messages import OnboardedDossierMessage, RefreshMessage, ReviewResolvedMessage
from qfbridge.services.dispatch import release_rate
from qfbridge.services.linking import persist_link, snapshot_parsed
from qfbridge.services.ports import DossierQueue, RefreshQueue
from qfbridge.store.dossiers import (
    FINAL_OUTCOMES,
    OUTCOMES,
    DossierPatch,
    DossierRecord,
    DossierRepository,
    Step,
)
from qfbridge.store.families import FamilyGone, FamilyRecord, FamilyRepository
from qfbridge.store.links import LinkRepository, StoredLink
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.queues import MAX_DELAY_SECONDS
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import MAX_REFRESH_BUDGET_RPS, Tenant, TenantPatch, TenantRepository

MAX_BATCH_FAMILIES = 1000
REVIEW_STEP = Step.REVIEWED
DEFAULT_REJECT_REASON = "review_rejected"


class ForeignResource(NotFoundError):
    """The resource exists but belongs to another tenant: answered as not found, audited as denied."""


class BatchTooLarge(ValidationError):
    """A batch carries more rows than one call accepts."""

    code = "batch_too_large"


class ServiceMisconfigured(QfbridgeError):
    """qfbridge's own configuration is unusable (e.g. the link-signing keys): not the caller's fault."""

    code = "service_misconfigured"


class TenantConfig(BaseModel):
    """What the editor configures for a collectivité (the rest of ``Tenant`` is qfbridge's state)."""

    model_config = ConfigDict(frozen=True)

    name: str
    cog: str
    redirect_hosts: list[str] = []
    token_expires_on: dt.date | None = None
    refresh_budget_rps: float = 4.0


@dataclass(frozen=True)
class IssuedFormLink:
    url: str
    external_id: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class BatchRowResult:
    index: int
    user_id: str | None
    status: Literal["created", "updated", "invalid"]
    code: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchReport:
    rows: list[BatchRowResult]

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    @property
    def changed_user_ids(self) -> list[str]:
        return [row.user_id for row in self.rows if row.user_id is not None and row.status != "invalid"]


@dataclass(frozen=True)
class Erasure:
    user_id: str
    form_links: int
    dossiers: int


@dataclass(frozen=True)
class ReviewDecision:
    decision: Literal["link", "reject"]
    user_id: str | None = None
    reason: str | None = None


def field_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Where and what, never the submitted value (pydantic's ``input``/``msg`` may echo it)."""
    return [
        {"loc": [str(part)[:64] if isinstance(part, str) else part for part in e["loc"]], "type": e["type"]}
        for e in exc.errors()
    ]


@dataclass
class EditorService:
    tenants: TenantRepository
    families: FamilyRepository
    dossiers: DossierRepository
    links: LinkRepository
    secrets: SecretStore
    refresh_queue: RefreshQueue
    dossier_queue: DossierQueue
    link_signing_secret_id: str
    form_base_url: str
    form_link_ttl_days: int = 60
    clock: Clock = utc_now
    pacer: TenantPacer | None = None
    """Books manual refreshes on the tenant's release schedule (``qfbridge.store.pacing``)."""

    # ------------------------------------------------------------------ tenants
    def put_tenant(self, siret: str, config: TenantConfig) -> tuple[Tenant, bool]:
        """Create or reconfigure a collectivité; returns it and whether it was created.

        A later API Particulier token expiry date means the token was prolonged: the expiry alerts
        start over and refreshes stopped by an expired token resume.
        """
        siret = validate_siret(siret)
        cog = validate_cog_commune(config.cog)
        hosts = sorted({normalise_host(host) for host in config.redirect_hosts})
        if not 0 < config.refresh_budget_rps <= MAX_REFRESH_BUDGET_RPS:
            raise ValidationError("refresh_budget_rps must be within (0, 20]", code="invalid_refresh_budget")
        now = self.clock().isoformat()
        existing = self.tenants.get(siret)
        if existing is None:
            tenant = Tenant(
                siret=siret,
                name=config.name,
                cog=cog,
                redirect_hosts=hosts,
                token_expires_on=config.token_expires_on,
                refresh_budget_rps=config.refresh_budget_rps,
                created_at=now,
                updated_at=now,
            )
            self.tenants.put(tenant)
            return tenant, True
        patch = TenantPatch(
            name=config.name,
            cog=cog,
            redirect_hosts=hosts,
            token_expires_on=config.token_expires_on,
            refresh_budget_rps=config.refresh_budget_rps,
            updated_at=now,
        )
        new_expiry, old_expiry = config.token_expires_on, existing.token_expires_on
        if new_expiry is not None and (old_expiry is None or new_expiry > old_expiry):
            patch.token_alerts_sent = []
            if existing.refresh_status == "token_expired":
                patch.refresh_status = "active"
        self.tenants.update(siret, patch)
        return self.tenants.require(siret), False

    def get_tenant(self, siret: str) -> Tenant:
        return self.tenants.require(validate_siret(siret))

    def list_tenants(self, *, limit: int, cursor: str | None) -> tuple[list[Tenant], str | None]:
        return self.tenants.list_page(limit=limit, cursor=cursor)

    # ------------------------------------------------------------------ credentials
    def store_credentials(self, siret: str, credentials: TenantCredentials) -> None:
        """Replace the tenant's credentials (write-only: nothing here ever returns or logs them).

        The HubEE pair is required (it is what makes the tenant pollable); the API Particulier token
        is optional and, when given, (re)starts the monthly refreshes.
        """
        tenant = self.get_tenant(siret)
        secret = credentials.hubee_client_secret
        if not credentials.hubee_client_id or secret is None or not secret.get_secret_value():
            raise ValidationError(
                "hubee_client_id and hubee_client_secret are both required",
                code="hubee_credentials_incomplete",
            )
        token = credentials.api_particulier_token
        if token is not None and not token.get_secret_value():
            credentials = credentials.model_copy(update={"api_particulier_token": None})
        version = self.secrets.replace_tenant(tenant.siret, credentials)
        self.tenants.update(
            tenant.siret,
            TenantPatch(
                credentials_version=version,
                hubee_client_id=credentials.hubee_client_id,
                has_credentials=True,
                hubee_status="unknown",
                hubee_failures=0,
                refresh_status="active" if credentials.api_particulier_token is not None else "no_token",
                updated_at=self.clock().isoformat(),
            ),
        )
        self.release_awaiting_dossiers(tenant.siret)

    def release_awaiting_dossiers(self, siret: str) -> int:
        """Queue again the dossiers HubEE delivered for this collectivité before it was onboarded.

        reconcile kept them (outcome ``awaiting_onboarding``, the case untouched in HubEE) with the
        tenant whose credential saw them; each is now processed like a new dossier, read with that
        credential (or the collectivité's own when that one is gone). Returns how many were queued.
        """
        queued = 0
        cursor: str | None = None
        while True:
            records, cursor = self.dossiers.list_page(
                siret, outcome="awaiting_onboarding", limit=100, cursor=cursor
            )
            for record in records:
                holder = record.awaiting_holder or siret
                holder_tenant = self.tenants.get(holder)
                if holder_tenant is None or not holder_tenant.has_credentials:
                    holder = siret
                notification_id = (record.deleted_notification_ids or record.notification_ids or [""])[0]
                message = OnboardedDossierMessage(
                    notification=Notification(
                        id=notification_id,
                        process_code=FORMULAIRE_QF,
                        case_id=record.case_id,
                        event_id=None,
                        recipient=OrganizationIdentifier(type="SI", company_register=siret),
                    ),
                    credential_holder=holder,
                    credential_tenants=(siret,),
                )
                self.dossier_queue.send(message)
                queued += 1
            if not cursor:
                return queued

    # ------------------------------------------------------------------ form links
    def _signer(self) -> LinkSigner:
        try:
            keys, active = self.secrets.read_link_keys(self.link_signing_secret_id)
            return LinkSigner(keys, active)
        except (NotFoundError, KeyConfigurationError) as exc:
            raise ServiceMisconfigured(
                "The link-signing keys are unusable.", code="link_keys_unavailable"
            ) from exc

    def issue_form_link(self, siret: str, user_id: str, redirect_uri: str | None) -> IssuedFormLink:
        """A signed form link for one family of the directory (the editor's first way to reconcile: a signed external_id)."""
        tenant = self.get_tenant(siret)
        redirect = validate_redirect_uri(redirect_uri, tenant.redirect_hosts) if redirect_uri else None
        issued = self._signer().issue(tenant.siret)
        now = self.clock()
        expires = now + dt.timedelta(days=self.form_link_ttl_days)
        url = build_form_url(self.form_base_url, tenant.siret, issued.external_id, redirect)
        link = StoredLink(
            link_id=issued.link_id,
            tenant_siret=tenant.siret,
            user_id=user_id,
            kid=issued.kid,
            created_at=now.isoformat(),
            expires_at=int(expires.timestamp()),
            redirect_uri=redirect,
        )
        # The link and its family (a shell for an account the directory has not sent yet) are written
        # together: an erasure always finds the link on the family.
        self.links.put_with(
            link, self.families.link_issue_update(tenant.siret, user_id, issued.link_id, now.isoformat())
        )
        return IssuedFormLink(url=url, external_id=issued.external_id, expires_at=expires)

    def form_link(self, siret: str, external_id: str) -> tuple[StoredLink, str]:
        """The stored link behind an external_id of this tenant, and its form URL (for the QR code)."""
        tenant = self.get_tenant(siret)
        try:
            verified = self._signer().verify(external_id, tenant.siret)
        except LinkError as exc:
            raise NotFoundError("No such form link for this tenant.", code="form_link_not_found") from exc
        stored = self.links.get(verified.link_id)
        if stored is None or stored.expires_at < int(self.clock().timestamp()):
            raise NotFoundError("No such form link for this tenant.", code="form_link_not_found")
        if stored.tenant_siret != tenant.siret:
            raise ForeignResource("No such form link for this tenant.", code="form_link_not_found")
        return stored, build_form_url(self.form_base_url, tenant.siret, external_id, stored.redirect_uri)

    def tenant_form_url(self, siret: str) -> tuple[Tenant, str]:
        """The collectivité's public form URL, without external_id (poster, counter QR code)."""
        tenant = self.get_tenant(siret)
        return tenant, build_form_url(self.form_base_url, tenant.siret, None, None)

    # ------------------------------------------------------------------ families
    def put_family(self, siret: str, family: Family) -> tuple[FamilyRecord, bool]:
        tenant = self.get_tenant(siret)
        created = self.families.upsert(tenant.siret, family)
        record = self.families.get(tenant.siret, family.user_id)
        # Erased between the two requests: the push stands answered, the erasure came after it.
        return record or FamilyRecord(siret=tenant.siret, user_id=family.user_id, family=family), created

    def get_family(self, siret: str, user_id: str) -> FamilyRecord:
        tenant = self.get_tenant(siret)
        record = self.families.get(tenant.siret, user_id)
        if record is None:
            raise NotFoundError("No such family for this tenant.", code="family_not_found")
        return record

    def batch_upsert(self, siret: str, rows: list[Any]) -> BatchReport:
        """Upsert up to 1000 families; each row is validated on its own and gets its own result."""
        tenant = self.get_tenant(siret)
        if len(rows) > MAX_BATCH_FAMILIES:
            raise BatchTooLarge(f"A batch carries at most {MAX_BATCH_FAMILIES} families.")
        results: list[BatchRowResult | None] = [None] * len(rows)
        valid: list[tuple[int, Family]] = []
        seen: set[str] = set()
        for index, row in enumerate(rows):
            try:
                family = Family.model_validate(row)
            except pydantic.ValidationError as exc:
                results[index] = BatchRowResult(index, None, "invalid", "invalid_family", field_errors(exc))
                continue
            if family.user_id in seen:
                results[index] = BatchRowResult(index, family.user_id, "invalid", "duplicate_user_id")
                continue
            seen.add(family.user_id)
            valid.append((index, family))
        created = self.families.upsert_many(tenant.siret, [family for _, family in valid]) if valid else []
        for (index, family), was_created in zip(valid, created, strict=True):
            results[index] = BatchRowResult(index, family.user_id, "created" if was_created else "updated")
        return BatchReport(rows=[row for row in results if row is not None])

    def erase_family(self, siret: str, user_id: str) -> Erasure:
        """RGPD erasure: the family and its blocking entries, its form links, its dossiers' personal data,
        and the dossiers waiting for review that name it as a candidate (the candidate is struck off) or
        carry its members' identity (their personal data is erased).

        The family item is deleted first: from then on no link, dossier or review decision can attach
        anything to it (they require the family to exist), so what it listed is everything to reach.
        """
        tenant = self.get_tenant(siret)
        record = self.families.erase(tenant.siret, user_id)
        if record is None:
            raise NotFoundError("No such family for this tenant.", code="family_not_found")
        for link_id in record.link_ids:
            self.links.delete(link_id)
        erased = set(record.case_ids)
        for case_id in record.case_ids:
            self.dossiers.erase_personal_data(case_id)
        keys = _identity_keys(record)
        for dossier in self.dossiers.in_review(tenant.siret):
            if dossier.case_id in erased:
                continue
            if dossier.parsed and _dossier_identity_key(dossier.parsed) in keys:
                self.dossiers.erase_personal_data(dossier.case_id)
                erased.add(dossier.case_id)
            elif any(c.get("user_id") == user_id for c in dossier.candidates):
                self.dossiers.strike_candidate(dossier.case_id, user_id)
        return Erasure(user_id=user_id, form_links=len(record.link_ids), dossiers=len(erased))

    def refresh_now(self, siret: str, user_id: str) -> None:
        """Queue an immediate QF refresh (the same message the monthly dispatch sends)."""
        tenant = self.get_tenant(siret)
        family = self.get_family(tenant.siret, user_id)
        if family.pivot_identity is None:
            raise ConflictError(
                "The family has no pivot identity yet (no dossier linked).", code="no_pivot_identity"
            )
        if tenant.refresh_status != "active":
            raise ConflictError(
                "The tenant's refreshes are stopped (see its refresh_status).", code="refresh_stopped"
            )
        delay = 0
        if self.pacer is not None:
            # Booked after the refreshes already queued for the tenant, and refused when the budget
            # cannot serve it within SQS's longest delay: a queued refresh never outwaits its patience.
            offsets = self.pacer.book(
                tenant.siret,
                1,
                rate=release_rate(tenant),
                now=self.clock().timestamp(),
                horizon=MAX_DELAY_SECONDS,
            )
            if not offsets:
                raise ConflictError(
                    "The tenant's refresh budget is booked for the next 15 minutes; retry later.",
                    code="refresh_budget_exhausted",
                )
            delay = min(MAX_DELAY_SECONDS, math.floor(offsets[0]))
        self.refresh_queue.send(
            RefreshMessage(
                siret=tenant.siret, user_id=user_id, reason="manual", admitted=self.pacer is not None
            ),
            delay_seconds=delay,
        )

    # ------------------------------------------------------------------ dossiers
    def list_dossiers(
        self, siret: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[DossierRecord], str | None]:
        tenant = self.get_tenant(siret)
        if status is not None and status not in OUTCOMES:
            raise ValidationError("unknown dossier status", code="invalid_status")
        return self.dossiers.list_page(tenant.siret, outcome=status, limit=limit, cursor=cursor)

    def get_dossier(self, siret: str, reference: str) -> DossierRecord:
        """The support lookup: the usager's reference (13 hex, or Formulaire-QF-<ref>-01)."""
        tenant = self.get_tenant(siret)
        normalised = normalise_reference(reference)
        records = self.dossiers.by_reference(normalised)
        for record in records:
            if record.tenant_siret == tenant.siret:
                return record
        if records:
            raise ForeignResource(f"No dossier {normalised} for this tenant.", code="dossier_not_found")
        raise NotFoundError(f"No dossier {normalised} for this tenant.", code="dossier_not_found")

    def resolve_review(
        self, siret: str, reference: str, decision: ReviewDecision, *, resolved_by: str
    ) -> DossierRecord:
        """Record an agent's decision on a dossier in review, then hand HubEE's status to reconcile.

        ``link`` stores the dossier's QF on the chosen family exactly as intake would (same
        transaction, ``link_method = "review"``); ``reject`` closes it. A repeated identical
        decision is accepted again (it re-sends the follow-up: safe, ``_finish_review`` is
        idempotent); any other decision on a dossier not in review is a conflict.
        """
        record = self.get_dossier(siret, reference)
        if record.done(REVIEW_STEP):
            if not _same_decision(record, decision):
                raise ConflictError("The dossier was already resolved.", code="dossier_not_in_review")
        elif record.outcome != "needs_review":
            raise ConflictError("Only a dossier in review can be resolved.", code="dossier_not_in_review")
        elif decision.decision == "link":
            self._require_link_target(record, str(decision.user_id))
            record = self._link_reviewed(record, str(decision.user_id), resolved_by)
        else:
            updated = self.dossiers.mark_once(
                record.case_id,
                REVIEW_STEP,
                self.clock(),
                DossierPatch(
                    tenant_siret=record.tenant_siret,
                    outcome="rejected",
                    reason=decision.reason or DEFAULT_REJECT_REASON,
                    resolved_by=resolved_by,
                ),
            )
            if updated is None:
                raise ConflictError("The dossier was already resolved.", code="dossier_not_in_review")
            record = updated
        self.dossier_queue.send(
            ReviewResolvedMessage(case_id=record.case_id, credential_holder=record.tenant_siret)
        )
        return record

    def _link_reviewed(self, record: DossierRecord, user_id: str, resolved_by: str) -> DossierRecord:
        if not record.parsed:
            raise ConflictError(
                "The dossier's data was erased; it cannot be linked.", code="dossier_data_erased"
            )
        parsed = snapshot_parsed(record.parsed)
        if parsed.quotient_familial is None:
            raise ConflictError("The dossier carries no quotient familial.", code="missing_quotient_familial")
        try:
            applied = persist_link(
                self.families,
                self.dossiers,
                record,
                parsed,
                user_id,
                source="review",
                now=self.clock(),
                steps=(REVIEW_STEP,),
                patch=DossierPatch(link_method="review", resolved_by=resolved_by),
            ).applied
        except FamilyGone as exc:  # erased since it was ranked: a review never recreates a family
            raise RuleViolation("The family no longer exists.", code="unknown_family") from exc
        if not applied:
            raise ConflictError("The dossier was already resolved.", code="dossier_not_in_review")
        return self.dossiers.get(record.case_id) or record

    def _require_link_target(self, record: DossierRecord, user_id: str) -> None:
        """A review links to a ranked candidate or to a family of the tenant's directory, never to an
        id an agent typed: a decision cannot invent a family."""
        if any(c.get("user_id") == user_id for c in record.candidates):
            return
        family = self.families.get(record.tenant_siret, user_id)
        if family is None or family.family is None:
            raise RuleViolation(
                "A review links the dossier to one of its candidates or to a family of the directory.",
                code="unknown_family",
            )

    def reopen_review(self, siret: str, reference: str, *, reopened_by: str) -> DossierRecord:
        """Put a resolved dossier back in review (an agent's wrong decision, or a wrong automatic link).

        A linked dossier's QF entry leaves the family it was linked to (its current QF falls back on
        the most recent remaining one; a pivot identity that came from this dossier goes too, and with
        it the monthly refresh), the family itself stays. The dossier keeps every decision in
        ``decisions``; the API audits the call. A new decision then applies (HubEE keeps the status
        it was given: a dossier's status is never posted twice).
        """
        record = self.get_dossier(siret, reference)
        if record.outcome not in FINAL_OUTCOMES:
            raise ConflictError("Only a resolved dossier can be re-opened.", code="dossier_not_resolved")
        if not record.parsed:
            raise ConflictError(
                "The dossier's data was erased; it cannot be re-opened.", code="dossier_data_erased"
            )
        if record.outcome == "linked" and record.user_id:
            self.families.unlink_case(record.tenant_siret, record.user_id, record.case_id)
        reopened = self.dossiers.reopen(record, self.clock(), reopened_by=reopened_by)
        if reopened is None:
            raise ConflictError("The dossier changed meanwhile; read it again.", code="dossier_changed")
        return reopened


def _identity_keys(record: FamilyRecord) -> set[str]:
    """Identity keys of the family's people: its pivot identity and its directory parents."""
    from qfbridge.store.families import person_key

    keys = {record.identity_key} if record.identity_key else set()
    if record.family is not None:
        for parent in record.family.parents:
            keys.add(person_key(parent.nom_naissance, parent.prenoms, parent.sexe, parent.date_naissance))
    return keys


def _dossier_identity_key(parsed: dict[str, Any]) -> str | None:
    from qfbridge.store.families import identity_key

    try:
        return identity_key(snapshot_parsed(parsed).pivot_identity)
    except (KeyError, pydantic.ValidationError):
        return None


def _same_decision(record: DossierRecord, decision: ReviewDecision) -> bool:
    if decision.decision == "link":
        return record.outcome == "linked" and record.user_id == decision.user_id
    return record.outcome == "rejected"
