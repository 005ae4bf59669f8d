"""`qfbridge demo` tells the whole story, and its --json summary keeps its published shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

SCHEMA = Path(__file__).resolve().parents[2] / "local/qfbridge_local/schemas/demo-summary.schema.json"


def test_the_demo_exits_0_and_every_dossier_has_an_outcome() -> None:
    # When the demo runs as an editor would run it, in a fresh process
    done = subprocess.run(
        [sys.executable, "-m", "qfbridge_local.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Then it succeeds and stdout is exactly the JSON summary, valid against the schema in the repo
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    jsonschema.validate(summary, json.loads(SCHEMA.read_text()))
    # every deposited dossier has exactly one outcome, and none is left waiting
    assert sum(summary["dossiers"].values()) == summary["dossiers_deposited"] > 0
    assert summary["dossiers"].get("received", 0) == 0
    # the three reconciliation paths were exercised
    assert {"external_id", "identity", "review"} <= set(summary["link_methods"])
    # HubEE calls stay within the protocol's budget; a monthly refresh ran and changed some QFs
    assert 0 < summary["hubee_calls_per_new_dossier"] <= 5
    assert summary["refresh"].get("qf_found", 0) > 0 and summary["qf_changed"] > 0
    assert summary["events"]["tenant.token_expiring"] >= 1
    assert summary["events"]["dossier.rejected"] >= 1
    assert summary["audit_records"] > 0


def test_the_demo_summary_schema_rejects_an_unknown_outcome() -> None:
    schema = json.loads(SCHEMA.read_text())
    bad = {
        "tenants": 1,
        "families": 0,
        "dossiers_deposited": 1,
        "dossiers": {"lost": 1},
        "hubee_calls": 0,
        "hubee_calls_per_new_dossier": 0,
        "api_particulier_calls": 0,
        "refresh": {},
        "events": {},
        "audit_records": 0,
    }
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        return
    raise AssertionError("an unknown outcome must not validate")
