"""A review decision taken through the API, finished by reconcile's real ``_finish_review``: HubEE
gets DONE/REFUSED and the events published match the schemas in docs/events/."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from conftest_api import ApiHarness, api, api_runtime, directory_family  # noqa: F401

from qfbridge.hubee import HubeeConfig
from qfbridge.hubee.models import Case
from qfbridge.messages import BusEvent, parse_dossier_message
from qfbridge.services.reconcile import ReconcileService
from qfbridge.store.dossiers import DossierRepository
from qfbridge.store.events import EventPublisher
from qfbridge.store.families import FamilyRepository
from qfbridge.store.links import LinkRepository
from qfbridge.store.secrets import SecretStore
from qfbridge.store.tenants import TenantRepository

EVENTS = Path(__file__).resolve().parents[2] / "docs" / "events"


class RecordingHubee:
    """Stands in for HubEE: the case sits at SI_RECEIVED, status events are recorded."""

    posted: ClassVar[list[str]] = []

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __enter__(self) -> RecordingHubee:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def get_case(self, case_id: str) -> Case:
        return Case(id=case_id, status="SI_RECEIVED")

    def post_status_event(self, case_id: str, current: str, new: str, message: str, *, author: str) -> None:
        RecordingHubee.posted.append(str(getattr(new, "value", new)))


@dataclass
class RecordingBus(EventPublisher):
    """The bus, recording what it was given to publish."""

    published: list[BusEvent] = field(default_factory=list)

    def publish_many(self, events: Sequence[BusEvent]) -> None:
        super().publish_many(events)
        self.published.extend(events)


def finish(api: ApiHarness) -> RecordingBus:
    env = api.runtime.environment
    events = RecordingBus(env["EVENT_BUS_NAME"])
    service = ReconcileService(
        tenants=TenantRepository(env["TENANTS_TABLE"]),
        families=FamilyRepository(env["FAMILIES_TABLE"]),
        dossiers=DossierRepository(env["DOSSIERS_TABLE"]),
        links=LinkRepository(env["FORM_LINKS_TABLE"]),
        secrets=SecretStore(env["TENANT_SECRETS_PREFIX"]),
        events=events,
        audit=None,
        hubee=HubeeConfig(api_url="https://hubee.invalid", token_url="https://hubee.invalid/token"),
        link_signing_secret_id=env["LINK_SIGNING_SECRET_ID"],
        client_factory=RecordingHubee,  # type: ignore[arg-type]
    )
    for message in api.queued("DossiersQueue"):
        service.handle(parse_dossier_message(json.dumps(message)))
    return events


def assert_matches_schema(detail_type: str, detail: dict[str, Any]) -> None:
    schema = json.loads((EVENTS / f"{detail_type}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        json.loads(json.dumps(detail, default=str))
    )


@pytest.mark.parametrize(
    ("body", "status", "types"),
    [
        ({"decision": "link", "user_id": "fam-1"}, "DONE", ["dossier.linked", "qf.updated"]),
        ({"decision": "reject", "reason": "not_our_usager"}, "REFUSED", ["dossier.rejected"]),
    ],
)
def test_review_decision_reaches_hubee_and_publishes_schema_valid_events(
    api: ApiHarness, body: dict[str, Any], status: str, types: list[str]
) -> None:
    siret = api.tenant()
    api.http.put(
        f"/v1/tenants/{siret}/credentials", json={"hubee_client_id": "c", "hubee_client_secret": "s"}
    )
    api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]})
    _, reference, _ = api.seed_dossier(
        siret, candidates=[{"user_id": "fam-1", "score": 0.8, "reasons": ["birth_date"]}]
    )
    api.queued("DossiersQueue")
    RecordingHubee.posted = []

    assert api.http.post(f"/v1/tenants/{siret}/dossiers/{reference}/resolve", json=body).status_code == 200
    events = finish(api)

    assert RecordingHubee.posted == [status]
    assert [event.detail_type for event in events.published] == types
    for event in events.published:
        assert_matches_schema(event.detail_type, event.detail())
