"""Reconciliation end to end on the laptop runtime with the HubEE sandbox.

Everything the editor does goes through the editor API with SigV4-signed requests (onboarding,
directory import, form links, dossier lookup, review); everything the form does goes through the
HubEE sandbox (``deposit_formulaire_qf``); the pipeline runs as deployed (``poll`` then ``drain``).

One runtime serves the whole module: each test onboards its own collectivité (a fresh SIRET and
HubEE credential), so tests do not see each other's families, dossiers or events.

Refused redirect_uris (not https, off the tenant's hosts) are shown at the end through the signed
API; the unit tests (tests/unit/test_links.py) and
``tests/integration/test_api_routes.py::test_form_link_refuses_a_redirect_off_the_tenant_hosts_and_unknown_links``
cover the other shapes of a bad redirect.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qfbridge_local.editor_client import ApiError, EditorApiClient
from qfbridge_local.population import Collectivite, Household, collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox

PORTAL_HOST = "portail.example-editeur.fr"
REDIRECT_URI = f"https://{PORTAL_HOST}/famille/quotient"
EVENTS_QUEUE = "qfbridge-e2e-reconciliation-events"


# ---------------------------------------------------------------------- the world the tests share
@dataclass
class EventLog:
    """Every qfbridge event, captured by an EventBridge rule into an SQS queue (an editor's subscription)."""

    runtime: LocalRuntime
    queue_url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def subscribe(cls, runtime: LocalRuntime) -> EventLog:
        sqs, events = runtime.client("sqs"), runtime.client("events")
        url = sqs.create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = runtime.environment["EVENT_BUS_NAME"]
        events.put_rule(Name="e2e-all", EventBusName=bus, EventPattern=json.dumps({"source": ["qfbridge"]}))
        events.put_targets(Rule="e2e-all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
        return cls(runtime, str(url))

    def of_tenant(self, siret: str) -> list[tuple[str, dict[str, Any]]]:
        """(detail-type, detail) of the events about ``siret`` so far, in the order they arrived."""
        sqs = self.runtime.client("sqs")
        while batch := sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            self.received.extend(json.loads(m["Body"]) for m in batch)
            sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return [
            (e["detail-type"], e["detail"]) for e in self.received if e["detail"].get("tenant_siret") == siret
        ]


@dataclass
class World:
    runtime: LocalRuntime
    hubee: HubeeSandbox
    api: EditorApiClient
    events: EventLog
    towns: Iterator[Collectivite]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with HubeeSandbox(seed=4) as hubee:
        options = RuntimeOptions(
            env_overrides={
                "HUBEE_API_URL": hubee.api_url,
                "HUBEE_TOKEN_URL": hubee.token_url,
                "DOSSIER_LEASE_SECONDS": "0",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        with LocalRuntime.start(options) as rt, EditorApiClient(rt.api_url, agent_id="agent-e2e") as api:
            yield World(rt, hubee, api, EventLog.subscribe(rt), iter(collectivites(40, seed=404)))


@dataclass
class Town:
    """A collectivité onboarded through the API, with its own HubEE credential."""

    world: World
    place: Collectivite

    @property
    def siret(self) -> str:
        return self.place.siret

    @property
    def api(self) -> EditorApiClient:
        return self.world.api

    def import_directory(self, families: list[Household]) -> None:
        self.api.call(
            "POST",
            f"/v1/tenants/{self.siret}/families:batch",
            json_body={"families": [h.family.model_dump(mode="json") for h in families]},
        )

    def issue_link(self, user_id: str) -> str:
        issued = self.api.call(
            "POST",
            f"/v1/tenants/{self.siret}/form-links",
            json_body={"user_id": user_id, "redirect_uri": REDIRECT_URI},
        )
        return str(issued["external_id"])

    def deposit_and_run(self, formulaire: dict[str, Any]) -> tuple[str, str]:
        """The form deposits the dossier; the pipeline polls and drains. Returns (case_id, reference)."""
        deposited = self.world.hubee.deposit_formulaire_qf(self.siret, self.place.cog, formulaire)
        self.world.runtime.poll()
        self.world.runtime.drain()
        return deposited.case_id, deposited.reference

    def dossier(self, reference: str) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v1/tenants/{self.siret}/dossiers/{reference}"))

    def family(self, user_id: str) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v1/tenants/{self.siret}/families/{user_id}"))

    def waiting_for_review(self) -> list[dict[str, Any]]:
        page = self.api.call("GET", f"/v1/tenants/{self.siret}/dossiers", params={"status": "needs_review"})
        return list(page["items"])

    def resolve(self, reference: str, decision: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/tenants/{self.siret}/dossiers/{reference}/resolve"
        return dict(self.api.call("POST", path, json_body=decision))

    def event_types(self) -> list[str]:
        return [detail_type for detail_type, _ in self.world.events.of_tenant(self.siret)]


@pytest.fixture
def new_town(world: World) -> Callable[[], Town]:
    def onboard() -> Town:
        place = next(world.towns)
        client_id = f"e2e-{place.siret}"
        world.api.call(
            "PUT",
            f"/v1/tenants/{place.siret}",
            json_body={"name": place.name, "cog": place.cog, "redirect_hosts": [PORTAL_HOST]},
        )
        world.api.call(
            "PUT",
            f"/v1/tenants/{place.siret}/credentials",
            json_body={"hubee_client_id": client_id, "hubee_client_secret": f"secret-{client_id}"},
        )
        world.hubee.add_subscription(client_id, f"secret-{client_id}", [(place.siret, place.cog)])
        return Town(world, place)

    return onboard


@pytest.fixture
def town(new_town: Callable[[], Town]) -> Town:
    return new_town()


def family_qf(town: Town, user_id: str) -> int | None:
    current = town.family(user_id)["quotient_familial"]
    return None if current is None else int(current["quotient_familial"])


def tamper(external_id: str) -> str:
    """One character of the signature changed, staying in the base64url alphabet."""
    version, kid, link_id, mac = external_id.split(".")
    middle = len(mac) // 2
    swapped = "B" if mac[middle] != "B" else "C"
    return ".".join((version, kid, link_id, mac[:middle] + swapped + mac[middle + 1 :]))


def expire(world: World, external_id: str) -> None:
    """Make an issued link expire: its stored expires_at moves to yesterday."""
    link_id = external_id.split(".")[2]
    yesterday = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).timestamp())
    world.runtime.client("dynamodb").update_item(
        TableName=world.runtime.environment["FORM_LINKS_TABLE"],
        Key={"link_id": {"S": link_id}},
        UpdateExpression="SET expires_at = :past",
        ConditionExpression="attribute_exists(link_id)",
        ExpressionAttributeValues={":past": {"N": str(yesterday)}},
    )


# ---------------------------------------------------------------------- 1. a signed link links
def test_a_dossier_carrying_an_issued_link_gives_the_family_its_qf(world: World, town: Town) -> None:
    # Given a family of the directory and the form link the editor issued to it
    household = households(3, seed=101)[0]
    town.import_directory([household])
    external_id = town.issue_link(household.family.user_id)
    assert family_qf(town, household.family.user_id) is None

    # When the parent fills the form through that link, and the pipeline runs
    case_id, reference = town.deposit_and_run(household.formulaire(external_id=external_id))

    # Then the dossier is linked by its external_id, the family shows the QF, and HubEE got SI_RECEIVED, DONE
    dossier = town.dossier(reference)
    assert (dossier["status"], dossier["link_method"], dossier["external_id_status"]) == (
        "linked",
        "external_id",
        "valid",
    )
    assert dossier["user_id"] == household.family.user_id
    family = town.family(household.family.user_id)
    assert family["quotient_familial"]["quotient_familial"] == household.qf.valeur
    assert family["quotient_familial"]["source"] == "dossier" and family["has_pivot_identity"] is True
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]
    assert town.event_types() == ["dossier.linked", "qf.updated"]


# ---------------------------------------------------------------------- 2. identity alone links
def test_a_dossier_without_external_id_is_linked_by_identity(world: World, town: Town) -> None:
    # Given a directory of several families, and one of them filling the public form (no link)
    directory = households(6, seed=202)
    town.import_directory(directory)
    household = directory[2]
    parent = len(household.family.parents) - 1

    # When the dossier arrives
    case_id, reference = town.deposit_and_run(household.formulaire(parent=parent))

    # Then it is linked to that family by identity, and to no other
    dossier = town.dossier(reference)
    assert (dossier["status"], dossier["link_method"], dossier["external_id_status"]) == (
        "linked",
        "identity",
        "absent",
    )
    assert dossier["user_id"] == household.family.user_id
    assert family_qf(town, household.family.user_id) == household.qf.valeur
    assert [family_qf(town, h.family.user_id) for h in directory if h is not household] == [None] * 5
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]


# ---------------------------------------------------------------------- 3. ambiguity waits for an agent
def twin_directory(town: Town, seed: int) -> tuple[Household, str]:
    """A family and a second account of the directory with the same parents: only an agent can choose."""
    household = households(1, seed=seed)[0]
    twin_id = f"{household.family.user_id}-bis"
    town.import_directory([household])
    town.api.call(
        "PUT",
        f"/v1/tenants/{town.siret}/families/{twin_id}",
        json_body={"parents": [p.model_dump(mode="json") for p in household.family.parents], "enfants": []},
    )
    return household, twin_id


def test_an_ambiguous_dossier_waits_for_review_and_an_agent_links_it(world: World, town: Town) -> None:
    # Given two directory families with the same parent identity
    household, twin_id = twin_directory(town, seed=303)

    # When that parent's dossier arrives
    case_id, reference = town.deposit_and_run(household.formulaire())

    # Then it waits for review with both families as ranked candidates, HubEE only got SI_RECEIVED
    waiting = town.waiting_for_review()
    assert [item["reference"] for item in waiting] == [reference]
    detail = town.dossier(reference)
    ranked = [c["user_id"] for c in detail["candidate_families"]]
    assert sorted(ranked[:2]) == sorted([household.family.user_id, twin_id])
    scores = [c["score"] for c in detail["candidate_families"]]
    assert scores == sorted(scores, reverse=True) and all(c["reasons"] for c in detail["candidate_families"])
    assert family_qf(town, household.family.user_id) is None and family_qf(town, twin_id) is None
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED"]
    assert town.event_types() == ["dossier.needs_review"]

    # And when an agent links it to the first family, and the follow-up drains
    resolved = town.resolve(reference, {"decision": "link", "user_id": household.family.user_id})
    assert (resolved["status"], resolved["link_method"]) == ("linked", "review")
    world.runtime.drain()

    # Then that family has the QF, the other none; HubEE got DONE; dossier.linked and qf.updated were published
    assert family_qf(town, household.family.user_id) == household.qf.valeur
    assert family_qf(town, twin_id) is None
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]
    assert town.waiting_for_review() == []
    events = world.events.of_tenant(town.siret)
    assert [t for t, _ in events] == ["dossier.needs_review", "dossier.linked", "qf.updated"]
    assert events[1][1]["user_id"] == household.family.user_id and events[1][1]["link_method"] == "review"
    assert events[2][1]["quotient_familial"] == household.qf.valeur


def test_a_parent_the_directory_does_not_know_reaches_review_through_the_conjoint(
    world: World, town: Town
) -> None:
    # Given a two-parent household the editor's directory knows through one parent only
    household = next(h for h in households(30, seed=505) if len(h.family.parents) == 2)
    known, unknown = household.family.parents
    assert known.date_naissance != unknown.date_naissance
    user_id = household.family.user_id
    town.api.call(
        "PUT",
        f"/v1/tenants/{town.siret}/families/{user_id}",
        json_body={"parents": [known.model_dump(mode="json")], "enfants": []},
    )

    # When the other parent fills the public form (the dossier names the known one as conjoint)
    case_id, reference = town.deposit_and_run(household.formulaire(parent=1))

    # Then it is never linked automatically, but an agent is shown that family, found by the conjoint
    detail = town.dossier(reference)
    assert detail["status"] == "needs_review"
    assert [c["user_id"] for c in detail["candidate_families"]] == [user_id]
    assert "conjoint_only_match" in detail["candidate_families"][0]["reasons"]
    assert family_qf(town, user_id) is None
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED"]
    assert town.event_types() == ["dossier.needs_review"]


def test_a_parent_the_directory_does_not_know_is_linked_when_the_conjoint_and_children_designate_the_family(
    world: World, town: Town
) -> None:
    # Given a household the editor's directory knows through one parent and the children only
    household = next(h for h in households(30, seed=506) if len(h.family.parents) == 2)
    known = household.family.parents[0]
    user_id = household.family.user_id
    town.api.call(
        "PUT",
        f"/v1/tenants/{town.siret}/families/{user_id}",
        json_body={
            "parents": [known.model_dump(mode="json")],
            "enfants": [c.model_dump(mode="json") for c in household.family.enfants],
        },
    )

    # When the other parent fills the public form (the dossier names the known one and the children)
    case_id, reference = town.deposit_and_run(household.formulaire(parent=1))

    # Then the household designates the family: linked, and the evidence says what matched
    detail = town.dossier(reference)
    assert (detail["status"], detail["link_method"], detail["user_id"]) == ("linked", "identity", user_id)
    assert {"usager_absent", "conjoint_match", "child_match", "household_designates"} <= set(
        detail["candidate_families"][0]["reasons"]
    )
    assert family_qf(town, user_id) == household.qf.valeur
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]


def test_an_ambiguous_dossier_rejected_by_an_agent_is_refused_to_hubee(world: World, town: Town) -> None:
    # Given an ambiguous dossier waiting for review
    household, twin_id = twin_directory(town, seed=304)
    case_id, reference = town.deposit_and_run(household.formulaire())
    assert town.dossier(reference)["status"] == "needs_review"

    # When an agent rejects it, and the follow-up drains
    resolved = town.resolve(reference, {"decision": "reject", "reason": "not_our_usager"})
    world.runtime.drain()

    # Then no family got the QF, HubEE got REFUSED, and dossier.rejected was published
    assert (resolved["status"], resolved["reason"]) == ("rejected", "not_our_usager")
    assert family_qf(town, household.family.user_id) is None and family_qf(town, twin_id) is None
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "REFUSED"]
    events = world.events.of_tenant(town.siret)
    assert [t for t, _ in events] == ["dossier.needs_review", "dossier.rejected"]
    assert events[1][1]["reason"] == "not_our_usager"


# ---------------------------------------------------------------------- 4. bad external_ids never link
@pytest.mark.parametrize(
    ("kind", "expected_status"),
    [("tampered", "forged"), ("foreign", "foreign"), ("expired", "expired")],
)
@pytest.mark.parametrize("in_directory", [True, False], ids=["family-known", "family-unknown"])
def test_an_unusable_external_id_never_links_and_identity_matching_decides(
    world: World, new_town: Callable[[], Town], kind: str, expected_status: str, in_directory: bool
) -> None:
    # Given a link issued for one account (the "target"), made unusable in one of three ways, carried by a
    # dossier of a parent who is in the directory under another account — or not in it at all
    town, elsewhere = new_town(), new_town()
    parent, target = households(2, seed=404, id_prefix="compte")
    if in_directory:
        town.import_directory([parent])
    issuer = elsewhere if kind == "foreign" else town  # foreign: issued by another collectivité
    external_id = issuer.issue_link(target.family.user_id)
    if kind == "tampered":
        external_id = tamper(external_id)
    elif kind == "expired":
        expire(world, external_id)

    # When the dossier arrives
    case_id, reference = town.deposit_and_run(parent.formulaire(external_id=external_id))

    # Then the external_id is not used, its status is recorded, and identity matching decided
    dossier = town.dossier(reference)
    assert dossier["external_id_status"] == expected_status
    assert family_qf(issuer, target.family.user_id) is None
    if in_directory:
        assert (dossier["status"], dossier["link_method"]) == ("linked", "identity")
        assert dossier["user_id"] == parent.family.user_id
        assert family_qf(town, parent.family.user_id) == parent.qf.valeur
        assert world.hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]
    else:
        assert dossier["status"] == "needs_review" and dossier["user_id"] is None
        assert target.family.user_id not in [c["user_id"] for c in dossier["candidate_families"]]
        assert world.hubee.status_events(case_id) == ["SI_RECEIVED"]
        assert [d["external_id_status"] for t, d in world.events.of_tenant(town.siret)] == [expected_status]


# ---------------------------------------------------------------------- 5. a valid link, the wrong person
def test_a_valid_external_id_carried_by_someone_else_entirely_goes_to_review(
    world: World, town: Town
) -> None:
    # Given a family of the directory with its issued link, and a stranger whose dossier carries that link
    owner = households(1, seed=501)[0]
    stranger = households(1, seed=502, id_prefix="inconnu")[0]
    town.import_directory([owner])
    external_id = town.issue_link(owner.family.user_id)

    # When the stranger's dossier arrives
    case_id, reference = town.deposit_and_run(stranger.formulaire(external_id=external_id))

    # Then the link verified, but the identity mismatch sends the dossier to review, the owner as sole candidate
    dossier = town.dossier(reference)
    assert (dossier["status"], dossier["external_id_status"]) == ("needs_review", "valid")
    assert [c["user_id"] for c in dossier["candidate_families"]] == [owner.family.user_id]
    assert "identity_mismatch" in dossier["candidate_families"][0]["reasons"]
    assert family_qf(town, owner.family.user_id) is None
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED"]
    assert [item["reference"] for item in town.waiting_for_review()] == [reference]


# ---------------------------------------------------------------------- 6. no open redirect
@pytest.mark.parametrize(
    ("redirect_uri", "code"),
    [
        (f"http://{PORTAL_HOST}/famille/quotient", "redirect_scheme"),
        ("https://evil.example/", "redirect_not_allowed"),
    ],
    ids=["not-https", "off-allowlist"],
)
def test_a_form_link_with_an_unsafe_redirect_is_refused(town: Town, redirect_uri: str, code: str) -> None:
    # Given a collectivité whose only redirect host is the editor's portal
    # When a link is asked with a redirect that is not https, or not on that host
    with pytest.raises(ApiError) as refused:
        town.api.call(
            "POST",
            f"/v1/tenants/{town.siret}/form-links",
            json_body={"user_id": "famille-1", "redirect_uri": redirect_uri},
        )
    # Then it is refused with a problem naming the reason, and no link exists for that account
    assert refused.value.status == 422 and refused.value.body["code"] == code
    with pytest.raises(ApiError) as unknown:
        town.family("famille-1")
    assert unknown.value.status == 404


# ---------------------------------------------------------------------- 7. a form link is not a bearer token
def test_a_form_link_serves_the_first_usager_who_used_it_a_second_identity_goes_to_review(
    world: World, town: Town
) -> None:
    # Given a two-parent family of the directory and its form link, used once by one parent
    household = next(h for h in households(30, seed=701) if len(h.family.parents) == 2)
    user_id = household.family.user_id
    town.import_directory([household])
    external_id = town.issue_link(user_id)
    _, first = town.deposit_and_run(household.formulaire(external_id=external_id))
    assert town.dossier(first)["status"] == "linked"
    before = town.family(user_id)

    # When the same link comes back with the other parent's identity (forwarded, shared, replayed)
    later_qf = household.qf.model_copy(update={"valeur": household.qf.valeur + 111})
    case_id, second = town.deposit_and_run(
        household.formulaire(parent=1, external_id=external_id, qf=later_qf)
    )

    # Then it does not link: an agent decides, the family keeps its identity and QF
    dossier = town.dossier(second)
    assert (dossier["status"], dossier["external_id_status"]) == ("needs_review", "valid")
    assert [c["user_id"] for c in dossier["candidate_families"]] == [user_id]
    assert dossier["candidate_families"][0]["reasons"] == ["link_used_by_another_identity"]
    assert town.family(user_id)["quotient_familial"] == before["quotient_familial"]
    assert world.hubee.status_events(case_id) == ["SI_RECEIVED"]


def test_a_family_the_directory_does_not_know_never_takes_a_second_identity(world: World, town: Town) -> None:
    # Given an account the directory has not sent, with two links issued to it, the first used by one usager
    first, second = households(2, seed=702, id_prefix="ailleurs")
    account = "compte-sans-annuaire"
    link_a, link_b = town.issue_link(account), town.issue_link(account)
    _, reference = town.deposit_and_run(first.formulaire(external_id=link_a))
    assert town.dossier(reference)["link_method"] == "external_id"

    # When another usager uses the same link, or the second link
    _, replayed = town.deposit_and_run(second.formulaire(external_id=link_a))
    _, other_link = town.deposit_and_run(second.formulaire(external_id=link_b))

    # Then neither links: the family keeps the first usager's QF and identity
    assert [town.dossier(r)["status"] for r in (replayed, other_link)] == ["needs_review", "needs_review"]
    for reference_ in (replayed, other_link):
        candidates = town.dossier(reference_)["candidate_families"]
        assert [(c["user_id"], c["reasons"]) for c in candidates] == [
            (account, ["family_holds_another_identity"])
        ]
    assert family_qf(town, account) == first.qf.valeur


# ---------------------------------------------------------------------- 8. the current QF is the most recent
def test_a_late_dossier_with_an_older_qf_only_joins_the_history(world: World, town: Town) -> None:
    # Given a family whose QF of November was received
    household = households(1, seed=801)[0]
    user_id = household.family.user_id
    town.import_directory([household])
    november = household.qf.model_copy(update={"annee": 2026, "mois": 11, "valeur": 900})
    june = household.qf.model_copy(update={"annee": 2026, "mois": 6, "valeur": 400})
    town.deposit_and_run(household.formulaire(qf=november))

    # When a dossier carrying the QF of June arrives later
    _, reference = town.deposit_and_run(household.formulaire(qf=june))

    # Then it is linked and kept in the history, but the current QF stays November's
    assert town.dossier(reference)["status"] == "linked"
    family = town.family(user_id)
    assert (family["quotient_familial"]["mois"], family["quotient_familial"]["quotient_familial"]) == (
        11,
        900,
    )
    assert [(h["mois"], h["quotient_familial"]) for h in family["history"]] == [(6, 400), (11, 900)]
