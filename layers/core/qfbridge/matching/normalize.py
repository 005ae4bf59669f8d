"""Normalisation of French names so that formatting never decides a match.

The same person reaches us spelled by FranceConnect ("Léouis", "Jean-Philippe Marie"), by CAF/MSA
("LEOUIS", "JEAN PHILIPPE MARIE") and by the editor's software ("Léouis ", "DE LA FONTAINE" or
"DELAFONTAINE"). Everything here is pure and deterministic:

* ``fold`` — upper case, accents stripped (NFKD), ligatures spelled out (Œ → OE), every
  separator (space, hyphen, apostrophe, dot, underscore…) turned into one space.
* ``surname_tokens`` / ``comparable_surname`` — the surname with its particles (DE, DU, DES, LE,
  LA, D', L', VAN, VON, DI, DEL…) glued to the word they introduce, so "DE LA FONTAINE",
  "De-La-Fontaine" and "DELAFONTAINE" all give ``DELAFONTAINE``; SAINT/ST and SAINTE/STE agree.
* ``given_name_tokens`` — all first names as tokens: a compound first name ("JEAN-PHILIPPE")
  gives the same tokens whether written with a hyphen or a space.
* similarity helpers backed by rapidfuzz (C-implemented Levenshtein), used for typos.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from rapidfuzz.distance import Levenshtein

# Letters that NFKD does not decompose into ASCII.
_LIGATURES = str.maketrans(
    {
        "Œ": "OE",
        "Æ": "AE",
        "Ø": "O",
        "Ł": "L",
        "Đ": "D",
        "Ð": "D",
        "Þ": "TH",
        "ẞ": "SS",
    }
)

# Words that introduce a surname; glued to the word that follows them.
NAME_PARTICLES: frozenset[str] = frozenset(
    {
        "D",  # D'ARTAGNAN → D ARTAGNAN after folding
        "L",
        "DE",
        "DU",
        "DES",
        "LE",
        "LA",
        "LES",
        "VAN",
        "VON",
        "DER",
        "DEN",
        "TER",
        "TEN",
        "DI",
        "DA",
        "DOS",
        "DAS",
        "DEL",
        "DELLA",
        "DELLE",
        "DELLO",
        "LO",
        "MAC",
        "MC",
        "O",  # O'NEILL
        "EL",
        "AL",
        "BEN",
        "IBN",
        "AIT",
    }
)

_ABBREVIATIONS = {"ST": "SAINT", "STE": "SAINTE"}


def fold(text: str) -> str:
    """Upper case, no accents, separators collapsed to single spaces, only ``[A-Z0-9 ]`` left."""
    upper = unicodedata.normalize("NFKC", text).upper().translate(_LIGATURES)
    decomposed = unicodedata.normalize("NFKD", upper)
    kept: list[str] = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        if "A" <= char <= "Z" or "0" <= char <= "9":
            kept.append(char)
        elif char.isalpha():
            # A letter outside Latin (Greek, Cyrillic…): keep it rather than lose the name.
            kept.append(char)
        else:
            kept.append(" ")
    return " ".join("".join(kept).split())


def _expand(tokens: Iterable[str]) -> list[str]:
    return [_ABBREVIATIONS.get(token, token) for token in tokens]


def surname_tokens(surname: str | None) -> tuple[str, ...]:
    """The words of a surname, each particle glued to the word it introduces.

    "DE LA FONTAINE" → ("DELAFONTAINE",); "LE GALL-MARTIN" → ("LEGALL", "MARTIN");
    a trailing particle (rare: "MARTIN DE") stays a word of its own.
    """
    if not surname:
        return ()
    words = _expand(fold(surname).split())
    glued: list[str] = []
    pending = ""
    for word in words:
        if word in NAME_PARTICLES:
            pending += word
            continue
        glued.append(pending + word)
        pending = ""
    if pending:
        glued.append(pending)
    return tuple(glued)


def comparable_surname(surname: str | None) -> str:
    """One string per surname that ignores case, accents, separators and particle spacing."""
    return "".join(surname_tokens(surname))


def given_name_tokens(given_names: str | None) -> tuple[str, ...]:
    """All first names as tokens, compound names split ("JEAN-PHILIPPE" = "JEAN PHILIPPE")."""
    if not given_names:
        return ()
    return tuple(_expand(fold(given_names).split()))


def comparable_given_names(given_names: str | None) -> str:
    """All first names as one space-separated string, in their order."""
    return " ".join(given_name_tokens(given_names))


def similarity(left: str, right: str) -> float:
    """Normalised Levenshtein similarity in 0..1 (1 = identical); 0 when either side is empty."""
    if not left or not right:
        return 0.0
    return float(Levenshtein.normalized_similarity(left, right))


def edit_distance(left: str, right: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    return int(Levenshtein.distance(left, right))


def is_typo_of(left: str, right: str) -> bool:
    """Whether two comparable names plausibly differ by a typing mistake only.

    One edit when the shorter name has up to 7 letters, two beyond, and never for names shorter than 4 letters
    (on "LY" vs "LI" an edit is a different name, not a typo). Also accepts one transposition
    of adjacent letters ("MRATIN"), which Levenshtein counts as two edits.
    """
    if left == right or min(len(left), len(right)) < 4:
        return False
    allowed = 1 if min(len(left), len(right)) <= 7 else 2
    if abs(len(left) - len(right)) > allowed:
        return False  # at least that many insertions: too far, and no transposition either
    distance = Levenshtein.distance(left, right, score_cutoff=2)  # 3 stands for "3 or more"
    if distance <= allowed:
        return True
    return distance == 2 and _one_transposition(left, right)  # a transposition is 2 edits


def _one_transposition(left: str, right: str) -> bool:
    if len(left) != len(right):
        return False
    diffs = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
    return (
        len(diffs) == 2
        and diffs[1] == diffs[0] + 1
        and left[diffs[0]] == right[diffs[1]]
        and left[diffs[1]] == right[diffs[0]]
    )
