"""HubEE calls per new dossier under a burst with a token revocation, and poll ticks to drain a backlog.

Burst: one collectivité, 48 dossiers deposited in three waves (20, 20, 8) with HubEE revoking every
access token between the second wave's poll and its processing (reconcile and the next poll meet
401s and renew). The form does not close cases during the burst, so every call counted is one made
for a new dossier: listings, case reads, downloads, status posts and notification deletions (token
requests excluded). Then the form closes the finished cases and one more cycle acknowledges their
CLOSED events, counted apart. Each case must have received each status once.

Drain: 1,000 dossiers pending for one credential before its first poll; counted: the scheduled
poll ticks until none is left (HubEE's listing has no cursor and returns 100 at most: without
polling the credential again as soon as a batch is handled, 1,000 take 10 ticks).

The floor of both figures is the protocol itself: 5 calls per new dossier (read the case, download
the JSON, post SI_RECEIVED and DONE, delete the notification), 3 per CLOSED event, and 1 tick.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.aws_calls import RequestCounter
from qfbridge.hubee import PROCESS_TOKEN_CACHE
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.world import World

WAVES = (20, 20, 8)
STRANGERS_PER_WAVE = 2
DRAIN_DOSSIERS = 1000
MAX_TICKS = 20
EVENT_ROUTES = {("GET", "/cases/{caseId}/events/{eventId}"), ("PATCH", "/cases/{caseId}/events/{eventId}")}


def _options(hubee: HubeeSandbox) -> RuntimeOptions:
    return RuntimeOptions(
        serve_api=False, env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url}
    )


def burst(seed: int = 11) -> dict[str, Any]:
    PROCESS_TOKEN_CACHE.clear()
    with HubeeSandbox(seed=seed, auto_close=False) as hubee, LocalRuntime.start(_options(hubee)) as rt:
        (town,) = collectivites(1, seed=seed)
        world = World(rt, hubee=hubee)
        world.onboard(town, "bench-burst")
        case_ids: list[str] = []
        hubee.reset_counters()
        revoked = 0
        started = time.perf_counter()
        for wave, size in enumerate(WAVES):
            known = households(size - STRANGERS_PER_WAVE, seed=seed * 100 + wave, id_prefix=f"w{wave}")
            world.directory(town, [h.family for h in known])
            strangers = households(STRANGERS_PER_WAVE, seed=seed * 1000 + wave, id_prefix=f"s{wave}")
            for household in [*known, *strangers]:
                case_ids.append(
                    hubee.deposit_formulaire_qf(town.siret, town.cog, household.formulaire()).case_id
                )
            rt.poll()
            if wave == 1:
                revoked = hubee.revoke_tokens()  # mid-burst: the queued dossiers meet 401s
            rt.drain(timeout=600)
        left = sum(1 for c in case_ids if hubee.case_status(c) in ("HUBEE_NOTIFIED", "SENT"))
        ticks = 0
        while left and ticks < MAX_TICKS:
            rt.poll()
            rt.drain(timeout=600)
            ticks += 1
            left = sum(1 for c in case_ids if hubee.case_status(c) in ("HUBEE_NOTIFIED", "SENT"))
        seconds = time.perf_counter() - started
        calls = hubee.calls
        burst_calls = sum(calls.values())
        statuses = Counter(tuple(hubee.status_events(c)) for c in case_ids)
        repeated = sum(1 for c in case_ids if len(set(hubee.status_events(c))) != len(hubee.status_events(c)))
        # The form closes the finished cases; one cycle acknowledges the CLOSED events.
        hubee.reset_counters()
        closed = hubee.close_finished_cases()
        rt.poll()
        rt.drain(timeout=600)
        event_calls = hubee.calls
        event_total = sum(n for route, n in event_calls.items() if route != ("GET", "/notifications"))
    return {
        "dossiers": len(case_ids),
        "waves": list(WAVES),
        "tokens_revoked": revoked,
        "not_taken_in": left,
        "extra_ticks": ticks,
        "seconds": round(seconds, 2),
        "calls_by_route": {f"{m} {r}": n for (m, r), n in sorted(calls.items())},
        "calls_per_new_dossier": round(burst_calls / len(case_ids), 3),
        "status_paths": {" → ".join(k) or "(none)": v for k, v in statuses.items()},
        "cases_with_a_repeated_status": repeated,
        "closed_events": closed,
        "calls_per_closed_event": round(event_total / max(1, closed), 3),
        "event_calls_by_route": {f"{m} {r}": n for (m, r), n in sorted(event_calls.items())},
    }


def drain(seed: int = 12, dossiers: int = DRAIN_DOSSIERS) -> dict[str, Any]:
    PROCESS_TOKEN_CACHE.clear()
    with HubeeSandbox(seed=seed, auto_close=False) as hubee, LocalRuntime.start(_options(hubee)) as rt:
        (town,) = collectivites(1, seed=seed)
        World(rt, hubee=hubee).onboard(town, "bench-drain")
        # Strangers to the directory: each ends in review (SI_RECEIVED), the cheapest full intake.
        case_ids = [
            hubee.deposit_formulaire_qf(town.siret, town.cog, h.formulaire()).case_id
            for h in households(dossiers, seed=seed, id_prefix="d")
        ]
        hubee.reset_counters()
        started = time.perf_counter()
        ticks = 0
        left = len(case_ids)
        per_tick: list[int] = []
        while left and ticks < MAX_TICKS:
            rt.poll()
            rt.drain(timeout=1800)
            ticks += 1
            now_left = sum(1 for c in case_ids if hubee.case_status(c) in ("HUBEE_NOTIFIED", "SENT"))
            per_tick.append(left - now_left)
            left = now_left
        seconds = time.perf_counter() - started
        lists = hubee.calls[("GET", "/notifications")]
    return {
        "dossiers": dossiers,
        "ticks": ticks,
        "taken_in_per_tick": per_tick,
        "not_taken_in": left,
        "listings": lists,
        "seconds": round(seconds, 1),
        "dossiers_per_second": round(dossiers / seconds, 2),
    }


def run(counter: RequestCounter) -> dict[str, Any]:
    return {"burst": burst(), "drain": drain()}
