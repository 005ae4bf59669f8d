"""The QF client against the API Particulier sandbox, over real HTTP on 127.0.0.1.

Clocks are injected: the wall clock (current month, maintenance, cache) and the monotonic clock
of the rate limiter never depend on how fast the machine is."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qfbridge.api_particulier import (
    ApiParticulierClient,
    ApiParticulierConfig,
    FamilyNotFound,
    Forbidden,
    Maintenance,
    ProviderUnavailable,
    QfFound,
    Throttled,
    TokenExpired,
    TransportFailure,
)
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge_local.sandboxes.api_particulier import FIXTURES_DIR, QF_IDENTITE_PATH, ApiParticulierSandbox
from tests.support.fakes import Monotonic

SIRET = "13002526500013"
OTHER_SIRET = "21040107100019"
TOKEN = "tenant-token"
PARIS = dt.timezone(dt.timedelta(hours=2))  # June 2026 in Paris (CEST), for readable fixed instants


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 6, 17, 10, 0, tzinfo=PARIS))  # a Wednesday


@pytest.fixture
def monotonic() -> Monotonic:
    return Monotonic()


@pytest.fixture
def sandbox(clock: Clock, monotonic: Monotonic) -> Iterator[ApiParticulierSandbox]:
    with ApiParticulierSandbox(
        seed=7, clock=clock, monotonic=monotonic, timeout_fault_delay_seconds=0.5
    ) as box:
        box.add_token(TOKEN, {SIRET})
        yield box


@pytest.fixture
def client(sandbox: ApiParticulierSandbox) -> Iterator[ApiParticulierClient]:
    with ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url, timeout_seconds=2.0)) as api:
        yield api


@pytest.fixture
def raw(sandbox: ApiParticulierSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


LEFEBVRE = PivotIdentity(
    family_name="LEFEBVRE",
    given_name="ALEXIS GÉRÔME JEAN-PHILIPPE",
    gender="female",
    birthdate=dt.date(1982, 12, 27),
    birthplace="08480",
)
MOREAU = PivotIdentity(
    family_name="MOREAU",
    given_name="Claire Élise",
    gender="female",
    birthdate=dt.date(1988, 2, 29),
    birthplace="2A004",
)
QF_JUNE = QuotientFamilial(
    fournisseur="CNAF", valeur=540, annee=2026, mois=6, annee_calcul=2026, mois_calcul=6
)


def case_query(path: Path) -> list[tuple[str, str]]:
    params = yaml.safe_load(path.read_text(encoding="utf-8"))["params"]
    pairs = [("recipient", SIRET)]
    for key, value in params.items():
        pairs += [("prenoms[]", str(p)) for p in value] if key == "prenoms" else [(key, str(value))]
    return pairs


# --- Staging cases -------------------------------------------------------------------------------------


REFUSED_BEFORE_LOOKUP = {"404"}
"""Staging cases whose query the API refuses before any lookup (``404`` sends no ``prenoms[]``)."""


@pytest.mark.parametrize(
    "path",
    [path for path in sorted(FIXTURES_DIR.glob("*.yaml")) if path.stem not in REFUSED_BEFORE_LOOKUP],
    ids=lambda path: path.stem,
)
def test_every_staging_case_answers_exactly_as_on_staging(path: Path, raw: httpx.Client) -> None:
    # Given a real staging case
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    # When its exact query is sent
    response = raw.get(QF_IDENTITE_PATH, params=tuple(case_query(path)))
    # Then the status and the payload are the recorded ones, byte for byte
    assert response.status_code == case["status"]
    assert response.content == case["payload"].encode("utf-8")


def test_numbers_are_compared_as_numbers_when_matching_a_staging_case(raw: httpx.Client) -> None:
    query = [
        (key, "06" if key == "moisDateNaissance" else value)
        for key, value in case_query(FIXTURES_DIR / "200-couple-2_enfants-qf_msa_150_mai26.yaml")
    ]
    response = raw.get(QF_IDENTITE_PATH, params=tuple(query))
    assert response.status_code == 200
    assert response.json()["data"]["quotient_familial"]["valeur"] == 150


def test_the_client_finds_a_staging_family_by_its_pivot_identity(client: ApiParticulierClient) -> None:
    outcome = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert isinstance(outcome, QfFound)
    assert outcome.quotient_familial is not None and outcome.quotient_familial.valeur == 2550
    assert outcome.request_id and outcome.rate_limit is not None and outcome.rate_limit.limit == 20


def test_the_client_sends_no_cache_and_the_exact_staging_query(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    received = sandbox.requests_received()[-1]
    assert received.cache_control == "no-cache" and received.token == TOKEN
    assert sorted(received.query) == sorted(case_query(FIXTURES_DIR / "200-identite-cas-nominal.yaml"))


# --- Seeded population, monthly change, cache ---------------------------------------------------------


def test_a_seeded_family_is_found_leniently_like_cnaf_does(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    # Given a seeded household with a child
    enfant = Person(nom_naissance="MOREAU", prenoms="Lou", date_naissance=dt.date(2015, 5, 1), sexe="F")
    sandbox.add_person(MOREAU, QF_JUNE, enfants=[enfant])
    # When the client asks in lower case and without accents
    outcome = client.fetch_quotient_familial(
        MOREAU.model_copy(update={"given_name": "claire elise"}), SIRET, TOKEN
    )
    # Then the household and its June QF are returned
    assert isinstance(outcome, QfFound)
    assert outcome.quotient_familial == QF_JUNE
    assert [person.prenoms for person in outcome.enfants] == ["Lou"]


def test_a_wrong_birth_date_is_not_found(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    sandbox.add_person(MOREAU, QF_JUNE)
    outcome = client.fetch_quotient_familial(
        MOREAU.model_copy(update={"birthdate": dt.date(1988, 3, 1)}), SIRET, TOKEN
    )
    assert isinstance(outcome, FamilyNotFound) and outcome.error_codes == ("37003",)


def test_set_qf_changes_the_qf_from_next_month_and_no_cache_sees_it(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox, clock: Clock
) -> None:
    # Given a family at 540 in June whose QF becomes 610 next month
    clock.now = dt.datetime(2026, 6, 30, 20, 0, tzinfo=PARIS)
    household = sandbox.add_person(MOREAU, QF_JUNE)
    sandbox.set_qf(household, 610)
    june = client.fetch_quotient_familial(MOREAU, SIRET, TOKEN, no_cache=False)
    # When July comes, within the 24 h of API Particulier's cache
    clock.now = dt.datetime(2026, 7, 1, 8, 0, tzinfo=PARIS)
    cached = client.fetch_quotient_familial(MOREAU, SIRET, TOKEN, no_cache=False)
    fresh = client.fetch_quotient_familial(MOREAU, SIRET, TOKEN)
    # Then the cache still says 540, and only the no-cache refresh gets July's 610
    assert isinstance(june, QfFound) and isinstance(cached, QfFound) and isinstance(fresh, QfFound)
    assert june.quotient_familial is not None and june.quotient_familial.valeur == 540
    assert cached.quotient_familial is not None and cached.quotient_familial.valeur == 540
    assert fresh.quotient_familial is not None
    assert (fresh.quotient_familial.valeur, fresh.quotient_familial.mois) == (610, 7)


def test_a_past_month_can_be_asked_for(client: ApiParticulierClient, sandbox: ApiParticulierSandbox) -> None:
    household = sandbox.add_person(MOREAU, QF_JUNE)
    sandbox.set_qf(household, 700, annee=2026, mois=4)
    outcome = client.fetch_quotient_familial(MOREAU, SIRET, TOKEN, annee=2026, mois=5)
    assert isinstance(outcome, QfFound) and outcome.quotient_familial is not None
    assert (outcome.quotient_familial.valeur, outcome.quotient_familial.mois) == (700, 5)


# --- Validation -------------------------------------------------------------------------------------


def error_codes(response: httpx.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


NOMINAL = case_query(FIXTURES_DIR / "200-identite-cas-nominal.yaml")


def replaced(query: list[tuple[str, str]], key: str, value: str | None) -> list[tuple[str, str]]:
    kept = [pair for pair in query if pair[0] != key]
    return kept if value is None else [*kept, (key, value)]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param(replaced(NOMINAL, "sexeEtatCivil", "X"), "00361", id="sexe-not-M-or-F"),
        pytest.param(replaced(NOMINAL, "sexeEtatCivil", None), "00361", id="sexe-missing"),
        pytest.param(replaced(NOMINAL, "codeCogInseePaysNaissance", "100"), "00362", id="pays-not-5-digits"),
        pytest.param(replaced(NOMINAL, "codeCogInseeCommuneNaissance", "8480"), "00363", id="commune-not-5"),
        pytest.param(replaced(NOMINAL, "codeCogInseeCommuneNaissance", None), "00364", id="commune-missing"),
        pytest.param(
            replaced(NOMINAL, "codeCogInseePaysNaissance", "99127"), "00365", id="commune-when-abroad"
        ),
        pytest.param(replaced(NOMINAL, "moisDateNaissance", "13"), "00367", id="month-13"),
        pytest.param(
            replaced(replaced(NOMINAL, "moisDateNaissance", "2"), "jourDateNaissance", "30"),
            "00367",
            id="30-feb",
        ),
        pytest.param(replaced(NOMINAL, "nomNaissance", None), "00419", id="nom-missing"),
        pytest.param(replaced(NOMINAL, "nomNaissance", "LEF3BVRE"), "00420", id="digit-in-name"),
        pytest.param(replaced(NOMINAL, "nomNaissance", "D’ALMEIDA"), "00420", id="typographic-apostrophe"),
        pytest.param(replaced(NOMINAL, "nomNaissance", "CŒURDEROI"), "00420", id="ligature"),
        pytest.param(replaced(NOMINAL, "prenoms[]", None), "00421", id="prenoms-missing"),
        pytest.param(replaced(NOMINAL, "prenoms[]", "Łukasz"), "00422", id="prenom-beyond-latin-1"),
        pytest.param([*NOMINAL, ("prenoms[]", "MARIE")], "00423", id="four-prenoms"),
        pytest.param(replaced(NOMINAL, "nomUsage", "ST.MARTIN"), "00426", id="dot-in-nom-usage"),
        pytest.param(replaced(NOMINAL, "nomUsage", "Dvořák"), "00426", id="nom-usage-beyond-latin-1"),
        pytest.param(replaced(NOMINAL, "recipient", None), "00203", id="recipient-missing"),
        pytest.param(replaced(NOMINAL, "recipient", "13002526500014"), "00210", id="recipient-bad-luhn"),
    ],
)
def test_malformed_queries_get_a_422_with_their_own_code(
    raw: httpx.Client, query: list[tuple[str, str]], code: str
) -> None:
    response = raw.get(QF_IDENTITE_PATH, params=tuple(query))
    assert response.status_code == 422
    assert error_codes(response) == [code]


def test_latin_1_names_with_straight_apostrophes_and_hyphens_are_accepted(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    # Given a family whose names use the whole of what the API accepts
    identity = LEFEBVRE.model_copy(update={"family_name": "D'ALMEIDA-ÇÃO", "given_name": "Zoë Anaïs"})
    sandbox.add_person(identity, QF_JUNE)
    # When the client asks for it, Then it is found
    assert isinstance(client.fetch_quotient_familial(identity, SIRET, TOKEN), QfFound)


def test_a_query_without_prenoms_is_refused_before_any_staging_case_matches(raw: httpx.Client) -> None:
    # Given the staging case that sends no prenoms[] (recorded as a 404)
    query = case_query(FIXTURES_DIR / "404.yaml")
    # When it is sent, Then the API refuses it as it validates before any lookup
    response = raw.get(QF_IDENTITE_PATH, params=tuple(query))
    assert response.status_code == 422 and error_codes(response) == ["00421"]


def test_staging_cases_match_whatever_the_case_and_accents_of_the_names(raw: httpx.Client) -> None:
    # Given the nominal staging case, its names sent in lower case
    path = FIXTURES_DIR / "200-identite-cas-nominal.yaml"
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    lowered = [
        (key, value.lower()) if key in ("nomNaissance", "prenoms[]") else (key, value)
        for key, value in case_query(path)
    ]
    # When it is sent, Then it is the same case
    response = raw.get(QF_IDENTITE_PATH, params=tuple(lowered))
    assert response.status_code == 200 and response.content == case["payload"].encode("utf-8")


@pytest.mark.parametrize(
    ("annee", "mois", "status", "code"),
    [
        pytest.param("2026", "6", 200, None, id="current-month"),
        pytest.param("2024", "7", 200, None, id="23-months-before"),
        pytest.param("2024", "6", 422, "00368", id="24-months-before"),
        pytest.param("2000", "1", 422, "00368", id="long-ago"),
        pytest.param("2026", "7", 400, "00369", id="next-month"),
        pytest.param(None, "7", 400, "00369", id="a-later-month-of-this-year"),
        pytest.param("2026", "13", 422, "00368", id="month-13"),
    ],
)
def test_the_qf_month_is_the_current_one_or_one_of_the_23_before(
    client: ApiParticulierClient,
    sandbox: ApiParticulierSandbox,
    raw: httpx.Client,
    annee: str | None,
    mois: str,
    status: int,
    code: str | None,
) -> None:
    # Given a seeded family and a clock in June 2026
    sandbox.add_person(MOREAU, QF_JUNE)
    query = [pair for pair in moreau_query() if pair[0] not in ("annee", "mois")]
    query += [("mois", mois)] + ([("annee", annee)] if annee else [])
    # When a QF month is asked for
    response = raw.get(QF_IDENTITE_PATH, params=tuple(query))
    # Then only the last 24 months (this one included) are served
    assert response.status_code == status
    if code is not None:
        assert error_codes(response) == [code]


def moreau_query() -> list[tuple[str, str]]:
    from qfbridge.api_particulier import build_query

    return build_query(MOREAU, SIRET)


# --- Tokens ----------------------------------------------------------------------------------------------


def test_an_unknown_token_is_refused(client: ApiParticulierClient) -> None:
    outcome = client.fetch_quotient_familial(LEFEBVRE, SIRET, "not-a-token")
    assert isinstance(outcome, TokenExpired) and not outcome.expired and outcome.error_codes == ("00101",)


def test_an_expired_token_answers_00103_until_it_is_prolonged_in_place(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    sandbox.expire_token(TOKEN)
    expired = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    sandbox.prolong_token(TOKEN)
    again = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert isinstance(expired, TokenExpired) and expired.expired and expired.status == 401
    assert isinstance(again, QfFound)


def test_a_recipient_the_token_is_not_for_is_forbidden(client: ApiParticulierClient) -> None:
    outcome = client.fetch_quotient_familial(LEFEBVRE, OTHER_SIRET, TOKEN)
    assert isinstance(outcome, Forbidden) and outcome.error_codes == ("00100",)


# --- Rate limit ------------------------------------------------------------------------------------------


def test_the_21st_call_within_a_second_is_throttled_then_accepted_after_retry_after(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox, monotonic: Monotonic
) -> None:
    # Given 20 calls in the same second (the default limit)
    first = [client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN) for _ in range(20)]
    # When a 21st is made
    throttled = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    # Then it gets 429 with Retry-After, and every answer announced the budget
    assert all(isinstance(outcome, QfFound) for outcome in first)
    assert [outcome.rate_limit.remaining for outcome in first[-2:] if outcome.rate_limit] == [1, 0]
    assert isinstance(throttled, Throttled)
    assert throttled.retry_after_seconds == 1
    assert throttled.rate_limit is not None and throttled.rate_limit.remaining == 0
    # And once Retry-After has elapsed the next call is accepted
    monotonic.now += throttled.retry_after_seconds
    assert isinstance(client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN), QfFound)
    assert sandbox.stats().throttled == 1
    assert sandbox.max_rate_observed(TOKEN) == 21


def test_the_rate_limit_is_per_token_and_configurable(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    sandbox.add_token("slow-token", rate_limit_per_second=2)
    outcomes = [client.fetch_quotient_familial(LEFEBVRE, SIRET, "slow-token") for _ in range(3)]
    other = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert [outcome.kind for outcome in outcomes] == ["qf_found", "qf_found", "throttled"]
    assert isinstance(other, QfFound)


@pytest.mark.parametrize("token", ["expired", "unknown"])
def test_the_rate_limit_counts_calls_before_their_token_is_checked(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox, token: str
) -> None:
    # Given a token the API refuses (expired, or unknown to it)
    if token == "expired":
        sandbox.add_token(token, {SIRET})
        sandbox.expire_token(token)
    # When it calls 21 times within one second
    outcomes = [client.fetch_quotient_familial(LEFEBVRE, SIRET, token) for _ in range(21)]
    # Then the limiter, which runs before authentication, throttles the 21st
    assert [outcome.kind for outcome in outcomes[:20]] == ["token_expired"] * 20
    assert isinstance(outcomes[20], Throttled)


def test_a_request_still_running_at_the_provider_answers_409_to_its_duplicate(
    clock: Clock, monotonic: Monotonic
) -> None:
    # Given a provider that takes a while (the monotonic clock is frozen: the first call is still running)
    with ApiParticulierSandbox(
        seed=7, clock=clock, monotonic=monotonic, provider_latency_seconds=0.05
    ) as box:
        box.add_token(TOKEN, {SIRET})
        with ApiParticulierClient(ApiParticulierConfig(base_url=box.url)) as api:
            first = api.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
            # When the same request is sent again while the first runs
            duplicate = api.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
            other = api.fetch_quotient_familial(MOREAU, SIRET, TOKEN)
            monotonic.now += 1.0
            later = api.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    # Then the duplicate is refused with 00015, another request or a later one is served
    assert first.kind == "qf_found" and later.kind == "qf_found"
    assert duplicate.kind == "already_running" and duplicate.error_codes == ("00015",)
    assert other.kind == "not_found"


def test_max_rate_observed_counts_calls_within_one_second_windows(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox, monotonic: Monotonic
) -> None:
    for step in range(10):  # 10 calls spaced 0.25 s: at most 4 in any 1 s window
        monotonic.now = 1_000.0 + step * 0.25
        client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert sandbox.max_rate_observed(TOKEN) == 4


# --- Maintenance and faults --------------------------------------------------------------------------


def test_maintenance_answers_503_with_retry_in(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    sandbox.set_maintenance(True, retry_in_seconds=300)
    during = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    sandbox.set_maintenance(False)
    after = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert isinstance(during, Maintenance) and during.status == 503 and during.retry_after_seconds == 300
    assert isinstance(after, QfFound)


def test_the_sunday_window_of_the_clock_triggers_maintenance_until_23_45_paris(clock: Clock) -> None:
    # Given a sandbox following the schedule, on Sunday 21 June 2026 at 23:10 Paris
    clock.now = dt.datetime(2026, 6, 21, 23, 10, tzinfo=PARIS)
    with ApiParticulierSandbox(clock=clock, follow_maintenance_schedule=True) as sandbox:
        sandbox.add_token(TOKEN)
        with ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url)) as client:
            during = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
            clock.now = dt.datetime(2026, 6, 21, 23, 45, tzinfo=PARIS)
            after = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    # Then the call waits the 35 minutes left, and 23:45 is open again
    assert isinstance(during, Maintenance) and during.retry_after_seconds == 35 * 60
    assert isinstance(after, QfFound)


@pytest.mark.parametrize(
    ("kind", "outcome_kind"), [(502, "provider_error"), (504, "provider_error"), (409, "already_running")]
)
def test_an_injected_fault_answers_once_then_service_resumes(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox, kind: int, outcome_kind: str
) -> None:
    sandbox.inject(kind)
    failed = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    recovered = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert failed.kind == outcome_kind and failed.status == kind and failed.retryable
    assert isinstance(recovered, QfFound)


def test_an_injected_502_carries_the_provider_error_code(
    client: ApiParticulierClient, sandbox: ApiParticulierSandbox
) -> None:
    sandbox.inject("502", times=2)
    outcomes = [client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN) for _ in range(2)]
    assert all(isinstance(outcome, ProviderUnavailable) for outcome in outcomes)
    assert outcomes[0].error_codes == ("37999",)
    assert sandbox.stats().faults_injected == 2


def test_an_injected_timeout_is_a_transport_failure(sandbox: ApiParticulierSandbox) -> None:
    sandbox.inject("timeout")
    with ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url, timeout_seconds=0.05)) as client:
        outcome = client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN)
    assert isinstance(outcome, TransportFailure) and outcome.reason == "timeout"


def fault_sequence(seed: int) -> list[int]:
    with ApiParticulierSandbox(seed=seed, load_fixtures=True) as sandbox:
        sandbox.add_token(TOKEN, rate_limit_per_second=1_000)
        sandbox.fault_rates({502: 0.3, 504: 0.2})
        with ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url)) as client:
            return [client.fetch_quotient_familial(LEFEBVRE, SIRET, TOKEN).status or 0 for _ in range(40)]


def test_probabilistic_faults_are_reproducible_with_the_seed() -> None:
    first, again, other = fault_sequence(3), fault_sequence(3), fault_sequence(4)
    assert first == again and first != other
    assert {502, 504, 200} == set(first)


# --- Concurrency --------------------------------------------------------------------------------------


def test_concurrent_calls_are_all_counted(sandbox: ApiParticulierSandbox) -> None:
    sandbox.add_token("busy", rate_limit_per_second=1_000)
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        with ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url)) as client:
            for _ in range(10):
                outcome = client.fetch_quotient_familial(LEFEBVRE, SIRET, "busy")
                with lock:
                    results.append(outcome.kind)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sandbox.stats()
    assert results == ["qf_found"] * 80
    assert stats.by_token["busy"] == 80 and stats.by_status[200] == 80
