"""Poll cycle: one hubee_poll run over 1,000 tenants, each with its own HubEE credential.

The HubEE sandbox answers every request after ``latency_ms`` (50 ms), as a remote HubEE would.
With no dossier waiting, a credential costs one page of notifications, plus a token call when the
container holds no valid token (tokens last an hour: 1 tick in 12). Timed: the whole handler
invocation (tenants listed from DynamoDB, secrets read from Secrets Manager — moto in its own
process) and, inside it, its phases: the tenant listing (``TenantRepository.all``), the HubEE phase
(``PollService.run``: every credential's notifications, and what the tick writes) and the refresh
dispatch.

Floor, measured in the same run, right after each tick and against the same sandbox at the same
latency: the same notification listings (one ``GET /notifications`` per credential, tokens fetched
beforehand) sent by a bare ``httpx.AsyncClient`` at ``POLL_CONCURRENCY``, bodies read and nothing
else done — what the calls themselves need at the configured concurrency on this machine now. A
busy machine slows the floor as it slows the tick, so the ratio measures qfbridge, not the load
(computing the floor as calls × latency ÷ concurrency did not: under a load average of 3.5 the
ratio went from 2.1 to 5.1).

Two runs: the first after onboarding (tokens fetched; every tenant's ``hubee_status`` moves from
``unknown`` to ``ok``: one UpdateItem each) and the steady state (tokens cached, nothing to write),
which is what a 5-minute tick costs; the steady state is measured ``STEADY_ROUNDS`` times, each
followed by its floor, and the median ratios are kept. The budgets apply to the steady state: the
whole tick (``LIMIT``) and its HubEE phase (``HUBEE_PHASE_LIMIT``), over the same floor; the tenant
listing is reported beside them (on moto it is its response serialiser's time, on DynamoDB tens of
milliseconds).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.aws_calls import HARNESS, RequestCounter, current_function
from qfbridge.hubee import protocol
from qfbridge.hubee.config import HubeeConfig, HubeeCredentials
from qfbridge.hubee.models import FORMULAIRE_QF
from qfbridge.services.poll import PollService
from qfbridge.store.tenants import TenantRepository
from qfbridge_local.population import collectivites
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.world import World

TENANTS = 1_000
LATENCY_MS = 50.0
LIMIT = 2.5
HUBEE_PHASE_LIMIT = 1.5
STEADY_ROUNDS = 3
POLL = "HubeePollFunction"
PHASES: dict[str, tuple[type, str]] = {
    "tenant_listing": (TenantRepository, "all"),
    "poll_run": (PollService, "run"),
}
"""``PollService.run`` lists the tenants itself: its HubEE phase is ``poll_run - tenant_listing``."""


@contextmanager
def _phase_timers(seconds: dict[str, float]) -> Iterator[None]:
    """Time hubee_poll's phases (the handler runs in this process: same classes; calls made by
    another function, e.g. refresh_dispatch listing the tenants too, are not counted)."""
    originals = {name: getattr(cls, attr) for name, (cls, attr) in PHASES.items()}

    def timed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if current_function() == POLL:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name, (cls, attr) in PHASES.items():
        setattr(cls, attr, timed(name, originals[name]))
    try:
        yield
    finally:
        for name, (cls, attr) in PHASES.items():
            setattr(cls, attr, originals[name])


def _hubee_config(hubee: HubeeSandbox) -> HubeeConfig:
    return HubeeConfig(api_url=hubee.api_url, token_url=hubee.token_url)


async def _fetch_tokens(config: HubeeConfig, client_ids: list[str], concurrency: int) -> list[str]:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as http:

        async def one(client_id: str) -> str:
            credentials = HubeeCredentials(client_id=client_id, client_secret=f"secret-{client_id}")
            args = protocol.HubeeProtocol(config, credentials, random.Random(0)).request_args(
                protocol.TOKEN_CALL, None
            )
            async with semaphore:
                response = await http.request(**args)
            response.raise_for_status()
            return str(response.json()["access_token"])

        return list(await asyncio.gather(*(one(c) for c in client_ids)))


async def _floor_listings(config: HubeeConfig, tokens: list[str], concurrency: int) -> float:
    """Seconds for one notification listing per token with a bare client at ``concurrency``."""
    call = protocol.list_notifications_call(FORMULAIRE_QF, 25, True)
    args = [
        protocol.HubeeProtocol(
            config,
            HubeeCredentials(client_id="floor", client_secret="floor"),
            random.Random(0),
        ).request_args(call, token)
        for token in tokens
    ]
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as http:

        async def one(request: dict[str, Any]) -> None:
            async with semaphore:
                response = await http.request(**request)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(a) for a in args))
        return time.perf_counter() - started


def _seed(rt: LocalRuntime, hubee: HubeeSandbox, tenants: int) -> None:
    world = World(rt, hubee=hubee)
    for index, town in enumerate(collectivites(tenants, seed=31)):
        world.onboard(town, f"bench-poll-{index}")


def _one_run(rt: LocalRuntime, hubee: HubeeSandbox, counter: RequestCounter) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # a tick 5 minutes later finds the secrets' 300 s cache expired
    hubee.reset_counters()
    counter.reset()
    phases: dict[str, float] = {}
    assert rt.triggers is not None
    with _phase_timers(phases):
        started = time.perf_counter()
        response = rt.triggers.fire_schedule(POLL)  # hubee_poll's schedule (refresh_dispatch has its own)
        seconds = time.perf_counter() - started
    phases["hubee"] = phases.get("poll_run", 0.0) - phases.get("tenant_listing", 0.0)
    tally = counter.tally
    calls = sum(hubee.calls.values()) + sum(hubee.token_calls.values())
    return {
        "seconds": round(seconds, 3),
        "phase_seconds": {name: round(value, 3) for name, value in phases.items()},
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
            config = _hubee_config(hubee)
            tokens = asyncio.run(
                _fetch_tokens(config, [f"bench-poll-{i}" for i in range(tenants)], concurrency)
            )
            hubee.latency_ms = latency_ms
            first = _one_run(rt, hubee, counter)
            first["floor_seconds"] = round(asyncio.run(_floor_listings(config, tokens, concurrency)), 3)
            rounds = []
            for _ in range(STEADY_ROUNDS):
                steady = _one_run(rt, hubee, counter)
                steady["floor_seconds"] = round(asyncio.run(_floor_listings(config, tokens, concurrency)), 3)
                rounds.append(steady)
    for figures in [first, *rounds]:
        floor = figures["floor_seconds"]
        figures["floor_calls"] = tenants
        figures["ratio_to_floor"] = round(figures["seconds"] / floor, 3)
        figures["hubee_phase_ratio_to_floor"] = round(figures["phase_seconds"]["hubee"] / floor, 3)
        # The floor's calls are listings only: the first tick's token calls come on top of them.
        figures["computed_floor_seconds"] = round(figures["hubee_calls"] * latency_ms / 1000 / concurrency, 3)
    steady = dict(rounds[-1])
    for key in ("seconds", "floor_seconds", "ratio_to_floor", "hubee_phase_ratio_to_floor"):
        steady[key] = round(statistics.median(r[key] for r in rounds), 3)
    steady["phase_seconds"] = {
        name: round(statistics.median(r["phase_seconds"].get(name, 0.0) for r in rounds), 3)
        for name in PHASES
    }
    steady["rounds"] = [
        {
            k: r[k]
            for k in (
                "seconds",
                "phase_seconds",
                "floor_seconds",
                "ratio_to_floor",
                "hubee_phase_ratio_to_floor",
            )
        }
        for r in rounds
    ]
    return {
        "tenants": tenants,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "seeding_seconds": round(seeding, 2),
        "floor": "the same notification listings (one per credential), bare httpx.AsyncClient at POLL_CONCURRENCY,"
        " measured after each tick",
        "first_run": first,
        "steady_run": steady,
        "limit": LIMIT,
        "hubee_phase_limit": HUBEE_PHASE_LIMIT,
    }
