"""Each benchmark in its own process: ``python -m bench.sections NAME OUTPUT.json``.

A fresh process per benchmark keeps them from sharing caches (boto3 clients bound to one moto,
the HubEE token cache, Powertools' secret cache) and lets each choose where moto runs: the
benchmarks that time the functions use a moto process (``bench.moto_process``), and so does the
refresh campaign (``bench.refresh_campaign.run``), whose functions run in worker processes that
count their own AWS requests (``bench.aws_calls.count_in_environment``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.aws_calls import HARNESS, RequestCounter, attribute_invocations

REFRESH = "QfRefreshFunction"
FUNCTIONS = ("HubeePollFunction", "RefreshDispatchFunction", REFRESH)
"""The functions the refresh campaign invokes (each may run in worker processes)."""


def _with_moto_process(
    body: Callable[[RequestCounter], dict[str, Any]], *, record_dynamodb: bool = False
) -> dict[str, Any]:
    from bench.moto_process import use_external_moto

    moto = use_external_moto()
    try:
        with RequestCounter(record_dynamodb=record_dynamodb) as counter:
            attribute_invocations(counter)
            return body(counter)
    finally:
        moto.stop()


def cold_start() -> dict[str, Any]:
    from bench import cold_start as module

    return module.run()


def package_size() -> dict[str, Any]:
    from bench import package_size as module

    return module.run()


def intake() -> dict[str, Any]:
    from bench import intake as module

    per_tenant = int(os.environ.get("BENCH_INTAKE_PER_TENANT") or module.DOSSIERS_PER_TENANT)
    strangers = max(1, per_tenant // 20)
    return _with_moto_process(
        lambda counter: module.run(counter, per_tenant=per_tenant, strangers=strangers), record_dynamodb=True
    )


def poll() -> dict[str, Any]:
    from bench import poll_cycle

    return _with_moto_process(poll_cycle.run)


def hubee_burst() -> dict[str, Any]:
    from bench import hubee_burst as module

    return _with_moto_process(module.run)


def matching() -> dict[str, Any]:
    from bench import matching as module

    return _with_moto_process(module.run)


def refresh() -> dict[str, Any]:
    try:
        campaign = importlib.import_module("bench.refresh_campaign")
    except ModuleNotFoundError as exc:
        if exc.name != "bench.refresh_campaign":
            raise
        return {"error": "bench/refresh_campaign.py is missing: the refresh budget was not measured"}
    from bench.aws_calls import ENVIRONMENT_HOOK, TALLY_FILE, merge_environment_tallies

    with tempfile.TemporaryDirectory(prefix="qfbridge-refresh-") as workdir, RequestCounter() as counter:
        attribute_invocations(counter)
        # qf_refresh runs in worker processes: each counts its own requests (bench.aws_calls)
        tallies = Path(workdir) / "environments.jsonl"
        result: dict[str, Any] = campaign.run(
            environment_hooks={name: [ENVIRONMENT_HOOK] for name in FUNCTIONS},
            environment={TALLY_FILE: str(tallies)},
        )
        merge_environment_tallies(counter, tallies)
        tally = counter.tally
    calls = int(result.get("requests") or 0)
    aws_per_call = (
        round(sum(n for (fn, _, _), n in tally.requests.items() if fn != HARNESS) / calls) if calls else 0
    )
    result.update(_refresh_floor(result, aws_per_call))
    result["aws"] = {
        "requests_by_function": {
            fn: tally.by_operation(function=fn)
            for fn in sorted({k[0] for k in tally.requests})
            if fn != HARNESS
        },
        "read_units": {k: round(v, 1) for k, v in tally.read_units.items() if k != HARNESS},
        "write_units": {k: round(v, 1) for k, v in tally.write_units.items() if k != HARNESS},
        "event_entries": dict(tally.event_entries),
        "invocations": {
            fn: {"count": len(d), "total_ms": round(sum(d), 1)} for fn, d in tally.invocations.items()
        },
        "api_particulier_calls": calls,
    }
    return result


def _refresh_floor(result: dict[str, Any], aws_per_call: int) -> dict[str, Any]:
    """The campaign's floor, measured right after it on the same machine (``bench.refresh_floor``)."""
    from bench import refresh_floor

    tenants = list(result.get("per_tenant", {}).values())
    if not tenants:
        return {}
    floor = refresh_floor.run(
        [t["budget_rps"] for t in tenants], [t["calls"] for t in tenants], aws_per_call=aws_per_call
    )
    summed = floor["summed_achieved_rps"]
    return {
        "floor": floor,
        "ratio_to_floor": round(result["summed_achieved_rps"] / summed, 3) if summed else None,
    }


def time_to_qf() -> dict[str, Any]:
    from bench import time_to_qf as module

    return _with_moto_process(module.run)


def small_budget() -> dict[str, Any]:
    from bench import small_budget as module

    return module.run()


SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "cold_start": cold_start,
    "package_size": package_size,
    "intake": intake,
    "poll": poll,
    "hubee_burst": hubee_burst,
    "matching": matching,
    "refresh": refresh,
    "small_budget": small_budget,
    "time_to_qf": time_to_qf,
}


def main() -> None:
    name, output = sys.argv[1], Path(sys.argv[2])
    started = time.perf_counter()
    result = SECTIONS[name]()
    result["section_seconds"] = round(time.perf_counter() - started, 1)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
