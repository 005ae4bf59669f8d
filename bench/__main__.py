"""``make bench``: run every benchmark, write ``bench/results.json``, print the budgets; exit 1 if one fails.

    python -m bench [--only intake,poll] [--intake-per-tenant 100] [--output bench/results.json]

Each benchmark runs in its own process (``bench.sections``); its log goes to a temporary file,
shown when it fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import costs
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"
ORDER = [
    "cold_start",
    "package_size",
    "intake",
    "time_to_qf",
    "poll",
    "hubee_burst",
    "matching",
    "refresh",
    "small_budget",
]
SECTION_TIMEOUT = 900
INTAKE_WRITE_UNITS_LIMIT = 2.0
"""Write units per new dossier ≤ this × the linking transactions' own (docs/performance.md)."""


@dataclass
class Budget:
    name: str
    value: float | None
    limit: float
    ok: bool | None  # None: not measured (a figure this machine cannot produce), neither ok nor failed
    direction: str  # "max": value ≤ limit; "min": value ≥ limit
    floor: str

    @classmethod
    def not_measured(cls, name: str, limit: float, direction: str, reason: str) -> Budget:
        return cls(name, None, limit, None, direction, f"not measured: {reason}")

    @classmethod
    def at_most(cls, name: str, value: float | None, limit: float, floor: str) -> Budget:
        return cls(name, value, limit, value is not None and value <= limit, "max", floor)

    @classmethod
    def at_least(cls, name: str, value: float | None, limit: float, floor: str) -> Budget:
        return cls(name, value, limit, value is not None and value >= limit, "min", floor)


def run_section(
    name: str, workdir: Path, env: dict[str, str], intake_per_tenant: int | None
) -> dict[str, Any]:
    output = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    section_env = dict(env)
    if name == "intake" and intake_per_tenant:
        section_env["BENCH_INTAKE_PER_TENANT"] = str(intake_per_tenant)
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as sink:
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "bench.sections", name, str(output)],
                cwd=REPO,
                env=section_env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=SECTION_TIMEOUT,
                check=False,
            )
            code = completed.returncode
        except subprocess.TimeoutExpired:
            code = -1
    if code != 0 or not output.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        return {
            "error": f"section {name} failed (exit {code})",
            "log_tail": tail,
            "section_seconds": round(time.perf_counter() - started, 1),
        }
    return dict(json.loads(output.read_text(encoding="utf-8")))


def budgets_of(results: dict[str, Any]) -> list[Budget]:
    budgets: list[Budget] = []
    cold = results.get("cold_start", {})
    floor_ms = cold.get("floor", {}).get("median_ms")
    for name, entry in sorted(cold.get("handlers", {}).items()):
        budgets.append(
            Budget.at_most(
                f"cold_start.{name}",
                entry["lambda"]["import_plus_wiring_ratio"],
                cold["limit"],
                f"init + first invocation's wiring × import boto3 + boto3.client('sqs') = {floor_ms} ms"
                f" (median; init alone {entry['lambda']['ratio_to_floor']}×)",
            )
        )
    if "handlers" not in cold:
        budgets.append(Budget.at_most("cold_start", None, 2.0, cold.get("error", "not run")))

    size = results.get("package_size", {})
    if size.get("measured") is False:
        budgets.append(
            Budget.not_measured("package_size.layer_plus_function_unzipped", 1.0, "max", size["reason"])
        )
        budgets.append(
            Budget.not_measured("package_size.layer_modules_without_bytecode", 0.0, "max", size["reason"])
        )
    else:
        compiled = size.get("layer", {}).get("bytecode", {})
        budgets.append(
            Budget.at_most(
                "package_size.layer_modules_without_bytecode",
                compiled.get("without_bytecode"),
                0.0,
                f"of the layer's {compiled.get('modules')} modules, each compiled at every cold request "
                f"without its .pyc (/opt is read-only); shipped: {compiled.get('invalidation')}",
            )
        )
        budgets.append(
            Budget.at_most(
                "package_size.layer_plus_function_unzipped",
                size.get("ratio_to_limit"),
                1.0,
                f"× Lambda's 250 MB unzipped limit (layer {size.get('layer', {}).get('unzipped_mb')} MB)"
                if "layer" in size
                else size.get("error", "not run"),
            )
        )

    intake = results.get("intake", {})
    hubee = intake.get("hubee", {})
    budgets.append(
        Budget.at_most(
            "intake.hubee_calls_per_new_dossier",
            hubee.get("reconcile_calls_per_dossier"),
            5.0,
            "calls by reconcile per dossier, token and poll listing excluded"
            if hubee
            else intake.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "intake.max_hubee_calls_on_one_case",
            hubee.get("max_case_calls_per_dossier"),
            4.0,
            "case-scoped calls of the worst dossier (+1 DELETE of its notification = 5)"
            if hubee
            else intake.get("error", "not run"),
        )
    )

    aws = intake.get("aws", {})
    dynamo_floor = aws.get("dynamodb_floor", {})
    budgets.append(
        Budget.at_most(
            "intake.dynamodb_requests_per_new_dossier",
            aws.get("dynamodb_requests_per_dossier") if dynamo_floor else None,
            7.0,
            f"hubee_poll's and reconcile's requests per new dossier; floor {dynamo_floor['requests_per_dossier']}"
            f" (the matcher's {dynamo_floor['matcher_reads_per_dossier']} reads + a family GetItem and one"
            " transaction per linked dossier)"
            if dynamo_floor
            else intake.get("error", "not run"),
        )
    )
    units, units_floor = aws.get("write_units_per_dossier"), dynamo_floor.get("write_units_per_dossier")
    budgets.append(
        Budget.at_most(
            "intake.write_units_per_new_dossier_over_floor",
            round(units / units_floor, 3) if units and units_floor else None,
            INTAKE_WRITE_UNITS_LIMIT,
            f"{units} WRU per new dossier (item sizes and index writes) × the linking transactions' own"
            f" {units_floor} WRU per dossier, measured in the same run"
            if units_floor
            else intake.get("error", "not run"),
        )
    )
    floor = intake.get("floor", {})
    budgets.append(
        Budget.at_most(
            "intake.throughput_ratio_to_floor",
            intake.get("ratio_to_floor"),
            2.5,
            f"intake {intake.get('seconds')} s (the request counter's own {intake.get('counter_seconds')} s"
            " taken out) × the emulators serving the same requests back to back ="
            f" {floor.get('seconds')} s ({intake.get('dossiers_per_second')} vs"
            f" {floor.get('dossiers_per_second')} dossiers/s)"
            if floor
            else intake.get("error", "not run"),
        )
    )

    ttq = results.get("time_to_qf", {})
    budgets.append(
        Budget.at_most(
            "time_to_qf.p95_over_poll_interval_plus_2s",
            ttq.get("p95_over_bound"),
            1.0,
            _time_to_qf_floor(ttq) if "p95_over_bound" in ttq else ttq.get("error", "not run"),
        )
    )

    poll = results.get("poll", {})
    steady = poll.get("steady_run", {})
    floor = (
        f"× the same {poll.get('tenants')} notification listings, bare client at concurrency"
        f" {poll.get('concurrency')}, {poll.get('latency_ms')} ms latency = {steady.get('floor_seconds')} s"
        " (measured after each tick, median of the rounds)"
        if steady
        else poll.get("error", "not run")
    )
    budgets.append(
        Budget.at_most("poll_cycle.steady_tick", steady.get("ratio_to_floor"), poll.get("limit", 2.5), floor)
    )
    budgets.append(
        Budget.at_most(
            "poll_cycle.steady_tick_hubee_phase",
            steady.get("hubee_phase_ratio_to_floor"),
            poll.get("hubee_phase_limit", 1.5),
            f"{floor}; tenant listing apart: {steady.get('phase_seconds', {}).get('tenant_listing')} s"
            if steady
            else floor,
        )
    )

    burst = results.get("hubee_burst", {})
    budgets.append(
        Budget.at_most(
            "hubee_burst.calls_per_new_dossier",
            burst.get("burst", {}).get("calls_per_new_dossier"),
            5.2,
            f"× 1 HubEE call; {burst['burst']['dossiers']} dossiers in 3 waves, every token revoked mid-burst, "
            "listings included, tokens excluded (the protocol's floor: 5)"
            if "burst" in burst
            else burst.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "hubee_burst.poll_ticks_to_drain_1000",
            burst.get("drain", {}).get("ticks") if not burst.get("drain", {}).get("not_taken_in") else None,
            3.0,
            f"× 1 scheduled tick; {burst['drain']['dossiers']} dossiers pending for one credential"
            if "drain" in burst
            else burst.get("error", "not run"),
        )
    )

    matching = results.get("matching", {})
    budgets.append(
        Budget.at_most(
            "matching.household_read_requests",
            matching.get("household_read_requests", {}).get("max"),
            1.0,
            "one BatchGetItem for every birth date of the household (the usager's, the other "
            "allocataire's, the children's)"
            if "household_read_requests" in matching
            else matching.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "matching.name_key_requests_per_match",
            matching.get("name_key_requests_per_match", {}).get("max"),
            1.0,
            f"one BatchGetItem on the usager's name keys (≤ {matching.get('name_key_requests_per_match', {}).get('limit_per_key')} "
            "families each), only when the birth dates link nothing"
            if "name_key_requests_per_match" in matching
            else matching.get("error", "not run"),
        )
    )
    labelled = matching.get("labelled_set", {})
    budgets.append(
        Budget.at_least(
            "matching.labelled_precision",
            labelled.get("precision"),
            1.0,
            f"automatic links right ÷ automatic links, {labelled.get('cases')} labelled cases"
            if labelled
            else matching.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_least(
            "matching.labelled_auto_link_rate",
            labelled.get("auto_link_rate"),
            0.95,
            f"linked right ÷ {labelled.get('expected_links')} dossiers labelled linked"
            if labelled
            else matching.get("error", "not run"),
        )
    )
    skew = matching.get("birth_date_skew", {})
    if "ms" in matching and "client_cpu_ms" not in matching:
        budgets.append(
            Budget.not_measured(
                "matching.client_p95_ms", 25.0, "max", "the recorded matching run predates this figure"
            )
        )
    else:
        budgets.append(
            Budget.at_most(
                "matching.client_p95_ms",
                matching.get("client_cpu_ms", {}).get("p95"),
                matching.get("client_p95_limit_ms", 25.0),
                "ms of client CPU (the match less its HTTP sends: deserialising and deciding), 100,000 "
                f"families, up to {skew.get('most_families_under_one_1_january')} under one 1 January; "
                f"wall-clock p95 {matching.get('client_ms', {}).get('p95')} ms"
                if "client_cpu_ms" in matching
                else matching.get("error", "not run"),
            )
        )
    budgets.append(
        Budget.at_most(
            "matching.dynamodb_requests_per_match",
            matching.get("dynamodb_requests_per_match", {}).get("mean"),
            matching.get("requests_per_match_limit", 2.0),
            f"requests per match, mean (max {matching.get('dynamodb_requests_per_match', {}).get('max')})"
            if "ms" in matching
            else matching.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "matching.p50_vs_raw_query",
            matching.get("ratio_to_floor"),
            matching.get("limit", 2.0),
            f"× the same reads, low-level client = {matching.get('floor', {}).get('ms_p50')} ms p50"
            if "ms" in matching
            else matching.get("error", "not run"),
        )
    )

    refresh = results.get("refresh", {})
    budgets.append(
        Budget.at_least(
            "refresh.achieved_over_measured_floor",
            refresh.get("ratio_to_floor"),
            0.95,
            f"÷ {refresh.get('floor', {}).get('summed_achieved_rps')} req/s: a bare client pacing each tenant"
            f" at its budget, same run (summed budgets {refresh.get('summed_budget_rps')} req/s,"
            f" achieved ÷ summed {refresh.get('ratio_of_summed_budget')})"
            if "ratio_to_floor" in refresh
            else refresh.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "refresh.http_429",
            refresh.get("throttled_429"),
            0.0,
            "API Particulier answers 429 (sandbox enforces each token's budget)"
            if "throttled_429" in refresh
            else refresh.get("error", "not run"),
        )
    )
    small = results.get("small_budget", {})
    ran = "ratio_to_budget" in small
    budgets.append(
        Budget.at_least(
            "small_budget.achieved_over_budget",
            small.get("ratio_to_budget"),
            0.9,
            f"÷ {small.get('budget_rps')} req/s (a burst of {small.get('manual_refreshes')} manual "
            f"refreshes and the dispatch of {small.get('monthly_refreshes')})"
            if ran
            else small.get("error", "not run"),
        )
    )
    budgets.append(
        Budget.at_most(
            "small_budget.lost",
            None if not ran else small["lost"] + small["dead_lettered"],
            0.0,
            "families not refreshed, or dead-lettered, at that budget"
            if ran
            else small.get("error", "not run"),
        )
    )
    return budgets


def _time_to_qf_floor(ttq: dict[str, Any]) -> str:
    pacing, calibration = ttq.get("pacing", {}), ttq.get("calibration", {})
    unpaced = ttq.get("unpaced") or {}
    text = (
        f"p95 {ttq['time_to_qf_seconds']['p95']} s × (poll interval {ttq['poll_interval_seconds']} s, the"
        f" template's {ttq['template_interval_seconds']} s scaled by {ttq['scale']}, + 2 s); floor measured"
        f" in the same run: the wait for the next tick, p95 {ttq['wait_for_tick_seconds']['p95']} s"
        f" (processing p95 {ttq['processing_seconds']['p95']} s)"
    )
    if pacing:
        text += (
            f"; the wave paced at {pacing['dossiers_per_tick']} dossiers per tick from the throughput"
            f" measured in the same run ({calibration.get('throughput_per_second')}/s, listing"
            f" {calibration.get('listing_seconds')} s){', CAPPED: paced faster than measured' if pacing['capped'] else ''}"
        )
    if unpaced:
        text += f"; unpaced, information: {unpaced.get('p95_over_bound')}"
    return text


def cost_section(results: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = {"prices": costs.PRICES, "note": (costs.__doc__ or "").strip()}
    if "aws" in results.get("intake", {}):
        section["dossiers_10000"] = costs.dossiers(results["intake"])
    if "steady_run" in results.get("poll", {}):
        section["polling_month"] = costs.polling(results["poll"])
    if "aws" in results.get("refresh", {}):
        section["refreshes_10000"] = costs.refreshes(results["refresh"])
    section["fixed_month"] = costs.fixed_monthly(load_template(DEFAULT_TEMPLATE))
    return section


def print_table(budgets: list[Budget], results: dict[str, Any], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"qfbridge budgets ({seconds:.0f} s)")
    for column in ("budget", "value", "limit", "ok", "floor / unit"):
        table.add_column(column, overflow="fold")
    for b in budgets:
        value = "—" if b.value is None else f"{b.value:g}"
        limit = f"{'≤' if b.direction == 'max' else '≥'} {b.limit:g}"
        status = "[yellow]not measured[/]" if b.ok is None else "[green]ok[/]" if b.ok else "[red]FAIL[/]"
        table.add_row(b.name, value, limit, status, b.floor)
    console.print(table)
    figures = Table(title="figures")
    figures.add_column("figure")
    figures.add_column("value", overflow="fold")
    intake = results.get("intake", {})
    if "dossiers_per_second" in intake:
        figures.add_row(
            "intake dossiers/s (floor)",
            f"{intake['dossiers_per_second']} ({intake['floor']['dossiers_per_second']}), "
            f"{intake['dossiers']} dossiers, ratio {intake['ratio_to_floor']}",
        )
        figures.add_row(
            "intake requests per dossier",
            f"DynamoDB {intake['aws']['dynamodb_requests_per_dossier']}, "
            f"SQS {intake['aws']['sqs_requests_per_dossier']}, "
            f"Secrets {intake['aws']['secretsmanager_requests_per_dossier']}, "
            f"HubEE {intake['hubee']['calls_per_dossier_excluding_token']}",
        )
    matching = results.get("matching", {})
    if "ms" in matching:
        figures.add_row(
            "matching p50 / p95 (ms), 100,000 families",
            f"{matching['ms']['p50']} / {matching['ms']['p95']} "
            f"({matching['dynamodb_requests_per_match']['mean']} DynamoDB requests per match)",
        )
    ttq = results.get("time_to_qf", {})
    if ttq.get("unpaced"):
        unpaced = ttq["unpaced"]
        figures.add_row(
            "time to QF, the wave deposited at once (information)",
            f"p95 {unpaced['time_to_qf_seconds']['p95']} s, {unpaced['p95_over_bound']} × the bound; "
            f"{unpaced['dossiers_per_second']} dossiers/s, {unpaced['qf_missing_when_the_run_ended']} QFs missing",
        )
    poll = results.get("poll", {})
    if "first_run" in poll:
        figures.add_row(
            "poll first tick (ratio)",
            f"{poll['first_run']['seconds']} s ({poll['first_run']['ratio_to_floor']})",
        )
    for key, label in (
        ("dossiers_10000", "USD / 10,000 dossiers"),
        ("refreshes_10000", "USD / 10,000 refreshes"),
        ("polling_month", "USD / month of polling"),
        ("fixed_month", "USD / month, fixed (1,000 tenants)"),
    ):
        entry = results.get("costs", {}).get(key)
        if entry:
            figures.add_row(label, f"{entry['total_usd']}")
    console.print(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="qfbridge benchmarks and budgets")
    parser.add_argument("--only", default="", help="comma-separated sections: " + ",".join(ORDER))
    parser.add_argument(
        "--intake-per-tenant",
        type=int,
        default=None,
        help="dossiers per tenant for the intake (20 tenants; default 25, 100 for the full 2,000)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the sections of the existing output this run does not measure (each says when it ran)",
    )
    args = parser.parse_args(argv)
    sections = [s for s in ORDER if not args.only or s in args.only.split(",")]

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qfbridge-bench-") as workdir:
        for name in sections:
            print(f"bench: {name}…", flush=True)
            results[name] = run_section(name, Path(workdir), env, args.intake_per_tenant)
            results[name]["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            results[name]["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
            if "error" in results[name]:
                print(f"bench: {name} — {results[name]['error']}", flush=True)
                for line in results[name].get("log_tail", []):
                    print(f"    {line}", flush=True)
    seconds = time.perf_counter() - started
    if args.merge and args.output.is_file():
        previous = json.loads(args.output.read_text(encoding="utf-8"))
        results = {
            name: results[name] if name in results else previous[name]
            for name in ORDER
            if name in results or name in previous
        }
        sections = list(results)
    results["costs"] = cost_section(results)
    budgets = [
        b
        for b in budgets_of(results)
        if not args.only or b.name.split(".")[0].replace("poll_cycle", "poll") in sections
    ]
    document = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "seconds": round(seconds, 1),
        "ok": all(b.ok is not False for b in budgets),
        "not_measured": [b.name for b in budgets if b.ok is None],
        "budgets": [{k: v for k, v in asdict(b).items()} for b in budgets],
        **results,
    }
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print_table(budgets, results, seconds)
    print(f"bench: results in {args.output}", flush=True)
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
