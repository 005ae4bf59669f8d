"""SIRET (Luhn, La Poste exception) and code COG commune validation."""

from __future__ import annotations

import random

import pytest

from qfbridge.domain.errors import ValidationError
from qfbridge.domain.siret import (
    LA_POSTE_HEAD_OFFICE_SIRET,
    complete_siret,
    is_valid_siret,
    validate_cog_commune,
    validate_siret,
)


@pytest.mark.parametrize(
    "siret",
    ["21260079000001", "13002526500013", "73282932000074"],
)
def test_a_siret_with_a_valid_luhn_checksum_is_valid(siret: str) -> None:
    assert is_valid_siret(siret)


@pytest.mark.parametrize(
    "siret",
    [
        "21260079000002",  # wrong check digit
        "12260079000001",  # two digits swapped
        "2126007900000",  # 13 digits
        "212600790000011",  # 15 digits
        "2126007900000A",
        " 21260079000001",
        "2126007900000١",  # Arabic-Indic one: isdigit() but not a SIRET digit
        "",
    ],
)
def test_a_siret_with_a_bad_checksum_or_shape_is_invalid(siret: str) -> None:
    assert not is_valid_siret(siret)


@pytest.mark.parametrize("value", [None, 21260079000001, b"21260079000001"])
def test_a_non_string_is_never_a_valid_siret(value: object) -> None:
    assert not is_valid_siret(value)


def test_every_single_digit_error_of_a_luhn_siret_is_detected() -> None:
    siret = "21260079000001"
    for position in range(len(siret)):
        for digit in "0123456789":
            if digit != siret[position]:
                altered = siret[:position] + digit + siret[position + 1 :]
                assert not is_valid_siret(altered), altered


def test_la_poste_head_office_is_valid_through_luhn() -> None:
    assert LA_POSTE_HEAD_OFFICE_SIRET == "35600000000048"
    assert is_valid_siret(LA_POSTE_HEAD_OFFICE_SIRET)


def test_a_la_poste_establishment_whose_digits_sum_to_a_multiple_of_5_is_valid_despite_luhn() -> None:
    # Given La Poste establishments: digit sums 45 and 15, neither passes Luhn
    for siret in ("35600000049837", "35600000000010"):
        assert sum(map(int, siret)) % 5 == 0
        # Then the La Poste rule accepts them
        assert is_valid_siret(siret)


def test_a_la_poste_establishment_failing_the_digit_sum_rule_is_invalid_even_if_luhn_passes() -> None:
    # Given a La Poste SIRET completed with a Luhn check digit whose digit sum is not a multiple of 5
    siret = "35600000000014"
    luhn_total = sum(
        (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 1 else d
        for i, d in enumerate(map(int, reversed(siret)))
    )
    assert luhn_total % 10 == 0 and sum(map(int, siret)) % 5 != 0

    assert not is_valid_siret(siret)


def test_validate_siret_returns_the_canonical_form_of_human_input() -> None:
    assert validate_siret("212 600 790 00001") == "21260079000001"
    assert validate_siret("21260079000001\n") == "21260079000001"
    assert validate_siret("212\u00a0600\u00a0790\u00a000001") == "21260079000001"


@pytest.mark.parametrize("value", ["21260079000002", "2126-0079-000001", None, 21260079000001])
def test_validate_siret_refuses_invalid_input_without_echoing_it(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_siret(value)

    assert raised.value.code == "invalid_siret"
    assert "2126" not in str(raised.value)


def test_complete_siret_turns_any_13_digit_prefix_into_a_valid_siret() -> None:
    rng = random.Random(20260314)
    for _ in range(500):
        prefix = "".join(rng.choice("0123456789") for _ in range(13))
        siret = complete_siret(prefix)
        assert siret.startswith(prefix) and len(siret) == 14
        assert is_valid_siret(siret)


def test_complete_siret_uses_the_la_poste_rule_for_la_poste_prefixes() -> None:
    for suffix in range(10):
        siret = complete_siret(f"356000000000{suffix}")
        assert is_valid_siret(siret)
        assert sum(map(int, siret)) % 5 == 0


def test_complete_siret_finds_the_known_check_digit() -> None:
    assert complete_siret("2126007900000") == "21260079000001"
    assert complete_siret("1300252650001") == "13002526500013"


@pytest.mark.parametrize("prefix", ["212600790000", "21260079000001", "212600790000A", ""])
def test_complete_siret_refuses_a_prefix_that_is_not_13_digits(prefix: str) -> None:
    with pytest.raises(ValidationError) as raised:
        complete_siret(prefix)
    assert raised.value.code == "invalid_siret"


@pytest.mark.parametrize(
    ("code", "expected"),
    [("04107", "04107"), ("26079", "26079"), ("97411", "97411"), ("2A004", "2A004"), ("2b033", "2B033")],
)
def test_a_code_cog_commune_is_five_digits_or_a_corsican_code(code: str, expected: str) -> None:
    assert validate_cog_commune(code) == expected


@pytest.mark.parametrize(
    "code", ["4107", "041070", "2C004", "2A04", "A2004", "26 79", "２６０７９", "", None, 26079]
)
def test_an_invalid_code_cog_commune_is_refused(code: object) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_cog_commune(code)
    assert raised.value.code == "invalid_cog"
