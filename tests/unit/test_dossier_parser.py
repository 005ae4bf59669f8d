"""FormulaireQF dossier parsing: the sample, leniency, the v2 fallback, the XML twin and hostile input."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from qfbridge.domain.dossier import ParsedDossier, parse_formulaire_qf_json, parse_formulaire_qf_xml
from qfbridge.domain.errors import DossierError

DOSSIERS = Path(__file__).resolve().parents[1] / "data" / "dossiers"
SAMPLE_JSON = (DOSSIERS / "FormulaireQF.json").read_bytes()
SAMPLE_XML = (DOSSIERS / "FormulaireQF.xml").read_bytes()


def sample() -> dict[str, Any]:
    return json.loads(SAMPLE_JSON)


def encode(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def to_rails_xml(document: dict[str, Any]) -> bytes:
    """Render like Rails ``Hash#to_xml``: root <hash>, dasherised keys, type/nil attributes."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']

    def render(key: str, value: object, depth: int) -> None:
        pad, tag = "  " * depth, key.replace("_", "-")
        if value is None:
            lines.append(f'{pad}<{tag} nil="true"/>')
        elif isinstance(value, bool):
            lines.append(f'{pad}<{tag} type="boolean">{str(value).lower()}</{tag}>')
        elif isinstance(value, int):
            lines.append(f'{pad}<{tag} type="integer">{value}</{tag}>')
        elif isinstance(value, dict):
            lines.append(f"{pad}<{tag}>")
            for child_key, child in value.items():
                render(child_key, child, depth + 1)
            lines.append(f"{pad}</{tag}>")
        elif isinstance(value, list):
            if not value:
                lines.append(f'{pad}<{tag} type="array"/>')
                return
            lines.append(f'{pad}<{tag} type="array">')
            for item in value:
                render(key.removesuffix("s"), item, depth + 1)
            lines.append(f"{pad}</{tag}>")
        else:
            lines.append(f"{pad}<{tag}>{escape(str(value))}</{tag}>")

    render("hash", document, 0)
    return ("\n".join(lines) + "\n").encode("utf-8")


def error_of(parse: Any, data: bytes, **limits: int) -> DossierError:
    with pytest.raises(DossierError) as raised:
        parse(data, **limits)
    return raised.value


# --- the sample -------------------------------------------------------------------------------------


def test_the_sample_dossier_parses_from_its_v3_block() -> None:
    # Given the reference FormulaireQF.json / When it is parsed
    dossier = parse_formulaire_qf_json(SAMPLE_JSON)

    # Then every block lands in the domain models, from the canonical v3 block
    assert dossier.source_version == "v3"
    assert dossier.external_id == "qfb1.Zx3kP0aLq9W2bTnY5vR8cA.mJ4Hq2tNw7sUe1yB"
    identity = dossier.pivot_identity
    assert (identity.family_name, identity.given_name, identity.sexe) == ("LÉOUIS", "Alexia Marie", "F")
    assert identity.birthdate == dt.date(1987, 4, 10)
    assert (identity.birthplace, identity.birthcountry, identity.born_abroad) == ("26079", "99100", False)
    qf = dossier.quotient_familial
    assert qf is not None
    assert (qf.fournisseur, qf.valeur, qf.annee, qf.mois, qf.annee_calcul, qf.mois_calcul) == (
        "CNAF", 650, 2026, 3, 2026, 2,
    )  # fmt: skip
    assert [p.nom_naissance for p in dossier.allocataires] == ["LÉOUIS", "BERNARD"]
    assert dossier.allocataires[0].nom_usage == "BERNARD"
    assert dossier.allocataires[1].nom_usage is None
    assert [(p.prenoms, p.date_naissance, p.sexe) for p in dossier.enfants] == [
        ("MARCEL", dt.date(2012, 3, 2), "M"),
        ("JULIE", dt.date(2015, 6, 4), "F"),
    ]


def test_a_parsed_dossier_is_immutable() -> None:
    dossier = parse_formulaire_qf_json(SAMPLE_JSON)
    with pytest.raises(AttributeError):
        dossier.external_id = "other"  # type: ignore[misc]


def test_the_repr_of_a_dossier_shows_presence_flags_and_no_personal_data() -> None:
    dossier = parse_formulaire_qf_json(SAMPLE_JSON)

    shown = repr(dossier) + str(dossier)

    assert "has_quotient_familial=True" in shown
    assert "allocataires=2" in shown
    for personal in ("LÉOUIS", "BERNARD", "Alexia", "1987", "650", "26079", "qfb1."):
        assert personal not in shown


# --- leniency and the v2 fallback -------------------------------------------------------------------


def test_the_legacy_v2_block_is_used_when_the_v3_block_is_absent() -> None:
    # Given a dossier with only the legacy camelCase block
    document = sample()
    del document["quotient_familial_v3"]

    dossier = parse_formulaire_qf_json(encode(document))

    # Then the v2 block gives the QF and the household, mapped to the domain names
    assert dossier.source_version == "v2"
    qf = dossier.quotient_familial
    assert qf is not None
    assert (qf.fournisseur, qf.valeur, qf.annee, qf.mois, qf.annee_calcul) == ("CNAF", 650, 2026, 3, None)
    first = dossier.allocataires[0]
    assert (first.nom_naissance, first.nom_usage, first.prenoms) == ("LÉOUIS", "BERNARD", "ALEXIA MARIE")
    assert (first.date_naissance, first.sexe) == (dt.date(1987, 4, 10), "F")
    assert [e.date_naissance for e in dossier.enfants] == [dt.date(2012, 3, 2), dt.date(2015, 6, 4)]


def test_the_legacy_v2_block_is_used_when_the_v3_block_has_no_quotient_familial() -> None:
    document = sample()
    del document["quotient_familial_v3"]["quotient_familial"]
    document["quotient_familial"]["quotientFamilial"] = 777

    dossier = parse_formulaire_qf_json(encode(document))

    assert dossier.source_version == "v2"
    assert dossier.quotient_familial is not None and dossier.quotient_familial.valeur == 777


def test_the_v3_block_wins_when_both_blocks_carry_a_quotient_familial() -> None:
    document = sample()
    document["quotient_familial"]["quotientFamilial"] = 999

    dossier = parse_formulaire_qf_json(encode(document))

    assert dossier.source_version == "v3"
    assert dossier.quotient_familial is not None and dossier.quotient_familial.valeur == 650


def test_a_broken_legacy_block_does_not_reject_a_dossier_whose_v3_block_is_good() -> None:
    document = sample()
    document["quotient_familial"] = {"regime": 12, "allocataires": "garbage", "quotientFamilial": "x"}

    assert parse_formulaire_qf_json(encode(document)).source_version == "v3"


def test_v2_birth_dates_given_as_integers_are_accepted() -> None:
    document = sample()
    del document["quotient_familial_v3"]
    person = document["quotient_familial"]["enfants"][0]
    person.update(anneeDateDeNaissance=2012, moisDateDeNaissance=3, jourDateDeNaissance=2)

    dossier = parse_formulaire_qf_json(encode(document))

    assert dossier.enfants[0].date_naissance == dt.date(2012, 3, 2)


def test_unknown_keys_are_ignored_at_every_level() -> None:
    # Given the sample with keys the form may add one day
    document = sample()
    document["submitted_at"] = "2026-03-14T09:12:40Z"
    document["pivot_identity"]["preferred_username"] = "x"
    document["quotient_familial_v3"]["adresse"] = {"identite": "M BERNARD", "code_postal_ville": "26000"}
    document["quotient_familial_v3"]["allocataires"][0]["nom_prenom"] = "x"
    document["quotient_familial_v3"]["quotient_familial"]["source"] = "x"

    # Then it parses to exactly what the plain sample gives
    assert parse_formulaire_qf_json(encode(document)) == parse_formulaire_qf_json(SAMPLE_JSON)


@pytest.mark.parametrize("absent", ["missing", None, {}])
def test_a_dossier_without_pivot_identity_is_refused_as_missing_identity(absent: object) -> None:
    document = sample()
    if absent == "missing":
        del document["pivot_identity"]
    else:
        document["pivot_identity"] = absent

    assert error_of(parse_formulaire_qf_json, encode(document)).code == "missing_identity"


@pytest.mark.parametrize("absent", ["missing", None, {}])
def test_a_dossier_without_any_quotient_familial_is_unusable(absent: object) -> None:
    # Given neither the v3 block nor the legacy block (absent, null or empty)
    document = sample()
    for block in ("quotient_familial_v3", "quotient_familial"):
        if absent == "missing":
            del document[block]
        else:
            document[block] = absent

    # Then there is nothing to store: the dossier is refused
    assert error_of(parse_formulaire_qf_json, encode(document)).code == "missing_quotient_familial"


def test_a_legacy_block_without_its_quotient_familial_value_is_no_fallback() -> None:
    document = sample()
    del document["quotient_familial_v3"]
    del document["quotient_familial"]["quotientFamilial"]

    assert error_of(parse_formulaire_qf_json, encode(document)).code == "missing_quotient_familial"


def test_the_legacy_block_may_be_absent() -> None:
    document = sample()
    del document["quotient_familial"]

    assert parse_formulaire_qf_json(encode(document)) == parse_formulaire_qf_json(SAMPLE_JSON)


@pytest.mark.parametrize("external_id", ["missing", None, 12345, ["a"], "x" * 1025])
def test_an_absent_or_unusable_external_id_becomes_none_without_rejecting_the_dossier(
    external_id: object,
) -> None:
    document = sample()
    if external_id == "missing":
        del document["external_id"]
    else:
        document["external_id"] = external_id

    dossier = parse_formulaire_qf_json(encode(document))

    assert dossier.external_id is None
    assert dossier.quotient_familial is not None


@pytest.mark.parametrize("members", ["missing", None, []])
def test_a_household_without_children_listed_parses_to_no_enfants(members: object) -> None:
    document = sample()
    if members == "missing":
        del document["quotient_familial_v3"]["enfants"]
    else:
        document["quotient_familial_v3"]["enfants"] = members

    assert parse_formulaire_qf_json(encode(document)).enfants == ()


@pytest.mark.parametrize("birthplace", ["", None, "missing"])
def test_a_usager_born_abroad_has_no_birthplace(birthplace: object) -> None:
    # Given FranceConnect claims of a usager born in Spain (birthplace empty, null or absent)
    document = sample()
    document["pivot_identity"]["birthcountry"] = "99134"
    if birthplace == "missing":
        del document["pivot_identity"]["birthplace"]
    else:
        document["pivot_identity"]["birthplace"] = birthplace

    identity = parse_formulaire_qf_json(encode(document)).pivot_identity

    assert identity.birthplace is None
    assert identity.born_abroad is True


def test_duplicate_keys_keep_the_last_value() -> None:
    text = SAMPLE_JSON.decode("utf-8")
    duplicated = text.replace('"valeur":650', '"valeur":1,"valeur":650', 1)
    assert duplicated != text

    qf = parse_formulaire_qf_json(duplicated.encode("utf-8")).quotient_familial

    assert qf is not None and qf.valeur == 650


def test_a_utf8_byte_order_mark_is_tolerated() -> None:
    assert parse_formulaire_qf_json(b"\xef\xbb\xbf" + SAMPLE_JSON) == parse_formulaire_qf_json(SAMPLE_JSON)


# --- invalid fields: the path, never the value ------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "path", "field_name", "value", "expected_path"),
    [
        ("pivot", (), "birthdate", "1987-13-45", "pivot_identity.birthdate"),
        ("pivot", (), "gender", "DUPONTEL", "pivot_identity.gender"),
        ("pivot", (), "family_name", "DUPONTEL" * 40, "pivot_identity.family_name"),
        ("v3", ("allocataires", 1), "date_naissance", "EN-1984-DUPONTEL", "allocataires.1.date_naissance"),
        ("v3", ("enfants", 0), "sexe", "DUPONTEL", "quotient_familial_v3.enfants.0.sexe"),
        (
            "v3",
            ("quotient_familial",),
            "valeur",
            "DUPONTEL-650",
            "quotient_familial_v3.quotient_familial.valeur",
        ),
    ],
)
def test_an_invalid_field_is_named_by_its_path_without_its_value(
    block: str, path: tuple[str | int, ...], field_name: str, value: str, expected_path: str
) -> None:
    # Given a dossier with one field holding a wrong, personal-looking value
    document = sample()
    target: Any = document["pivot_identity"] if block == "pivot" else document["quotient_familial_v3"]
    for step in path:
        target = target[step]
    target[field_name] = value

    # When it is parsed
    error = error_of(parse_formulaire_qf_json, encode(document))

    # Then the error names where, never what
    assert error.code == "invalid_field"
    assert expected_path in str(error)
    assert "DUPONTEL" not in str(error)
    assert "DUPONTEL" not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_an_invalid_v2_birth_date_is_reported_on_its_domain_path_without_value() -> None:
    document = sample()
    del document["quotient_familial_v3"]
    document["quotient_familial"]["allocataires"][1]["moisDateDeNaissance"] = "13"

    error = error_of(parse_formulaire_qf_json, encode(document))

    assert error.code == "invalid_field"
    assert "quotient_familial.allocataires.1.date_naissance" in str(error)
    assert "1984" not in str(error)


def test_an_absurdly_long_v2_birth_year_is_an_invalid_field_not_a_crash() -> None:
    # int() refuses strings over 4300 digits with a ValueError: it must never reach the caller
    document = sample()
    del document["quotient_familial_v3"]
    document["quotient_familial"]["enfants"][0]["anneeDateDeNaissance"] = "9" * 6000

    error = error_of(parse_formulaire_qf_json, encode(document))

    assert error.code == "invalid_field"
    assert "quotient_familial.enfants.0.date_naissance" in str(error)


# --- malformed, hostile and oversized JSON ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a": }', b"\xff\xfe{}", b'{"pivot_identity": NaN}', b'{"a": "\\ud800"}', b"{'a': 1}"],
    ids=["empty", "truncated", "syntax", "not-utf8", "nan", "lone-surrogate", "single-quotes"],
)
def test_input_that_is_not_utf8_json_is_malformed_json(data: bytes) -> None:
    assert error_of(parse_formulaire_qf_json, data).code == "malformed_json"


def test_utf16_json_is_refused_rather_than_guessed() -> None:
    assert error_of(parse_formulaire_qf_json, SAMPLE_JSON.decode().encode("utf-16")).code == "malformed_json"


@pytest.mark.parametrize("data", [b"[]", b'"dossier"', b"42", b"null", b"true"])
def test_a_json_root_that_is_not_an_object_is_refused(data: bytes) -> None:
    assert error_of(parse_formulaire_qf_json, data).code == "not_an_object"


def test_a_json_size_bomb_is_refused_before_parsing() -> None:
    # Given a document one byte over the cap (padding whitespace keeps it valid JSON)
    data = SAMPLE_JSON + b" " * (256 * 1024 - len(SAMPLE_JSON) + 1)

    assert error_of(parse_formulaire_qf_json, data).code == "too_large"
    assert parse_formulaire_qf_json(data[:-1]).source_version == "v3"  # at the cap it still parses


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_json_nested_100k_deep_is_refused_as_too_deep_not_a_crash(opening: bytes) -> None:
    data = opening * 100_000

    assert error_of(parse_formulaire_qf_json, data, max_bytes=10_000_000).code == "too_deep"


def test_json_nesting_depth_is_capped_exactly_at_max_depth() -> None:
    assert error_of(parse_formulaire_qf_json, b"[" * 5 + b"]" * 5, max_depth=4).code == "too_deep"
    assert error_of(parse_formulaire_qf_json, b"[" * 4 + b"]" * 4, max_depth=4).code == "not_an_object"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    document = sample()
    document["note"] = '[[[[{{{{ \\" ' * 100

    assert parse_formulaire_qf_json(encode(document), max_depth=8).source_version == "v3"


def test_an_unterminated_string_full_of_escaped_quotes_is_refused_quickly() -> None:
    # A naive string-skipping regex would retry at each quote: quadratic on this input.
    data = b'{"a": "' + b'\\"' * 100_000

    assert error_of(parse_formulaire_qf_json, data, max_bytes=10_000_000).code == "malformed_json"


# --- the XML twin -----------------------------------------------------------------------------------


def test_the_xml_twin_of_the_sample_gives_the_same_dossier_as_the_json() -> None:
    assert b"<hash>" in SAMPLE_XML and b'type="array"' in SAMPLE_XML and b'nil="true"' in SAMPLE_XML

    assert parse_formulaire_qf_xml(SAMPLE_XML) == parse_formulaire_qf_json(SAMPLE_JSON)


@pytest.mark.parametrize(
    "variant",
    ["born-abroad-empty", "born-abroad-nil", "v2-only", "no-external-id", "no-children", "extra-keys"],
)
def test_xml_and_json_renderings_of_the_same_dossier_agree(variant: str) -> None:
    # Given one dossier rendered both ways (JSON as the form writes it, XML as Rails to_xml does)
    document = sample()
    if variant.startswith("born-abroad"):
        document["pivot_identity"].update(birthcountry="99134", birthplace="" if "empty" in variant else None)
    elif variant == "v2-only":
        del document["quotient_familial_v3"]
    elif variant == "no-external-id":
        document["external_id"] = None
    elif variant == "no-children":
        document["quotient_familial_v3"]["enfants"] = []
    else:
        document["quotient_familial_v3"]["adresse"] = {
            "code_postal_ville": "26000 VALENCE",
            "flags": [True, 2],
        }

    from_json = parse_formulaire_qf_json(encode(document))
    from_xml = parse_formulaire_qf_xml(to_rails_xml(copy.deepcopy(document)))

    assert from_xml == from_json


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE hash [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<hash><external-id>&lol2;</external-id></hash>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE hash [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<hash><external-id>&secret;</external-id></hash>
"""
BARE_DOCTYPE = b'<?xml version="1.0"?>\n<!DOCTYPE hash>\n<hash/>\n'


@pytest.mark.parametrize(
    "data", [BILLION_LAUGHS, EXTERNAL_ENTITY, BARE_DOCTYPE], ids=["laughs", "xxe", "dtd"]
)
def test_xml_with_a_dtd_or_entities_is_refused(data: bytes) -> None:
    assert error_of(parse_formulaire_qf_xml, data).code == "malformed_xml"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<hash>",
        b"<hash></hsah>",
        b"not xml",
        b"<a/><b/>",
        SAMPLE_XML[:-20],
        b"<hash>&undefined;</hash>",
    ],
)
def test_xml_that_is_not_well_formed_is_malformed_xml(data: bytes) -> None:
    assert error_of(parse_formulaire_qf_xml, data).code == "malformed_xml"


@pytest.mark.parametrize(
    "data", [b'<hash type="array"><a>1</a></hash>', b'<hash nil="true"/>', b'<hash type="integer">4</hash>']
)
def test_an_xml_root_that_is_not_a_hash_is_refused(data: bytes) -> None:
    assert error_of(parse_formulaire_qf_xml, data).code == "not_an_object"


def test_an_empty_xml_hash_lacks_an_identity() -> None:
    assert error_of(parse_formulaire_qf_xml, b"<hash>\n</hash>").code == "missing_identity"


def test_an_xml_size_bomb_is_refused_before_parsing() -> None:
    data = SAMPLE_XML + b" " * (256 * 1024)

    assert error_of(parse_formulaire_qf_xml, data).code == "too_large"


def test_xml_nested_100k_deep_is_refused_as_too_deep_not_a_crash() -> None:
    data = b"<hash>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</hash>"

    assert error_of(parse_formulaire_qf_xml, data, max_bytes=10_000_000).code == "too_deep"


def test_an_invalid_xml_field_is_named_by_its_path_without_its_value() -> None:
    data = SAMPLE_XML.replace(b"<birthdate>1987-04-10</birthdate>", b"<birthdate>DUPONTEL</birthdate>")
    assert data != SAMPLE_XML

    error = error_of(parse_formulaire_qf_xml, data)

    assert error.code == "invalid_field"
    assert "pivot_identity.birthdate" in str(error)
    assert "DUPONTEL" not in str(error)


def test_parsed_dossier_is_the_public_result_type() -> None:
    assert isinstance(parse_formulaire_qf_xml(SAMPLE_XML), ParsedDossier)
