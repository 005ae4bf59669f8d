"""The HubEE client against the HubEE sandbox, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qfbridge.hubee import (
    AsyncHubeeClient,
    AttachmentStatus,
    CaseStatus,
    EventStatus,
    HubeeAuthError,
    HubeeClient,
    HubeeConfig,
    HubeeCredentials,
    HubeeForbiddenError,
    HubeeNotFoundError,
    HubeeOutcomeUnknown,
    TokenCache,
)
from qfbridge_local.sandboxes.hubee import HubeeSandbox

SIRET_A, COG_A = "21260079000001", "26079"
SIRET_B, COG_B = "21040107100019", "04107"
SIRET_C, COG_C = "21750001600019", "75056"

FORMULAIRE: dict[str, Any] = {
    "external_id": "qfb1.Zx3kP0aLq9W2bTnY5vR8cA.mJ4Hq2tNw7sUe1yB",
    "pivot_identity": {
        "birthcountry": "99100",
        "birthdate": "1987-04-10",
        "birthplace": "26079",
        "family_name": "LÉOUIS",
        "given_name": "Alexia Marie",
        "gender": "female",
    },
    "quotient_familial_v3": {
        "allocataires": [
            {
                "nom_naissance": "LÉOUIS",
                "nom_usage": "BERNARD",
                "prenoms": "ALEXIA MARIE",
                "date_naissance": "1987-04-10",
                "sexe": "F",
            }
        ],
        "enfants": [
            {
                "nom_naissance": "BERNARD",
                "nom_usage": None,
                "prenoms": "MARCEL",
                "date_naissance": "2012-03-02",
                "sexe": "M",
            }
        ],
        "quotient_familial": {
            "fournisseur": "CNAF",
            "valeur": 650,
            "annee": 2026,
            "mois": 3,
            "annee_calcul": 2026,
            "mois_calcul": 2,
        },
        "version": "v3",
    },
}


class NoSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One connection pool for the module: building an httpx client (its TLS context) costs ~0.1 s."""
    with httpx.Client() as pool:
        yield pool


@pytest.fixture
def sandbox() -> Iterator[HubeeSandbox]:
    with HubeeSandbox(seed=42, fault_timeout_s=0.3) as running:
        running.add_subscription("editor-a", "secret-a", [(SIRET_A, COG_A)])
        yield running


def connect(
    sandbox: HubeeSandbox,
    client_id: str = "editor-a",
    secret: str = "secret-a",
    http: httpx.Client | None = None,
    **settings: Any,
) -> HubeeClient:
    config = HubeeConfig(
        api_url=sandbox.api_url,
        token_url=sandbox.token_url,
        connect_timeout_s=1.0,
        read_timeout_s=settings.pop("read_timeout_s", 2.0),
        **settings,
    )
    return HubeeClient(
        config,
        HubeeCredentials(client_id=client_id, client_secret=secret),
        http=http,
        sleep=NoSleep(),
        token_cache=TokenCache(),
    )


@pytest.fixture
def client(sandbox: HubeeSandbox, http: httpx.Client) -> Iterator[HubeeClient]:
    with connect(sandbox, http=http) as hubee:
        yield hubee


# --- the whole journey of a dossier --------------------------------------------------------------


@pytest.mark.parametrize("digest_format", ["bare", "prefixed"])
def test_a_dossier_goes_from_deposit_to_closed_and_acknowledged(
    sandbox: HubeeSandbox, client: HubeeClient, digest_format: Any
) -> None:
    # Given the form deposited a dossier for collectivité A
    sandbox.digest_format = digest_format
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)

    # When the SI lists its notifications
    (notification,) = client.list_notifications()
    # Then it sees a new dossier for A
    assert notification.is_new_dossier and notification.case_id == deposited.case_id
    assert notification.recipient is not None and notification.recipient.company_register == SIRET_A

    # When it reads the case
    case = client.get_case(deposited.case_id)
    # Then the case is the FormulaireQF one the form deposits
    assert case.status == CaseStatus.HUBEE_NOTIFIED and case.process_code == "FormulaireQF"
    assert re.fullmatch(r"Formulaire-QF-[0-9A-F]{13}-01", case.external_id or "")
    assert case.reference == deposited.reference
    assert case.recipient is not None and (case.recipient.company_register, case.recipient.branch_code) == (
        SIRET_A,
        COG_A,
    )
    assert case.applicant is not None and case.applicant.last_name == "LÉOUIS"
    assert [a.file_name for a in case.attachments] == [
        "FormulaireQF.json",
        "FormulaireQF.xml",
        "quotient_familial_LÉOUIS_Alexia_Marie.pdf",
    ]
    assert all(a.type == "FormulaireQF" and a.is_downloadable for a in case.attachments)

    # When it downloads the three attachments
    downloads = {a.file_name: client.download_attachment(case.id, a.id) for a in case.attachments}
    # Then every digest matches, whatever its format
    for attachment in case.attachments:
        download = downloads[attachment.file_name]
        assert download.digest_matches() is True and download.size == attachment.size
        assert download.digest is not None and download.digest.startswith("SHA-256=") == (
            digest_format == "prefixed"
        )
    assert json.loads(downloads["FormulaireQF.json"].content) == FORMULAIRE
    xml = downloads["FormulaireQF.xml"].content.decode()
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<hash>\n')
    assert "<family-name>LÉOUIS</family-name>" in xml and '<valeur type="integer">650</valeur>' in xml
    assert '<enfants type="array">\n      <enfant>' in xml and '<nom-usage nil="true"/>' in xml
    assert_valid_pdf(downloads[deposited.pdf_file_name].content)

    # When it integrates the dossier then marks it done
    client.post_status_event(case.id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "Dossier intégré.")
    client.post_status_event(case.id, CaseStatus.SI_RECEIVED, CaseStatus.DONE, "QF enregistré.")
    # Then the form closed the case and notified a CLOSED event
    assert sandbox.status_events(case.id) == ["SI_RECEIVED", "DONE"]
    closed = next(n for n in client.list_notifications() if not n.is_new_dossier)
    assert closed.case_id == case.id
    assert (closed.event_action_type, closed.event_status) == ("STATUS_UPDATE", "SENT")
    assert closed.event_id is not None
    event = client.get_event(case.id, closed.event_id)
    assert (event.author, event.case_current_status, event.case_new_status) == ("DINUM", "DONE", "CLOSED")
    assert client.get_case(case.id).status == CaseStatus.CLOSED

    # When it acknowledges the event
    client.patch_event_status(case.id, closed.event_id)
    # Then the redelivered notification says so, and deleting notifications empties the list
    redelivered = next(n for n in client.list_notifications() if n.id == closed.id)
    assert redelivered.event_status == EventStatus.RECEIVED
    assert client.delete_notification(notification.id) is True
    assert client.delete_notification(closed.id) is True
    assert client.list_notifications() == []
    assert client.delete_notification(closed.id) is False


def assert_valid_pdf(pdf: bytes) -> None:
    """Header, trailer, and a cross-reference table whose offsets point at their objects."""
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    startxref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[startxref:].startswith(b"xref")
    entries = re.findall(rb"(\d{10}) 00000 n ", pdf[startxref:])
    assert entries
    for number, offset in enumerate(entries, start=1):
        assert pdf[int(offset) :].startswith(f"{number} 0 obj".encode())


def test_notifications_of_another_demarche_are_not_listed_with_the_formulaire_qf_filter(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    foreign = sandbox.add_foreign_notification("CERTDC", SIRET_A)
    assert [n.case_id for n in client.list_notifications()] == [deposited.case_id]
    everything = client.list_notifications(process_code=None)
    assert {n.id for n in everything} == {deposited.notification_id, foreign}


# --- status rules ----------------------------------------------------------------------------


def raw_status_post(sandbox: HubeeSandbox, case_id: str, current: str, new: str) -> int:
    """A STATUS_UPDATE sent without the client (which refuses illegal transitions before sending)."""
    with httpx.Client(base_url=sandbox.api_url, timeout=5) as http:
        token = http.post(
            "/oauth2/token",
            auth=("editor-a", "secret-a"),
            data={"grant_type": "client_credentials", "scope": "SI"},
        ).json()["access_token"]
        answer = http.post(
            f"/teledossiers/v1/cases/{case_id}/events",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "actionType": "STATUS_UPDATE",
                "author": "test",
                "notification": True,
                "caseCurrentStatus": current,
                "caseNewStatus": new,
                "message": "x",
            },
        )
    return answer.status_code


def walk(sandbox: HubeeSandbox, case_id: str, *statuses: str) -> None:
    current = "HUBEE_NOTIFIED"
    for status in statuses:
        assert raw_status_post(sandbox, case_id, current, status) == 201, (current, status)
        current = status


# (path to reach the current status, new status): refused by HubEE's documented table
REFUSED_TRANSITIONS = [
    ((), "SI_INTG_ERROR"),  # never straight from HUBEE_NOTIFIED
    ((), "DONE"),
    ((), "REFUSED"),
    ((), "CLOSED"),  # only the form sets it
    ((), "ADD_AWAITING"),
    (("SENT",), "DONE"),
    (("SENT",), "REFUSED"),
    (("SI_RECEIVED",), "SENT"),  # backwards
    (("SI_RECEIVED",), "ADD_AWAITING"),
    (("IN_PROGRESS",), "SI_RECEIVED"),
]
ALLOWED_TRANSITIONS = [
    ((), "SENT"),
    ((), "SI_RECEIVED"),  # skipping SENT forward
    (("SENT",), "SI_RECEIVED"),
    (("SI_RECEIVED",), "IN_PROGRESS"),
    (("SI_RECEIVED",), "DONE"),
    (("SI_RECEIVED",), "REFUSED"),
    (("SI_RECEIVED",), "SI_INTG_ERROR"),
    (("SI_RECEIVED", "IN_PROGRESS"), "ADD_AWAITING"),
    (("SI_RECEIVED", "IN_PROGRESS", "ADD_AWAITING"), "REFUSED"),
]


@pytest.mark.parametrize(("path", "new"), REFUSED_TRANSITIONS)
def test_a_transition_outside_the_documented_table_is_refused_and_not_recorded(
    sandbox: HubeeSandbox, path: tuple[str, ...], new: str
) -> None:
    sandbox.auto_close = False
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    walk(sandbox, case_id, *path)
    current = path[-1] if path else "HUBEE_NOTIFIED"
    assert raw_status_post(sandbox, case_id, current, new) == 400
    assert sandbox.status_events(case_id) == list(path)
    assert sandbox.status_posts(case_id)[-1] | {"client_id": None} == {
        "case_id": case_id,
        "client_id": None,
        "action_type": "STATUS_UPDATE",
        "current": current,
        "new": new,
        "http_status": 400,
        "recorded": False,
    }


@pytest.mark.parametrize(("path", "new"), ALLOWED_TRANSITIONS)
def test_a_transition_of_the_documented_table_is_accepted(
    sandbox: HubeeSandbox, path: tuple[str, ...], new: str
) -> None:
    sandbox.auto_close = False
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    walk(sandbox, case_id, *path, new)
    assert sandbox.case_status(case_id) == new


def test_a_current_status_that_is_not_the_cases_is_refused(sandbox: HubeeSandbox) -> None:
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    assert raw_status_post(sandbox, case_id, "SENT", "SI_RECEIVED") == 400
    assert sandbox.status_events(case_id) == []


def test_a_repeated_status_is_accepted_and_duplicates_the_history(sandbox: HubeeSandbox) -> None:
    # A blind retry of a status HubEE already recorded: accepted again, recorded twice
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    assert raw_status_post(sandbox, case_id, "HUBEE_NOTIFIED", "SI_RECEIVED") == 201
    assert raw_status_post(sandbox, case_id, "HUBEE_NOTIFIED", "SI_RECEIVED") == 201
    assert sandbox.status_events(case_id) == ["SI_RECEIVED", "SI_RECEIVED"]
    assert [p["http_status"] for p in sandbox.status_posts(case_id)] == [201, 201]


def test_the_client_refuses_locally_what_the_table_forbids(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    from qfbridge.hubee import HubeeTransitionRefused

    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    for current, new in (
        (CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_INTG_ERROR),
        (CaseStatus.HUBEE_NOTIFIED, CaseStatus.DONE),
        (CaseStatus.HUBEE_NOTIFIED, CaseStatus.CLOSED),
        (CaseStatus.SI_RECEIVED, CaseStatus.SI_RECEIVED),
    ):
        with pytest.raises(HubeeTransitionRefused):
            client.post_status_event(case_id, current, new, "x")
    assert sandbox.status_posts(case_id) == []


def test_a_patch_of_the_case_can_be_followed_by_its_event(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    client.patch_case_status(case_id, CaseStatus.SENT)
    client.post_status_event(case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SENT, "Métadonnées lues.")
    assert sandbox.case_status(case_id) == "SENT" and sandbox.status_events(case_id) == ["SENT"]


def test_the_closing_waits_for_the_form_when_auto_close_is_off(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    sandbox.auto_close = False
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    client.post_status_event(case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "Reçu.")
    client.post_status_event(case_id, CaseStatus.SI_RECEIVED, CaseStatus.REFUSED, "Hors commune.")
    assert all(n.is_new_dossier for n in client.list_notifications())
    assert sandbox.close_finished_cases() == 1
    closed = next(n for n in client.list_notifications() if not n.is_new_dossier)
    assert closed.event_id is not None
    assert client.get_event(case_id, closed.event_id).case_current_status == "REFUSED"


# --- attachments -------------------------------------------------------------------------------


def test_attachments_are_purged_once_the_case_is_in_progress(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    client.post_status_event(
        deposited.case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.IN_PROGRESS, "En cours."
    )
    case = client.get_case(deposited.case_id)
    assert {a.status for a in case.attachments} == {AttachmentStatus.DELETED}
    with pytest.raises(HubeeNotFoundError):
        client.download_attachment(deposited.case_id, deposited.json_attachment_id)


def test_a_rejected_attachment_is_listed_but_not_served(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    sandbox.set_attachment_status(deposited.case_id, deposited.json_attachment_id, "REJECTED")
    json_attachment = client.get_case(deposited.case_id).attachment_named("FormulaireQF.json")
    assert json_attachment is not None and not json_attachment.is_downloadable
    with pytest.raises(HubeeNotFoundError):
        client.download_attachment(deposited.case_id, deposited.json_attachment_id)


def test_gzip_bodies_announced_or_not_are_decoded(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    sandbox.gzip_responses = True
    assert client.get_case(deposited.case_id).reference == deposited.reference
    raw = httpx.get(
        f"{sandbox.api_url}/teledossiers/v1/cases/{deposited.case_id}",
        headers={"Authorization": f"Bearer {issue_token(sandbox)}", "Accept-Encoding": "gzip"},
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    sandbox.gzip_responses = False
    sandbox.gzip_attachments_unannounced = True
    download = client.download_attachment(deposited.case_id, deposited.json_attachment_id)
    assert json.loads(download.content) == FORMULAIRE and download.digest_matches() is True


def issue_token(sandbox: HubeeSandbox) -> str:
    answer = httpx.post(
        sandbox.token_url,
        auth=("editor-a", "secret-a"),
        content=b"grant_type=client_credentials&scope=SI",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return str(answer.json()["access_token"])


# --- auth and subscriptions --------------------------------------------------------------------


def test_an_expired_token_is_renewed_transparently(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    assert len(client.list_notifications()) == 1
    # When an hour passes on HubEE's clock (not on the client's)
    sandbox.advance_clock(3601)
    # Then the next call gets a 401, renews the token and succeeds
    assert len(client.list_notifications()) == 1
    assert sandbox.token_calls["editor-a"] == 2
    assert sandbox.calls[("GET", "/notifications")] == 3


def test_the_token_endpoint_refuses_json_bodies_and_bad_secrets(sandbox: HubeeSandbox) -> None:
    json_body = httpx.post(
        sandbox.token_url, auth=("editor-a", "secret-a"), json={"grant_type": "client_credentials"}
    )
    assert json_body.status_code == 400
    with connect(sandbox, secret="wrong") as intruder, pytest.raises(HubeeAuthError) as caught:
        intruder.list_notifications()
    assert "wrong" not in str(caught.value)
    unknown_bearer = httpx.get(
        f"{sandbox.api_url}/teledossiers/v1/notifications", headers={"Authorization": "Bearer forged"}
    )
    assert unknown_bearer.status_code == 401
    assert unknown_bearer.json()["errors"][0]["code"] == 401


def test_one_credential_serves_the_recipients_of_its_delegation_only(
    sandbox: HubeeSandbox, http: httpx.Client
) -> None:
    # Given an editor delegation: one credential for B and C; A has its own
    sandbox.add_subscription("delegation", "secret-d", [(SIRET_B, COG_B), (SIRET_C, COG_C)])
    for_a = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    for_b = sandbox.deposit_formulaire_qf(SIRET_B, COG_B, FORMULAIRE)
    for_c = sandbox.deposit_formulaire_qf(SIRET_C, COG_C, FORMULAIRE)
    with connect(sandbox, "delegation", "secret-d", http) as delegation, connect(sandbox, http=http) as own:
        # Then each credential sees only its recipients' dossiers
        assert {n.case_id for n in delegation.list_notifications()} == {for_b.case_id, for_c.case_id}
        assert {n.case_id for n in own.list_notifications()} == {for_a.case_id}
        # And cannot touch the others'
        with pytest.raises(HubeeForbiddenError):
            delegation.get_case(for_a.case_id)
        with pytest.raises(HubeeForbiddenError):
            own.delete_notification(for_b.notification_id)
        assert delegation.get_case(for_c.case_id).recipient.branch_code == COG_C  # type: ignore[union-attr]


# --- faults ------------------------------------------------------------------------------------


def test_a_503_on_a_read_is_retried_and_counted(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    sandbox.inject("http_503", route="GET /cases/{caseId}", case_id=case_id)
    assert client.get_case(case_id).id == case_id
    assert sandbox.faults_injected["http_503"] == 1
    assert sandbox.calls_by_case(case_id)[("GET", "/cases/{caseId}")] == 2


def test_a_500_after_the_event_was_recorded_surfaces_as_an_unknown_outcome(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    sandbox.inject("http_500", route="POST /cases/{caseId}/events", after_processing=True)
    with pytest.raises(HubeeOutcomeUnknown):
        client.post_status_event(case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "x")
    # The client did not repeat it; reading the case tells the caller it took effect
    assert sandbox.status_events(case_id) == ["SI_RECEIVED"]
    assert client.get_case(case_id).status == CaseStatus.SI_RECEIVED


def test_a_hanging_read_times_out_and_is_retried(sandbox: HubeeSandbox) -> None:
    sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    sandbox.inject("timeout", route="GET /notifications", delay_s=0.5)
    with connect(sandbox, read_timeout_s=0.1) as impatient:
        started = time.monotonic()
        assert len(impatient.list_notifications()) == 1
    assert time.monotonic() - started < 2
    assert sandbox.calls[("GET", "/notifications")] == 2


def test_a_dropped_connection_on_a_status_event_is_an_unknown_outcome(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    case_id = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id
    sandbox.inject("timeout", route="/cases/{caseId}/events", delay_s=0, drop=True)
    with pytest.raises(HubeeOutcomeUnknown):
        client.post_status_event(case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "x")
    assert sandbox.status_events(case_id) == ["SI_RECEIVED"]
    assert sandbox.calls[("POST", "/cases/{caseId}/events")] == 1


def test_corrupted_bytes_do_not_match_their_digest(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    sandbox.inject("corrupt_bytes", case_id=deposited.case_id)
    assert (
        client.download_attachment(deposited.case_id, deposited.json_attachment_id).digest_matches() is False
    )
    assert (
        client.download_attachment(deposited.case_id, deposited.json_attachment_id).digest_matches() is True
    )


def test_a_malformed_json_deposit_keeps_a_matching_digest(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    sandbox.inject("malformed_json")
    deposited = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    download = client.download_attachment(deposited.case_id, deposited.json_attachment_id)
    assert download.digest_matches() is True
    with pytest.raises(ValueError):
        json.loads(download.content)
    explicit = sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE, json_bytes=b'{"pivot_identity": ')
    assert (
        client.download_attachment(explicit.case_id, explicit.json_attachment_id).content
        == b'{"pivot_identity": '
    )


def test_duplicated_and_reordered_notifications_are_seen_once_by_the_iterator(
    sandbox: HubeeSandbox, client: HubeeClient
) -> None:
    deposited = [sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE) for _ in range(3)]
    client.post_status_event(deposited[0].case_id, CaseStatus.HUBEE_NOTIFIED, CaseStatus.SI_RECEIVED, "x")
    client.post_status_event(deposited[0].case_id, CaseStatus.SI_RECEIVED, CaseStatus.DONE, "x")
    sandbox.inject("duplicate_notification")
    page = client.list_notifications(max_result=10)
    assert len(page) == 5 and len({n.id for n in page}) == 4
    sandbox.inject("reorder")
    assert not client.list_notifications(max_result=10)[0].is_new_dossier  # the CLOSED event comes first
    sandbox.inject("duplicate_notification")
    assert len(list(client.iter_notifications(max_result=10))) == 4
    assert sandbox.faults_injected == {"duplicate_notification": 2, "reorder": 1}


def test_random_faults_are_seeded_and_bounded(sandbox: HubeeSandbox, client: HubeeClient) -> None:
    sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE)
    sandbox.fault_rates(http_503=1.0, budget=2)
    assert len(client.list_notifications()) == 1  # two 503s, then the third attempt passes
    assert len(client.list_notifications()) == 1
    assert sandbox.faults_injected["http_503"] == 2
    assert sandbox.calls[("GET", "/notifications")] == 4
    sandbox.reset_counters()
    assert sandbox.calls == {} and sandbox.faults_injected == {}


def test_redelivery_is_seeded(http: httpx.Client) -> None:
    def page_orders(seed: int) -> list[list[str]]:
        with HubeeSandbox(seed=seed) as other:
            other.add_subscription("editor-a", "secret-a", [(SIRET_A, COG_A)])
            for _ in range(5):
                other.deposit_formulaire_qf(SIRET_A, COG_A, copy.deepcopy(FORMULAIRE))
            with connect(other, http=http) as reader:
                return [[n.case_id or "" for n in reader.list_notifications()] for _ in range(3)]

    first, again = page_orders(7), page_orders(7)
    assert first == again
    assert len({tuple(order) for order in first}) > 1  # redelivered, in a different order


# --- async poller --------------------------------------------------------------------------------


def test_the_async_client_reads_every_page_when_the_reader_deletes(sandbox: HubeeSandbox) -> None:
    deposited = {sandbox.deposit_formulaire_qf(SIRET_A, COG_A, FORMULAIRE).case_id for _ in range(7)}

    async def drain() -> tuple[set[str], list[str]]:
        config = HubeeConfig(api_url=sandbox.api_url, token_url=sandbox.token_url)
        credentials = HubeeCredentials(client_id="editor-a", client_secret="secret-a")
        async with AsyncHubeeClient(config, credentials, token_cache=TokenCache()) as hubee:
            without_deleting = [n.id async for n in hubee.iter_notifications(max_result=3)]
            seen = set()
            async for notification in hubee.iter_notifications(max_result=3):
                seen.add(notification.case_id or "")
                await hubee.delete_notification(notification.id)
            return seen, without_deleting

    seen, without_deleting = asyncio.run(drain())
    # Without deletes, the same first page comes back and the iterator stops: no endless loop
    assert len(without_deleting) == 3
    assert seen == deposited


def test_concurrent_calls_are_served_in_parallel_with_latency(sandbox: HubeeSandbox) -> None:
    sandbox.latency_ms = 100

    async def burst() -> float:
        config = HubeeConfig(api_url=sandbox.api_url, token_url=sandbox.token_url)
        credentials = HubeeCredentials(client_id="editor-a", client_secret="secret-a")
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits) as http:
            hubee = AsyncHubeeClient(config, credentials, http=http, token_cache=TokenCache())
            await hubee.list_notifications()  # token + warm-up
            started = time.monotonic()
            await asyncio.gather(*(hubee.list_notifications() for _ in range(40)))
            return time.monotonic() - started

    # 40 calls of 100 ms each: at least 4 s one after the other; concurrently ~0.1-0.5 s, and the bound
    # leaves room for a machine the suite's other workers keep busy
    assert asyncio.run(burst()) < 3.0
