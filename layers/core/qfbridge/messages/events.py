"""The EventBridge bus: one :class:`BusEvent` per ``detail-type``.

``docs/events/*.schema.json`` are generated from these models (:func:`event_schema`, ``make openapi``).
Events carry ids and QF values, never identities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema
from pydantic_core import core_schema

from qfbridge.messages.base import STRICT

if TYPE_CHECKING:
    from qfbridge.store.families import QfEntry


SOURCE = "qfbridge"

Siret = Annotated[str, Field(pattern=r"^[0-9]{14}$", description="SIRET of the collectivité (tenant)")]
UserId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9._:@-]{1,128}$", description="The family's id in the editor's software")
]
CaseId = Annotated[str, Field(min_length=1, description="HubEE case id")]
Reference = Annotated[
    Annotated[str, Field(pattern=r"^[0-9A-F]{13}$")] | None,
    Field(description="The usager's support reference (13 hex)"),
]
DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Date = Annotated[str, Field(json_schema_extra={"format": "date"})]
LinkMethod = Literal["external_id", "identity", "review"]


class BusEvent(BaseModel):
    """An event of the bus: its ``detail-type`` and its detail (the model's fields)."""

    model_config = STRICT

    detail_type: ClassVar[str]
    omitted_when_none: ClassVar[frozenset[str]] = frozenset()
    """Fields left out of the detail when they have no value (the others are always present)."""

    def detail(self) -> dict[str, Any]:
        """The event's ``detail``, as JSON."""
        skip = {name for name in self.omitted_when_none if getattr(self, name) is None}
        return self.model_dump(mode="json", exclude=skip)


class _DossierEvent(BusEvent):
    tenant_siret: Siret
    case_id: CaseId
    reference: Reference


class DossierLinked(_DossierEvent):
    """A dossier was linked to a family (automatically, or by an agent's review) and its QF stored."""

    detail_type = "dossier.linked"

    outcome: Literal["linked"] = "linked"
    user_id: UserId
    link_method: LinkMethod = Field(description="How the family was found")


class DossierNeedsReview(_DossierEvent):
    """A dossier could not be linked with confidence: an agent must resolve it (POST …/dossiers/{reference}/resolve)."""

    detail_type = "dossier.needs_review"

    outcome: Literal["needs_review"] = "needs_review"
    candidates: int = Field(ge=0, description="Number of candidate families proposed")
    external_id_status: str | None = Field(
        description="absent, valid, forged (malformed or bad signature), foreign (a link of another tenant), expired"
    )


class DossierRejected(_DossierEvent):
    """A dossier is unusable (or was rejected by an agent's review); HubEE was told."""

    detail_type = "dossier.rejected"

    outcome: Literal["rejected"] = "rejected"
    reason: str | None = Field(
        description="Stable code (e.g. missing_quotient_familial, foreign_recipient, review_rejected)"
    )


class QfUpdated(BusEvent):
    """A family's quotient familial was stored (from a dossier, a review or the monthly refresh)."""

    detail_type = "qf.updated"
    omitted_when_none = frozenset({"previous_quotient_familial"})

    tenant_siret: Siret
    user_id: UserId
    quotient_familial: int = Field(ge=0)
    fournisseur: Literal["CNAF", "MSA"]
    annee: int = Field(ge=2000, le=2100)
    mois: int = Field(ge=1, le=12)
    source: Literal["dossier", "refresh", "review"]
    received_at: DateTime
    previous_quotient_familial: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None, description="The value before this update, when there was one"
    )


def qf_updated(siret: str, user_id: str, entry: QfEntry, previous: int | None = None) -> QfUpdated:
    """The ``qf.updated`` event of a QF entry stored for a family (``previous``: the value it replaced)."""
    qf = entry.quotient_familial
    return QfUpdated(
        tenant_siret=siret,
        user_id=user_id,
        quotient_familial=qf.valeur,
        fournisseur=qf.fournisseur,
        annee=qf.annee,
        mois=qf.mois,
        source=entry.source,
        received_at=entry.received_at,
        previous_quotient_familial=previous,
    )


class RefreshFailed(BusEvent):
    """A QF refresh failed for good (retries exhausted, identity rejected, family not found repeatedly),
    or a tenant's refreshes are forbidden (user_id null)."""

    detail_type = "refresh.failed"
    omitted_when_none = frozenset({"attempts", "detail_code"})

    tenant_siret: Siret
    user_id: UserId | None
    outcome: str = Field(
        min_length=1,
        description="Refresh outcome code (not_found, identity_rejected, forbidden, throttled, …)",
    )
    attempts: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    detail_code: str | SkipJsonSchema[None] = None


class TenantTokenExpiring(BusEvent):
    """The tenant's API Particulier token expires within a threshold (90, 60, 30 or 15 days)."""

    detail_type = "tenant.token_expiring"

    tenant_siret: Siret
    expires_on: Date
    days_left: int
    threshold: Literal[90, 60, 30, 15]


class TenantTokenExpired(BusEvent):
    """The tenant's API Particulier token expired: its refreshes stop until a later expiry date is
    set (PUT /v1/tenants/{siret})."""

    detail_type = "tenant.token_expired"

    tenant_siret: Siret
    expires_on: Date | None
    detected_by: Literal["token_watch", "api_particulier_401"]


class TenantHubeeAuthFailed(BusEvent):
    """HubEE refused the tenant's credentials: no dossier arrives until they are replaced (PUT …/credentials)."""

    detail_type = "tenant.hubee_auth_failed"

    tenant_siret: Siret
    error_code: str
    detected_at: DateTime


EVENTS: tuple[type[BusEvent], ...] = (
    DossierLinked,
    DossierNeedsReview,
    DossierRejected,
    QfUpdated,
    RefreshFailed,
    TenantTokenExpiring,
    TenantTokenExpired,
    TenantHubeeAuthFailed,
)
EVENT_TYPES: tuple[str, ...] = tuple(event.detail_type for event in EVENTS)
EVENT_MODELS: dict[str, type[BusEvent]] = {event.detail_type: event for event in EVENTS}


def parse_event(detail_type: str, detail: Any) -> BusEvent:
    """The event of a ``detail-type`` and its detail (``KeyError`` for an unknown type)."""
    return EVENT_MODELS[detail_type].model_validate(detail)


class _DetailSchema(GenerateJsonSchema):
    """JSON Schema the way the event catalogue reads it: no titles nor defaults, a nullable scalar as
    ``"type": [..., "null"]``, a literal as its ``const``/``enum`` alone."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str) and "$ref" not in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        value = super().literal_schema(schema)
        value.pop("type", None)
        return value

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        value = super().default_schema(schema)
        value.pop("default", None)
        return value


def event_schema(event: type[BusEvent]) -> dict[str, Any]:
    """The JSON Schema of an event's detail, as committed in ``docs/events/<detail-type>.schema.json``."""
    name = event.detail_type
    body = event.model_json_schema(schema_generator=_DetailSchema)
    description = " ".join((event.__doc__ or "").split()).rstrip(".")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:qfbridge:event:{name}",
        "title": name,
        "description": (
            f'{description}. EventBridge envelope: source "{SOURCE}", detail-type "{name}"; '
            "this schema describes `detail`. Events carry ids and QF values, never identities."
        ),
        "x-eventbridge": {"source": SOURCE, "detail-type": name},
        "type": "object",
        "properties": body["properties"],
        "required": [field for field in event.model_fields if field not in event.omitted_when_none],
        "additionalProperties": False,
    }
