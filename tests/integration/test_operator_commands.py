"""The operator commands, against moto (the laptop runtime's stack) instead of a deployed stack."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qfbridge.store.audit import read_records
from qfbridge_local.cli import main
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime.start(RuntimeOptions()) as rt:
        yield rt


def _api(rt: LocalRuntime) -> list[str]:
    return ["--api-url", rt.api_url, "--agent-id", "ops-test"]


def test_tenants_onboard_from_csv_and_toml_then_list(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    towns = collectivites(3, seed=41)
    soon = (dt.date.today() + dt.timedelta(days=20)).isoformat()
    csv_file = tmp_path / "tenants.csv"
    csv_file.write_text(
        "siret,name,cog,redirect_hosts,token_expires_on,refresh_budget_rps\n"
        f"{towns[0].siret},{towns[0].name},{towns[0].cog},portail.example.fr;www.example.fr,{soon},6\n"
        f"12345678901234,Bad SIRET,75056,,,\n"
    )
    toml_file = tmp_path / "tenants.toml"
    toml_file.write_text(
        f'[[tenants]]\nsiret = "{towns[1].siret}"\nname = "Toml town"\ncog = "{towns[1].cog}"\n'
    )
    assert main(["tenants", "onboard", str(csv_file), *_api(runtime)]) == 1  # one bad row
    out = capsys.readouterr().out
    assert "row 2" in out and "invalid_siret" in out and "1 onboarded, 1 failed" in out
    assert main(["tenants", "onboard", str(toml_file), *_api(runtime)]) == 0
    assert main(["tenants", "list", *_api(runtime)]) == 0
    listing = capsys.readouterr().out
    assert towns[0].siret in listing and towns[1].siret in listing and "awaiting_credentials" in listing
    assert main(["tokens", "report", "--days", "30", *_api(runtime)]) == 0
    report = capsys.readouterr().out
    assert towns[0].siret in report and "alert 30" in report


def test_directory_import_reports_bad_rows_without_their_values(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    town = collectivites(1, seed=43)[0]
    main(["tenants", "onboard", str(_tenant_file(tmp_path, town.siret, town.cog)), *_api(runtime)])
    rows = []
    for household in households(5, seed=3):
        parent = household.family.parents[0]
        rows.append(
            {
                "user_id": household.family.user_id,
                "parent1_nom_naissance": parent.nom_naissance,
                "parent1_prenoms": parent.prenoms,
                "parent1_sexe": parent.sexe,
                "parent1_date_naissance": parent.date_naissance.isoformat(),
                "enfants": ";".join(
                    f"{c.prenoms}|{c.nom}|{c.date_naissance.isoformat()}" for c in household.family.enfants
                ),
            }
        )
    rows[2]["parent1_date_naissance"] = "31/02/1980"  # not a date
    path = tmp_path / "directory.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = tmp_path / "report.csv"
    assert main(["directory", "import", town.siret, str(path), "--report", str(report), *_api(runtime)]) == 1
    assert "4 created, 0 updated, 1 invalid" in capsys.readouterr().out
    lines = list(csv.DictReader(report.open()))
    assert [line["line"] for line in lines] == ["4"]
    assert "31/02/1980" not in report.read_text()


def test_dossiers_review_lists_waiting_dossiers(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    town = collectivites(1, seed=47)[0]
    main(["tenants", "onboard", str(_tenant_file(tmp_path, town.siret, town.cog)), *_api(runtime)])
    table = runtime.client("dynamodb")
    now = dt.datetime.now(dt.UTC).isoformat()
    table.put_item(
        TableName=runtime.environment["DOSSIERS_TABLE"],
        Item={
            "case_id": {"S": "case-review-1"},
            "tenant_siret": {"S": town.siret},
            "received_at": {"S": now},
            "reference": {"S": "0123456789ABC"},
            "outcome": {"S": "needs_review"},
            "tenant_outcome": {"S": f"{town.siret}#needs_review"},
            "steps": {"M": {}},
            "candidates": {"L": []},
        },
    )
    assert main(["dossiers", "review", town.siret, *_api(runtime)]) == 0
    out = capsys.readouterr().out
    assert "0123456789ABC" in out and "1 dossier(s) waiting" in out


def test_dlq_inspect_then_redrive_moves_messages_back(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = runtime.client("sqs")
    dlq, queue = runtime.queue_url("RefreshDeadLetterQueue"), runtime.queue_url("RefreshQueue")
    sqs.send_message(
        QueueUrl=dlq, MessageBody=json.dumps({"siret": "21260079000001", "user_id": "famille-1"})
    )
    group = runtime.environment["AUDIT_LOG_GROUP"]
    urls = ["--dlq-url", dlq, "--queue-url", queue, "--log-group", group]
    assert main(["dlq", "inspect", "refresh", *urls]) == 0
    out = capsys.readouterr().out
    assert "famille-1" in out and "1 message(s)" in out
    assert main(["dlq", "redrive", "refresh", *urls]) == 0
    assert "1 message(s) moved back" in capsys.readouterr().out
    moved = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["user_id"] for m in moved] == ["famille-1"]
    assert sqs.receive_message(QueueUrl=dlq).get("Messages", []) == []
    # Each command left one audit record naming the operator and the queue (and the families shown).
    records = [r for r in read_records(group) if r["action"].startswith("dlq.")]
    assert [(r["action"], r["route"], r["actor"], r.get("user_ids")) for r in records] == [
        ("dlq.inspect", "cli:dlq inspect refresh", "operator", ["famille-1"]),
        ("dlq.redrive", "cli:dlq redrive refresh", "operator", None),
    ]
    assert all(r["principal"].startswith("arn:aws:") for r in records)


def test_audit_query_shows_who_read_a_family(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qfbridge_local.editor_client import EditorApiClient

    town = collectivites(1, seed=53)[0]
    main(["tenants", "onboard", str(_tenant_file(tmp_path, town.siret, town.cog)), *_api(runtime)])
    household = households(1, seed=5)[0]
    with EditorApiClient(runtime.api_url, agent_id="agent-007") as api:
        body = household.family.model_dump(mode="json")
        api.call("PUT", f"/v1/tenants/{town.siret}/families/{body.pop('user_id')}", json_body=body)
        api.call("GET", f"/v1/tenants/{town.siret}/families/{household.family.user_id}")
    code = main(
        [
            "audit",
            "query",
            town.siret,
            "--user-id",
            household.family.user_id,
            "--log-group",
            runtime.environment["AUDIT_LOG_GROUP"],
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "agent-007" in out and "2 record(s)" in out


def _tenant_file(tmp_path: Path, siret: str, cog: str) -> Path:
    path = tmp_path / f"{siret}.toml"
    path.write_text(f'[[tenants]]\nsiret = "{siret}"\nname = "Commune"\ncog = "{cog}"\n')
    return path


def test_directory_reindex_rewrites_a_directory_stored_in_the_former_blocking_layout(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    from qfbridge.store.families import FamilyRepository, blocking_dates, family_pk, family_sk
    from qfbridge.store.tables import to_dynamo

    siret = collectivites(1, seed=47)[0].siret
    table_name = runtime.environment["FAMILIES_TABLE"]
    families = FamilyRepository(table_name)
    family = households(1, seed=47, id_prefix="reindex")[0].family
    # A family item as the former layout left it: no layout attribute, one item per blocking key.
    families._table.put_item(
        Item=to_dynamo(
            {
                "pk": family_pk(siret),
                "sk": family_sk(family.user_id),
                "family": family.model_dump(mode="json"),
                "blocking_dates": sorted(blocking_dates(family)),
            }
        )
    )
    keys = sorted(blocking_dates(family))
    assert families.candidates_on(siret, keys) == []
    assert main(["directory", "reindex", siret, "--table", table_name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"siret": siret, "rewritten": 1}
    assert [c.user_id for c in families.candidates_on(siret, keys)] == [family.user_id]
    assert main(["directory", "reindex", siret, "--table", table_name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewritten"] == 0
