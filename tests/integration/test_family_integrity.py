"""No write to a family erases another's, and erasure reaches everything: directory pushes (single and
batch), intake links, refreshes, form-link issuance and erasures run at once on the same families, on
the laptop runtime (moto), many rounds. Afterwards, every QF, pivot identity, history entry, case id
and link id a path stored is still there, and an erasure left nothing of the families it erased."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qfbridge.domain.dossier import ParsedDossier, parse_formulaire_qf_json
from qfbridge.domain.errors import NotFoundError
from qfbridge.domain.identity import Family
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.domain.siret import complete_siret
from qfbridge.services.editor import EditorService, TenantConfig
from qfbridge.services.linking import dossier_snapshot, persist_link
from qfbridge.services.token_watch import PIVOT_RETENTION_DAYS, TokenWatchService
from qfbridge.store.dossiers import DossierPatch, DossierRepository, Step
from qfbridge.store.events import EventPublisher
from qfbridge.store.families import (
    HISTORY_LIMIT,
    FamilyRepository,
    QfEntry,
    RefreshState,
    bucket_of,
    family_pk,
)
from qfbridge.store.links import LinkRepository
from qfbridge.store.tables import key_condition, plain, table
from qfbridge.store.tenants import TenantRepository
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

DOSSIER = parse_formulaire_qf_json(
    (Path(__file__).resolve().parents[2] / "tests" / "data" / "dossiers" / "FormulaireQF.json").read_bytes()
)
KEPT = [f"kept-{i}" for i in range(3)]
ERASED = [f"gone-{i}" for i in range(2)]
ROUNDS = 4


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        yield rt


def directory(user_id: str, variant: int) -> Family:
    """The directory identity of ``user_id``, a little different from one push to the next (a new
    birth date moves the blocking entries)."""
    return Family.model_validate(
        {
            "user_id": user_id,
            "parents": [
                {
                    "nom_naissance": "DURAND",
                    "prenoms": "CAMILLE",
                    "sexe": "F",
                    "date_naissance": f"1985-02-{1 + variant % 3:02d}",
                }
            ],
            "enfants": [{"nom": "DURAND", "prenoms": f"LOUIS{variant}", "date_naissance": "2016-09-01"}],
        }
    )


def qf(month: int, valeur: int) -> QuotientFamilial:
    return QuotientFamilial(fournisseur="CNAF", valeur=valeur, annee=2026, mois=month)


class Ledger:
    """What each path reports as stored, per family (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cases: dict[str, list[str]] = {}
        self.periods: dict[str, list[str]] = {}
        self.links: dict[str, list[str]] = {}
        self.all_cases: dict[str, str] = {}
        self.all_links: dict[str, str] = {}
        self.errors: list[BaseException] = []

    def add(self, kind: dict[str, list[str]], user_id: str, value: str) -> None:
        with self._lock:
            kind.setdefault(user_id, []).append(value)


def run_all(workers: list[Callable[[], None]], ledger: Ledger) -> None:
    barrier = threading.Barrier(len(workers))

    def guarded(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # reported to the test thread
            ledger.errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not ledger.errors, ledger.errors


def test_concurrent_writers_never_erase_each_other_and_erasure_reaches_everything(
    runtime: LocalRuntime,
) -> None:
    env = runtime.environment
    editor: EditorService = runtime.editor_service()
    families = FamilyRepository(env["FAMILIES_TABLE"])
    dossiers = DossierRepository(env["DOSSIERS_TABLE"])
    links = LinkRepository(env["FORM_LINKS_TABLE"])
    siret = complete_siret("2169012300001")
    editor.put_tenant(siret, TenantConfig(name="Commune", cog="69123"))
    everyone = KEPT + ERASED
    editor.batch_upsert(siret, [directory(uid, 0).model_dump(mode="json") for uid in everyone])
    ledger = Ledger()
    cases = itertools.count()
    now = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)

    def pushes() -> None:
        rng = random.Random(1)
        for round_ in range(ROUNDS):
            for uid in everyone:
                try:
                    editor.put_family(siret, directory(uid, rng.randrange(6)))
                except NotFoundError:  # erased between the push and its answer
                    assert uid in ERASED
            editor.batch_upsert(
                siret, [directory(uid, round_ + 1).model_dump(mode="json") for uid in everyone]
            )

    def intake(offset: int) -> Callable[[], None]:
        def work() -> None:
            for round_ in range(ROUNDS):
                for uid in everyone:
                    case_id = f"case-{offset}-{next(cases)}"
                    record = dossiers.start(case_id, siret, f"n-{case_id}", now, lease_seconds=0)
                    parsed: ParsedDossier = dataclasses.replace(
                        DOSSIER, quotient_familial=qf(1 + (round_ + offset) % 10, 500 + round_)
                    )
                    dossiers.mark(case_id, Step.PARSED, now, DossierPatch(parsed=dossier_snapshot(parsed)))
                    with ledger._lock:
                        ledger.all_cases[case_id] = uid
                    try:
                        if persist_link(
                            families,
                            dossiers,
                            record,
                            parsed,
                            uid,
                            source="dossier",
                            now=now,
                            patch=DossierPatch(),
                        ).applied:
                            ledger.add(ledger.cases, uid, case_id)
                    except NotFoundError:  # erased meanwhile: a link never recreates a family
                        assert uid in ERASED

        return work

    def refreshes() -> None:
        for round_ in range(ROUNDS):
            for uid in everyone:
                month = 12 if round_ == ROUNDS - 1 else 1 + round_
                period = f"2026-{month:02d}-r{round_}"
                entry = QfEntry(
                    quotient_familial=qf(month, 900 + round_),
                    source="refresh",
                    source_id=period,
                    received_at=now.isoformat(),
                )
                stored = families.record_refresh(
                    siret,
                    uid,
                    entry=entry,
                    state=RefreshState(status="ok"),
                    next_refresh_at="2026-12-07T06:00:00+00:00",
                )
                if stored:
                    ledger.add(ledger.periods, uid, f"refresh:{period}")
                else:
                    assert uid in ERASED

    def issuance() -> None:
        for _ in range(ROUNDS):
            for uid in everyone:
                issued = editor.issue_form_link(siret, uid, None)
                link_id = issued.external_id.split(".")[2]
                with ledger._lock:
                    ledger.all_links[link_id] = uid
                ledger.add(ledger.links, uid, link_id)

    def erasures() -> None:
        for _ in range(ROUNDS):
            for uid in ERASED:
                erase_if_there(editor, siret, uid)

    run_all([pushes, intake(0), intake(1), refreshes, issuance, erasures], ledger)
    # One last erasure, with nothing running: what it erased must be gone for good.
    for uid in ERASED:
        erase_if_there(editor, siret, uid)

    for uid in KEPT:
        record = families.get(siret, uid)
        assert record is not None and record.family is not None
        history = {f"{e.source}:{e.source_id}" for e in record.qf_history}
        assert set(ledger.cases.get(uid, [])) <= set(record.case_ids), uid
        assert {f"dossier:{c}" for c in ledger.cases.get(uid, [])} <= history, uid
        assert set(ledger.periods.get(uid, [])) <= history, uid
        assert set(ledger.links[uid]) <= set(record.link_ids), uid
        assert record.pivot_identity is not None
        # The current QF is the most recent period's: December's refresh.
        assert record.qf is not None and record.qf.quotient_familial.mois == 12
        assert record.next_refresh_at is not None
        for link_id in ledger.links[uid]:
            assert links.get(link_id) is not None
        for case_id in ledger.cases.get(uid, []):
            dossier = dossiers.get(case_id)
            assert dossier is not None and dossier.user_id == uid and dossier.outcome == "linked"

    for uid in ERASED:
        assert families.get(siret, uid) is None
    for link_id, uid in ledger.all_links.items():
        if uid in ERASED:
            assert links.get(link_id) is None, "a form link of an erased family survived"
    for case_id, uid in ledger.all_cases.items():
        dossier = dossiers.get(case_id)
        assert dossier is not None
        if uid in ERASED:
            assert dossier.parsed is None or dossier.outcome != "linked", (
                "an erased family's dossier kept its data"
            )
            assert dossier.user_id is None

    # Blocking entries: exactly those of the families' current directory identity, none orphaned.
    items = _partition(env["FAMILIES_TABLE"], siret)
    stored = {
        (str(i["sk"]), name)
        for i in items
        if str(i["sk"]).startswith("K#")
        for name in i
        if name.startswith("f:")
    }
    assert not [i for i in items if str(i["sk"]).startswith("B#")], "an entry of the former layout is left"
    expected = set()
    for item in items:
        if str(item["sk"]).startswith("F#") and "family" in item:
            uid = str(item["sk"])[2:]
            expected |= {(bucket_of(key, uid), f"f:{uid}") for key in plain(item.get("blocking_dates", []))}
    assert stored == expected


def erase_if_there(editor: EditorService, siret: str, user_id: str) -> None:
    with contextlib.suppress(NotFoundError):
        editor.erase_family(siret, user_id)


def _partition(table_name: str, siret: str) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition("pk").eq(family_pk(siret))}
    found: list[dict[str, Any]] = []
    while True:
        response = table(table_name).query(**kwargs)
        found += response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return found
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


# ---------------------------------------------------------------------------- the current QF, the history
def refreshed(families: FamilyRepository, siret: str, user_id: str, month: int, valeur: int, at: str) -> bool:
    entry = QfEntry(
        quotient_familial=qf(month, valeur), source="refresh", source_id=f"2026-{month:02d}", received_at=at
    )
    return families.record_refresh(
        siret,
        user_id,
        entry=entry,
        state=RefreshState(status="ok"),
        next_refresh_at="2026-12-07T06:00:00+00:00",
    )


def test_a_refresh_of_an_older_period_only_joins_the_history(runtime: LocalRuntime) -> None:
    families = FamilyRepository(runtime.environment["FAMILIES_TABLE"])
    siret = complete_siret("2169012300002")
    families.upsert(siret, directory("late", 0))
    assert refreshed(families, siret, "late", 11, 900, "2026-11-20T06:00:00+00:00")

    assert refreshed(families, siret, "late", 6, 400, "2026-11-21T06:00:00+00:00")  # arrives last

    record = families.get(siret, "late")
    assert record is not None and record.qf is not None
    assert (record.qf.quotient_familial.mois, record.qf.quotient_familial.valeur) == (11, 900)
    assert [e.quotient_familial.mois for e in record.qf_history] == [6, 11]


def test_the_history_keeps_the_most_recent_periods_up_to_its_limit(runtime: LocalRuntime) -> None:
    families = FamilyRepository(runtime.environment["FAMILIES_TABLE"])
    siret = complete_siret("2169012300003")
    families.upsert(siret, directory("long", 0))
    months = [(year, month) for year in range(2020, 2026) for month in range(1, 13)][: HISTORY_LIMIT + 5]
    for year, month in months:
        entry = QfEntry(
            quotient_familial=QuotientFamilial(fournisseur="CNAF", valeur=month, annee=year, mois=month),
            source="refresh",
            source_id=f"{year}-{month:02d}",
            received_at=f"{year}-{month:02d}-10T06:00:00+00:00",
        )
        families.record_refresh(
            siret, "long", entry=entry, state=RefreshState(status="ok"), next_refresh_at=None
        )

    record = families.get(siret, "long")
    assert record is not None and len(record.qf_history) == HISTORY_LIMIT
    kept = [(e.quotient_familial.annee, e.quotient_familial.mois) for e in record.qf_history]
    assert kept == months[-HISTORY_LIMIT:]
    assert (
        record.qf is not None
        and (record.qf.quotient_familial.annee, record.qf.quotient_familial.mois) == months[-1]
    )


def test_pivot_identities_of_families_no_longer_refreshed_expire(runtime: LocalRuntime) -> None:
    env = runtime.environment
    editor = runtime.editor_service()
    families = FamilyRepository(env["FAMILIES_TABLE"])
    dossiers = DossierRepository(env["DOSSIERS_TABLE"])
    siret = complete_siret("2169012300004")
    editor.put_tenant(siret, TenantConfig(name="Commune", cog="69123"))
    today = dt.datetime(2027, 6, 1, 6, 0, tzinfo=dt.UTC)
    due = {
        "stale": today - dt.timedelta(days=PIVOT_RETENTION_DAYS + 1),
        "recent": today - dt.timedelta(days=PIVOT_RETENTION_DAYS - 1),
    }
    for user_id, due_at in due.items():
        families.upsert(siret, directory(user_id, 0))
        record = dossiers.start(f"case-{user_id}", siret, f"n-{user_id}", today, lease_seconds=0)
        persist_link(
            families, dossiers, record, DOSSIER, user_id, source="dossier", now=today, patch=DossierPatch()
        )
        families.defer(siret, user_id, due_at.isoformat())

    report = TokenWatchService(
        TenantRepository(env["TENANTS_TABLE"]),
        EventPublisher(env["EVENT_BUS_NAME"]),
        clock=lambda: today,
        families=families,
    ).run()

    stale, recent = families.get(siret, "stale"), families.get(siret, "recent")
    assert stale is not None and recent is not None
    assert (
        stale.pivot_identity is None and stale.next_refresh_at is None and stale.refresh.status == "expired"
    )
    assert stale.qf is not None and stale.family is not None  # the QF and the directory stay
    assert recent.pivot_identity is not None and recent.next_refresh_at is not None
    assert report.identities_expired == 1
