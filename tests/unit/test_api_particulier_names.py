"""Names rewritten into what API Particulier accepts (``^[a-zA-ZÀ-ÖØ-öø-ÿ' -]+$``), and the query
built from a FranceConnect identity that holds what it refuses."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qfbridge.api_particulier import build_query
from qfbridge.api_particulier.names import ACCEPTED, NameNotAccepted, for_api
from qfbridge.domain.errors import ValidationError
from qfbridge.domain.identity import PivotIdentity

SIRET = "13002526500013"


@pytest.mark.parametrize(
    ("received", "sent"),
    [
        ("D’ALMEIDA", "D'ALMEIDA"),
        ("d‘Arc", "d'Arc"),
        ("CŒURDEROI", "COEURDEROI"),
        ("Bœuf", "Boeuf"),
        ("Łukasz", "Lukasz"),
        ("Dvořák", "Dvorák"),
        ("Ştefan", "Stefan"),
        ("Nguyễn", "Nguyen"),
        ("Đặng", "Dang"),
        ("JEAN–PIERRE", "JEAN-PIERRE"),
        ("Zoë Anaïs", "Zoë Anaïs"),  # Latin-1 letters are sent as they are
        ("ÉLODIE  MARIE\u00a0ROSE", "ÉLODIE MARIE ROSE"),
        ("Ærøskøbing", "Ærøskøbing"),
        ("Strauß", "Strauß"),
    ],
)
def test_names_are_rewritten_into_what_the_api_accepts(received: str, sent: str) -> None:
    assert for_api(received) == sent
    assert ACCEPTED.fullmatch(sent)


@pytest.mark.parametrize("received", ["DUPONT2", "ST.MARTIN", "李", "Иван", "", "   "])
def test_a_name_with_no_accepted_form_is_refused_with_a_code_and_no_name(received: str) -> None:
    with pytest.raises(NameNotAccepted) as raised:
        for_api(received)
    assert str(raised.value) == "name_not_accepted"


@given(st.text(min_size=1, max_size=30))
def test_whatever_is_rewritten_is_accepted_by_the_api(text: str) -> None:
    try:
        rewritten = for_api(text)
    except NameNotAccepted:
        return
    assert ACCEPTED.fullmatch(rewritten) and rewritten == rewritten.strip()


def test_the_query_sends_the_accepted_form_of_every_name() -> None:
    identity = PivotIdentity(
        family_name="D’ALMEIDA",
        given_name="Œdipe Łukasz Zoë Marie",
        gender="male",
        birthdate=dt.date(1980, 1, 2),
        birthplace="75056",
    )
    query = build_query(identity, SIRET, nom_usage="CŒURDEROI")
    assert ("nomNaissance", "D'ALMEIDA") in query and ("nomUsage", "COEURDEROI") in query
    assert [value for key, value in query if key == "prenoms[]"] == ["OEdipe", "Lukasz", "Zoë"]
    assert identity.family_name == "D’ALMEIDA"  # the stored identity is untouched


def test_a_query_with_a_name_the_api_cannot_accept_is_not_built() -> None:
    identity = PivotIdentity(
        family_name="DUPONT2", given_name="MARIE", gender="female", birthdate=dt.date(1980, 1, 2)
    )
    with pytest.raises(ValidationError) as raised:
        build_query(identity, SIRET)
    assert raised.value.code == "name_not_accepted"
