"""API Particulier QF client: the query mapping (checked against the real staging cases) and the
mapping of every answer to a typed outcome (through httpx.MockTransport, no network)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qfbridge.api_particulier import (
    AlreadyRunning,
    ApiParticulierClient,
    ApiParticulierConfig,
    FamilyNotFound,
    Forbidden,
    IdentityRejected,
    Maintenance,
    ProviderUnavailable,
    QfFound,
    Throttled,
    TokenExpired,
    TransportFailure,
    UnexpectedAnswer,
    build_query,
)
from qfbridge.domain.errors import ValidationError
from qfbridge.domain.identity import PivotIdentity

FIXTURES = (
    Path(__file__).resolve().parents[2] / "local" / "qfbridge_local" / "data" / "api_particulier_fixtures"
)
SIRET = "13002526500013"
NOW = dt.datetime(2026, 6, 15, 10, 0, tzinfo=dt.UTC)


def staging_case(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8"))


def staging_query(name: str) -> list[tuple[str, str]]:
    """A staging case's params as the (key, value) pairs of a query string."""
    pairs: list[tuple[str, str]] = []
    for key, value in staging_case(name)["params"].items():
        if key == "prenoms":
            pairs += [("prenoms[]", str(prenom)) for prenom in value]
        else:
            pairs.append((key, str(value)))
    return pairs


def without_recipient(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [pair for pair in query if pair[0] != "recipient"]


def same_query(actual: list[tuple[str, str]], expected: list[tuple[str, str]]) -> bool:
    """Same pairs, and prénoms in the same order (their order is meaningful)."""
    prenoms = [value for key, value in actual if key == "prenoms[]"]
    expected_prenoms = [value for key, value in expected if key == "prenoms[]"]
    return sorted(actual) == sorted(expected) and prenoms == expected_prenoms


LEFEBVRE = PivotIdentity(
    family_name="LEFEBVRE",
    given_name="ALEXIS GÉRÔME JEAN-PHILIPPE",
    gender="female",
    birthdate=dt.date(1982, 12, 27),
    birthplace="08480",
    birthcountry="99100",
)


# --- build_query ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "identity", "nom_usage"),
    [
        pytest.param("200-identite-cas-nominal", LEFEBVRE, None, id="born-in-france-3-prenoms"),
        pytest.param(
            "200-usager-base-france_connect",
            PivotIdentity(
                family_name="DUBOIS",
                given_name="ANGELA CLAIRE LOUISE",
                gender="female",
                birthdate=dt.date(1962, 8, 24),
                birthplace="75107",
            ),
            None,
            id="franceconnect-base-user",
        ),
        pytest.param(
            "200-identite-cas-etranger",
            PivotIdentity(
                family_name="FAKIR",
                given_name="EYMEN MOHAMED",
                gender="male",
                birthdate=dt.date(1992, 11, 14),
                birthplace="",
                birthcountry="99350",
            ),
            None,
            id="born-abroad",
        ),
        pytest.param(
            "200-identite-cas-nominal-peu-de-donnee-prenom",
            LEFEBVRE.model_copy(update={"given_name": "ALEXIS"}),
            None,
            id="few-data-one-prenom",
        ),
        pytest.param(
            "200-nom-usage-femme-seule-qf_caf_800",
            PivotIdentity(
                family_name="DURAND",
                given_name="SOPHIE MARIE",
                gender="female",
                birthdate=dt.date(1985, 3, 15),
                birthplace="08480",
            ),
            "MARTIN",
            id="nom-usage",
        ),
    ],
)
def test_build_query_reproduces_the_staging_case_params(
    case: str, identity: PivotIdentity, nom_usage: str | None
) -> None:
    # Given the pivot identity of a person of a real staging case
    # When the refresh query is built
    query = build_query(identity, SIRET, nom_usage=nom_usage)
    # Then it is exactly the case's params, plus the recipient
    assert same_query(without_recipient(query), staging_query(case))
    assert ("recipient", SIRET) in query


def test_build_query_omits_the_commune_of_someone_born_abroad_even_when_the_form_sent_one() -> None:
    # Given a usager born in the United States whose identity still carries a birthplace
    identity = PivotIdentity(
        family_name="SIMPSON",
        given_name="Marge",
        gender="female",
        birthdate=dt.date(1980, 11, 15),
        birthplace="75056",
        birthcountry="99404",
    )
    # When the query is built
    query = build_query(identity, SIRET)
    # Then it is the staging case of a birth abroad: no codeCogInseeCommuneNaissance
    assert same_query(
        without_recipient(query), staging_query("200-etranger-celibataire-2_enfants-qf_cnaf_300_sept2024")
    )


def test_build_query_omits_an_unknown_commune_of_someone_born_in_france() -> None:
    identity = LEFEBVRE.model_copy(update={"birthplace": None})
    keys = [key for key, _ in build_query(identity, SIRET)]
    assert "codeCogInseeCommuneNaissance" not in keys
    assert ("codeCogInseePaysNaissance", "99100") in build_query(identity, SIRET)


def test_build_query_sends_at_most_three_prenoms_in_order_and_collapses_spaces() -> None:
    # Given four first names separated by irregular spaces
    identity = LEFEBVRE.model_copy(
        update={"given_name": "  Jean   Paul Marie  Pierre ", "family_name": " DE  LA TOUR"}
    )
    # When the query is built
    query = build_query(identity, SIRET)
    # Then the first three are sent, in order, and the name is clean
    assert [value for key, value in query if key == "prenoms[]"] == ["Jean", "Paul", "Marie"]
    assert ("nomNaissance", "DE LA TOUR") in query


def test_build_query_drops_a_nom_usage_equal_to_the_nom_de_naissance() -> None:
    query = build_query(LEFEBVRE, SIRET, nom_usage="Lefebvre")
    assert "nomUsage" not in [key for key, _ in query]


def test_build_query_asks_for_a_given_month_when_told() -> None:
    query = build_query(LEFEBVRE, SIRET, annee=2026, mois=5)
    assert query[-2:] == [("annee", "2026"), ("mois", "5")]


def test_build_query_refuses_an_impossible_month() -> None:
    with pytest.raises(ValidationError) as raised:
        build_query(LEFEBVRE, SIRET, annee=2026, mois=13)
    assert raised.value.code == "pivot_identity_unusable"


# --- Outcome mapping ------------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def client_answering(handler: Handler) -> ApiParticulierClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return ApiParticulierClient(ApiParticulierConfig.for_environment("staging"), http=http, clock=lambda: NOW)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, str) else json.dumps(body if body is not None else {})
        return httpx.Response(
            status, content=content.encode(), headers={"X-Request-ID": "req-1", **(headers or {})}
        )

    return handler


def error_body(code: str, **meta: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "title": "t", "detail": "d", "source": None, "meta": meta}]}


def fetch(handler: Handler, **kwargs: Any) -> Any:
    return client_answering(handler).fetch_quotient_familial(LEFEBVRE, SIRET, "the-token", **kwargs)


def test_a_200_becomes_qf_found_with_the_household_and_the_request_id() -> None:
    # Given the staging answer of a couple with two children, MSA QF 150 in May 2026
    payload = staging_case("200-couple-2_enfants-qf_msa_150_mai26")["payload"]
    # When the client fetches
    outcome = fetch(answer(200, payload))
    # Then the QF, both allocataires and both children are there
    assert isinstance(outcome, QfFound)
    assert outcome.kind == "qf_found" and not outcome.retryable
    assert outcome.quotient_familial is not None
    assert (outcome.quotient_familial.fournisseur, outcome.quotient_familial.valeur) == ("MSA", 150)
    assert (outcome.quotient_familial.annee, outcome.quotient_familial.mois) == (2026, 5)
    assert [person.prenoms for person in outcome.allocataires] == ["JEANNE STEPHANIE", "LOIC NATHAN"]
    assert [person.date_naissance for person in outcome.enfants] == [
        dt.date(2006, 4, 20),
        dt.date(2004, 4, 20),
    ]
    assert outcome.request_id == "req-1"


def test_a_200_without_the_qf_scope_has_no_quotient_familial() -> None:
    outcome = fetch(answer(200, {"data": {"allocataires": [], "enfants": []}, "links": {}, "meta": {}}))
    assert isinstance(outcome, QfFound)
    assert outcome.quotient_familial is None


def test_a_member_with_a_malformed_birth_date_is_kept_without_it_and_a_nameless_one_is_skipped() -> None:
    body = {
        "data": {
            "allocataires": [
                {"nom_naissance": "ROUX", "prenoms": "ANNE", "date_naissance": "1980-00-00", "sexe": "F"}
            ],
            "enfants": [{"prenoms": "SANS NOM"}],
        }
    }
    outcome = fetch(answer(200, body))
    assert isinstance(outcome, QfFound)
    assert outcome.allocataires[0].date_naissance is None
    assert outcome.enfants == [] and outcome.members_skipped == 1


def test_a_200_breaking_the_contract_is_an_unexpected_answer_not_a_crash() -> None:
    outcome = fetch(
        answer(200, {"data": {"quotient_familial": {"fournisseur": "CNAF", "valeur": "beaucoup"}}})
    )
    assert isinstance(outcome, UnexpectedAnswer)
    assert outcome.reason == "invalid_payload" and not outcome.retryable


def test_a_401_with_code_00103_is_an_expired_token() -> None:
    outcome = fetch(answer(401, error_body("00103")))
    assert isinstance(outcome, TokenExpired)
    assert outcome.kind == "token_expired" and outcome.expired and not outcome.retryable
    assert outcome.error_codes == ("00103",)


def test_a_401_with_another_code_is_a_refused_token_not_flagged_expired() -> None:
    outcome = fetch(answer(401, error_body("00101")))
    assert isinstance(outcome, TokenExpired)
    assert not outcome.expired


def test_a_403_is_forbidden() -> None:
    outcome = fetch(answer(403, error_body("00100")))
    assert isinstance(outcome, Forbidden) and outcome.kind == "forbidden" and not outcome.retryable


def test_a_404_is_family_not_found_with_the_provider_code() -> None:
    outcome = fetch(answer(404, staging_case("404")["payload"]))
    assert isinstance(outcome, FamilyNotFound)
    assert outcome.kind == "not_found" and not outcome.retryable
    assert outcome.error_codes == ("37003",)


def test_a_409_is_already_running_and_retryable() -> None:
    outcome = fetch(answer(409, error_body("00015")))
    assert isinstance(outcome, AlreadyRunning)
    assert outcome.kind == "already_running" and outcome.retryable
    assert outcome.retry_after_seconds is not None and outcome.retry_after_seconds > 0


def test_a_422_is_identity_rejected_with_its_codes() -> None:
    outcome = fetch(answer(422, error_body("00366")))
    assert isinstance(outcome, IdentityRejected)
    assert outcome.kind == "identity_rejected" and not outcome.retryable
    assert outcome.error_codes == ("00366",)


def test_a_429_waits_what_retry_after_says() -> None:
    outcome = fetch(answer(429, error_body("00429"), {"Retry-After": "7"}))
    assert isinstance(outcome, Throttled)
    assert outcome.kind == "throttled" and outcome.retryable
    assert outcome.retry_after_seconds == 7


def test_a_429_with_an_http_date_retry_after_is_dated_with_the_injected_clock() -> None:
    when = "Mon, 15 Jun 2026 10:00:30 GMT"
    outcome = fetch(answer(429, error_body("00429"), {"Retry-After": when}))
    assert outcome.retry_after_seconds == 30


def test_a_429_without_retry_after_waits_until_the_rate_limit_reset() -> None:
    reset = int(NOW.timestamp()) + 4
    outcome = fetch(
        answer(429, error_body("00429"), {"RateLimit-Reset": str(reset), "RateLimit-Remaining": "0"})
    )
    assert outcome.retry_after_seconds == 4


def test_a_bare_429_waits_a_conservative_default() -> None:
    outcome = fetch(answer(429, staging_case("429")["payload"]))
    assert isinstance(outcome, Throttled)
    assert outcome.retry_after_seconds is not None and outcome.retry_after_seconds >= 30


@pytest.mark.parametrize("status", [502, 504])
def test_a_502_or_504_is_a_retryable_provider_error(status: int) -> None:
    outcome = fetch(answer(status, staging_case(str(status))["payload"]))
    assert isinstance(outcome, ProviderUnavailable)
    assert outcome.kind == "provider_error" and outcome.retryable
    assert outcome.status == status


def test_a_503_waits_the_retry_in_of_the_maintenance() -> None:
    outcome = fetch(answer(503, error_body("00503", retry_in=1200)))
    assert isinstance(outcome, Maintenance)
    assert outcome.kind == "maintenance" and outcome.retryable
    assert outcome.retry_after_seconds == 1200


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (400, False), (418, False)])
def test_any_other_status_is_unexpected_and_retryable_only_when_5xx(status: int, retryable: bool) -> None:
    outcome = fetch(answer(status, "<html>oops</html>"))
    assert isinstance(outcome, UnexpectedAnswer)
    assert outcome.kind == "unexpected" and outcome.retryable is retryable


@pytest.mark.parametrize(
    ("error", "reason"),
    [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "connection")],
)
def test_no_answer_at_all_is_a_retryable_transport_failure(error: Exception, reason: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = fetch(handler)
    assert isinstance(outcome, TransportFailure)
    assert outcome.kind == "transport_error" and outcome.retryable and outcome.reason == reason


def test_rate_limit_headers_are_kept_for_telemetry() -> None:
    headers = {"RateLimit-Limit": "20", "RateLimit-Remaining": "12", "RateLimit-Reset": "1781517601"}
    outcome = fetch(answer(404, error_body("37003"), headers))
    assert outcome.rate_limit is not None
    assert (outcome.rate_limit.limit, outcome.rate_limit.remaining, outcome.rate_limit.reset) == (
        20,
        12,
        1781517601,
    )
    assert outcome.log_fields()["ratelimit_remaining"] == 12


# --- Request ---------------------------------------------------------------------------------------


def recording(status: int = 404) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(status, error_body("37003"))(request)

    return seen, handler


def test_the_call_carries_the_bearer_token_no_cache_and_the_recipient() -> None:
    seen, handler = recording()
    fetch(handler)
    request = seen[0]
    assert request.url.path == "/v3/dss/quotient_familial/identite"
    assert request.url.host == "staging.particulier.api.gouv.fr"
    assert request.headers["Authorization"] == "Bearer the-token"
    assert request.headers["Cache-Control"] == "no-cache"
    assert request.url.params["recipient"] == SIRET
    assert request.url.params.get_list("prenoms[]") == ["ALEXIS", "GÉRÔME", "JEAN-PHILIPPE"]


def test_cache_control_is_left_out_when_the_cache_is_acceptable() -> None:
    seen, handler = recording()
    fetch(handler, no_cache=False)
    assert "Cache-Control" not in seen[0].headers


def test_an_identity_without_first_name_is_rejected_without_calling() -> None:
    seen, handler = recording()
    outcome = client_answering(handler).fetch_quotient_familial(
        LEFEBVRE.model_copy(update={"given_name": "   "}), SIRET, "the-token"
    )
    assert isinstance(outcome, IdentityRejected)
    assert outcome.status is None and outcome.error_codes == ("pivot_identity_unusable",)
    assert seen == []


def test_environments_point_at_the_documented_hosts() -> None:
    assert ApiParticulierConfig.for_environment("prod").base_url == "https://particulier.api.gouv.fr"
    assert (
        ApiParticulierConfig.for_environment("staging").base_url == "https://staging.particulier.api.gouv.fr"
    )
    assert ApiParticulierConfig.for_environment("prod").timeout_seconds == 5.0


# --- No personal data in what gets logged -------------------------------------------------------------


def test_outcomes_never_show_identities_or_qf_values_in_repr_str_or_log_fields() -> None:
    # Given a found family (staging: ROUX JEANNE, MSA QF 150)
    outcome = fetch(answer(200, staging_case("200-couple-2_enfants-qf_msa_150_mai26")["payload"]))
    assert isinstance(outcome, QfFound) and outcome.allocataires
    # When it is rendered for a log line
    rendered = " ".join([repr(outcome), str(outcome), json.dumps(outcome.log_fields())])
    # Then neither names, birth dates nor the QF appear
    for secret in ("ROUX", "JEANNE", "1987-06-27", "valeur", "150", "MSA", "the-token"):
        assert secret not in rendered
    assert "qf_found" in rendered and "req-1" in rendered
