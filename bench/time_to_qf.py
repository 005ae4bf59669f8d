"""Time to QF: from a dossier's deposit in the HubEE sandbox to its ``qf.updated`` event.

What a family and its collectivité wait for: the wait for the next poll (polling is the design) and
then the processing of its dossier (the tick's listing, the SQS hop and batching window, reconcile).
On AWS the processing of a tick's dossiers does not depend on how many the tick brings — reconcile
scales out to ``MaximumConcurrency`` environments, each with its own CPU, and DynamoDB answers in
milliseconds. The laptop runtime has one reconcile environment, 2 cores and moto: a wave deposited
faster than it takes dossiers in queues up, and the time to QF then measures the laptop's backlog,
not a family's wait. So the run measures the runtime's throughput first and paces the wave within
it; the backlog of the same wave deposited at once is measured too, as information.

The runtime plays the template's timers a dossier waits on by design scaled down by ``SCALE``
(hubee_poll's ``rate(5 minutes)`` → 5 s, reconcile's mapping's 5 s batching window → 0.083 s); the
processing runs at real speed. The bound, one poll interval + 2 s, leaves the processing 2 s plus
5 % of the interval at the p95 (the wait for the tick is uniform over the interval): 17 s at 300 s,
2.25 s at 5 s — the scaled run is the stricter.

1. Calibration, with the schedule already running as in the wave: ``CALIBRATION_PER_TENANT``
   dossiers per tenant (families of its directory, not of the wave) deposited at once, served
   until their QFs are published and the form's ``CLOSED`` events of those cases acknowledged
   (each dossier of the wave brings that work too): the longest tick (the listing) and reconcile's
   throughput, dossiers per second of its busy time — the ticks' contention for the process, moto
   and the sandbox included.
2. The wave, the budget: 500 dossiers over 20 tenants (one stranger per tenant ends in review and
   has no QF), deposited at a steady pace, tenants interleaved, each at a random moment of its slot
   (the schedule's phase unrelated: the wait for the tick is uniform over the interval). The
   pace (``pace``): each poll interval brings what the runtime processes, at the throughput it
   showed, within the allowance left once the listing and the batching window are paid —
   ``throughput × (2 s − listing − window)`` dossiers, at least one; capped so that the wave lasts
   at most ``MAX_WAVE_S`` (then the run paces faster than the runtime showed it can carry and says
   so: ``pacing.capped``). A slower reconcile is paced slower, so this budget measures latency, not
   throughput (the intake's budget): it fails when a dossier's own processing, or the listing,
   exceeds what the bound leaves them, or when the runtime falls behind the pace it showed.
3. Unpaced, information: the wave's forms deposited again, all at once (each family files a second
   dossier), the schedule still running: the backlog figure of a 2-core laptop.

Measured per linked dossier: its deposit time, the start of the first tick after it (the wait no
processing can shorten — the floor, measured in the same run), and the time reconcile published its
``qf.updated`` event (the ``EventPublisher`` call's return, in reconcile's process). Budget: the
p95 of the time to QF ≤ one poll interval + 2 s, as a ratio to that bound.

    python -m bench.time_to_qf [--tenants 2 --per-tenant 5 --reconcile-delay 3 --no-unpaced]

runs the section alone and prints its figures; ``--reconcile-delay`` makes reconcile slower by that
many seconds per dossier (a check that the budget fails when processing is slow).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.aws_calls import RequestCounter
from bench.intake import RECONCILE, seed_tenants
from qfbridge.messages import BusEvent, DossierLinked, QfUpdated
from qfbridge_local.runtime import POLL_FUNCTION, LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from qfbridge_local.triggers import SqsEventSource

TENANTS = 20
DOSSIERS_PER_TENANT = 25
STRANGERS_PER_TENANT = 1
CALIBRATION_PER_TENANT = 3
SCALE = 1 / 60
"""The template's timers a dossier waits on by design, scaled down: 5 minutes → 5 s."""
PROCESSING_ALLOWANCE_S = 2.0
MAX_WAVE_S = 1200.0
"""The longest the paced wave may last; a runtime too slow to carry it in that time is paced faster."""
CALIBRATION_TIMEOUT_S = 180.0
"""A QF still missing then (reconcile leaves a record it has no time for to the queue's visibility
timeout): the throughput is what was published in that time."""
DRAIN_TIMEOUT_S = 120.0
"""After the wave's last deposit, how long the run waits for the last QFs; a dossier still without
one counts with the time it had waited (a lower bound, ``qf_missing_when_the_run_ended``)."""
UNPACED_TIMEOUT_S = 420.0
RECONCILE_MODULE = "qfbridge_fn_reconcile_app"
IDLE_SLEEP_S = 0.02

Dossier = tuple[str, str, dict[str, Any], bool]  # siret, cog, formulaire, known (a directory family)


# ---------------------------------------------------------------------------------- the figures


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


def bound_s(interval_s: float, allowance_s: float = PROCESSING_ALLOWANCE_S) -> float:
    """The budget's bound: one poll interval + the processing allowance."""
    return interval_s + allowance_s


def p95_over_bound(totals: Sequence[float], bound: float) -> float | None:
    return round(percentile(totals, 0.95) / bound, 3) if totals else None


@dataclass(frozen=True)
class Latencies:
    totals: list[float]
    """Deposit → ``qf.updated``; for a dossier without one when the run ended, deposit → end."""
    waits: list[float]
    """Deposit → the start of the tick that listed it (the floor: polling is the design)."""
    processing: list[float]
    """That tick's start → ``qf.updated``."""
    missing: int


def latencies(
    cases: Sequence[str],
    deposited: dict[str, float],
    ticks: Sequence[float],
    published: dict[str, float],
    ended: float,
) -> Latencies:
    """Each dossier's time to QF, split into the wait for its tick and its processing.

    Its tick is the first that started at or after its deposit; a dossier published before that tick
    was listed by the tick running when it arrived (its tenant not yet listed): no wait, all
    processing."""
    ordered = sorted(ticks)
    totals, waits, processing = [], [], []
    missing = 0
    for case_id in cases:
        at = deposited[case_id]
        done = published.get(case_id)
        if done is None:
            totals.append(ended - at)  # not published before the run ended: at least this long
            missing += 1
            continue
        totals.append(done - at)
        tick = next((t for t in ordered if t >= at), None)
        if tick is None or tick > done:
            waits.append(0.0)
            processing.append(done - at)
        else:
            waits.append(tick - at)
            processing.append(done - tick)
    return Latencies(totals, waits, processing, missing)


@dataclass(frozen=True)
class Pacing:
    capacity_per_tick: float
    """Dossiers the runtime processes within the allowance left after the listing and the window."""
    dossiers_per_tick: float
    """What each poll interval brings: the capacity, at least one, raised when the wave is capped."""
    spacing_s: float
    wave_s: float
    capped: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "capacity_per_tick": round(self.capacity_per_tick, 3),
            "dossiers_per_tick": round(self.dossiers_per_tick, 3),
            "deposit_spacing_seconds": round(self.spacing_s, 3),
            "wave_seconds": round(self.wave_s, 1),
            "capped": self.capped,
        }


def pace(
    *,
    throughput_per_s: float,
    listing_s: float,
    window_s: float,
    interval_s: float,
    dossiers: int,
    allowance_s: float = PROCESSING_ALLOWANCE_S,
    max_wave_s: float = MAX_WAVE_S,
) -> Pacing:
    """The wave's pace from what the runtime showed in the same run (see the module's docstring)."""
    capacity = max(0.0, throughput_per_s) * max(0.0, allowance_s - listing_s - window_s)
    per_tick = max(1.0, capacity)
    wave = dossiers * interval_s / per_tick
    capped = wave > max_wave_s
    if capped:
        wave = max_wave_s
        per_tick = dossiers * interval_s / wave
    return Pacing(capacity, per_tick, interval_s / per_tick, wave, capped)


# ---------------------------------------------------------------------------------- the run


def template_interval_s(rt: LocalRuntime) -> float:
    """hubee_poll's schedule period in the template, in seconds."""
    (schedule,) = [s for s in rt.functions[POLL_FUNCTION].spec.schedules]
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", schedule.expression)
    if match is None:
        raise ValueError(f"unexpected schedule {schedule.expression}")
    return int(match.group(1)) * (60 if match.group(2).startswith("minute") else 3600)


class QfClock:
    """When reconcile published each linked dossier's ``qf.updated`` (wraps its EventPublisher).

    ``delay_s``: reconcile made slower by that many seconds per publication (one per dossier)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.at: dict[str, float] = {}
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def install(self) -> None:
        service = sys.modules[RECONCILE_MODULE].service()
        publish = service.events.publish_many

        def timed(events: list[BusEvent]) -> Any:
            if self.delay_s:
                time.sleep(self.delay_s)
            result = publish(events)
            now = time.monotonic()
            if any(isinstance(e, QfUpdated) for e in events):
                with self._lock:
                    for event in events:
                        if isinstance(event, DossierLinked):
                            self.at.setdefault(event.case_id, now)
            return result

        service.events.publish_many = timed

    def published(self) -> dict[str, float]:
        with self._lock:
            return dict(self.at)


class Schedule:
    """hubee_poll's schedule on the dot, in its own thread (the runtime's ``poll``: hubee_poll, then
    refresh_dispatch, as their two schedules fire together)."""

    def __init__(self, rt: LocalRuntime, interval_s: float) -> None:
        self.rt = rt
        self.interval_s = interval_s
        self.ticks: list[float] = []
        self.tick_seconds: list[float] = []
        self.failed: list[float] = []  # the start of each failed tick
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedule", daemon=True)

    def start(self, first_at: float) -> None:
        self._next = first_at
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                delay = self._next - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self.ticks.append(time.monotonic())
                began = time.perf_counter()
                try:
                    self.rt.poll()
                except Exception:  # a failed tick: its dossiers wait for the next one
                    self.failed.append(self.ticks[-1])
                self.tick_seconds.append(time.perf_counter() - began)
                self._next += self.interval_s
                while self._next <= time.monotonic():  # a tick longer than the interval: skipped
                    self._next += self.interval_s
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _serve(source: SqsEventSource, done: Callable[[], bool], deadline: float, errors: list[Any]) -> None:
    """The SQS mapping, batch after batch, until ``done`` or the deadline."""
    while time.monotonic() < deadline and not errors and not done():
        if not source.poll_once():
            time.sleep(IDLE_SLEEP_S)


def _split(held: list[Dossier], calibration_per_tenant: int) -> tuple[list[Dossier], list[Dossier]]:
    """Per tenant, its first known families for the calibration, the rest for the wave."""
    calibration: list[Dossier] = []
    wave: list[Dossier] = []
    taken: dict[str, int] = {}
    for dossier in held:
        siret, _cog, _formulaire, known = dossier
        if known and taken.get(siret, 0) < calibration_per_tenant:
            taken[siret] = taken.get(siret, 0) + 1
            calibration.append(dossier)
        else:
            wave.append(dossier)
    return calibration, wave


def _interleave(dossiers: list[Dossier]) -> list[Dossier]:
    """Tenants interleaved: the n-th dossier of every tenant, then the (n+1)-th…"""
    rank: dict[str, int] = {}
    keyed = []
    for index, dossier in enumerate(dossiers):
        rank[dossier[0]] = rank.get(dossier[0], -1) + 1
        keyed.append((rank[dossier[0]], index, dossier))
    return [d for _, _, d in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _calibrate(
    hubee: HubeeSandbox,
    source: SqsEventSource,
    clock: QfClock,
    counter: RequestCounter,
    schedule: Schedule,
    dossiers: list[Dossier],
    errors: list[BaseException],
) -> dict[str, Any]:
    """A burst deposited at once while the schedule runs, as it does in the wave; served until its
    QFs are published, then until a tick after the last one has listed the form's ``CLOSED`` events
    of those cases and reconcile has acknowledged them (work each dossier of the wave brings too).

    The throughput: dossiers per second of reconcile's busy time (its invocations' durations, the
    ticks' contention for the process, moto and the sandbox included); the listing: the longest
    tick of the calibration (the one that listed the burst)."""
    counter.reset()
    first_tick = len(schedule.ticks)
    started = time.monotonic()
    deposited = {}
    for siret, cog, formulaire, _known in dossiers:
        at = time.monotonic()
        deposited[hubee.deposit_formulaire_qf(siret, cog, formulaire).case_id] = at
    cases = set(deposited)
    deadline = started + CALIBRATION_TIMEOUT_S
    _serve(source, lambda: cases <= set(clock.published()), deadline, errors)
    published = clock.published()
    got = [published[c] for c in cases if c in published]
    last = max(got) if len(got) == len(cases) else time.monotonic()

    def acknowledged() -> bool:
        finished = schedule.ticks[: len(schedule.tick_seconds)]
        return any(t > last for t in finished) and source.pending() == 0

    _serve(source, acknowledged, max(deadline, time.monotonic() + 3 * schedule.interval_s), errors)
    busy = sum(counter.tally.invocations.get(RECONCILE, [])) / 1000
    listings = schedule.tick_seconds[first_tick:]
    figures = latencies(sorted(cases), deposited, schedule.ticks, published, time.monotonic())
    return {
        "dossiers": len(cases),
        "qf_missing": figures.missing,
        "seconds": round(time.monotonic() - started, 3),
        "ticks": len(listings),
        "listing_seconds": round(max(listings), 3) if listings else 0.0,
        "reconcile_busy_seconds": round(busy, 3),
        "reconcile_seconds_per_dossier": round(busy / len(cases), 3),
        "throughput_per_second": round(len(got) / busy, 3) if busy > 0 else 0.0,
        "time_to_qf_seconds": summary(figures.totals),
        "processing_seconds": summary(figures.processing),
    }


def run(
    counter: RequestCounter,
    *,
    seed: int = 7,
    tenants: int = TENANTS,
    per_tenant: int = DOSSIERS_PER_TENANT,
    reconcile_delay_s: float = 0.0,
    unpaced: bool = True,
) -> dict[str, Any]:
    with HubeeSandbox(seed=seed) as hubee:
        options = RuntimeOptions(
            serve_api=False,
            skip_idle=False,  # real time throughout: the clock never jumps over a wait
            env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url},
        )
        with LocalRuntime.start(options) as rt:
            template_interval = template_interval_s(rt)
            interval = template_interval * SCALE
            assert rt.triggers is not None
            (source,) = [s for s in rt.triggers.sources if s.function.name == RECONCILE]
            template_window = source.mapping.batching_window_seconds
            window = template_window * SCALE
            source.mapping = dataclasses.replace(source.mapping, batching_window_seconds=window)
            held = seed_tenants(rt, hubee, tenants, per_tenant + CALIBRATION_PER_TENANT, STRANGERS_PER_TENANT)
            calibration_set, wave = _split(held, CALIBRATION_PER_TENANT)
            order = _interleave(wave)
            rt.functions[RECONCILE].load()
            clock = QfClock(reconcile_delay_s)
            clock.install()
            errors: list[BaseException] = []
            schedule = Schedule(rt, interval)
            # The first tick at once: hubee_poll's environment and tokens, nothing deposited yet.
            schedule.start(time.monotonic())
            try:
                while not schedule.tick_seconds and not schedule.errors:
                    time.sleep(IDLE_SLEEP_S)
                calibration = _calibrate(hubee, source, clock, counter, schedule, calibration_set, errors)
                pacing = pace(
                    throughput_per_s=calibration["throughput_per_second"],
                    listing_s=calibration["listing_seconds"],
                    window_s=window,
                    interval_s=interval,
                    dossiers=len(order),
                )
                counter.reset()
                deposited: dict[str, float] = {}
                linked: list[str] = []
                started = time.monotonic()
                # Each deposit at a uniformly random moment of its slot: a steady pace whose phase
                # is unrelated to the schedule's, so that the wait for the tick spans the interval.
                slots = random.Random(seed)
                due = [started + (n + slots.random()) * pacing.spacing_s for n in range(len(order))]

                def depositor() -> None:
                    try:
                        for n, (siret, cog, formulaire, known) in enumerate(order):
                            delay = due[n] - time.monotonic()
                            if delay > 0:
                                time.sleep(delay)
                            at = time.monotonic()  # before: a tick may list it as soon as it exists
                            case = hubee.deposit_formulaire_qf(siret, cog, formulaire)
                            deposited[case.case_id] = at
                            if known:
                                linked.append(case.case_id)
                    except BaseException as exc:
                        errors.append(exc)

                depositing = threading.Thread(target=depositor, name="form")
                depositing.start()
                _serve(
                    source,
                    lambda: not depositing.is_alive() and set(linked) <= set(clock.published()),
                    started + pacing.wave_s + DRAIN_TIMEOUT_S,
                    errors,
                )
                depositing.join()
                ended = time.monotonic()
                invocations = counter.tally.invocations.get(RECONCILE, [])
                paced = latencies(linked, deposited, schedule.ticks, clock.published(), ended)
                during = [i for i, t in enumerate(list(schedule.ticks)) if started <= t < ended]
                wave_tick_seconds = [
                    schedule.tick_seconds[i] for i in during if i < len(schedule.tick_seconds)
                ]
                wave_ticks_failed = sum(1 for t in schedule.failed if started <= t < ended)
                backlog = (
                    _unpaced(hubee, source, clock, schedule, order, interval, errors) if unpaced else None
                )
            finally:
                schedule.stop()
            errors.extend(schedule.errors)
            if errors:
                raise errors[0]

    bound = bound_s(interval)
    busy_per_dossier = sum(invocations) / 1000 / len(order)
    return {
        "tenants": tenants,
        "dossiers": len(order),
        "linked_dossiers": len(linked),
        "qf_published": len(linked) - paced.missing,
        "qf_missing_when_the_run_ended": paced.missing,
        "template_interval_seconds": template_interval,
        "scale": round(SCALE, 5),
        "poll_interval_seconds": round(interval, 3),
        "template_batching_window_seconds": template_window,
        "batching_window_seconds": round(window, 3),
        "calibration": calibration,
        "pacing": pacing.as_dict(),
        "wave_seconds": round(ended - started, 1),
        "ticks": len(during),
        "ticks_failed": wave_ticks_failed,
        "tick_seconds": summary(wave_tick_seconds),
        "time_to_qf_seconds": summary(paced.totals),
        "wait_for_tick_seconds": summary(paced.waits),
        "processing_seconds": summary(paced.processing),
        "bound_seconds": round(bound, 3),
        "p95_over_bound": p95_over_bound(paced.totals, bound),
        "floor_over_bound": p95_over_bound(paced.waits, bound),
        "reconcile_invocations": len(invocations),
        "reconcile_seconds_per_dossier": round(busy_per_dossier, 3),
        "reconcile_busy_over_calibration": round(
            busy_per_dossier / calibration["reconcile_seconds_per_dossier"], 3
        )
        if calibration["reconcile_seconds_per_dossier"]
        else None,
        "reconcile_delay_seconds": reconcile_delay_s,
        "unpaced": backlog,
    }


def _unpaced(
    hubee: HubeeSandbox,
    source: SqsEventSource,
    clock: QfClock,
    schedule: Schedule,
    order: list[Dossier],
    interval: float,
    errors: list[BaseException],
) -> dict[str, Any]:
    """The wave's forms deposited again at once, the schedule running: the laptop's backlog."""
    deposited: dict[str, float] = {}
    linked: list[str] = []
    started = time.monotonic()
    for siret, cog, formulaire, known in order:
        at = time.monotonic()
        case = hubee.deposit_formulaire_qf(siret, cog, formulaire)
        deposited[case.case_id] = at
        if known:
            linked.append(case.case_id)
    deposited_in = time.monotonic() - started
    _serve(source, lambda: set(linked) <= set(clock.published()), started + UNPACED_TIMEOUT_S, errors)
    ended = time.monotonic()
    figures = latencies(linked, deposited, schedule.ticks, clock.published(), ended)
    published = clock.published()
    done = [published[c] for c in linked if c in published]
    return {
        "what": "information, not a budget: the same forms filed again by every family, all at once",
        "dossiers": len(order),
        "deposited_in_seconds": round(deposited_in, 3),
        "qf_published": len(done),
        "qf_missing_when_the_run_ended": figures.missing,
        "time_to_qf_seconds": summary(figures.totals),
        "wait_for_tick_seconds": summary(figures.waits),
        "processing_seconds": summary(figures.processing),
        "p95_over_bound": p95_over_bound(figures.totals, bound_s(interval)),
        "dossiers_per_second": round(len(done) / (max(done) - started), 3) if done else None,
    }


def main(argv: list[str] | None = None) -> None:
    from bench.sections import _with_moto_process

    parser = argparse.ArgumentParser(prog="python -m bench.time_to_qf", description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=TENANTS)
    parser.add_argument("--per-tenant", type=int, default=DOSSIERS_PER_TENANT)
    parser.add_argument("--reconcile-delay", type=float, default=0.0, help="seconds added per dossier")
    parser.add_argument("--no-unpaced", action="store_true")
    args = parser.parse_args(argv)
    result = _with_moto_process(
        lambda counter: run(
            counter,
            tenants=args.tenants,
            per_tenant=args.per_tenant,
            reconcile_delay_s=args.reconcile_delay,
            unpaced=not args.no_unpaced,
        )
    )
    print(json.dumps(result, indent=2, default=str))
    ratio = result["p95_over_bound"]
    print(f"time_to_qf: p95 ÷ bound = {ratio} ({'ok' if ratio is not None and ratio <= 1.0 else 'FAIL'})")


if __name__ == "__main__":
    main()
