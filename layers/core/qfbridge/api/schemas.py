"""The API's wire models and parameters: what the OpenAPI document describes.

Request models validate shape and domain rules (COG, hosts, budget, identities) so that a bad body
is a 422 naming the field paths; path, query and header parameters carry patterns so that a bad URL
is a 400 (see ``qfbridge.api.problems``). Response models are views: they never carry secrets,
and family views carry the QF but no identity.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, cast

from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from qfbridge.domain.errors import QfbridgeError
from qfbridge.domain.identity import DirectoryChild, DirectoryParent
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.domain.siret import validate_cog_commune
from qfbridge.links.urls import normalise_host
from qfbridge.store.dossiers import DossierRecord, Outcome
from qfbridge.store.families import FamilyRecord, QfEntry
from qfbridge.store.tenants import (
    DEFAULT_REFRESH_BUDGET_RPS,
    MAX_REFRESH_BUDGET_RPS,
    HubeeStatus,
    RefreshStatus,
    Tenant,
)

SIRET_PATTERN = r"^[0-9]{14}$"
USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
AGENT_ID_PATTERN = r"^[A-Za-z0-9._@:-]{1,64}$"
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
REASON_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MIN_REFRESH_BUDGET_RPS = 0.01
"""One API Particulier request every 100 s: below that a budget is a typo (and 5e-324 is not storable)."""


class _Wire(BaseModel):
    """The API's models build their validators and serialisers when first used (``defer_build``): a
    request uses its route's body and view, and an execution environment's first request built all
    of the API's two dozen models on its cold start (docs/performance.md, cold request)."""

    model_config = ConfigDict(defer_build=True)


# ---------------------------------------------------------------------- parameters
SiretPath = Annotated[
    str,
    Path(
        pattern=SIRET_PATTERN,
        description="SIRET of the collectivité (14 digits, Luhn; La Poste rule)",
        examples=["21040107100019"],
    ),
]
UserIdPath = Annotated[
    str, Path(pattern=USER_ID_PATTERN, description="The family's id in the editor's software")
]
ReferencePath = Annotated[
    str,
    Path(
        min_length=13,
        max_length=100,
        description="The usager's support reference: 13 hex characters, or Formulaire-QF-<reference>-01",
        examples=["0A1B2C3D4E5F6"],
    ),
]
ExternalIdPath = Annotated[str, Path(pattern=EXTERNAL_ID_PATTERN, description="A form link's external_id")]
AgentIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Agent-Id",
        pattern=AGENT_ID_PATTERN,
        description="Id of the agent acting in the editor's software; recorded in the audit trail",
    ),
]
CursorQuery = Annotated[str | None, Query(max_length=2048, description="Opaque cursor of the previous page")]
LimitQuery = Annotated[int, Query(ge=1, le=100, description="Page size")]


def _cog(value: str) -> str:
    try:
        return validate_cog_commune(value)
    except QfbridgeError as exc:
        raise ValueError(exc.code) from None


def _hosts(values: list[str]) -> list[str]:
    try:
        return sorted({normalise_host(value) for value in values})
    except QfbridgeError as exc:
        raise ValueError(exc.code) from None


# ---------------------------------------------------------------------- tenants
class TenantBody(_Wire):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Name of the collectivité")
    cog: Annotated[str, AfterValidator(_cog)] = Field(
        description="Code COG INSEE of the commune (e.g. 04107, 2A004)"
    )
    redirect_hosts: Annotated[list[str], AfterValidator(_hosts)] = Field(
        default_factory=list, max_length=20, description="Hosts a form link's redirect_uri may point to"
    )
    token_expires_on: dt.date | None = Field(
        default=None, description="Expiry date of the API Particulier token"
    )
    refresh_budget_rps: float = Field(
        default=DEFAULT_REFRESH_BUDGET_RPS,
        ge=MIN_REFRESH_BUDGET_RPS,
        le=MAX_REFRESH_BUDGET_RPS,
        description="API Particulier requests per second this tenant may use",
    )


class TenantPatch(_Wire):
    """A JSON merge patch (RFC 7396) of a tenant: a field left out keeps its value, ``null`` clears
    ``token_expires_on``; the other fields cannot be cleared (give a value)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=200, description="Name of the collectivité"
    )
    cog: Annotated[str, AfterValidator(_cog)] | None = Field(
        default=None, description="Code COG INSEE of the commune (e.g. 04107, 2A004)"
    )
    redirect_hosts: Annotated[list[str], AfterValidator(_hosts)] | None = Field(
        default=None, max_length=20, description="Replaces the list of hosts a redirect_uri may point to"
    )
    token_expires_on: dt.date | None = Field(
        default=None, description="Expiry date of the API Particulier token; null clears it"
    )
    refresh_budget_rps: float | None = Field(
        default=None,
        ge=MIN_REFRESH_BUDGET_RPS,
        le=MAX_REFRESH_BUDGET_RPS,
        description="API Particulier requests per second this tenant may use",
    )

    @field_validator("name", "cog", "redirect_hosts", "refresh_budget_rps", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot_be_cleared")
        return value


TenantStatus = Literal[
    "awaiting_credentials",
    "hubee_auth_failed",
    "hubee_notifications_stuck",
    "api_particulier_token_expired",
    "api_particulier_forbidden",
    "active",
]


class TenantView(_Wire):
    siret: str = Field(pattern=SIRET_PATTERN)
    name: str
    cog: str
    redirect_hosts: list[str]
    token_expires_on: dt.date | None
    refresh_budget_rps: float
    status: TenantStatus = Field(description="What needs attention first")
    has_credentials: bool
    hubee_status: HubeeStatus = Field(
        description="Outcome of the last HubEE poll with the tenant's credentials"
    )
    hubee_stuck_notifications: int = Field(
        default=0,
        description="Notifications of the tenant's HubEE credential still pending after more than 3 polls",
    )
    refresh_status: RefreshStatus = Field(description="Whether the monthly QF refreshes run, and why not")
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(
            siret=tenant.siret,
            name=tenant.name,
            cog=tenant.cog,
            redirect_hosts=tenant.redirect_hosts,
            token_expires_on=tenant.token_expires_on,
            refresh_budget_rps=tenant.refresh_budget_rps,
            status=cast(TenantStatus, tenant.status),
            has_credentials=tenant.has_credentials,
            hubee_status=tenant.hubee_status,
            hubee_stuck_notifications=tenant.hubee_stuck_notifications,
            refresh_status=tenant.refresh_status,
            created_at=tenant.created_at,
            updated_at=tenant.updated_at,
        )


class TenantList(_Wire):
    items: list[TenantView]
    next_cursor: str | None = None


class CredentialsBody(_Wire):
    """Write-only: stored in Secrets Manager, never returned, never logged."""

    model_config = ConfigDict(extra="forbid")

    hubee_client_id: str = Field(min_length=1, max_length=256)
    hubee_client_secret: SecretStr = Field(min_length=1, max_length=1024)
    api_particulier_token: SecretStr | None = Field(default=None, min_length=1, max_length=4096)


# ---------------------------------------------------------------------- form links
class FormLinkBody(_Wire):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN, description="The family's id in the editor's software")
    redirect_uri: str | None = Field(
        default=None, max_length=2048, description="https URL on one of the tenant's redirect_hosts"
    )


class FormLinkView(_Wire):
    url: str
    external_id: str
    expires_at: dt.datetime


# ---------------------------------------------------------------------- families
class FamilyBody(_Wire):
    """The directory identity of a family (the user id is in the path)."""

    model_config = ConfigDict(extra="forbid")

    parents: list[DirectoryParent] = Field(min_length=1, max_length=2)
    enfants: list[DirectoryChild] = Field(default_factory=list, max_length=20)


class QfView(_Wire):
    quotient_familial: int
    fournisseur: str
    annee: int
    mois: int
    source: str
    received_at: str

    @classmethod
    def of(cls, entry: QfEntry) -> QfView:
        qf: QuotientFamilial = entry.quotient_familial
        return cls(
            quotient_familial=qf.valeur,
            fournisseur=qf.fournisseur,
            annee=qf.annee,
            mois=qf.mois,
            source=entry.source,
            received_at=entry.received_at,
        )


class RefreshView(_Wire):
    status: str
    last_attempt_at: str | None
    last_outcome: str | None
    reason: str | None = Field(
        default=None,
        description="Why the last refresh failed: API Particulier's error codes (e.g. 00420, a name it "
        "refuses) or name_not_accepted (a name with no form it accepts). An identity_rejected family "
        "is refreshed again once a new dossier brings a usable identity",
    )
    next_refresh_at: str | None


class FamilyView(_Wire):
    user_id: str
    in_directory: bool = Field(description="The editor sent this family's directory identity")
    has_pivot_identity: bool = Field(description="A dossier was linked: the QF can be refreshed monthly")
    quotient_familial: QfView | None
    history: list[QfView]
    refresh: RefreshView

    @classmethod
    def of(cls, record: FamilyRecord) -> FamilyView:
        from qfbridge.store.families import sort_history

        return cls(
            user_id=record.user_id,
            in_directory=record.family is not None,
            has_pivot_identity=record.pivot_identity is not None,
            quotient_familial=QfView.of(record.qf) if record.qf else None,
            history=[QfView.of(entry) for entry in sort_history(record.qf_history)],
            refresh=RefreshView(
                status=record.refresh.status,
                last_attempt_at=record.refresh.last_attempt_at,
                last_outcome=record.refresh.last_outcome,
                reason=record.refresh.reason,
                next_refresh_at=record.next_refresh_at,
            ),
        )


class FamiliesBatchBody(_Wire):
    model_config = ConfigDict(extra="forbid")

    families: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=1000,
        description="Up to 1000 families, each {user_id, parents, enfants} as in PUT /families/{user_id}; "
        "rows are validated one by one and answered row by row",
    )


class FieldError(_Wire):
    loc: list[str | int]
    type: str


class BatchRowView(_Wire):
    index: int
    user_id: str | None
    status: Literal["created", "updated", "invalid"]
    code: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class BatchView(_Wire):
    created: int
    updated: int
    invalid: int
    results: list[BatchRowView]


class ErasureView(_Wire):
    user_id: str
    form_links_deleted: int
    dossiers_erased: int


class RefreshQueuedView(_Wire):
    user_id: str
    queued: bool = True


# ---------------------------------------------------------------------- dossiers
class DossierSummary(_Wire):
    case_id: str
    reference: str | None
    received_at: str
    status: Outcome
    reason: str | None
    user_id: str | None
    link_method: str | None
    external_id_status: str | None
    hubee_status: str | None
    candidates: int
    expires_at: int | None

    @classmethod
    def of(cls, record: DossierRecord) -> DossierSummary:
        return cls(
            case_id=record.case_id,
            reference=record.reference,
            received_at=record.received_at,
            status=record.outcome,
            reason=record.reason,
            user_id=record.user_id,
            link_method=record.link_method,
            external_id_status=record.external_id_status,
            hubee_status=record.hubee_status,
            candidates=len(record.candidates),
            expires_at=record.expires_at,
        )


class DossierList(_Wire):
    items: list[DossierSummary]
    next_cursor: str | None = None


class CandidateView(_Wire):
    user_id: str
    score: float
    reasons: list[str]


class DecisionView(_Wire):
    """A decision taken on the dossier, then re-opened (kept for the record)."""

    outcome: str
    user_id: str | None = None
    link_method: str | None = None
    reason: str | None = None
    resolved_by: str | None = None
    reopened_by: str
    reopened_at: str


class DossierDetail(DossierSummary):
    candidate_families: list[CandidateView]
    evidence: list[str]
    resolved_by: str | None
    earlier_decisions: list[DecisionView] = Field(
        default_factory=list, description="Decisions re-opened since, oldest first"
    )
    dossier_data: dict[str, Any] | None = Field(
        default=None, description="For a dossier in review only: the identity and QF the agent must compare"
    )

    @classmethod
    def detail(cls, record: DossierRecord) -> DossierDetail:
        summary = DossierSummary.of(record).model_dump()
        candidates = [
            CandidateView(
                user_id=str(c.get("user_id")),
                score=float(c.get("score", 0.0)),
                reasons=[str(r) for r in c.get("reasons", [])],
            )
            for c in record.candidates
        ]
        data = None
        if record.outcome == "needs_review" and record.parsed:
            data = {key: value for key, value in record.parsed.items() if key != "external_id"}
        return cls(
            **summary,
            candidate_families=candidates,
            evidence=record.evidence,
            resolved_by=record.resolved_by,
            earlier_decisions=[DecisionView.model_validate(d) for d in record.decisions],
            dossier_data=data,
        )


class ResolveLink(_Wire):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["link"]
    user_id: str = Field(pattern=USER_ID_PATTERN)


class ResolveReject(_Wire):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["reject"]
    reason: str | None = Field(
        default=None,
        pattern=REASON_PATTERN,
        description="A short code (e.g. not_our_usager); free text is refused",
    )


class ResolveReopen(_Wire):
    """Put a resolved dossier back in review (a wrong decision): its QF leaves the family it was linked
    to, the family stays, the earlier decision is kept on the dossier and the call is audited."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["reopen"]


ResolveBody = Annotated[ResolveLink | ResolveReject | ResolveReopen, Field(discriminator="decision")]
