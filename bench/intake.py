"""Intake: dossiers per second through the laptop runtime, and what each dossier costs in requests.

Dossiers over 20 tenants (by default 25 each, 24 families of the tenant's directory and 1 stranger
who ends in review; ``python -m bench --intake-per-tenant 100`` for the full 2,000, ~15 minutes on
moto) are deposited in the HubEE sandbox; then hubee_poll fires and the queues drain, again
until HubEE holds no new dossier (HubEE pages have no cursor: a poll sees what its pages bring, the
rest comes at the next poll). Timed: from the first poll to the last drained queue, less the
request counter's own time within the functions' requests (``seconds_with_the_counter`` keeps the
raw figure: pricing write units reads a transaction's items back and asks every update for its
new image). Counted: the HubEE calls (sandbox counters), and the DynamoDB, SQS, Secrets Manager,
EventBridge and CloudWatch Logs requests of the functions (``bench.aws_calls``). A last poll then acknowledges the form's
``CLOSED`` events, counted apart.

Floor: the time the emulators need to serve the same requests back to back, with no qfbridge code
— the functions' DynamoDB requests replayed as they were made (recorded by ``bench.aws_calls``,
sent again through the same boto3 clients after the run: moto's Query walks the whole table, so a
``GetItem`` on a one-item table priced the matcher's Queries at a fraction of what moto needs for
them), HubEE ``GET /cases/{caseId}`` for every HubEE call, a DynamoDB ``GetItem`` on a one-item table
for every other AWS request. The ratio says how much the pipeline's own work (parsing, matching,
journal, the resource layer, the handlers' threads) adds to the unavoidable request round trips on
this machine. The earlier floor (a ``GetItem`` per AWS request) stays as a figure.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import httpx

from bench.aws_calls import HARNESS, RequestCounter
from qfbridge_local.aws import LOCAL_AWS_ENV
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from qfbridge_local.template import LOCAL_REGION
from tests.support.world import World

TENANTS = 20
DOSSIERS_PER_TENANT = (
    25  # 500 dossiers: 2,000 (100 per tenant) take ~15 minutes on moto, see docs/performance.md
)
STRANGERS_PER_TENANT = 2
FLOOR_SAMPLE = 400
MAX_POLLS = 30

RECONCILE = "ReconcileFunction"
POLL = "HubeePollFunction"
LIST_ROUTE = ("GET", "/notifications")


def _seed(rt: LocalRuntime, hubee: HubeeSandbox, tenants: int, per_tenant: int, strangers: int) -> list[str]:
    """Tenants, directories and every dossier deposited; the deposited case ids."""
    return [
        hubee.deposit_formulaire_qf(siret, cog, formulaire).case_id
        for siret, cog, formulaire, _known in seed_tenants(rt, hubee, tenants, per_tenant, strangers)
    ]


def seed_tenants(
    rt: LocalRuntime, hubee: HubeeSandbox, tenants: int, per_tenant: int, strangers: int
) -> list[tuple[str, str, dict[str, Any], bool]]:
    """Tenants with their credentials and directories; the dossiers to deposit, in order, each
    ``(siret, cog, formulaire, known)`` — ``known``: a family of the directory fills it."""
    world = World(rt, hubee=hubee)
    dossiers: list[tuple[str, str, dict[str, Any], bool]] = []
    for index, town in enumerate(collectivites(tenants, seed=21)):
        world.onboard(town, f"bench-intake-{index}")
        known = households(per_tenant - strangers, seed=1_000 + index, id_prefix=f"t{index}")
        world.directory(town, [h.family for h in known])
        unknown = households(strangers, seed=9_000 + index, id_prefix=f"x{index}")
        for household in known:
            dossiers.append((town.siret, town.cog, household.formulaire(), True))
        for household in unknown:
            dossiers.append((town.siret, town.cog, household.formulaire(), False))
    return dossiers


def _pending_new_dossiers(hubee: HubeeSandbox, case_ids: set[str]) -> int:
    return sum(1 for case_id in case_ids if hubee.case_status(case_id) in ("HUBEE_NOTIFIED", "SENT"))


def _hubee_floor(hubee: HubeeSandbox, case_id: str, client_id: str, samples: int) -> float:
    """Seconds per raw ``GET /cases/{caseId}`` (httpx, one connection, token fetched once)."""
    with httpx.Client(base_url=hubee.api_url, timeout=10) as client:
        token = client.post(
            "/oauth2/token",
            auth=(client_id, f"secret-{client_id}"),
            data={"grant_type": "client_credentials", "scope": "SI"},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        client.get(f"/teledossiers/v1/cases/{case_id}", headers=headers).raise_for_status()
        started = time.perf_counter()
        for _ in range(samples):
            client.get(f"/teledossiers/v1/cases/{case_id}", headers=headers)
        return (time.perf_counter() - started) / samples


def _aws_floor(endpoint: str, samples: int) -> float:
    """Seconds per raw DynamoDB ``GetItem`` on a one-item table (boto3 client, no resource layer)."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_AWS_ENV["AWS_SESSION_TOKEN"],
    )
    table = "bench-floor"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.put_item(TableName=table, Item={"pk": {"S": "x"}, "v": {"S": "y"}})
    client.get_item(TableName=table, Key={"pk": {"S": "x"}})
    started = time.perf_counter()
    for _ in range(samples):
        client.get_item(TableName=table, Key={"pk": {"S": "x"}})
    elapsed = (time.perf_counter() - started) / samples
    client.delete_table(TableName=table)
    return elapsed


def run(
    counter: RequestCounter,
    *,
    tenants: int = TENANTS,
    per_tenant: int = DOSSIERS_PER_TENANT,
    strangers: int = STRANGERS_PER_TENANT,
    seed: int = 3,
) -> dict[str, Any]:
    with HubeeSandbox(seed=seed) as hubee:
        options = RuntimeOptions(
            serve_api=False,
            env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url},
        )
        with LocalRuntime.start(options) as rt:
            started = time.perf_counter()
            case_ids = _seed(rt, hubee, tenants, per_tenant, strangers)
            seeding_s = time.perf_counter() - started
            dossiers = len(case_ids)
            pending = set(case_ids)

            hubee.reset_counters()
            counter.reset()
            polls = 0
            started = time.perf_counter()
            while _pending_new_dossiers(hubee, pending) and polls < MAX_POLLS:
                rt.poll()
                rt.drain(timeout=600)
                polls += 1
            # The counter's own work within the functions' requests (copies for the replay, write
            # units priced on item images, transactions' items read back) is not the pipeline's.
            measured_s = time.perf_counter() - started
            counter_s = counter.overhead_seconds
            intake_s = measured_s - counter_s
            left = _pending_new_dossiers(hubee, pending)
            hubee_calls = hubee.calls
            token_calls = sum(hubee.token_calls.values())
            tally = counter.tally
            recorded = list(counter.recorded)
            reconcile_runs = list(tally.invocations.get(RECONCILE, []))
            poll_runs = list(tally.invocations.get(POLL, []))
            per_case = [sum(hubee.calls_by_case(case_id).values()) for case_id in case_ids]

            # The form closes each finished case: one more poll acknowledges those events.
            hubee.reset_counters()
            counter.reset()
            rt.poll()
            rt.drain(timeout=600)
            event_calls = hubee.calls
            event_tally = counter.tally
            event_runs = list(event_tally.invocations.get(RECONCILE, []))
            event_requests = sum(n for (fn, _s, _o), n in event_tally.requests.items() if fn != HARNESS)
            event_ops = event_tally.by_operation()
            counter.reset()
            outcomes = _outcomes(rt, case_ids)
            events_acknowledged = sum(
                n
                for (method, route), n in event_calls.items()
                if (method, route) == ("DELETE", "/notifications/{notificationId}")
            )

            all_calls = sum(hubee_calls.values())
            list_calls = hubee_calls.get(LIST_ROUTE, 0)
            aws_requests = sum(n for (fn, _svc, _op), n in tally.requests.items() if fn != HARNESS)
            hubee_floor_s = _hubee_floor(hubee, case_ids[0], "bench-intake-0", FLOOR_SAMPLE)
            dynamodb_replay_s = counter.replay(recorded)
            aws_floor_s = _aws_floor(rt.endpoint, FLOOR_SAMPLE)

    dynamodb_requests = tally.handler_count("dynamodb")
    other_aws = aws_requests - dynamodb_requests
    floor_s = all_calls * hubee_floor_s + dynamodb_replay_s + other_aws * aws_floor_s
    getitem_floor_s = all_calls * hubee_floor_s + aws_requests * aws_floor_s
    return {
        "tenants": tenants,
        "dossiers": dossiers,
        "not_taken_in": left,
        "polls": polls,
        "outcomes": outcomes,
        "seeding_seconds": round(seeding_s, 2),
        "seconds": round(intake_s, 2),
        "seconds_with_the_counter": round(measured_s, 2),
        "counter_seconds": round(counter_s, 2),
        "dossiers_per_second": round(dossiers / intake_s, 2),
        "floor": {
            "what": "emulators serving the same requests back to back: the functions' DynamoDB requests "
            "replayed through the same clients, HubEE GET case per HubEE call, DynamoDB GetItem on a "
            "one-item table per other AWS request",
            "hubee_ms_per_call": round(hubee_floor_s * 1000, 3),
            "dynamodb_replay_seconds": round(dynamodb_replay_s, 2),
            "dynamodb_replayed_requests": len(recorded),
            "aws_ms_per_request": round(aws_floor_s * 1000, 3),
            "seconds": round(floor_s, 2),
            "dossiers_per_second": round(dossiers / floor_s, 2),
            "getitem_floor_seconds": round(getitem_floor_s, 2),
        },
        "ratio_to_floor": round(intake_s / floor_s, 3),
        "ratio_to_getitem_floor": round(intake_s / getitem_floor_s, 3),
        "hubee": {
            "calls_by_route": {f"{m} {r}": n for (m, r), n in sorted(hubee_calls.items())},
            "token_calls": token_calls,
            "calls_per_dossier_excluding_token": round(all_calls / dossiers, 3),
            "reconcile_calls_per_dossier": round((all_calls - list_calls) / dossiers, 3),
            "list_calls_per_dossier": round(list_calls / dossiers, 3),
            "max_case_calls_per_dossier": max(per_case),
            "event_ack_calls": {f"{m} {r}": n for (m, r), n in sorted(event_calls.items())},
            "events_acknowledged": events_acknowledged,
        },
        "aws": {
            "requests_by_operation": tally.by_operation(),
            "seconds_by_operation": {
                k: round(v, 2) for k, v in sorted(tally.seconds.items(), key=lambda kv: -kv[1])
            },
            "harness_requests": tally.by_operation(function=HARNESS),
            "dynamodb_requests_per_dossier": round(tally.handler_count("dynamodb") / dossiers, 3),
            "dynamodb_requests_per_dossier_by_operation": {
                op: round(n / dossiers, 3)
                for op, n in tally.by_operation(service="dynamodb").items()
                if n and op in _handler_ops(tally)
            },
            "dynamodb_floor": _dynamodb_floor(tally, dossiers),
            "sqs_requests_per_dossier": round(tally.handler_count("sqs") / dossiers, 3),
            "secretsmanager_requests_per_dossier": round(tally.handler_count("secretsmanager") / dossiers, 3),
            "events_requests_per_dossier": round(tally.handler_count("events") / dossiers, 3),
            "logs_requests_per_dossier": round(tally.handler_count("logs") / dossiers, 3),
            "read_units_per_dossier": round(
                sum(v for k, v in tally.read_units.items() if k != HARNESS) / dossiers, 3
            ),
            "write_units_per_dossier": round(
                sum(v for k, v in tally.write_units.items() if k != HARNESS) / dossiers, 3
            ),
            "write_units_per_dossier_by_operation": {
                k: round(v / dossiers, 3) for k, v in sorted(tally.write_units_by_operation.items())
            },
            "event_entries_per_dossier": round(
                sum(v for k, v in tally.event_entries.items() if k != HARNESS) / dossiers, 3
            ),
            "event_ack_requests_by_operation": event_ops,
            "event_ack_requests_per_event": round(event_requests / max(1, events_acknowledged), 3),
        },
        "lambda": {
            "reconcile_invocations": len(reconcile_runs),
            "reconcile_total_ms": round(sum(reconcile_runs), 1),
            "reconcile_ms_per_dossier": round(sum(reconcile_runs) / dossiers, 2),
            "records_per_invocation": round(dossiers / max(1, len(reconcile_runs)), 2),
            "poll_invocations": len(poll_runs),
            "poll_ms_per_invocation": round(sum(poll_runs) / max(1, len(poll_runs)), 1),
            "event_ack_invocations": len(event_runs),
            "event_ack_total_ms": round(sum(event_runs), 1),
        },
    }


def _handler_ops(tally: Any) -> set[str]:
    return {f"{svc}:{op}" for (fn, svc, op), n in tally.requests.items() if fn != HARNESS and n}


def _dynamodb_floor(tally: Any, dossiers: int) -> dict[str, Any]:
    """What no new dossier can do without, counted in this run: the directory's reads the matcher
    makes (reconcile's BatchGetItems — the household's birth dates, the name keys when they link
    nothing — and Queries) and, per linked dossier, the family read and the one transaction storing
    its outcome and QF; the write units of those transactions."""
    reconcile = [
        (op, n) for (fn, svc, op), n in tally.requests.items() if fn == RECONCILE and svc == "dynamodb"
    ]
    reads = sum(n for op, n in reconcile if op in ("Query", "BatchGetItem"))
    transactions = sum(n for op, n in reconcile if op == "TransactWriteItems")
    requests = reads + 2 * transactions
    units = tally.write_units_by_operation.get("dynamodb:TransactWriteItems", 0.0)
    return {
        "what": "the matcher's reads + a family GetItem and a TransactWriteItems per linked dossier",
        "matcher_reads_per_dossier": round(reads / dossiers, 3),
        "transactions_per_dossier": round(transactions / dossiers, 3),
        "requests_per_dossier": round(requests / dossiers, 3),
        "write_units_per_dossier": round(units / dossiers, 3),
    }


def _outcomes(rt: LocalRuntime, case_ids: list[str]) -> dict[str, int]:
    from collections import Counter

    from qfbridge.store.dossiers import DossierRepository

    repo = DossierRepository(rt.environment["DOSSIERS_TABLE"])
    counts: Counter[str] = Counter()
    for case_id in case_ids:
        record = repo.get(case_id)
        counts[record.outcome if record is not None and record.outcome else "missing"] += 1
    return dict(counts)
