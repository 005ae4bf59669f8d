"""Time to QF: from a dossier's deposit in the HubEE sandbox to its ``qf.updated`` event.

What a family and its collectivité wait for. The laptop runtime plays the template's schedule with
its poll interval scaled down (``rate(5 minutes)`` → ``SCALE``: 15 s), and the dossiers of a wave
(20 tenants, 25 dossiers each, 500 in all; one stranger per tenant ends in review and has no QF) are
deposited at a steady pace over ``WAVE_INTERVALS`` poll intervals, as a campaign's first days bring
them: each tick finds what the interval brought. Three threads, as on AWS: the schedule fires
hubee_poll every interval on the dot, the SQS mapping runs reconcile as soon as messages are queued
(``MaximumConcurrency`` batches at once), the form deposits.

Measured per linked dossier: its deposit time, the start of the first tick after it (the wait no
processing can shorten: polling is the design), and the time reconcile published its ``qf.updated``
event (the ``EventPublisher`` call's return, in reconcile's process). Budget: the p95 of the time
to QF ≤ one poll interval + 2 s of processing, as a ratio to that bound; the floor measured in the
same run is the p95 of the wait for the tick, reported beside it with the processing's p95 (tick
start → ``qf.updated``).
"""

from __future__ import annotations

import re
import statistics
import sys
import threading
import time
from typing import Any

from bench.aws_calls import RequestCounter
from bench.intake import RECONCILE, seed_tenants
from qfbridge.messages import BusEvent, DossierLinked, QfUpdated
from qfbridge_local.runtime import POLL_FUNCTION, LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox

TENANTS = 20
DOSSIERS_PER_TENANT = 25
STRANGERS_PER_TENANT = 1
SCALE = 1 / 20
"""The template's poll interval, scaled down: 5 minutes → 15 s."""
WAVE_INTERVALS = 6
"""The wave's deposits are spread over this many poll intervals."""
PROCESSING_ALLOWANCE_S = 2.0
DRAIN_TIMEOUT_S = 420.0
"""After the wave, how long the run waits for the last QFs; a dossier still without one counts with
the time it had waited (a lower bound, ``qf_missing_when_the_run_ended``)."""
RECONCILE_MODULE = "qfbridge_fn_reconcile_app"


def template_interval_s(rt: LocalRuntime) -> float:
    """hubee_poll's schedule period in the template, in seconds."""
    (schedule,) = [s for s in rt.functions[POLL_FUNCTION].spec.schedules]
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", schedule.expression)
    if match is None:
        raise ValueError(f"unexpected schedule {schedule.expression}")
    return int(match.group(1)) * (60 if match.group(2).startswith("minute") else 3600)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class QfClock:
    """When reconcile published each linked dossier's ``qf.updated`` (wraps its EventPublisher)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        service = sys.modules[RECONCILE_MODULE].service()
        publish = service.events.publish_many

        def timed(events: list[BusEvent]) -> Any:
            result = publish(events)
            now = time.monotonic()
            if any(isinstance(e, QfUpdated) for e in events):
                with self._lock:
                    for event in events:
                        if isinstance(event, DossierLinked):
                            self.at.setdefault(event.case_id, now)
            return result

        service.events.publish_many = timed


def run(counter: RequestCounter, *, seed: int = 7) -> dict[str, Any]:
    with HubeeSandbox(seed=seed) as hubee:
        options = RuntimeOptions(
            serve_api=False,
            env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url},
        )
        with LocalRuntime.start(options) as rt:
            template_interval = template_interval_s(rt)
            interval = template_interval * SCALE
            # Tenants and directories first; the wave is deposited in real time below.
            held = seed_tenants(rt, hubee, TENANTS, DOSSIERS_PER_TENANT, STRANGERS_PER_TENANT)
            rt.functions[RECONCILE].load()
            clock = QfClock()
            clock.install()
            counter.reset()
            (source,) = [s for s in rt.triggers.sources if s.function.name == RECONCILE]  # type: ignore[union-attr]

            deposited: dict[str, float] = {}
            linked_cases: set[str] = set()
            ticks: list[float] = []
            tick_seconds: list[float] = []
            stop = threading.Event()
            errors: list[BaseException] = []
            order = sorted(
                range(len(held)), key=lambda i: (i % DOSSIERS_PER_TENANT, i)
            )  # tenants interleaved
            spacing = interval * WAVE_INTERVALS / len(order)
            started = time.monotonic()

            def depositor() -> None:
                try:
                    for n, i in enumerate(order):
                        delay = started + n * spacing - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        siret, cog, formulaire, known = held[i]
                        at = time.monotonic()  # before: a tick may list it as soon as it exists
                        case = hubee.deposit_formulaire_qf(siret, cog, formulaire)
                        deposited[case.case_id] = at
                        if known:
                            linked_cases.add(case.case_id)
                except BaseException as exc:
                    errors.append(exc)

            def scheduler() -> None:
                next_tick = started + interval / 2  # the schedule's phase is unrelated to the deposits
                try:
                    while not stop.is_set():
                        delay = next_tick - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                        ticks.append(time.monotonic())
                        began = time.perf_counter()
                        rt.poll()
                        tick_seconds.append(time.perf_counter() - began)
                        next_tick += interval
                        while next_tick <= time.monotonic():  # a tick longer than the interval: skipped
                            next_tick += interval
                except BaseException as exc:
                    errors.append(exc)
                    stop.set()

            threads = [threading.Thread(target=depositor), threading.Thread(target=scheduler)]
            for thread in threads:
                thread.start()
            deadline = started + interval * WAVE_INTERVALS + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and not errors:
                handled = source.poll_once()
                if not threads[0].is_alive() and linked_cases and linked_cases <= set(clock.at):
                    break
                if not handled:
                    time.sleep(0.05)
            ended = time.monotonic()
            stop.set()
            for thread in threads:
                thread.join(60)
            if errors:
                raise errors[0]
            tally = counter.tally

    waits, processing, totals = [], [], []
    missing = [c for c in linked_cases if c not in clock.at]
    for case_id in sorted(linked_cases):
        at = deposited[case_id]
        if case_id not in clock.at:
            totals.append(ended - at)  # not published before the run ended: at least this long
            continue
        tick = next((t for t in ticks if t >= at), None)
        done = clock.at[case_id]
        totals.append(done - at)
        if tick is not None:
            waits.append(tick - at)
            processing.append(done - tick)
    bound = interval + PROCESSING_ALLOWANCE_S
    p95 = percentile(totals, 0.95) if totals else None
    return {
        "tenants": TENANTS,
        "dossiers": len(held),
        "linked_dossiers": len(linked_cases),
        "qf_published": len(linked_cases) - len(missing),
        "qf_missing_when_the_run_ended": len(missing),
        "template_interval_seconds": template_interval,
        "scale": SCALE,
        "poll_interval_seconds": interval,
        "wave_seconds": round(interval * WAVE_INTERVALS, 1),
        "ticks": len(ticks),
        "tick_seconds_median": round(statistics.median(tick_seconds), 3) if tick_seconds else None,
        "time_to_qf_seconds": _summary(totals),
        "wait_for_tick_seconds": _summary(waits),
        "processing_seconds": _summary(processing),
        "bound_seconds": bound,
        "p95_over_bound": round(p95 / bound, 3) if p95 is not None else None,
        "reconcile_invocations": len(tally.invocations.get(RECONCILE, [])),
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }
