"""The three attachments the form deposits in a FormulaireQF case.

* ``FormulaireQF.json``: the canonical data, compact UTF-8 JSON (Rails ``to_json``);
* ``FormulaireQF.xml``: the same data as Rails ``Hash#to_xml`` renders it (root ``<hash>``,
  dasherised keys, ``type="integer"``/``type="array"`` attributes, ``nil="true"``, singular names
  for array items);
* ``quotient_familial_<Nom>_<Prénoms>.pdf``: a human-readable summary, a small but valid PDF.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

JSON_FILE_NAME = "FormulaireQF.json"
XML_FILE_NAME = "FormulaireQF.xml"


def formulaire_json(formulaire: Mapping[str, Any]) -> bytes:
    return json.dumps(formulaire, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def pdf_file_name(family_name: str, given_name: str) -> str:
    """The form's own naming (spaces become underscores; the usager controls these characters)."""
    return f"quotient_familial_{family_name}_{given_name}.pdf".replace(" ", "_")


# --- Rails Hash#to_xml ----------------------------------------------------------------------------


def rails_xml(data: Mapping[str, Any]) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    _xml_element(lines, "hash", data, 0)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _xml_element(lines: list[str], name: str, value: Any, depth: int) -> None:
    pad = "  " * depth
    tag = name.replace("_", "-")
    if value is None:
        lines.append(f'{pad}<{tag} nil="true"/>')
    elif isinstance(value, Mapping):
        lines.append(f"{pad}<{tag}>")
        for key, item in value.items():
            _xml_element(lines, str(key), item, depth + 1)
        lines.append(f"{pad}</{tag}>")
    elif isinstance(value, list | tuple):
        if not value:
            lines.append(f'{pad}<{tag} type="array"/>')
            return
        lines.append(f'{pad}<{tag} type="array">')
        for item in value:
            _xml_element(lines, _singularize(tag), item, depth + 1)
        lines.append(f"{pad}</{tag}>")
    elif isinstance(value, bool):
        lines.append(f'{pad}<{tag} type="boolean">{str(value).lower()}</{tag}>')
    elif isinstance(value, int):
        lines.append(f'{pad}<{tag} type="integer">{value}</{tag}>')
    elif isinstance(value, float):
        lines.append(f'{pad}<{tag} type="float">{value}</{tag}>')
    else:
        lines.append(f"{pad}<{tag}>{escape(str(value))}</{tag}>")


def _singularize(word: str) -> str:
    """The few ActiveSupport inflection rules the form's keys need (``allocataires`` → ``allocataire``)."""
    for pattern, replacement in (
        (r"(x|ch|ss|sh)es$", r"\1"),
        (r"([^aeiouy])ies$", r"\1y"),
        (r"([^s])s$", r"\1"),
    ):
        if re.search(pattern, word):
            return re.sub(pattern, replacement, word)
    return word


# --- PDF ------------------------------------------------------------------------------------------


def summary_lines(formulaire: Mapping[str, Any], reference: str) -> list[str]:
    """What the PDF shows: the reference, the pivot identity, the QF and the household."""
    lines = ["Formulaire QF - attestation de quotient familial", f"Référence : {reference}", ""]
    identity = formulaire.get("pivot_identity") or {}
    if isinstance(identity, Mapping):
        lines += [
            f"Nom de naissance : {identity.get('family_name', '')}",
            f"Prénoms : {identity.get('given_name', '')}",
            f"Date de naissance : {identity.get('birthdate', '')}",
            f"Commune de naissance (COG) : {identity.get('birthplace') or ''}",
            f"Pays de naissance (COG) : {identity.get('birthcountry', '')}",
            "",
        ]
    v3 = formulaire.get("quotient_familial_v3") or {}
    if isinstance(v3, Mapping):
        qf = v3.get("quotient_familial") or {}
        if isinstance(qf, Mapping):
            lines.append(
                f"Quotient familial : {qf.get('valeur', '')} ({qf.get('fournisseur', '')}, "
                f"{qf.get('mois', '')}/{qf.get('annee', '')})"
            )
        for title, key in (("Allocataires", "allocataires"), ("Enfants", "enfants")):
            members = v3.get(key) or []
            lines.append(f"{title} :")
            for member in members if isinstance(members, list) else []:
                if isinstance(member, Mapping):
                    lines.append(
                        f"  - {member.get('nom_naissance', '')} {member.get('prenoms', '')}, "
                        f"né(e) le {member.get('date_naissance', '')}"
                    )
    return lines


def text_pdf(lines: list[str]) -> bytes:
    """A one-page PDF 1.4 (Helvetica, WinAnsi) with a correct cross-reference table."""
    content = ["BT", "/F1 11 Tf", "50 790 Td", "14 TL"]
    for line in lines[:52]:
        content.append(f"({_pdf_string(line)}) Tj T*")
    content.append("ET")
    stream = "\n".join(content).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode() + b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def _pdf_string(text: str) -> str:
    latin = text.encode("cp1252", errors="replace").decode("latin-1")
    return latin.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
