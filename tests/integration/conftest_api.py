"""Fixtures of the editor API tests: the laptop runtime serving the api function over HTTP.

Import explicitly (``from conftest_api import api, api_runtime``): one runtime per test module
(moto provisioned from infra/template.yaml), a fresh tenant per test (unique SIRETs), so tests
stay independent without paying a runtime start each.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qfbridge.domain.dossier import parse_formulaire_qf_json
from qfbridge.domain.siret import complete_siret
from qfbridge.services.linking import dossier_snapshot
from qfbridge.store.audit import read_records
from qfbridge.store.dossiers import DossierPatch, DossierRepository, Step
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

REPO = Path(__file__).resolve().parents[2]
DOSSIER_JSON = REPO / "tests" / "data" / "dossiers" / "FormulaireQF.json"
ACCESS_KEY = "AKIDEXAMPLE"
AUTHORIZATION = (
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260601/eu-west-3/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
PRINCIPAL = "arn:aws:iam::123456789012:user/editor-akidexample"

_sirets = itertools.count(1)
_references = itertools.count(0xA000000000000)


def next_siret() -> str:
    return complete_siret(f"2104{next(_sirets):09d}")


def next_reference() -> str:
    return f"{next(_references):013X}"


def directory_family(
    user_id: str, *, nom: str = "DURAND", prenoms: str = "CAMILLE", date_naissance: str = "1985-02-03"
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "parents": [
            {"nom_naissance": nom, "prenoms": prenoms, "sexe": "F", "date_naissance": date_naissance}
        ],
        "enfants": [{"nom": nom, "prenoms": "LOUIS", "date_naissance": "2016-09-01"}],
    }


@dataclass
class ApiHarness:
    runtime: LocalRuntime
    http: httpx.Client

    @property
    def audit_group(self) -> str:
        return self.runtime.environment["AUDIT_LOG_GROUP"]

    def tenant(self, **body: Any) -> str:
        """Register a fresh tenant; returns its SIRET."""
        siret = next_siret()
        payload = {
            "name": "Commune de Test",
            "cog": "04107",
            "redirect_hosts": ["www.commune.example"],
        } | body
        response = self.http.put(f"/v1/tenants/{siret}", json=payload)
        assert response.status_code == 201, response.text
        return siret

    def seed_dossier(
        self,
        siret: str,
        *,
        outcome: str = "needs_review",
        user_id: str | None = None,
        candidates: list[dict[str, Any]] | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        """A dossier as reconcile leaves it (parsed snapshot kept): returns (case_id, reference, snapshot)."""
        repository = DossierRepository(self.runtime.environment["DOSSIERS_TABLE"])
        reference = next_reference()
        case_id = f"case-{reference.lower()}"
        now = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
        repository.start(case_id, siret, f"notif-{reference}", now, lease_seconds=0)
        snapshot = dossier_snapshot(parse_formulaire_qf_json(DOSSIER_JSON.read_bytes()))
        patch = DossierPatch(
            tenant_siret=siret,
            reference=reference,
            parsed=snapshot,
            outcome=outcome,
            candidates=candidates or [],
            external_id_status="absent",
        )
        if user_id is not None:
            patch = patch.merged(DossierPatch(user_id=user_id, link_method="identity"))
        repository.mark(case_id, Step.PERSISTED, now, patch)
        return case_id, reference, snapshot

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        return read_records(self.audit_group, **filters)

    def queued(self, queue_logical_id: str) -> list[dict[str, Any]]:
        """Drain the messages waiting on a queue (bodies, parsed)."""
        sqs = self.runtime.client("sqs")
        url = self.runtime.queue_url(queue_logical_id)
        bodies: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def api_runtime() -> Iterator[LocalRuntime]:
    # The runtime enforces API Gateway's 29 s integration timeout; moto on a loaded laptop is far
    # slower than DynamoDB, so the clock runs at a quarter speed (every timer four times longer).
    runtime = LocalRuntime.start(
        RuntimeOptions(env_overrides={"DOSSIER_LEASE_SECONDS": "0"}, clock_speed=0.25)
    )
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def api(api_runtime: LocalRuntime) -> Iterator[ApiHarness]:
    with httpx.Client(
        base_url=api_runtime.api_url, headers={"Authorization": AUTHORIZATION}, timeout=30
    ) as http:
        yield ApiHarness(runtime=api_runtime, http=http)
