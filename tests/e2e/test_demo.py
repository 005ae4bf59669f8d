"""`qfbridge demo` tells the whole story, and its --json summary keeps its published shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

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
    # nothing leaks around the summary (Python warnings), and the counts reconcile: each dossier
    # was linked (by external_id, identity or an agent), rejected (by intake or an agent) or waits
    assert not re.search(r"\b\w*Warning: ", done.stderr), done.stderr[-2000:]
    methods, rejected = summary["link_methods"], summary["rejected_by"]
    assert sum(methods.values()) == summary["dossiers"].get("linked", 0)
    assert sum(rejected.values()) == summary["dossiers"].get("rejected", 0)
    assert summary["review_decisions"].get("link", 0) == methods["review"]
    assert summary["review_decisions"].get("reject", 0) == rejected.get("agent", 0)


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


def test_the_demo_summary_reconciles_on_screen(capsys: pytest.CaptureFixture[str]) -> None:
    from collections import Counter

    from qfbridge_local.demo import DemoSummary, Narrator, print_summary

    summary = DemoSummary(
        tenants=3,
        families=36,
        dossiers_deposited=37,
        dossiers=Counter({"linked": 31, "rejected": 6}),
        link_methods=Counter({"external_id": 18, "identity": 12, "review": 1}),
        rejected_by=Counter({"intake": 3, "agent": 3}),
        review_decisions=Counter({"link": 1, "reject": 3}),
        events=Counter({"dossier.needs_review": 4, "qf.updated": 41}),
    )
    with Narrator(quiet=False) as narrator:
        narrator.step("Onboarding the collectivités through the editor API")
        narrator.done()
    print_summary(summary)

    out = capsys.readouterr().out
    assert "demo.py:" not in out  # no source tags on the narration
    rows = {
        " ".join(cells[0].split()): cells[1].strip()
        for line in out.splitlines()
        if (cells := [c for c in line.strip("│┃ ").split("│")]) and len(cells) == 2
    }
    assert rows["rejected by intake"] == "3"
    assert rows["sent to an agent for review"] == "4"
    assert rows["linked by the agent"] == "1" and rows["rejected by the agent"] == "3"
    assert rows["accounted for (each dossier once)"] == "37 of 37"
