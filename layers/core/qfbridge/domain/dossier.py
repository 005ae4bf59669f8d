"""Parse a FormulaireQF dossier (``FormulaireQF.json`` or its ``FormulaireQF.xml`` twin).

The bytes come from HubEE, i.e. from outside: they are parsed defensively and every failure is a
``DossierError`` with a stable code, so the caller records the dossier as rejected instead of crashing
its batch. Codes:

``too_large``, ``too_deep``
    refused before parsing (size first, then nesting depth, scanned without recursion);
``malformed_json``, ``malformed_xml``
    not UTF-8 / not JSON, or not well-formed XML, or XML carrying a DTD or entity declarations;
``not_an_object``
    the document's root is not an object (``<hash>`` for XML);
``invalid_field``
    a present field has the wrong type or value, or is too long, or a list has too many members
    (``MAX_ALLOCATAIRES``, ``MAX_ENFANTS``; strings are capped by the models); the message names
    field *paths* only, never values;
``missing_identity``
    no ``pivot_identity`` block (absent, null or empty): without it we can neither reconcile on identity
    nor refresh the QF monthly;
``missing_quotient_familial``
    neither the v3 block nor the legacy v2 block carries a QF: the dossier has nothing to store, so it is
    unusable (the form sends such dossiers when CAF/MSA had no answer).

Leniency: unknown keys are ignored, any of the four top-level blocks may be absent, and a
block that is ``null``, ``{}`` or blank counts as absent. ``quotient_familial_v3`` is canonical; the
legacy camelCase ``quotient_familial`` (v2) block is used only when the v3 block or its QF is absent, and
is validated only in that case (a broken copy we do not use must not reject a good dossier).
``external_id`` is untrusted, user-editable input (the form copies it verbatim from the link): kept verbatim when it is a string of
reasonable length, otherwise dropped to ``None`` — a tampered link must not make the dossier unusable,
identity matching still runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from xml.etree.ElementTree import ParseError

import pydantic
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qfbridge.domain.errors import DossierError
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_MAX_DEPTH = 32
EXTERNAL_ID_MAX_LENGTH = 1024
MAX_ALLOCATAIRES = 4
"""A CAF/MSA household has one allocataire and at most one conjoint: 4 leaves room, 11,000 does not."""
MAX_ENFANTS = 30
"""Caps what one dossier may make us store and match (a DynamoDB item is at most 400 KB)."""
_MAX_REPORTED_ERRORS = 5

SourceVersion = Literal["v3", "v2"]


@dataclass(frozen=True, slots=True)
class ParsedDossier:
    """What a FormulaireQF dossier tells us, in domain models.

    ``source_version`` says which QF block the data came from. ``repr`` shows presence flags only: a
    dossier ends up in tracebacks and debug logs, its personal data must not.
    """

    external_id: str | None = field(repr=False)
    pivot_identity: PivotIdentity = field(repr=False)
    quotient_familial: QuotientFamilial | None = field(repr=False)
    allocataires: tuple[Person, ...] = field(repr=False)
    enfants: tuple[Person, ...] = field(repr=False)
    source_version: SourceVersion

    def __repr__(self) -> str:
        return (
            f"ParsedDossier(source_version={self.source_version!r}, "
            f"has_external_id={self.external_id is not None}, "
            f"has_quotient_familial={self.quotient_familial is not None}, "
            f"allocataires={len(self.allocataires)}, enfants={len(self.enfants)})"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------------------------------
# Lenient models of the document


def _is_blank(value: object) -> bool:
    return value is None or value == {} or (isinstance(value, str) and not value.strip())


def _blank_is_none(value: object) -> object:
    return None if _is_blank(value) else value


def _none_is_empty_list(value: object) -> object:
    return [] if _is_blank(value) else value


class _QuotientFamilialV3Block(BaseModel):
    """``quotient_familial_v3``: API Particulier v3 ``data`` (``adresse`` and ``version`` are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    quotient_familial: QuotientFamilial | None = None
    allocataires: list[Person] = Field(default_factory=list, max_length=MAX_ALLOCATAIRES)
    enfants: list[Person] = Field(default_factory=list, max_length=MAX_ENFANTS)

    _blank_qf = field_validator("quotient_familial", mode="before")(_blank_is_none)
    _lists = field_validator("allocataires", "enfants", mode="before")(_none_is_empty_list)


def _digits(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if 0 < len(stripped) <= 9 and stripped.isascii() and stripped.isdigit():
            return int(stripped)
    return None


def _date_from_parts(year: object, month: object, day: object) -> object:
    """ISO date string from the v2 split birth date, or a value pydantic will refuse as a date."""
    if year is None and month is None and day is None:
        return None
    parts = (_digits(year), _digits(month), _digits(day))
    if any(part is None for part in parts):
        return "invalid"
    return f"{parts[0]:04d}-{parts[1]:02d}-{parts[2]:02d}"


def _person_from_v2(raw: object) -> object:
    """Reshape a v2 ``{nomNaissance, nomUsuel, …}`` member into ``Person``'s shape (others left as is)."""
    if not isinstance(raw, dict):
        return raw
    prenoms = raw.get("prenoms")
    if isinstance(prenoms, list) and all(isinstance(prenom, str) for prenom in prenoms):
        prenoms = " ".join(prenoms)
    return {
        "nom_naissance": raw.get("nomNaissance"),
        "nom_usage": raw.get("nomUsuel", raw.get("nomUsage")),
        "prenoms": "" if prenoms is None else prenoms,
        "date_naissance": _date_from_parts(
            raw.get("anneeDateDeNaissance"), raw.get("moisDateDeNaissance"), raw.get("jourDateDeNaissance")
        ),
        "sexe": raw.get("sexe"),
    }


class _QuotientFamilialV2Block(BaseModel):
    """Legacy ``quotient_familial`` (v2, camelCase), reshaped on entry into the domain's names.

    Error paths therefore use the domain names (``quotient_familial.allocataires.0.date_naissance``).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    quotient_familial: QuotientFamilial | None = None
    allocataires: list[Person] = Field(default_factory=list, max_length=MAX_ALLOCATAIRES)
    enfants: list[Person] = Field(default_factory=list, max_length=MAX_ENFANTS)

    @model_validator(mode="before")
    @classmethod
    def _from_camel_case(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        qf_value = value.get("quotientFamilial")
        regime = value.get("regime")
        members: dict[str, object] = {}
        for key in ("allocataires", "enfants"):
            raw = value.get(key)
            members[key] = [_person_from_v2(item) for item in raw] if isinstance(raw, list) else raw
        return {
            "quotient_familial": None
            if qf_value is None
            else {
                "fournisseur": regime.upper() if isinstance(regime, str) else regime,
                "valeur": qf_value,
                "annee": value.get("annee"),
                "mois": value.get("mois"),
            },
            **members,
        }

    _lists = field_validator("allocataires", "enfants", mode="before")(_none_is_empty_list)


class _FormulaireQFDocument(BaseModel):
    """The top level of ``FormulaireQF.json``; the v2 block stays raw until we know we need it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    external_id: str | None = None
    pivot_identity: PivotIdentity | None = None
    quotient_familial_v3: _QuotientFamilialV3Block | None = None
    quotient_familial: Any = None

    @field_validator("external_id", mode="before")
    @classmethod
    def _untrusted_external_id(cls, value: object) -> object:
        if isinstance(value, str) and len(value) <= EXTERNAL_ID_MAX_LENGTH:
            return value
        return None

    _blank_blocks = field_validator(
        "pivot_identity", "quotient_familial_v3", "quotient_familial", mode="before"
    )(_blank_is_none)


_Model = TypeVar("_Model", bound=BaseModel)


def _field_path(prefix: tuple[str, ...], loc: tuple[int | str, ...]) -> str:
    return ".".join([*prefix, *(str(part) for part in loc)]) or "(root)"


def _validate(model: type[_Model], data: object, *, prefix: tuple[str, ...] = ()) -> _Model:
    """Validate with pydantic, turning its error (whose text quotes input values) into a path-only one."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        names = [f"{_field_path(prefix, detail['loc'])} ({detail['type']})" for detail in details]
        shown = ", ".join(names[:_MAX_REPORTED_ERRORS])
        more = f" and {len(names) - _MAX_REPORTED_ERRORS} more" if len(names) > _MAX_REPORTED_ERRORS else ""
        raise DossierError(f"invalid dossier field(s): {shown}{more}", code="invalid_field") from None


def _dossier_from_object(document: object) -> ParsedDossier:
    """Shared by the JSON and XML entry points once they have the JSON-shaped object."""
    if not isinstance(document, dict):
        raise DossierError("dossier root is not an object", code="not_an_object")
    parsed = _validate(_FormulaireQFDocument, document)
    if parsed.pivot_identity is None:
        raise DossierError("dossier has no pivot identity", code="missing_identity")

    v3 = parsed.quotient_familial_v3
    if v3 is not None and v3.quotient_familial is not None:
        return ParsedDossier(
            external_id=parsed.external_id,
            pivot_identity=parsed.pivot_identity,
            quotient_familial=v3.quotient_familial,
            allocataires=tuple(v3.allocataires),
            enfants=tuple(v3.enfants),
            source_version="v3",
        )
    if parsed.quotient_familial is not None:
        v2 = _validate(_QuotientFamilialV2Block, parsed.quotient_familial, prefix=("quotient_familial",))
        if v2.quotient_familial is not None:
            return ParsedDossier(
                external_id=parsed.external_id,
                pivot_identity=parsed.pivot_identity,
                quotient_familial=v2.quotient_familial,
                allocataires=tuple(v2.allocataires),
                enfants=tuple(v2.enfants),
                source_version="v2",
            )
    raise DossierError("dossier carries no quotient familial", code="missing_quotient_familial")


def _refuse_oversized(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise DossierError(f"dossier exceeds {max_bytes} bytes", code="too_large")


def _too_deep(max_depth: int) -> DossierError:
    return DossierError(f"dossier nests deeper than {max_depth} levels", code="too_deep")


# --------------------------------------------------------------------------------------------------
# JSON

# One token at a time: a whole string (closing quote optional, so an unterminated string runs to the
# end in linear time instead of being retried at every quote) or a structural bracket.
_JSON_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?|[\[\]{}]', re.DOTALL)
_OPENING = frozenset(b"[{")


def _json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Bracket nesting of ``data`` beyond ``max_depth``, ignoring brackets inside strings; no recursion."""
    depth = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(data):
        first = data[token.start()]
        if first in _OPENING:
            depth += 1
            if depth > max_depth:
                return True
        elif first != 0x22:  # a closing bracket ('"' starts a string token)
            depth -= 1
    return False


def _refuse_constant(name: str) -> object:
    raise ValueError("NaN and Infinity are not JSON")


def parse_formulaire_qf_json(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> ParsedDossier:
    """Parse ``FormulaireQF.json``. Raises only ``DossierError`` (codes in the module docstring)."""
    _refuse_oversized(data, max_bytes)
    if _json_depth_exceeds(data, max_depth):
        raise _too_deep(max_depth)
    try:
        text = data.decode("utf-8-sig")
        document = json.loads(text, parse_constant=_refuse_constant)
        # "\ud800" escapes load as lone surrogates, which no later UTF-8 encoding (storage, events) accepts.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except RecursionError:  # cannot happen below max_depth; kept so depth can never crash the caller
        raise _too_deep(max_depth) from None
    except ValueError:  # JSONDecodeError, Unicode errors and too-long integers are all ValueErrors
        raise DossierError("dossier is not UTF-8 JSON", code="malformed_json") from None
    return _dossier_from_object(document)


# --------------------------------------------------------------------------------------------------
# XML (Rails ``Hash#to_xml``)


_XML_INTEGER = re.compile(r"[+-]?[0-9]+")
_XML_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _undasherise(tag: str) -> str:
    return tag.replace("-", "_")


def _typed_scalar(type_name: str | None, text: str) -> object:
    """The value of a Rails leaf element; an unparsable typed value stays text (pydantic judges it)."""
    stripped = text.strip()
    if type_name == "integer" and _XML_INTEGER.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # beyond Python's int string-conversion limit
            return text
    if type_name in {"float", "decimal"} and _XML_NUMBER.fullmatch(stripped):
        return float(stripped)
    if type_name == "boolean" and stripped in {"true", "1", "false", "0"}:
        return stripped in {"true", "1"}
    # Rails renders an empty string as an empty element and an empty hash as indentation only.
    return text if stripped else ""


class _XmlNode:
    __slots__ = ("attributes", "children", "tag", "text")

    def __init__(self, tag: str, attributes: dict[str, str]) -> None:
        self.tag = tag
        self.attributes = attributes
        self.children: list[tuple[str, object]] = []
        self.text: list[str] = []

    def value(self) -> object:
        """Reverse of Rails ``to_xml`` for this element (as ``Hash.from_xml`` would, keeping ``""``)."""
        if self.attributes.get("nil") == "true":
            return None
        type_name = self.attributes.get("type")
        if type_name == "array":
            return [child for _, child in self.children]
        if self.children:
            return {_undasherise(tag): child for tag, child in self.children}  # duplicates: last wins
        return _typed_scalar(type_name, "".join(self.text))


class _RailsHashBuilder:
    """ElementTree parser target that builds the JSON-shaped object directly, refusing deep nesting
    while parsing (the document never exists as a deep tree)."""

    def __init__(self, max_depth: int) -> None:
        self._max_depth = max_depth
        self._stack: list[_XmlNode] = []
        self._root: tuple[str, object] | None = None

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        if len(self._stack) >= self._max_depth:
            raise _too_deep(self._max_depth)
        self._stack.append(_XmlNode(tag, dict(attributes)))

    def data(self, text: str) -> None:
        if self._stack:
            self._stack[-1].text.append(text)

    def end(self, tag: str) -> None:
        node = self._stack.pop()
        if self._stack:
            self._stack[-1].children.append((node.tag, node.value()))
        else:
            self._root = (node.tag, node.value())

    def close(self) -> tuple[str, object] | None:
        return self._root


def parse_formulaire_qf_xml(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> ParsedDossier:
    """Parse ``FormulaireQF.xml`` (Rails ``Hash#to_xml``: root ``<hash>``, dasherised keys,
    ``type``/``nil`` attributes) into the JSON shape, then the same model as the JSON.

    defusedxml refuses any DTD, entity declaration or external reference (billion laughs, XXE).
    Any root element name is accepted as the hash; raises only ``DossierError``.
    """
    _refuse_oversized(data, max_bytes)
    builder = _RailsHashBuilder(max_depth)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException:
        raise DossierError("dossier XML declares a DTD or entities", code="malformed_xml") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (ParseError, ValueError, LookupError):
        raise DossierError("dossier is not well-formed XML", code="malformed_xml") from None
    if root is None:
        raise DossierError("dossier is not well-formed XML", code="malformed_xml")
    _, document = root
    return _dossier_from_object({} if document == "" else document)
