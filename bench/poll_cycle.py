"""Poll cycle: one hubee_poll run over 1,000 tenants, each with its own HubEE credential.

The HubEE sandbox answers every request after ``latency_ms`` (50 ms), as a remote HubEE would.
With no dossier waiting, a credential costs one page of notifications, plus a token call when the
container holds no valid token (tokens last an hour: 1 tick in 12). The floor is
``HubEE calls × latency / POLL_CONCURRENCY`` with the calls the run made, i.e. ``tenants × calls per
tenant × latency / concurrency``: the time the calls themselves need at the configured concurrency. Timed: the whole handler invocation, tenants listed from DynamoDB and
secrets read from Secrets Manager (moto) included.

Two runs: the first after onboarding (tokens fetched; every tenant's ``hubee_status`` moves from
``unknown`` to ``ok``: one UpdateItem each) and the steady state (tokens cached, nothing to write),
which is what a 5-minute tick costs. The budget applies to the steady state; the first run is
reported beside it.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import SecretStr

from bench.aws_calls import HARNESS, RequestCounter
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import Tenant, TenantRepository
from qfbridge_local.population import collectivites
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox

TENANTS = 1_000
LATENCY_MS = 50.0
LIMIT = 2.5
POLL = "HubeePollFunction"


def _seed(rt: LocalRuntime, hubee: HubeeSandbox, tenants: int) -> None:
    env = rt.environment
    repo = TenantRepository(env["TENANTS_TABLE"])
    store = SecretStore(env["TENANT_SECRETS_PREFIX"])
    for index, town in enumerate(collectivites(tenants, seed=31)):
        client_id = f"bench-poll-{index}"
        repo.put(
            Tenant(
                siret=town.siret,
                name=town.name,
                cog=town.cog,
                hubee_client_id=client_id,
                has_credentials=True,
            )
        )
        store.replace_tenant(
            town.siret,
            TenantCredentials(
                hubee_client_id=client_id,
                hubee_client_secret=SecretStr(f"secret-{client_id}"),
            ),
        )
        hubee.add_subscription(client_id, f"secret-{client_id}", [(town.siret, town.cog)])


def _one_run(rt: LocalRuntime, hubee: HubeeSandbox, counter: RequestCounter) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # a tick 5 minutes later finds the secrets' 300 s cache expired
    hubee.reset_counters()
    counter.reset()
    started = time.perf_counter()
    response = rt.poll()
    seconds = time.perf_counter() - started
    tally = counter.tally
    calls = sum(hubee.calls.values()) + sum(hubee.token_calls.values())
    return {
        "seconds": round(seconds, 3),
        "hubee_calls": calls,
        "hubee_token_calls": sum(hubee.token_calls.values()),
        "poll_report": response.get("poll") if isinstance(response, dict) else None,
        "aws_requests": {k: v for k, v in tally.by_operation().items()},
        "aws_requests_by_function": tally.by_operation(function=POLL),
        "harness_requests": tally.by_operation(function=HARNESS),
        "aws_seconds_by_operation": {
            k: round(v, 2) for k, v in sorted(tally.seconds.items(), key=lambda kv: -kv[1])
        },
        "read_units": round(tally.read_units.get(POLL, 0.0), 1),
        "write_units": round(tally.write_units.get(POLL, 0.0), 1),
        "poll_ms": round(tally.invocations.get(POLL, [0.0])[-1], 1),
    }


def run(counter: RequestCounter, *, tenants: int = TENANTS, latency_ms: float = LATENCY_MS) -> dict[str, Any]:
    """The poll cycle with moto in its own process: DynamoDB and Secrets Manager are remote services
    for the function, not CPU it shares (bench.moto_process)."""
    from bench.moto_process import use_external_moto
    from qfbridge_local import runtime

    previous = runtime._SHARED_MOTO
    moto = use_external_moto()
    try:
        result = _run(counter, tenants=tenants, latency_ms=latency_ms)
    finally:
        moto.stop()
        runtime._SHARED_MOTO = previous
    result["moto"] = "own process"
    return result


def _run(counter: RequestCounter, *, tenants: int, latency_ms: float) -> dict[str, Any]:
    with HubeeSandbox(seed=5, latency_ms=0.0) as hubee:
        options = RuntimeOptions(
            serve_api=False,
            env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url},
        )
        with LocalRuntime.start(options) as rt:
            concurrency = int(rt.environment.get("POLL_CONCURRENCY", "20"))
            started = time.perf_counter()
            _seed(rt, hubee, tenants)
            seeding = time.perf_counter() - started
            hubee.latency_ms = latency_ms
            first = _one_run(rt, hubee, counter)
            steady = _one_run(rt, hubee, counter)
    for figures in (first, steady):
        floor = figures["hubee_calls"] * latency_ms / 1000 / concurrency
        figures["floor_seconds"] = round(floor, 3)
        figures["ratio_to_floor"] = round(figures["seconds"] / floor, 3) if floor else None
    return {
        "tenants": tenants,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "seeding_seconds": round(seeding, 2),
        "floor": "HubEE calls made × latency / POLL_CONCURRENCY (tenants × calls per tenant × latency / concurrency)",
        "first_run": first,
        "steady_run": steady,
        "limit": LIMIT,
    }
