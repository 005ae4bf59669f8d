"""Support references of dossiers, and the digest / size checks of downloaded attachments."""

from __future__ import annotations

import base64
import hashlib

import pytest

from qfbridge.domain.digest import DIGEST_ABSENT, sha256_digest_header, verify_digest, verify_size
from qfbridge.domain.errors import DossierError, ValidationError
from qfbridge.domain.reference import (
    case_external_id_for,
    normalise_reference,
    reference_from_case_external_id,
)

# --- support references -----------------------------------------------------------------------------


def test_the_reference_is_extracted_from_the_case_external_id() -> None:
    assert reference_from_case_external_id("Formulaire-QF-3F9A0C1B2D4E5-01") == "3F9A0C1B2D4E5"


@pytest.mark.parametrize(
    "external_id",
    [
        "Formulaire-QF-3f9a0c1b2d4e5-01",  # the form writes upper case
        "Formulaire-QF-3F9A0C1B2D4E-01",  # 12 characters
        "Formulaire-QF-3F9A0C1B2D4E5F-01",  # 14 characters
        "Formulaire-QF-3F9A0C1B2D4G5-01",  # not hexadecimal
        "Formulaire-QF-3F9A0C1B2D4E5-02",
        "Formulaire-QF-3F9A0C1B2D4E5-01\n",
        "formulaire-qf-3F9A0C1B2D4E5-01",
        "3F9A0C1B2D4E5",
        "",
        None,
        42,
    ],
)
def test_a_case_external_id_of_another_shape_is_a_bad_reference(external_id: object) -> None:
    with pytest.raises(DossierError) as raised:
        reference_from_case_external_id(external_id)
    assert raised.value.code == "bad_reference"


@pytest.mark.parametrize(
    "typed",
    [
        "3F9A0C1B2D4E5",
        "3f9a0c1b2d4e5",
        "  3F9A 0C1B 2D4E5 ",
        "3F9A0C1B2D4E5\n",
        "Formulaire-QF-3F9A0C1B2D4E5-01",
        "formulaire-qf-3f9a0c1b2d4e5-01",
        " Formulaire-QF- 3F9A0C1B2D4E5 -01 ",
    ],
)
def test_a_reference_typed_by_a_person_is_normalised_to_13_upper_case_hex(typed: str) -> None:
    assert normalise_reference(typed) == "3F9A0C1B2D4E5"


@pytest.mark.parametrize(
    "typed",
    [
        "3F9A0C1B2D4E",
        "3F9A0C1B2D4E5F",
        "3F9A0C1B2D4G5",
        "Formulaire-QF-3F9A0C1B2D4E5-02",
        "QF-3F9A0C1B2D4E5",
        "3F9A0C1B2D4Eﬀ",  # the "ﬀ" ligature upper-cases to "FF"
        " " * 500 + "3F9A0C1B2D4E5",
        "",
        None,
    ],
)
def test_anything_else_is_an_invalid_reference_and_is_not_echoed(typed: object) -> None:
    with pytest.raises(ValidationError) as raised:
        normalise_reference(typed)
    assert raised.value.code == "invalid_reference"
    assert "3F9A" not in str(raised.value)


def test_the_case_external_id_of_a_reference_round_trips() -> None:
    external_id = case_external_id_for("3f9a0c1b2d4e5")

    assert external_id == "Formulaire-QF-3F9A0C1B2D4E5-01"
    assert reference_from_case_external_id(external_id) == "3F9A0C1B2D4E5"


# --- digest -----------------------------------------------------------------------------------------

DATA = b'{"external_id":null}'
DIGEST = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
OTHER_DIGEST = base64.b64encode(hashlib.sha256(DATA + b" ").digest()).decode()


@pytest.mark.parametrize(
    "header",
    [
        DIGEST,
        f"SHA-256={DIGEST}",
        f"sha-256={DIGEST}",
        f"sha256={DIGEST}",
        f"  SHA-256={DIGEST}  ",
        f'SHA-256="{DIGEST}"',
        f"MD5=HUXZLQLMuI/KZ5KDcJPcOA==, SHA-256={DIGEST}",
        f"SHA-256={DIGEST},unixsum=30637",
        DIGEST.rstrip("="),  # unpadded
        base64.urlsafe_b64encode(hashlib.sha256(DATA).digest()).decode(),
        hashlib.sha256(DATA).hexdigest(),
    ],
)
def test_a_matching_digest_is_accepted_in_every_tolerated_format(header: str) -> None:
    verify_digest(DATA, header)


def test_the_sandbox_header_is_accepted_and_names_the_algorithm() -> None:
    header = sha256_digest_header(DATA)

    assert header == f"SHA-256={DIGEST}"
    verify_digest(DATA, header)


@pytest.mark.parametrize(
    "header",
    [OTHER_DIGEST, f"SHA-256={OTHER_DIGEST}", f"SHA-256={DIGEST}, SHA-256={OTHER_DIGEST}"],
)
def test_a_digest_of_other_bytes_is_a_mismatch(header: str) -> None:
    with pytest.raises(DossierError) as raised:
        verify_digest(DATA, header)
    assert raised.value.code == "digest_mismatch"


def test_truncated_bytes_are_a_digest_mismatch() -> None:
    with pytest.raises(DossierError) as raised:
        verify_digest(DATA[:-1], f"SHA-256={DIGEST}")
    assert raised.value.code == "digest_mismatch"


@pytest.mark.parametrize(
    "header",
    [
        "",
        " , ",
        "not a digest",
        "SHA-256=",
        "SHA-256=!!!!",
        "MD5=HUXZLQLMuI/KZ5KDcJPcOA==",  # no SHA-256 among the digests
        base64.b64encode(b"sixteen bytes!!!").decode(),  # decodes, but not to 32 bytes
        f"SHA-256={DIGEST}é",
        "SHA-256=" + "A" * 5000,
    ],
)
def test_a_digest_header_we_cannot_read_is_unreadable(header: str) -> None:
    with pytest.raises(DossierError) as raised:
        verify_digest(DATA, header)
    assert raised.value.code == "digest_unreadable"


def test_an_absent_digest_header_passes_and_the_caller_records_it() -> None:
    verify_digest(DATA, None)

    assert DIGEST_ABSENT == "digest_absent"


# --- declared size ----------------------------------------------------------------------------------


def test_bytes_of_the_declared_size_or_an_undeclared_size_pass() -> None:
    verify_size(DATA, len(DATA))
    verify_size(DATA, None)


@pytest.mark.parametrize("declared", [len(DATA) - 1, len(DATA) + 1, 0, -1])
def test_a_length_different_from_the_declared_size_is_a_size_mismatch(declared: int) -> None:
    with pytest.raises(DossierError) as raised:
        verify_size(DATA, declared)
    assert raised.value.code == "size_mismatch"
