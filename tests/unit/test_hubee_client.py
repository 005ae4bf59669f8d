"""The HubEE client against scripted answers (httpx.MockTransport): auth, retries, decoding, errors."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from qfbridge.domain.errors import DossierError, QfbridgeError
from qfbridge.hubee import (
    AsyncHubeeClient,
    AttachmentTooLarge,
    Case,
    CaseStatus,
    Download,
    Event,
    HubeeAuthError,
    HubeeBadRequestError,
    HubeeClient,
    HubeeConfig,
    HubeeCredentials,
    HubeeForbiddenError,
    HubeeNotFoundError,
    HubeeOutcomeUnknown,
    HubeeProtocolError,
    HubeeServerError,
    HubeeTransportError,
    Notification,
    TokenCache,
)
from tests.support.fakes import Monotonic

# Shapes of reference/formulaire-qf/hubee-samples.json (swagger 1.2.7 schemas, FormulaireQF values).
RECIPIENT = {"type": "SI", "companyRegister": "21260079000001", "branchCode": "26079"}
DINUM = {"type": "OSL", "companyRegister": "13002526500013", "branchCode": "75107"}
SAMPLES: dict[str, Any] = {
    "notifications_response": [
        {
            "id": "6a1f5a0e-3c2b-4d51-9a7e-2f0b7c1d9e01",
            "processCode": "FormulaireQF",
            "caseId": "0d7f3c2e-91a4-4b8e-a3c5-5e6f7a8b9c10",
            "eventId": None,
            "eventActionType": None,
            "eventStatus": None,
            "dateTime": "2026-03-14T09:12:44.521Z",
            "recipient": RECIPIENT,
            "transmitter": DINUM,
        },
        {
            "id": "b9e0d1c2-7f6a-4e3b-8c9d-0a1b2c3d4e5f",
            "processCode": "FormulaireQF",
            "caseId": "5c4b3a29-1807-4f6e-9d8c-7b6a5f4e3d2c",
            "eventId": "e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9",
            "eventActionType": "STATUS_UPDATE",
            "eventStatus": "SENT",
            "dateTime": "2026-03-14T13:10:02.004Z",
            "recipient": RECIPIENT,
            "transmitter": DINUM,
        },
    ],
    "case": {
        "id": "0d7f3c2e-91a4-4b8e-a3c5-5e6f7a8b9c10",
        "status": "HUBEE_NOTIFIED",
        "processCode": "FormulaireQF",
        "externalId": "Formulaire-QF-3F9A0C1B2D4E5-01",
        "recipient": RECIPIENT,
        "applicant": {"firstName": "Alexia Marie", "lastName": "LÉOUIS", "email": None},
        "createDateTime": "2026-03-14T09:12:40.101Z",
        "updateDateTime": "2026-03-14T09:12:44.521Z",
        "transmissionDateTime": "2026-03-14T09:12:44.521Z",
        "closeDateTime": None,
        "partnerAttributes": None,
        "attachments": [
            {
                "id": "a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b",
                "status": "RECEIVED",
                "fileName": "FormulaireQF.json",
                "type": "FormulaireQF",
                "size": 1234,
                "mimeType": "application/json",
            },
            {
                "id": "a1b2c3d4-0003-4e5f-8a9b-0c1d2e3f4a5b",
                "status": "RECEIVED",
                "fileName": "quotient_familial_LÉOUIS_Alexia_Marie.pdf",
                "type": "FormulaireQF",
                "size": 3079,
                "mimeType": "application/pdf",
            },
        ],
        "events": [],
    },
    "closed_event_from_the_form": {
        "id": "e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9",
        "actionType": "STATUS_UPDATE",
        "author": "DINUM",
        "notification": True,
        "status": "SENT",
        "caseCurrentStatus": "DONE",
        "caseNewStatus": "CLOSED",
        "message": "Dossier traité par le service.",
        "comment": "",
        "transmitter": DINUM,
        "attachments": [],
        "createDateTime": "2026-03-14T13:10:01.950Z",
        "updateDateTime": "2026-03-14T13:10:01.950Z",
    },
}
API = "https://api.test.hubee"
TOKEN_URL = "https://auth.test.hubee/oauth2/token"
SECRET = "s3cr3t-never-shown"
CASE_ID = "0d7f3c2e-91a4-4b8e-a3c5-5e6f7a8b9c10"
ATTACHMENT_ID = "a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b"
CASE_PATH = f"/teledossiers/v1/cases/{CASE_ID}"
DOWNLOAD_PATH = f"{CASE_PATH}/attachments/{ATTACHMENT_ID}"
EVENTS_PATH = f"{CASE_PATH}/events"

Responder = Callable[[httpx.Request], httpx.Response]


class FakeHubee:
    """Token endpoint + scripted API answers; records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.token_requests: list[httpx.Request] = []
        self.scripts: dict[tuple[str, str], list[Responder]] = {}
        self.tokens_issued = 0
        self.expires_in = 3600

    def script(self, method: str, path: str, *responders: Responder) -> None:
        self.scripts.setdefault((method, path), []).extend(responders)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            self.token_requests.append(request)
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{self.tokens_issued}",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                },
            )
        self.requests.append(request)
        queue = self.scripts.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"errors": [{"code": 404, "message": "not scripted"}]})
        responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return responder(request)

    def api_calls(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)


def answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):  # streamed, as a real transport does (content= would pre-read it)
            return httpx.Response(status, stream=httpx.ByteStream(body), headers=headers)
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return respond


def fail_with(exc_type: type[httpx.TransportError]) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return respond


@pytest.fixture
def fake() -> FakeHubee:
    return FakeHubee()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def cache() -> TokenCache:
    return TokenCache()


def make_client(
    fake: FakeHubee,
    sleeps: list[float],
    clock: Monotonic,
    cache: TokenCache,
    client_id: str = "client-1",
    **settings: object,
) -> HubeeClient:
    config = HubeeConfig(api_url=API, token_url=TOKEN_URL, editor_name="Editeur SA", **settings)
    return HubeeClient(
        config,
        HubeeCredentials(client_id=client_id, client_secret=SECRET),
        http=httpx.Client(transport=httpx.MockTransport(fake)),
        sleep=sleeps.append,
        clock=clock,
        token_cache=cache,
        rng=random.Random(7),
    )


@pytest.fixture
def client(fake: FakeHubee, sleeps: list[float], clock: Monotonic, cache: TokenCache) -> HubeeClient:
    return make_client(fake, sleeps, clock, cache)


# --- token -------------------------------------------------------------------------------------


def test_token_request_is_a_basic_auth_form_post_with_scope_si(client: HubeeClient, fake: FakeHubee) -> None:
    # Given a pending notification page
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, []))
    # When the client lists notifications for the first time
    client.list_notifications()
    # Then it asked for a token exactly as HubEE requires
    (token_request,) = fake.token_requests
    assert token_request.method == "POST"
    assert (
        token_request.headers["Authorization"]
        == "Basic " + base64.b64encode(f"client-1:{SECRET}".encode()).decode()
    )
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_request.content == b"grant_type=client_credentials&scope=SI"


def test_api_calls_carry_the_bearer_token_and_identification_headers(
    client: HubeeClient, fake: FakeHubee
) -> None:
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, []))
    client.list_notifications()
    (request,) = fake.requests
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["editorName"] == "Editeur SA"
    assert request.headers["applicationName"] == "qfbridge"
    assert request.headers["softwareVersion"] == "0.1.0"
    assert dict(request.url.params) == {
        "maxResult": "25",
        "processCode": "FormulaireQF",
        "eventDetails": "true",
    }


def test_token_is_cached_across_calls_and_clients_of_the_same_subscription(
    fake: FakeHubee, sleeps: list[float], clock: Monotonic, cache: TokenCache
) -> None:
    # Given two clients of the same subscription sharing the process cache
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, []))
    first, second = make_client(fake, sleeps, clock, cache), make_client(fake, sleeps, clock, cache)
    # When both call HubEE several times
    first.list_notifications()
    first.list_notifications()
    second.list_notifications()
    # Then one token served them all
    assert fake.tokens_issued == 1
    # And another subscription gets its own token
    make_client(fake, sleeps, clock, cache, client_id="client-2").list_notifications()
    assert fake.tokens_issued == 2


def test_token_is_renewed_shortly_before_it_expires(
    client: HubeeClient, fake: FakeHubee, clock: Monotonic
) -> None:
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, []))
    client.list_notifications()
    clock.now += 3600 - 61  # still inside the validity minus the 60 s margin
    client.list_notifications()
    assert fake.tokens_issued == 1
    clock.now += 2  # within the margin
    client.list_notifications()
    assert fake.tokens_issued == 2
    assert fake.requests[-1].headers["Authorization"] == "Bearer tok-2"


def test_a_401_renews_the_token_and_repeats_the_call_once(client: HubeeClient, fake: FakeHubee) -> None:
    # Given HubEE revoked the cached token
    fake.script(
        "GET",
        CASE_PATH,
        answer(401, {"errors": [{"code": 401, "message": "expired"}]}),
        answer(200, SAMPLES["case"]),
    )
    # When the case is read
    case = client.get_case(CASE_ID)
    # Then a new token was fetched and the call repeated with it
    assert case.id == CASE_ID
    assert fake.tokens_issued == 2
    assert [r.headers["Authorization"] for r in fake.requests] == ["Bearer tok-1", "Bearer tok-2"]


def test_a_401_after_renewal_is_an_auth_error(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("GET", CASE_PATH, answer(401, {"errors": [{"code": 401, "message": "no"}]}))
    with pytest.raises(HubeeAuthError) as caught:
        client.get_case(CASE_ID)
    assert caught.value.status == 401
    assert fake.api_calls("GET", CASE_PATH) == 2
    assert sleeps == []


def test_token_endpoint_refusal_is_an_auth_error_without_the_secret(
    fake: FakeHubee, sleeps: list[float], clock: Monotonic, cache: TokenCache
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client", "error_description": SECRET})

    client = HubeeClient(
        HubeeConfig(api_url=API, token_url=TOKEN_URL),
        HubeeCredentials(client_id="client-1", client_secret=SECRET),
        http=httpx.Client(transport=httpx.MockTransport(refuse)),
        sleep=sleeps.append,
        clock=clock,
        token_cache=cache,
    )
    with pytest.raises(HubeeAuthError) as caught:
        client.list_notifications()
    assert caught.value.code == "hubee_auth"
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert len(cache) == 0


def test_credentials_and_config_never_show_the_secret() -> None:
    credentials = HubeeCredentials(client_id="client-1", client_secret=SECRET)
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)
    assert credentials.client_secret.get_secret_value() == SECRET


# --- retries -----------------------------------------------------------------------------------


def test_get_is_retried_with_backoff_on_5xx(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("GET", CASE_PATH, answer(503), answer(500), answer(200, SAMPLES["case"]))
    case = client.get_case(CASE_ID)
    assert case.status == CaseStatus.HUBEE_NOTIFIED
    assert fake.api_calls("GET", CASE_PATH) == 3
    # equal jitter: attempt n waits within [base·2^(n-1)/2, base·2^(n-1)]
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_get_gives_up_after_the_configured_attempts(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("GET", CASE_PATH, answer(500, {"errors": [{"code": 500, "message": "retry in an hour"}]}))
    with pytest.raises(HubeeServerError) as caught:
        client.get_case(CASE_ID)
    assert caught.value.status == 500 and caught.value.hubee_code == 500
    assert fake.api_calls("GET", CASE_PATH) == 3
    assert len(sleeps) == 2


def test_a_long_retry_after_is_not_waited_for_in_process(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("GET", CASE_PATH, answer(503, None, {"Retry-After": "3600"}))
    with pytest.raises(HubeeServerError) as caught:
        client.get_case(CASE_ID)
    assert caught.value.retry_after_s == 3600
    assert fake.api_calls("GET", CASE_PATH) == 1 and sleeps == []


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_get_is_retried_on_transport_errors_then_fails_typed(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float], failure: type[httpx.TransportError]
) -> None:
    fake.script("GET", CASE_PATH, fail_with(failure))
    with pytest.raises(HubeeTransportError) as caught:
        client.get_case(CASE_ID)
    assert fake.api_calls("GET", CASE_PATH) == 3
    assert len(sleeps) == 2
    assert "GET /cases/{caseId}" in str(caught.value) and CASE_ID not in str(caught.value)


def test_delete_is_retried_and_404_means_already_gone(client: HubeeClient, fake: FakeHubee) -> None:
    path = "/teledossiers/v1/notifications/6a1f5a0e-3c2b-4d51-9a7e-2f0b7c1d9e01"
    fake.script("DELETE", path, answer(502), answer(204))
    assert client.delete_notification("6a1f5a0e-3c2b-4d51-9a7e-2f0b7c1d9e01") is True
    fake.scripts[("DELETE", path)] = [
        answer(404, {"errors": [{"code": 404, "message": "Notification is not found"}]})
    ]
    assert client.delete_notification("6a1f5a0e-3c2b-4d51-9a7e-2f0b7c1d9e01") is False


def post_event(client: HubeeClient) -> Event | None:
    return client.post_status_event(
        CASE_ID, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "Dossier intégré."
    )


def test_posting_a_status_event_sends_the_contract_body(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("POST", EVENTS_PATH, answer(201, SAMPLES["closed_event_from_the_form"]))
    event = post_event(client)
    assert event is not None
    assert json.loads(fake.requests[0].content) == {
        "actionType": "STATUS_UPDATE",
        "author": "Editeur SA",
        "notification": True,
        "caseCurrentStatus": "HUBEE_NOTIFIED",
        "caseNewStatus": "SI_RECEIVED",
        "message": "Dossier intégré.",
    }


def test_a_5xx_on_a_status_event_is_never_retried_and_leaves_the_outcome_unknown(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("POST", EVENTS_PATH, answer(500), answer(201, {"id": "x"}))
    with pytest.raises(HubeeOutcomeUnknown) as caught:
        post_event(client)
    assert caught.value.status == 500
    assert fake.api_calls("POST", EVENTS_PATH) == 1 and sleeps == []


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError])
def test_a_lost_answer_to_a_status_event_is_an_unknown_outcome(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float], failure: type[httpx.TransportError]
) -> None:
    fake.script("POST", EVENTS_PATH, fail_with(failure))
    with pytest.raises(HubeeOutcomeUnknown):
        post_event(client)
    assert fake.api_calls("POST", EVENTS_PATH) == 1 and sleeps == []


def test_a_status_event_that_could_not_connect_is_a_transport_error_not_retried(
    client: HubeeClient, fake: FakeHubee, sleeps: list[float]
) -> None:
    fake.script("POST", EVENTS_PATH, fail_with(httpx.ConnectError))
    with pytest.raises(HubeeTransportError) as caught:
        post_event(client)
    assert not isinstance(caught.value, HubeeOutcomeUnknown)
    assert fake.api_calls("POST", EVENTS_PATH) == 1 and sleeps == []


def test_a_status_event_refused_with_401_is_repeated_with_a_new_token(
    client: HubeeClient, fake: FakeHubee
) -> None:
    fake.script("POST", EVENTS_PATH, answer(401), answer(201, {"id": "e1", "status": "SENT"}))
    event = post_event(client)
    assert event is not None and event.id == "e1"
    assert fake.api_calls("POST", EVENTS_PATH) == 2


def test_a_patch_is_never_retried_on_5xx(client: HubeeClient, fake: FakeHubee, sleeps: list[float]) -> None:
    fake.script("PATCH", CASE_PATH, answer(503), answer(204))
    with pytest.raises(HubeeOutcomeUnknown):
        client.patch_case_status(CASE_ID, CaseStatus.SENT)
    assert fake.api_calls("PATCH", CASE_PATH) == 1 and sleeps == []


# --- typed errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, HubeeBadRequestError), (403, HubeeForbiddenError), (404, HubeeNotFoundError)],
)
def test_client_errors_are_typed_and_carry_no_body_data(
    client: HubeeClient, fake: FakeHubee, status: int, error: type[QfbridgeError]
) -> None:
    # Given HubEE's error message echoes personal data
    fake.script("GET", CASE_PATH, answer(status, {"errors": [{"code": status, "message": "LÉOUIS Alexia"}]}))
    with pytest.raises(error) as caught:
        client.get_case(CASE_ID)
    message = str(caught.value)
    assert f"http_status={status}" in message and f"hubee_code={status}" in message
    assert "GET /cases/{caseId}" in message
    assert "LÉOUIS" not in message and CASE_ID not in message and "tok-1" not in message
    assert isinstance(caught.value, QfbridgeError)


def test_an_illegal_transition_is_a_bad_request(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("POST", EVENTS_PATH, answer(400, {"errors": [{"code": 400, "message": "Bad request"}]}))
    with pytest.raises(HubeeBadRequestError):
        post_event(client)


def test_an_unparsable_body_is_a_protocol_error(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", CASE_PATH, answer(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}))
    with pytest.raises(HubeeProtocolError):
        client.get_case(CASE_ID)


def test_a_case_without_id_is_a_protocol_error(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", CASE_PATH, answer(200, {"status": "SENT"}))
    with pytest.raises(HubeeProtocolError):
        client.get_case(CASE_ID)


# --- notifications -----------------------------------------------------------------------------


def test_notifications_are_parsed_from_the_swagger_shape(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, SAMPLES["notifications_response"]))
    new_dossier, closed = client.list_notifications()
    assert new_dossier.is_new_dossier and new_dossier.is_formulaire_qf
    assert new_dossier.recipient is not None and new_dossier.recipient.company_register == "21260079000001"
    assert new_dossier.recipient.branch_code == "26079"
    assert (
        not closed.is_new_dossier
        and closed.event_status == "SENT"
        and closed.event_action_type == "STATUS_UPDATE"
    )


def test_a_notification_breaking_the_contract_is_skipped_not_fatal(
    client: HubeeClient, fake: FakeHubee
) -> None:
    fake.script(
        "GET", "/teledossiers/v1/notifications", answer(200, [{"processCode": "FormulaireQF"}, {"id": "n1"}])
    )
    assert [n.id for n in client.list_notifications()] == ["n1"]


def notification_page(ids: list[str]) -> list[dict[str, object]]:
    return [{"id": i, "processCode": "FormulaireQF", "caseId": f"c-{i}", "eventId": None} for i in ids]


def test_iteration_pages_until_a_short_page(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script(
        "GET",
        "/teledossiers/v1/notifications",
        answer(200, notification_page(["a", "b"])),
        answer(200, notification_page(["c", "d"])),
        answer(200, notification_page(["e"])),
    )
    assert [n.id for n in client.iter_notifications(max_result=2)] == ["a", "b", "c", "d", "e"]
    assert fake.api_calls("GET", "/teledossiers/v1/notifications") == 3


def test_iteration_stops_when_hubee_serves_the_same_full_page_again(
    client: HubeeClient, fake: FakeHubee
) -> None:
    # Given a reader that does not delete: HubEE redelivers the same page forever
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, notification_page(["a", "b", "a"])))
    # When iterating
    ids = [n.id for n in client.iter_notifications(max_result=3)]
    # Then each notification came once, and the second identical page stopped the loop
    assert ids == ["a", "b"]
    assert fake.api_calls("GET", "/teledossiers/v1/notifications") == 2


def test_iteration_is_bounded_by_max_pages(client: HubeeClient, fake: FakeHubee) -> None:
    counter = iter(range(10_000))

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=notification_page([str(next(counter)), str(next(counter))]))

    fake.script("GET", "/teledossiers/v1/notifications", endless)
    assert len(list(client.iter_notifications(max_result=2, max_pages=5))) == 10


# --- attachments -------------------------------------------------------------------------------

PAYLOAD = json.dumps({"pivot_identity": {"family_name": "LÉOUIS"}, "padding": "x" * 2000}).encode()
DIGEST = base64.b64encode(hashlib.sha256(PAYLOAD).digest()).decode()


def test_an_attachment_is_downloaded_with_its_digest(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", DOWNLOAD_PATH, answer(200, PAYLOAD, {"digest": DIGEST}))
    download = client.download_attachment(CASE_ID, ATTACHMENT_ID)
    assert download.content == PAYLOAD and download.digest == DIGEST and download.digest_matches() is True


def test_a_gzip_encoded_attachment_is_decoded(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script(
        "GET",
        DOWNLOAD_PATH,
        answer(200, gzip.compress(PAYLOAD), {"Content-Encoding": "gzip", "digest": DIGEST}),
    )
    download = client.download_attachment(CASE_ID, ATTACHMENT_ID)
    assert download.content == PAYLOAD and download.digest_matches() is True


def test_a_gzip_body_without_header_is_recognised_by_its_magic(client: HubeeClient, fake: FakeHubee) -> None:
    zipped = gzip.compress(PAYLOAD)
    zipped_digest = base64.b64encode(hashlib.sha256(zipped).digest()).decode()
    fake.script("GET", DOWNLOAD_PATH, answer(200, zipped, {"digest": f"SHA-256={zipped_digest}"}))
    download = client.download_attachment(CASE_ID, ATTACHMENT_ID)
    assert download.content == PAYLOAD
    assert download.digest_matches() is True  # the digest of the bytes as stored also matches


def test_an_attachment_larger_than_the_cap_is_refused(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", DOWNLOAD_PATH, answer(200, PAYLOAD))
    with pytest.raises(AttachmentTooLarge) as caught:
        client.download_attachment(CASE_ID, ATTACHMENT_ID, max_bytes=1000)
    assert isinstance(caught.value, DossierError)
    assert caught.value.max_bytes == 1000 and "LÉOUIS" not in str(caught.value)


@pytest.mark.parametrize("announced", [True, False])
def test_a_gzip_bomb_is_stopped_at_the_cap(client: HubeeClient, fake: FakeHubee, announced: bool) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    assert len(bomb) < 10_000
    fake.script("GET", DOWNLOAD_PATH, answer(200, bomb, {"Content-Encoding": "gzip"} if announced else {}))
    with pytest.raises(AttachmentTooLarge):
        client.download_attachment(CASE_ID, ATTACHMENT_ID, max_bytes=100_000)


def test_a_download_is_retried_on_5xx(client: HubeeClient, fake: FakeHubee) -> None:
    fake.script("GET", DOWNLOAD_PATH, answer(500), answer(200, PAYLOAD))
    assert client.download_attachment(CASE_ID, ATTACHMENT_ID).content == PAYLOAD


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (DIGEST, True),
        (f"SHA-256={DIGEST}", True),
        (f"sha-256={DIGEST}, md5=abc=", True),
        (hashlib.sha256(PAYLOAD).hexdigest(), True),
        (base64.b64encode(hashlib.sha256(b"other").digest()).decode(), False),
        ("garbage", False),
        (None, None),
    ],
)
def test_digest_formats(header: str | None, expected: bool | None) -> None:
    assert Download(content=PAYLOAD, digest=header).digest_matches() is expected


def test_a_download_repr_hides_the_content() -> None:
    assert "LÉOUIS" not in repr(Download(content=PAYLOAD, digest=DIGEST))


# --- models and config -------------------------------------------------------------------------


def test_the_case_sample_parses_with_reference_and_attachments() -> None:
    case = Case.model_validate(SAMPLES["case"])
    assert case.reference == "3F9A0C1B2D4E5"
    assert case.recipient is not None and case.recipient.company_register == "21260079000001"
    json_attachment = case.attachment_named("FormulaireQF.json")
    assert json_attachment is not None and json_attachment.is_downloadable and json_attachment.size == 1234
    assert Case(id="x", external_id="Formulaire-QF-3f9a0c1b2d4e5-01").reference is None


def test_models_accept_snake_case_names_and_ignore_unknown_fields() -> None:
    notification = Notification(id="n", case_id="c", event_id=None)
    assert notification.is_new_dossier
    assert (
        Notification.model_validate({"id": "n", "caseId": "c", "eventId": "e", "newField": 1}).event_id == "e"
    )


def test_environment_urls_are_the_real_ones() -> None:
    bas = HubeeConfig.for_environment("bas")
    prod = HubeeConfig.for_environment("prod", read_timeout_s=3)
    assert bas.api_url == "https://api.bas.hubee.numerique.gouv.fr"
    assert bas.token_url == "https://auth.bas.hubee.numerique.gouv.fr/oauth2/token"
    assert prod.api_url == "https://api.hubee.numerique.gouv.fr"
    assert prod.token_url == "https://auth.hubee.numerique.gouv.fr/oauth2/token"
    assert prod.timeout.read == 3


def test_identification_headers_are_limited_to_50_printable_ascii_chars() -> None:
    with pytest.raises(ValidationError):
        HubeeConfig(api_url=API, token_url=TOKEN_URL, editor_name="x" * 51)
    with pytest.raises(ValidationError):
        HubeeConfig(api_url=API, token_url=TOKEN_URL, application_name="Éditeur")


# --- async client ------------------------------------------------------------------------------


def test_the_async_client_pages_and_shares_the_token_cache(
    fake: FakeHubee, sleeps: list[float], clock: Monotonic, cache: TokenCache
) -> None:
    # Given a sync client already holding a token
    fake.script("GET", "/teledossiers/v1/notifications", answer(200, []))
    make_client(fake, sleeps, clock, cache).list_notifications()
    fake.scripts.clear()
    fake.script(
        "GET",
        "/teledossiers/v1/notifications",
        answer(503),
        answer(200, notification_page(["a", "b"])),
        answer(200, notification_page(["c"])),
    )
    async_sleeps: list[float] = []

    async def record_sleep(delay: float) -> None:
        async_sleeps.append(delay)

    async def run() -> list[str]:
        config = HubeeConfig(api_url=API, token_url=TOKEN_URL)
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
            client = AsyncHubeeClient(
                config,
                HubeeCredentials(client_id="client-1", client_secret=SECRET),
                http=http,
                sleep=record_sleep,
                clock=clock,
                token_cache=cache,
            )
            return [n.id async for n in client.iter_notifications(max_result=2)]

    # When the async poller iterates
    ids = asyncio.run(run())
    # Then it retried the 503, paged to the short page, and reused the cached token
    assert ids == ["a", "b", "c"]
    assert len(async_sleeps) == 1
    assert fake.tokens_issued == 1


def test_the_async_client_renews_a_rejected_token(
    fake: FakeHubee, clock: Monotonic, cache: TokenCache
) -> None:
    fake.script("GET", CASE_PATH, answer(401), answer(200, SAMPLES["case"]))

    async def no_sleep(delay: float) -> None:
        raise AssertionError("no retry expected")

    async def run() -> Case:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
            client = AsyncHubeeClient(
                HubeeConfig(api_url=API, token_url=TOKEN_URL),
                HubeeCredentials(client_id="client-1", client_secret=SECRET),
                http=http,
                sleep=no_sleep,
                clock=clock,
                token_cache=cache,
            )
            return await client.get_case(CASE_ID)

    assert asyncio.run(run()).id == CASE_ID
    assert fake.tokens_issued == 2
