"""Benchmark: a small budget loses nothing and is used to the full.

One collectivité at 0.25 req/s (a valid budget: API Particulier accepts (0, 20]), on the laptop
runtime in real time (real handlers, SQS emulator, moto, the API Particulier sandbox granting the
token one call per second): agents ask for a burst of manual refreshes, then the refresh dispatch
runs for the families due this month, and the refresh queue drains. Must show: every family
refreshed by exactly one call, none lost (dead-lettered, recorded failed or never called), no 429,
and the calls achieving at least 90% of the budget between the first and the last.

    python -m bench.small_budget [--manual 10] [--monthly 20] [--budget 0.25] [--output PATH]

At 0.25 req/s thirty refreshes take two minutes: the figure is the ratio, measured in the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.refresh_campaign import seed_tenant
from qfbridge.store.families import FamilyRepository
from qfbridge_local.population import households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox

DEFAULT_BUDGET = 0.25
DEFAULT_MANUAL = 10
DEFAULT_MONTHLY = 20
TARGET_RATIO = 0.9
SEED = 13
NOT_DUE = "2999-01-01T06:00:00+00:00"


def run(
    *,
    budget: float = DEFAULT_BUDGET,
    manual: int = DEFAULT_MANUAL,
    monthly: int = DEFAULT_MONTHLY,
    output: Path | None = None,
) -> dict[str, Any]:
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "qfbridge")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "qfbridge")
    total = manual + monthly
    with ApiParticulierSandbox(seed=SEED, load_fixtures=False) as sandbox:
        options = RuntimeOptions(
            serve_api=False,
            env_overrides={
                "API_PARTICULIER_URL": sandbox.url,
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "POWERTOOLS_METRICS_DISABLED": "true",
            },
        )
        with LocalRuntime.start(options) as rt:
            rt.functions["QfRefreshFunction"].load()
            rt.functions["RefreshDispatchFunction"].load()
            siret, token = seed_tenant(rt, sandbox, 0, budget, total, SEED)
            families = FamilyRepository(rt.environment["FAMILIES_TABLE"])
            user_ids = [h.family.user_id for h in households(total, seed=SEED * 100, id_prefix="t0")]
            manual_ids = user_ids[:manual]
            for user_id in manual_ids:  # refreshed this month already: only an agent asks for them
                families.defer(siret, user_id, NOT_DUE)
            sandbox.reset_stats()
            started = time.perf_counter()
            editor = rt.editor_service()
            for user_id in manual_ids:
                editor.refresh_now(siret, user_id)
            dispatch = rt.dispatch_refreshes()
            rt.drain(timeout=total / budget * 2 + 120)
            campaign = time.perf_counter() - started
            dead_lettered = rt.queue_depth("RefreshDeadLetterQueue")
            records = [families.get(siret, user_id) for user_id in user_ids]
        received = sandbox.requests_received()
        arrivals = sandbox.arrival_times(token)
        stats = sandbox.stats()
    per_query = Counter(tuple(pair for pair in r.query if pair[0] != "recipient") for r in received)
    refreshed = sum(1 for record in records if record is not None and record.refresh.status == "ok")
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    achieved = (len(arrivals) - 1) / span if span > 0 else 0.0
    lost = total - refreshed
    result: dict[str, Any] = {
        "benchmark": "small_budget",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "budget_rps": budget,
        "manual_refreshes": manual,
        "monthly_refreshes": monthly,
        "dispatched": dispatch.get("refresh", {}).get("enqueued") if isinstance(dispatch, dict) else None,
        "campaign_seconds": round(campaign, 1),
        "calls": len(received),
        "calls_per_family_max": max(per_query.values(), default=0),
        "by_status": {str(status): count for status, count in sorted(stats.by_status.items())},
        "throttled_429": stats.throttled,
        "dead_lettered": dead_lettered,
        "refreshed": refreshed,
        "lost": lost,
        "span_seconds": round(span, 1),
        "achieved_rps": round(achieved, 4),
        "ratio_to_budget": round(achieved / budget, 3),
        "target_ratio": TARGET_RATIO,
        "max_calls_in_one_second": sandbox_max_rate(arrivals),
    }
    result["passed"] = bool(
        lost == 0
        and dead_lettered == 0
        and result["calls"] == total
        and result["calls_per_family_max"] == 1
        and result["throttled_429"] == 0
        and result["ratio_to_budget"] >= TARGET_RATIO
        and result["max_calls_in_one_second"] <= math.ceil(budget)
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def sandbox_max_rate(arrivals: Sequence[float]) -> int:
    """The most calls within any one-second window."""
    best, start = 0, 0
    for end, at in enumerate(arrivals):
        while arrivals[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    parser.add_argument("--manual", type=int, default=DEFAULT_MANUAL)
    parser.add_argument("--monthly", type=int, default=DEFAULT_MONTHLY)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(budget=args.budget, manual=args.manual, monthly=args.monthly, output=args.output)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
