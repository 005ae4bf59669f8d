"""Identifiers of a collectivité: its SIRET and its code COG INSEE.

A tenant is known by both (HubEE's case recipient carries ``companyRegister`` = SIRET and
``branchCode`` = COG commune), so both are checked the same strict way wherever they enter.

SIRET rule: 14 digits with a Luhn checksum, except La Poste. La Poste's establishments share the SIREN
356 000 000 and INSEE numbers them so that the *sum of the 14 digits is a multiple of 5* instead; its
head office ``35600000000048`` is the one La Poste SIRET that follows Luhn (and not the sum rule).
"""

from __future__ import annotations

import re

from qfbridge.domain.errors import ValidationError

SIRET_LENGTH = 14
LA_POSTE_SIREN = "356000000"
LA_POSTE_HEAD_OFFICE_SIRET = "35600000000048"

_COG_COMMUNE = re.compile(r"(?:[0-9]{5}|2[AB][0-9]{3})")
_SEPARATORS = re.compile(r"[\s\u00a0\u202f]+")


def _is_ascii_digits(value: str, length: int) -> bool:
    # str.isdigit() alone accepts "²" or Arabic-Indic digits: insist on ASCII.
    return len(value) == length and value.isascii() and value.isdigit()


def _luhn_sum(digits: str) -> int:
    """Luhn sum of a digit string, doubling every second digit starting from the right-most but one."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total


def _digit_sum(digits: str) -> int:
    return sum(ord(char) - 48 for char in digits)


def is_valid_siret(value: object) -> bool:
    """True when ``value`` is exactly 14 ASCII digits with a valid SIRET checksum.

    Strict on purpose (no spaces accepted): use ``validate_siret`` to normalise human input.
    """
    if not isinstance(value, str) or not _is_ascii_digits(value, SIRET_LENGTH):
        return False
    if value.startswith(LA_POSTE_SIREN):
        return value == LA_POSTE_HEAD_OFFICE_SIRET or _digit_sum(value) % 5 == 0
    return _luhn_sum(value) % 10 == 0


def validate_siret(value: object) -> str:
    """Return the canonical 14-digit SIRET, tolerating spaces a human may type ("212 600 790 00001").

    Raises ``ValidationError(code="invalid_siret")``; the message never repeats the input.
    """
    if isinstance(value, str):
        candidate = _SEPARATORS.sub("", value)
        if is_valid_siret(candidate):
            return candidate
    raise ValidationError("not a valid SIRET (14 digits with a valid checksum)", code="invalid_siret")


def complete_siret(prefix: str) -> str:
    """Complete a 13-digit prefix with the check digit that makes a valid SIRET.

    Used to generate demo and test tenants. For a La Poste prefix the digit satisfies La Poste's
    digit-sum rule (the smallest such digit), otherwise Luhn's.
    """
    if not _is_ascii_digits(prefix, SIRET_LENGTH - 1):
        raise ValidationError("a SIRET prefix is exactly 13 digits", code="invalid_siret")
    if prefix.startswith(LA_POSTE_SIREN):
        check = (5 - _digit_sum(prefix) % 5) % 5
    else:
        # The check digit sits at the undoubled right-most position: the prefix's own digits shift by one,
        # so compute the prefix's Luhn sum as if a 0 were appended.
        check = (10 - _luhn_sum(prefix + "0") % 10) % 10
    return f"{prefix}{check}"


def validate_cog_commune(value: object) -> str:
    """Return the code COG INSEE of a commune (5 chars: digits, or ``2A``/``2B`` + 3 digits for Corsica).

    Lower-case Corsican codes (``2a004``) are upper-cased; anything else raises
    ``ValidationError(code="invalid_cog")``.
    """
    if isinstance(value, str):
        candidate = value.strip().upper()
        if len(candidate) == 5 and candidate.isascii() and _COG_COMMUNE.fullmatch(candidate):
            return candidate
    raise ValidationError(
        "not a valid code COG commune (5 characters, e.g. 04107 or 2A004)", code="invalid_cog"
    )
