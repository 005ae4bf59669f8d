"""``qfbridge demo``: the whole story on the laptop runtime, with the HubEE and API Particulier sandboxes.

1. Collectivités are onboarded through the editor API (two of them share one HubEE credential,
   as an editor's delegated access allows), and their directories are imported.
2. Form links are issued; parents "fill the form": the HubEE sandbox receives their dossiers —
   with a signed external_id, without one (public list, QR code at the counter), twins' parents
   that only an agent can tell apart, a stranger, and one whose JSON was damaged (read from its XML).
3. hubee_poll and reconcile run; the form's CLOSED events are acknowledged at the next poll.
4. An agent resolves the dossiers waiting for review through the API.
5. One month later, the monthly refresh runs against API Particulier; some QFs changed.
6. token_watch runs: one collectivité's token expires in less than 30 days.

Everything the summary prints is counted from the sandboxes, the API and the event bus.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import sys
import warnings
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from qfbridge.domain.identity import PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.audit import read_records
from qfbridge.store.families import FamilyRepository

from .editor_client import EditorApiClient
from .population import Collectivite, Household, collectivites, households
from .runtime import LocalRuntime, RuntimeOptions
from .sandboxes.api_particulier import ApiParticulierSandbox
from .sandboxes.hubee import HubeeSandbox
from .webhooks import WebhookSettings

EVENTS_QUEUE = "qfbridge-demo-events"


@dataclass
class DemoSummary:
    tenants: int = 0
    families: int = 0
    dossiers_deposited: int = 0
    dossiers: Counter[str] = field(default_factory=Counter)
    link_methods: Counter[str] = field(default_factory=Counter)
    refresh: Counter[str] = field(default_factory=Counter)
    qf_changed: int = 0
    events: Counter[str] = field(default_factory=Counter)
    hubee_calls: int = 0
    hubee_token_calls: int = 0
    hubee_new_dossier_calls: int = 0  # calls on the new dossiers' cases during their intake
    api_particulier_calls: int = 0
    audit_records: int = 0
    token_alerts: list[dict[str, Any]] = field(default_factory=list)
    rejected_by: Counter[str] = field(default_factory=Counter)  # "intake" | "agent"
    review_decisions: Counter[str] = field(default_factory=Counter)  # "link" | "reject"
    event_types_by_id: dict[str, str] = field(default_factory=dict)  # every bus event (not printed)

    def as_json(self) -> dict[str, Any]:
        per_dossier = (
            self.hubee_new_dossier_calls / self.dossiers_deposited if self.dossiers_deposited else 0.0
        )
        return {
            "tenants": self.tenants,
            "families": self.families,
            "dossiers_deposited": self.dossiers_deposited,
            "dossiers": dict(sorted(self.dossiers.items())),
            "link_methods": dict(sorted(self.link_methods.items())),
            "hubee_calls": self.hubee_calls,
            "hubee_token_calls": self.hubee_token_calls,
            "hubee_calls_per_new_dossier": round(per_dossier, 3),
            "api_particulier_calls": self.api_particulier_calls,
            "refresh": dict(sorted(self.refresh.items())),
            "qf_changed": self.qf_changed,
            "events": dict(sorted(self.events.items())),
            "audit_records": self.audit_records,
            "token_alerts": self.token_alerts,
            "rejected_by": dict(sorted(self.rejected_by.items())),
            "review_decisions": dict(sorted(self.review_decisions.items())),
        }


class Narrator:
    """Prints the story: a rich progress display on a terminal, plain lines otherwise, nothing in --json."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Narrator:
        if not self.quiet:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("qfbridge demo", total=len(STEPS))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def step(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)
            self._progress.console.print(f"• {text}")

    def done(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


STEPS = ["onboard", "links", "deposits", "intake", "review", "refresh", "token_watch", "summary"]


def _capture_events(rt: LocalRuntime) -> str:
    """An EventBridge rule sending every qfbridge event to a queue, as an editor's subscription would."""
    sqs, events = rt.client("sqs"), rt.client("events")
    url = sqs.create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = rt.environment["EVENT_BUS_NAME"]
    events.put_rule(Name="demo-all", EventBusName=bus, EventPattern=json.dumps({"source": ["qfbridge"]}))
    events.put_targets(Rule="demo-all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return str(url)


def _drain_events(rt: LocalRuntime, url: str) -> list[dict[str, Any]]:
    sqs = rt.client("sqs")
    received: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return received
        for message in batch:
            received.append(json.loads(message["Body"]))
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )


def _pivot(household: Household, parent: int = 0) -> PivotIdentity:
    return PivotIdentity.model_validate(household.formulaire(parent=parent)["pivot_identity"])


def run_demo(
    *,
    quiet: bool = False,
    seed: int = 2026,
    tenants: int = 3,
    families_per_tenant: int = 12,
    webhook: WebhookSettings | None = None,
    webhook_wait_seconds: float = 120.0,
) -> DemoSummary:
    summary = DemoSummary()
    rng = random.Random(seed)
    today = dt.date.today()
    with ExitStack() as stack, Narrator(quiet=quiet) as narrator:
        hubee = stack.enter_context(HubeeSandbox(seed=seed))
        particulier = stack.enter_context(ApiParticulierSandbox(seed=seed))
        rt = stack.enter_context(
            LocalRuntime.start(
                RuntimeOptions(
                    env_overrides={
                        "POWERTOOLS_LOG_LEVEL": os.environ.get("QFBRIDGE_DEMO_LOG_LEVEL", "WARNING"),
                        "HUBEE_API_URL": hubee.api_url,
                        "HUBEE_TOKEN_URL": hubee.token_url,
                        "API_PARTICULIER_URL": particulier.url,
                        "DOSSIER_LEASE_SECONDS": "30",
                        "REFRESH_RETRY_BASE_SECONDS": "1",
                        "FORM_LINK_TTL_DAYS": "60",
                    },
                    webhook=webhook,
                )
            )
        )
        events_url = _capture_events(rt)
        api = stack.enter_context(EditorApiClient(rt.api_url, agent_id="demo-agent"))

        # 1. Onboarding -------------------------------------------------------------------------
        narrator.step("Onboarding the collectivités through the editor API")
        towns = collectivites(tenants, seed=seed)
        directory: dict[str, list[Household]] = {}
        for index, town in enumerate(towns):
            expiry = today + dt.timedelta(days=25 if index == 0 else 400)
            api.call(
                "PUT",
                f"/v1/tenants/{town.siret}",
                json_body={
                    "name": town.name,
                    "cog": town.cog,
                    "redirect_hosts": ["portail.example-editeur.fr"],
                    "token_expires_on": expiry.isoformat(),
                    "refresh_budget_rps": 4 + index,
                },
            )
            # The last two collectivités share one HubEE credential (an editor's delegated access).
            client_id = f"demo-{min(index, tenants - 2) if tenants > 1 else 0}"
            token = f"demo-token-{index}"
            api.call(
                "PUT",
                f"/v1/tenants/{town.siret}/credentials",
                json_body={
                    "hubee_client_id": client_id,
                    "hubee_client_secret": f"secret-{client_id}",
                    "api_particulier_token": token,
                },
            )
            hubee.add_subscription(client_id, f"secret-{client_id}", [(town.siret, town.cog)])
            particulier.add_token(token, {town.siret})
            families = households(families_per_tenant, seed=seed + index, id_prefix=f"t{index}-famille")
            directory[town.siret] = families
            api.call(
                "POST",
                f"/v1/tenants/{town.siret}/families:batch",
                json_body={
                    "families": [h.family.model_dump(mode="json") for h in families],
                },
            )
            summary.families += len(families)
        summary.tenants = len(towns)
        narrator.done()

        # 2. Form links ---------------------------------------------------------------------------
        narrator.step("Issuing signed form links and QR codes")
        links: dict[str, str] = {}
        for town in towns:
            for household in directory[town.siret][: families_per_tenant // 2]:
                issued = api.call(
                    "POST",
                    f"/v1/tenants/{town.siret}/form-links",
                    json_body={
                        "user_id": household.family.user_id,
                        "redirect_uri": "https://portail.example-editeur.fr/famille/quotient",
                    },
                )
                links[household.family.user_id] = issued["external_id"]
        narrator.done()

        # 3. Parents fill the form ----------------------------------------------------------------
        narrator.step("Parents confirm their QF on the form (HubEE sandbox deposits)")
        deposited: list[tuple[Collectivite, Household]] = []
        case_ids: list[str] = []
        sandbox_ids: dict[str, str] = {}  # user id → the API Particulier sandbox's household id
        for town in towns:
            families = directory[town.siret]
            for i, household in enumerate(families):
                if i < families_per_tenant // 2:  # came through the editor's portal: signed external_id
                    form = household.formulaire(external_id=links[household.family.user_id])
                elif i < families_per_tenant - 2:  # came from the public list or the counter's QR code
                    form = household.formulaire(parent=len(household.family.parents) - 1)
                else:
                    continue
                case_ids.append(hubee.deposit_formulaire_qf(town.siret, town.cog, form).case_id)
                deposited.append((town, household))
                sandbox_ids[household.family.user_id] = particulier.add_household(
                    [_pivot(household, p) for p in range(len(household.family.parents))], household.qf
                )
            # A parent the directory does not know yet: an agent will have to look.
            stranger = households(1, seed=seed * 7 + len(deposited), id_prefix="inconnu")[0]
            case_ids.append(hubee.deposit_formulaire_qf(town.siret, town.cog, stranger.formulaire()).case_id)
            # A dossier whose JSON was damaged on the way: intake reads its XML twin, nothing is lost.
            case_ids.append(
                hubee.deposit_formulaire_qf(
                    town.siret,
                    town.cog,
                    stranger.formulaire(),
                    json_bytes=b'{"pivot_identity": {"family_name": ',
                ).case_id
            )
            summary.dossiers_deposited += 2
        summary.dossiers_deposited += len(deposited)
        # Twins' parents: two directory families with the same parent identity; only an agent can choose.
        twin_town = towns[-1]
        twin = directory[twin_town.siret][-1]
        copy = twin.family.model_copy(update={"user_id": f"{twin.family.user_id}-bis"})
        api.call(
            "PUT",
            f"/v1/tenants/{twin_town.siret}/families/{copy.user_id}",
            json_body={"parents": [p.model_dump(mode="json") for p in copy.parents], "enfants": []},
        )
        case_ids.append(
            hubee.deposit_formulaire_qf(twin_town.siret, twin_town.cog, twin.formulaire()).case_id
        )
        particulier.add_household([_pivot(twin)], twin.qf)
        summary.dossiers_deposited += 1
        narrator.done()

        # 4. Intake --------------------------------------------------------------------------------
        narrator.step("Polling HubEE and reconciling the dossiers")
        hubee.reset_counters()
        rt.poll()
        rt.drain()
        # Calls made for the new dossiers by their first intake: on their cases, plus the DELETE of
        # their notifications (the polls' listings and the token requests excluded).
        deletes = sum(count for (method, _route), count in hubee.calls.items() if method == "DELETE")
        summary.hubee_new_dossier_calls = (
            sum(sum(hubee.calls_by_case(c).values()) for c in case_ids) + deletes
        )
        rt.poll()  # the form closed the DONE cases: acknowledge their CLOSED events
        rt.drain()
        narrator.done()

        # 5. Review --------------------------------------------------------------------------------
        narrator.step("An agent resolves the dossiers waiting for review")
        for town in towns:
            waiting = api.call("GET", f"/v1/tenants/{town.siret}/dossiers", params={"status": "needs_review"})
            for item in waiting["items"]:
                detail = api.call("GET", f"/v1/tenants/{town.siret}/dossiers/{item['reference']}")
                candidates = detail.get("candidate_families") or []
                if candidates:
                    decision = {"decision": "link", "user_id": candidates[0]["user_id"]}
                else:
                    decision = {"decision": "reject", "reason": "unknown_family"}
                api.call(
                    "POST",
                    f"/v1/tenants/{town.siret}/dossiers/{item['reference']}/resolve",
                    json_body=decision,
                )
                summary.review_decisions[decision["decision"]] += 1
        rt.drain()
        rt.poll()
        rt.drain()
        narrator.done()

        # 6. One month later: the monthly refresh ---------------------------------------------------
        narrator.step("One month later: the monthly refresh from API Particulier")
        month = dt.datetime.now(dt.UTC)  # the month the sandbox answers for (CAF recomputed some QFs)
        for _town, household in deposited:
            if rng.random() < 0.4:
                new_value = max(0, household.qf.valeur + rng.choice([-120, -60, 80, 150]))
                hid = sandbox_ids.get(household.family.user_id)
                if hid is not None:
                    particulier.set_qf(
                        hid,
                        QuotientFamilial(
                            fournisseur=household.qf.fournisseur,
                            valeur=new_value,
                            annee=month.year,
                            mois=month.month,
                            annee_calcul=month.year,
                            mois_calcul=month.month,
                        ),
                    )
        fast_forward_due_dates(rt)
        rt.poll()
        rt.drain()
        narrator.done()

        # 7. Token watch -------------------------------------------------------------------------
        narrator.step("Watching API Particulier token expiry dates")
        rt.token_watch()
        narrator.done()

        # 8. Summary ----------------------------------------------------------------------------
        narrator.step("Counting what happened")
        for town in towns:
            cursor = None
            while True:
                page = api.call(
                    "GET", f"/v1/tenants/{town.siret}/dossiers", params={"cursor": cursor, "limit": 100}
                )
                for item in page["items"]:
                    summary.dossiers[item["status"]] += 1
                    if item["status"] == "linked" and item.get("link_method"):
                        summary.link_methods[item["link_method"]] += 1
                    if item["status"] == "rejected":
                        # An agent's decision names who took it (and needs the reference to be taken);
                        # intake's rejections have no such name.
                        detail = (
                            api.call("GET", f"/v1/tenants/{town.siret}/dossiers/{item['reference']}")
                            if item["reference"]
                            else {}
                        )
                        summary.rejected_by["agent" if detail.get("resolved_by") else "intake"] += 1
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        if rt.webhooks is not None:
            rt.webhooks.wait_idle(timeout=webhook_wait_seconds)
        for event in _drain_events(rt, events_url):
            summary.events[event["detail-type"]] += 1
            summary.event_types_by_id[event["id"]] = event["detail-type"]
            if event["detail-type"] == "tenant.token_expiring":
                summary.token_alerts.append(
                    {k: event["detail"][k] for k in ("tenant_siret", "days_left", "threshold")}
                )
        families_repo = FamilyRepository(rt.environment["FAMILIES_TABLE"])
        for town in towns:
            for household in directory[town.siret]:
                record = families_repo.get(town.siret, household.family.user_id)
                if record is not None and record.refresh.last_outcome:
                    summary.refresh[record.refresh.last_outcome] += 1
        summary.qf_changed = summary.events.get("qf.updated", 0) - summary.dossiers.get("linked", 0)
        summary.hubee_calls = sum(hubee.calls.values())
        summary.hubee_token_calls = sum(hubee.token_calls.values())
        summary.api_particulier_calls = particulier.stats().requests
        summary.audit_records = len(read_records(rt.environment["AUDIT_LOG_GROUP"], limit=100_000))
        narrator.done()
    return summary


def fast_forward_due_dates(rt: LocalRuntime) -> int:
    """Move every due date to now: the laptop's way of saying "a month has passed"."""
    table = rt.client("dynamodb")
    name = rt.environment["FAMILIES_TABLE"]
    now = dt.datetime.now(dt.UTC).isoformat()
    moved = 0
    paginator = table.get_paginator("scan")  # a demo-only shortcut: the pipeline itself never scans
    for page in paginator.paginate(TableName=name, FilterExpression="attribute_exists(next_refresh_at)"):
        for item in page["Items"]:
            table.update_item(
                TableName=name,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET next_refresh_at = :now",
                ExpressionAttributeValues={":now": {"S": now}},
            )
            moved += 1
    return moved


def print_summary(summary: DemoSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    data = summary.as_json()
    dossiers, methods = data["dossiers"], data["link_methods"]
    rejected_by, decisions = data["rejected_by"], data["review_decisions"]
    waiting = dossiers.get("needs_review", 0) + dossiers.get("received", 0)
    to_review = sum(decisions.values()) + dossiers.get("needs_review", 0)
    accounted = (
        methods.get("external_id", 0)
        + methods.get("identity", 0)
        + methods.get("review", 0)
        + rejected_by.get("agent", 0)
        + rejected_by.get("intake", 0)
        + waiting
    )
    console = Console()
    table = Table(title="qfbridge demo — what happened", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("collectivités onboarded", str(data["tenants"]))
    table.add_row("families in the directories", str(data["families"]))
    table.add_row("dossiers deposited by the form", str(data["dossiers_deposited"]))
    table.add_row("  linked by their signed external_id", str(methods.get("external_id", 0)))
    table.add_row("  linked by the parent's identity", str(methods.get("identity", 0)))
    table.add_row("  rejected by intake", str(rejected_by.get("intake", 0)))
    table.add_row("  sent to an agent for review", str(to_review))
    table.add_row("    linked by the agent", str(methods.get("review", 0)))
    table.add_row("    rejected by the agent", str(rejected_by.get("agent", 0)))
    table.add_row("    still waiting", str(waiting))
    table.add_row(
        "  accounted for (each dossier once)",
        f"{accounted} of {data['dossiers_deposited']}",
        end_section=True,
    )
    table.add_row("HubEE calls (tokens excluded)", str(data["hubee_calls"]))
    table.add_row("HubEE calls per new dossier", f"{data['hubee_calls_per_new_dossier']:.2f}")
    table.add_row("API Particulier calls (monthly refresh)", str(data["api_particulier_calls"]))
    for outcome, count in data["refresh"].items():
        table.add_row(f"  families refreshed: {outcome}", str(count))
    table.add_row("  QF changed by the refresh", str(data["qf_changed"]), end_section=True)
    table.add_row("events published on the bus", str(sum(data["events"].values())))
    for event, count in data["events"].items():
        table.add_row(f"  {event}", str(count))
    table.add_row("audit records written", str(data["audit_records"]))
    console.print(table)
    if accounted != data["dossiers_deposited"]:
        console.print(f"[red]{data['dossiers_deposited'] - accounted} dossier(s) unaccounted for[/red]")


def main(*, as_json: bool, seed: int) -> int:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    # Powertools notes each invocation that published no metric; on the laptop that is noise.
    warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
    # The functions' JSON logs go to stderr; stdout carries the summary only (a table, or --json).
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_demo(quiet=as_json, seed=seed)
    if as_json:
        print(json.dumps(summary.as_json(), indent=2, sort_keys=True))
    else:
        print_summary(summary)
    unresolved = summary.dossiers_deposited - sum(summary.dossiers.values())
    return 0 if unresolved == 0 else 1
