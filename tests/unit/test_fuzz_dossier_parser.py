"""Fuzzing the dossier parsers: whatever HubEE hands us, the only failure is a typed ``DossierError``.

Examples are bounded and derandomised so the file is deterministic and runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qfbridge.domain.dossier import ParsedDossier, parse_formulaire_qf_json, parse_formulaire_qf_xml
from qfbridge.domain.errors import DossierError

DOSSIERS = Path(__file__).resolve().parents[1] / "data" / "dossiers"
SAMPLE_JSON = (DOSSIERS / "FormulaireQF.json").read_bytes()
SAMPLE_XML = (DOSSIERS / "FormulaireQF.xml").read_bytes()

KNOWN_CODES = frozenset(
    {
        "too_large",
        "too_deep",
        "malformed_json",
        "malformed_xml",
        "not_an_object",
        "missing_identity",
        "missing_quotient_familial",
        "invalid_field",
    }
)
# Personal values of the sample: no error message may ever contain one.
PERSONAL_VALUES = ("LÉOUIS", "BERNARD", "ALEXIA", "Alexia", "HENRI", "MARCEL", "JULIE", "1987-04-10", "qfb1.")

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(parse: Any, data: bytes, **limits: int) -> ParsedDossier | DossierError:
    """Parse and return the dossier or the DossierError; any other exception fails the test."""
    try:
        return parse(data, **limits)
    except DossierError as error:
        assert error.code in KNOWN_CODES, error.code
        for personal in PERSONAL_VALUES:
            assert personal not in str(error)
        return error


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "F", "M", "female", "CNAF", "MSA", "1987-04-10", "99100", "26079", "v3"])
)
json_keys = st.text(max_size=12) | st.sampled_from(
    [
        "external_id",
        "pivot_identity",
        "quotient_familial_v3",
        "quotient_familial",
        "allocataires",
        "enfants",
        "valeur",
        "quotientFamilial",
        "birthdate",
        "family_name",
        "given_name",
        "gender",
    ]
)
json_trees = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4),
    max_leaves=25,
)


# --- arbitrary input --------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_another_exception_from_the_json_parser(data: bytes) -> None:
    assert isinstance(outcome(parse_formulaire_qf_json, data), DossierError)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_another_exception_from_the_xml_parser(data: bytes) -> None:
    assert isinstance(outcome(parse_formulaire_qf_xml, data), DossierError)


@FUZZ
@given(json_trees)
def test_arbitrary_json_documents_give_a_dossier_or_a_dossier_error(tree: object) -> None:
    outcome(parse_formulaire_qf_json, json.dumps(tree).encode(), max_depth=8)


@FUZZ
@given(
    st.sampled_from(["external_id", "pivot_identity", "quotient_familial_v3", "quotient_familial"]),
    json_trees,
)
def test_any_value_in_place_of_a_block_gives_a_dossier_or_a_dossier_error(block: str, tree: object) -> None:
    # Given the valid sample with one block replaced by an arbitrary JSON value
    document = json.loads(SAMPLE_JSON)
    document[block] = tree

    result = outcome(parse_formulaire_qf_json, json.dumps(document).encode())

    # Then only an object can stand for the identity, and only an object can be the v3 source
    if isinstance(result, ParsedDossier):
        assert result.quotient_familial is not None
        if block == "pivot_identity":
            assert isinstance(tree, dict) and tree
        if block == "quotient_familial_v3" and result.source_version == "v3":
            assert isinstance(tree, dict)


@FUZZ
@given(st.text(alphabet='[]{}"\\:,a1 ', max_size=300))
def test_bracket_and_quote_soup_never_crashes_the_depth_scan(text: str) -> None:
    outcome(parse_formulaire_qf_json, text.encode(), max_depth=4)


# --- mutations of the valid sample ------------------------------------------------------------------


def _containers(node: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict/list in the document, root included."""
    found = [path] if isinstance(node, dict | list) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.extend(_containers(child, (*path, key)))
    return found


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@FUZZ
@given(st.data())
def test_deleting_keys_or_items_from_the_sample_gives_a_dossier_or_a_dossier_error(
    data: st.DataObject,
) -> None:
    document = json.loads(SAMPLE_JSON)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        container = _at(document, data.draw(st.sampled_from(_containers(document))))
        if not container:
            continue
        keys = list(container.keys()) if isinstance(container, dict) else list(range(len(container)))
        del container[data.draw(st.sampled_from(keys))]

    outcome(parse_formulaire_qf_json, json.dumps(document).encode())


@FUZZ
@given(st.data())
def test_changing_value_types_in_the_sample_gives_a_dossier_or_a_dossier_error(data: st.DataObject) -> None:
    document = json.loads(SAMPLE_JSON)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        container = _at(document, data.draw(st.sampled_from(_containers(document))))
        if not container:
            continue
        keys = list(container.keys()) if isinstance(container, dict) else list(range(len(container)))
        container[data.draw(st.sampled_from(keys))] = data.draw(json_trees)

    outcome(parse_formulaire_qf_json, json.dumps(document).encode())


@FUZZ
@given(st.integers(min_value=0, max_value=len(SAMPLE_JSON.rstrip()) - 1))
def test_a_truncated_json_sample_is_always_malformed(length: int) -> None:
    result = outcome(parse_formulaire_qf_json, SAMPLE_JSON[:length])

    assert isinstance(result, DossierError) and result.code == "malformed_json"


@FUZZ
@given(st.integers(min_value=0, max_value=len(SAMPLE_XML.rstrip()) - 1))
def test_a_truncated_xml_sample_is_always_malformed(length: int) -> None:
    result = outcome(parse_formulaire_qf_xml, SAMPLE_XML[:length])

    assert isinstance(result, DossierError) and result.code == "malformed_xml"


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=6
    )
)
def test_flipped_bytes_in_either_sample_give_a_dossier_or_a_dossier_error(
    flips: list[tuple[int, int]],
) -> None:
    for sample, parse in ((SAMPLE_JSON, parse_formulaire_qf_json), (SAMPLE_XML, parse_formulaire_qf_xml)):
        mutated = bytearray(sample)
        for position, byte in flips:
            mutated[position % len(mutated)] = byte
        outcome(parse, bytes(mutated))
