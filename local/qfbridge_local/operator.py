"""Operator commands against a deployed stack (boto3, the standard AWS profile and region).

They print identifiers, statuses and counts — never identities, QF values or secrets.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console
from rich.table import Table

from .editor_client import ApiError, EditorApiClient

console = Console(width=None if sys.stdout.isatty() else 200)  # full tables in files and pipes
BATCH_SIZE = 500


@cache
def stack_outputs(stack_name: str) -> dict[str, str]:
    response = boto3.client("cloudformation").describe_stacks(StackName=stack_name)
    return {o["OutputKey"]: o["OutputValue"] for o in response["Stacks"][0].get("Outputs", [])}


def _output(args: argparse.Namespace, explicit: str | None, key: str) -> str:
    return explicit or stack_outputs(args.stack_name)[key]


def api_client(args: argparse.Namespace) -> EditorApiClient:
    url = _output(args, getattr(args, "api_url", None), "ApiUrl")
    session = boto3.session.Session()
    credentials = session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials else None
    from botocore.credentials import Credentials

    return EditorApiClient(
        url,
        credentials=(
            Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token) if frozen else None
        ),
        region=session.region_name or "eu-west-3",
        agent_id=getattr(args, "agent_id", None),
    )


# ---------------------------------------------------------------------- tenants
def _tenant_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".toml":
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return [dict(row) for row in document.get("tenants", [])]
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            entry: dict[str, Any] = {k: v.strip() for k, v in row.items() if v is not None and v.strip()}
            if "redirect_hosts" in entry:
                entry["redirect_hosts"] = [h for h in entry["redirect_hosts"].replace(";", " ").split() if h]
            if "refresh_budget_rps" in entry:
                entry["refresh_budget_rps"] = float(entry["refresh_budget_rps"])
            rows.append(entry)
    return rows


def tenants_onboard(args: argparse.Namespace) -> int:
    rows = _tenant_rows(Path(args.file))
    failures = 0
    with api_client(args) as api:
        for number, row in enumerate(rows, start=1):
            siret = str(row.pop("siret", ""))
            row = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}
            try:
                api.call("PUT", f"/v1/tenants/{siret}", json_body=row)
                console.print(f"[green]ok[/green]   row {number}: {siret}")
            except ApiError as exc:
                failures += 1
                code = exc.body.get("code") if isinstance(exc.body, dict) else exc.status
                console.print(f"[red]fail[/red] row {number}: {siret or '(no siret)'} — {code}")
    console.print(f"{len(rows) - failures} onboarded, {failures} failed")
    return 1 if failures else 0


def _all_tenants(api: EditorApiClient) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = api.call("GET", "/v1/tenants", params={"cursor": cursor})
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _days_left(tenant: dict[str, Any], today: dt.date) -> int | None:
    expiry = tenant.get("token_expires_on")
    return (dt.date.fromisoformat(expiry) - today).days if expiry else None


def tenants_list(args: argparse.Namespace) -> int:
    today = dt.date.today()
    table = Table(title="Collectivités")
    for column in ("SIRET", "name", "status", "token expires", "days left", "budget (req/s)"):
        table.add_column(column)
    with api_client(args) as api:
        for tenant in _all_tenants(api):
            left = _days_left(tenant, today)
            table.add_row(
                tenant["siret"],
                tenant["name"],
                tenant["status"],
                str(tenant.get("token_expires_on") or "-"),
                "-" if left is None else str(left),
                str(tenant.get("refresh_budget_rps")),
            )
    console.print(table)
    return 0


def tokens_report(args: argparse.Namespace) -> int:
    today = dt.date.today()
    rows = []
    with api_client(args) as api:
        for tenant in _all_tenants(api):
            left = _days_left(tenant, today)
            if left is None or left <= args.days:
                rows.append((left, tenant))
    rows.sort(key=lambda r: (r[0] is not None, r[0] if r[0] is not None else 0))
    table = Table(title=f"API Particulier tokens expiring within {args.days} days (or unknown)")
    for column in ("SIRET", "name", "expires on", "days left", "status"):
        table.add_column(column)
    for left, tenant in rows:
        state = (
            "unknown expiry"
            if left is None
            else "EXPIRED"
            if left <= 0
            else f"alert {min(t for t in (90, 60, 30, 15) if left <= t) if left <= 90 else '-'}"
        )
        table.add_row(
            tenant["siret"],
            tenant["name"],
            str(tenant.get("token_expires_on") or "-"),
            "-" if left is None else str(left),
            state,
        )
    console.print(table)
    return 0


# ---------------------------------------------------------------------- directory
def family_from_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row → the API's family body. Columns: user_id, then parent1_* and parent2_* (nom_naissance,
    nom_usage, prenoms, sexe, date_naissance, code_cog_naissance, code_pays_naissance), and ``enfants``
    as ``prenoms|nom|YYYY-MM-DD`` items separated by ``;``."""
    parents = []
    for n in (1, 2):
        prefix = f"parent{n}_"
        fields = {
            k[len(prefix) :]: v.strip() for k, v in row.items() if k.startswith(prefix) and v and v.strip()
        }
        if fields:
            parents.append(fields)
    enfants = []
    for item in (row.get("enfants") or "").split(";"):
        if item.strip():
            prenoms, _, rest = item.partition("|")
            nom, _, date = rest.partition("|")
            enfants.append({"prenoms": prenoms.strip(), "nom": nom.strip(), "date_naissance": date.strip()})
    return {"user_id": (row.get("user_id") or "").strip(), "parents": parents, "enfants": enfants}


def directory_import(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    with Path(args.file).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    families = [family_from_row(row) for row in rows]
    errors: list[dict[str, Any]] = []
    created = updated = 0
    with api_client(args) as api, Progress(console=console) as progress:
        task = progress.add_task("importing families", total=len(families))
        for start in range(0, len(families), BATCH_SIZE):
            chunk = families[start : start + BATCH_SIZE]
            result = api.call(
                "POST", f"/v1/tenants/{args.siret}/families:batch", json_body={"families": chunk}
            )
            created += result["created"]
            updated += result["updated"]
            for row in result["results"]:
                if row["status"] == "invalid":
                    errors.append(
                        {
                            "line": start + row["index"] + 2,  # header is line 1
                            "user_id": row.get("user_id") or "",
                            "code": row.get("code") or "invalid",
                            "fields": " ".join(
                                ".".join(str(p) for p in e["loc"]) for e in row.get("errors", [])
                            ),
                        }
                    )
            progress.advance(task, len(chunk))
    console.print(f"{created} created, {updated} updated, {len(errors)} invalid")
    if errors:
        out = open(args.report, "w", newline="", encoding="utf-8") if args.report else sys.stdout  # noqa: SIM115
        writer = csv.DictWriter(out, fieldnames=["line", "user_id", "code", "fields"])
        writer.writeheader()
        writer.writerows(errors)
        if out is not sys.stdout:
            out.close()
    return 1 if errors else 0


# ---------------------------------------------------------------------- dossiers
def dossiers_review(args: argparse.Namespace) -> int:
    table = Table(title=f"Dossiers waiting for review — {args.siret}")
    for column in ("reference", "received", "candidates", "external_id"):
        table.add_column(column)
    count = 0
    with api_client(args) as api:
        cursor = None
        while True:
            page = api.call(
                "GET",
                f"/v1/tenants/{args.siret}/dossiers",
                params={"status": "needs_review", "cursor": cursor},
            )
            for item in page["items"]:
                count += 1
                table.add_row(
                    str(item["reference"]),
                    item["received_at"][:16],
                    str(item["candidates"]),
                    str(item.get("external_id_status") or "-"),
                )
            cursor = page.get("next_cursor")
            if not cursor:
                break
    console.print(table)
    console.print(f"{count} dossier(s) waiting")
    return 0


# ---------------------------------------------------------------------- DLQs
_QUEUE_OUTPUTS = {
    "dossiers": ("DossiersQueueUrl", "DossiersDeadLetterQueueUrl"),
    "refresh": ("RefreshQueueUrl", "RefreshDeadLetterQueueUrl"),
}


def _dlq_messages(sqs: Any, url: str, limit: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < limit:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(messages)),
            AttributeNames=["All"],
            VisibilityTimeout=30,
        ).get("Messages", [])
        if not batch:
            break
        messages.extend(batch)
    return messages


def describe_message(body: str) -> dict[str, Any]:
    """Technical identifiers of a queued message (the bodies carry ids only, never identities)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {"kind": "unreadable"}
    notification = data.get("notification") or {}
    return {
        "kind": data.get("kind") or ("refresh" if "user_id" in data else "unknown"),
        "tenant": data.get("siret")
        or (notification.get("recipient") or {}).get("companyRegister")
        or data.get("credential_holder"),
        "case_id": notification.get("caseId") or data.get("case_id"),
        "user_id": data.get("user_id"),
    }


def dlq_inspect(args: argparse.Namespace) -> int:
    sqs = boto3.client("sqs")
    dlq_url = args.dlq_url or stack_outputs(args.stack_name)[_QUEUE_OUTPUTS[args.queue][1]]
    messages = _dlq_messages(sqs, dlq_url, args.max)
    table = Table(title=f"{args.queue} DLQ")
    for column in ("message id", "received", "kind", "tenant", "case / user"):
        table.add_column(column)
    for message in messages:
        info = describe_message(message["Body"])
        table.add_row(
            message["MessageId"],
            message["Attributes"].get("ApproximateReceiveCount", "?"),
            str(info["kind"]),
            str(info["tenant"] or "-"),
            str(info["case_id"] or info["user_id"] or "-"),
        )
        # Inspection must not hide the message: make it visible again at once.
        sqs.change_message_visibility(
            QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    console.print(table)
    console.print(f"{len(messages)} message(s)")
    return 0


def dlq_redrive(args: argparse.Namespace) -> int:
    sqs = boto3.client("sqs")
    source_key, dlq_key = _QUEUE_OUTPUTS[args.queue]
    dlq_url = args.dlq_url or stack_outputs(args.stack_name)[dlq_key]
    queue_url = args.queue_url or stack_outputs(args.stack_name)[source_key]
    moved = 0
    for message in _dlq_messages(sqs, dlq_url, args.max):
        sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        moved += 1
    console.print(f"{moved} message(s) moved back to the {args.queue} queue")
    return 0


# ---------------------------------------------------------------------- audit
def audit_query(args: argparse.Namespace) -> int:
    from qfbridge.store.audit import read_records

    group = args.log_group or stack_outputs(args.stack_name)["AuditLogGroupName"]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.since_days)
    records = read_records(
        group, tenant_siret=args.siret, user_id=args.user_id, reference=args.reference, start=since
    )
    table = Table(title=f"Audit trail — {args.siret}" + (f" / {args.user_id}" if args.user_id else ""))
    for column in ("time", "principal", "agent", "route", "action", "target", "outcome"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r["time"],
            r["principal"],
            r.get("agent_id") or "-",
            r["route"],
            r["action"],
            r.get("user_id") or r.get("reference") or "-",
            r["outcome"],
        )
    console.print(table)
    console.print(f"{len(records)} record(s)")
    return 0


# ---------------------------------------------------------------------- OpenAPI
def openapi(path: str | None, markdown: str | None = None) -> int:
    from qfbridge.api.__main__ import render

    from .apidoc import render_markdown

    text = render()
    document = json.loads(text)  # render what is committed, in its key order
    if path:
        Path(path).write_text(text, encoding="utf-8")
    elif not markdown:
        sys.stdout.write(text)
    if markdown:
        Path(markdown).write_text(render_markdown(document), encoding="utf-8")
    return 0


def event_catalogue(schemas_dir: str, path: str) -> int:
    from .apidoc import (
        ENVELOPE_SCHEMA_PATH,
        WEBHOOKS_SECTION_PATH,
        load_event_schemas,
        render_envelope_schema,
        render_event_catalogue,
    )

    schemas = load_event_schemas(schemas_dir)
    envelope = Path(schemas_dir) / ENVELOPE_SCHEMA_PATH
    envelope.parent.mkdir(parents=True, exist_ok=True)
    envelope.write_text(render_envelope_schema(schemas), encoding="utf-8")
    webhooks = (Path(schemas_dir) / WEBHOOKS_SECTION_PATH).read_text(encoding="utf-8")
    Path(path).write_text(render_event_catalogue(schemas, webhooks), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------- webhooks
def webhook_test(args: argparse.Namespace) -> int:
    """One sample event of each type to the local webhook, through the template's transformer."""
    from .webhooks import local_rules, send_samples

    url, api_key = args.url, args.api_key
    if args.config:
        from .serve import ServeConfig

        section = ServeConfig.load(args.config).webhook
        url = url or section.url
        api_key = api_key or section.api_key
    if not url:
        console.print("[red]no webhook URL: give --url or a configuration with [webhook] url[/red]")
        return 2
    rules, headers = local_rules(url, api_key or "local-webhook-key")
    table = Table(title=f"Webhook test — {url}")
    for column in ("event", "envelope id", "outcome", "attempts", "last answer"):
        table.add_column(column)
    failed = 0
    for result in send_samples(rules, url, headers, max_seconds=args.max_seconds):
        failed += result.outcome != "delivered"
        table.add_row(
            result.detail_type, result.envelope_id, result.outcome, str(result.attempts), result.last
        )
    console.print(table)
    return 0 if failed == 0 else 1


def webhook_replay(args: argparse.Namespace) -> int:
    """Deliver the webhook DLQ's events again, with their original ids."""
    from .webhooks import deployed_headers, deployed_rules, replay_dead_letters

    cloudformation = boto3.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=args.stack_name)["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    rules, url = deployed_rules(parameters)
    secrets = boto3.client("secretsmanager")
    headers = deployed_headers(parameters, lambda sid: secrets.get_secret_value(SecretId=sid)["SecretString"])
    dlq_url = args.dlq_url or outputs["WebhookDeadLetterQueueUrl"]
    report = replay_dead_letters(boto3.client("sqs"), dlq_url, rules, url, headers, limit=args.max)
    for error in report.errors:
        console.print(f"kept: {error}")
    console.print(f"{report.replayed} event(s) delivered again, {report.kept} kept in the webhook DLQ")
    return 0 if report.kept == 0 else 1
