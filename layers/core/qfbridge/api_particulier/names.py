"""Names as API Particulier accepts them.

API Particulier validates ``nomNaissance``, ``nomUsage`` and each ``prenoms[]`` against
``^[a-zA-ZÀ-ÖØ-öø-ÿ' -]+$`` before any lookup (Latin-1 letters, space, hyphen, straight
apostrophe) and answers 422 otherwise. FranceConnect identities may hold what it refuses: a
typographic apostrophe (``D’ALMEIDA``), a ligature (``CŒURDEROI``), a letter beyond Latin-1
(``Łukasz``, ``Dvořák``). ``for_api`` rewrites such a name into what the API accepts, letter by
letter, keeping every Latin-1 letter as it is (the API strips accents itself before it queries
CNAF/MSA, so nothing is lost by sending ``é``). The stored identity is never changed: only the query.
"""

from __future__ import annotations

import re
import unicodedata

ACCEPTED = re.compile(r"^[a-zA-ZÀ-ÖØ-öø-ÿ' -]+$")
_ACCEPTED_CHAR = re.compile(r"[a-zA-ZÀ-ÖØ-öø-ÿ' -]")

_REPLACEMENTS = {
    # apostrophes and quotes that stand for an apostrophe in a name
    "\u2019": "'",  # ’ right single quotation mark (the typographic apostrophe)
    "\u2018": "'",  # ‘
    "\u02bc": "'",  # ʼ modifier letter apostrophe
    "\u2032": "'",  # ′ prime
    "\u00b4": "'",  # ´ acute accent used as an apostrophe
    "`": "'",
    # hyphens and dashes
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    # ligatures and letters without a decomposition
    "œ": "oe",
    "Œ": "OE",
    "ĳ": "ij",
    "Ĳ": "IJ",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ħ": "h",
    "Ħ": "H",
    "ı": "i",
    "ŧ": "t",
    "Ŧ": "T",
    "ŀ": "l",
    "Ŀ": "L",
    "ŋ": "n",
    "Ŋ": "N",
    "ſ": "s",
    "ə": "e",
    "Ə": "E",
    "ƒ": "f",
}


class NameNotAccepted(ValueError):
    """A name holds a character with no equivalent the API accepts (a digit, a dot, a non-Latin script)."""

    code = "name_not_accepted"


def _char_for_api(char: str) -> str:
    if _ACCEPTED_CHAR.fullmatch(char):
        return char
    if char in _REPLACEMENTS:
        return _REPLACEMENTS[char]
    if char.isspace():
        return " "
    # A Latin letter beyond Latin-1 with a diacritic (ă, ř, ş, ņ, ų…): its base letter.
    bare = "".join(part for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part))
    if bare and all(_ACCEPTED_CHAR.fullmatch(part) or part in _REPLACEMENTS for part in bare):
        return "".join(_REPLACEMENTS.get(part, part) for part in bare)
    raise NameNotAccepted(NameNotAccepted.code)


def for_api(name: str) -> str:
    """``name`` as API Particulier accepts it (single spaces, no leading or trailing space).

    Raises ``NameNotAccepted`` when a character has no accepted equivalent: such a name could only
    earn a 422, so it is not sent. The exception carries a code only, never the name.
    """
    rewritten = " ".join("".join(_char_for_api(char) for char in name).split())
    if not rewritten or not ACCEPTED.fullmatch(rewritten):
        raise NameNotAccepted(NameNotAccepted.code)
    return rewritten
