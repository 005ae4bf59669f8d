"""The usager's support reference of a dossier.

The form names each HubEE case ``Formulaire-QF-<REF>-01`` where ``<REF>`` is 13 upper-case hexadecimal
characters; the usager sees ``<REF>`` on the confirmation page and quotes it to the collectivité's
support. We store the bare ``<REF>`` so agents can find a dossier from what the usager says.
"""

from __future__ import annotations

import re

from qfbridge.domain.errors import DossierError, ValidationError

REFERENCE_LENGTH = 13
CASE_EXTERNAL_ID_PREFIX = "Formulaire-QF-"
CASE_EXTERNAL_ID_SUFFIX = "-01"

_CASE_EXTERNAL_ID = re.compile(r"Formulaire-QF-([0-9A-F]{13})-01")
_USER_REFERENCE = re.compile(r"(?:FORMULAIRE-QF-)?([0-9A-F]{13})(?:-01)?")
_SPACES = re.compile(r"[\s\u00a0\u202f]+")
# Longer than any acceptable form even with generous spacing: refuse before doing any work.
_MAX_USER_INPUT = 100


def reference_from_case_external_id(case_external_id: object) -> str:
    """Extract ``<REF>`` from a HubEE case ``externalId``.

    Strict: this value is produced by the form, so anything else means the case is not a FormulaireQF
    dossier as we know it. Raises ``DossierError(code="bad_reference")``.
    """
    if isinstance(case_external_id, str):
        match = _CASE_EXTERNAL_ID.fullmatch(case_external_id)
        if match:
            return match.group(1)
    raise DossierError(
        "case externalId is not of the form Formulaire-QF-<13 upper-case hex>-01", code="bad_reference"
    )


def case_external_id_for(reference: str) -> str:
    """The case ``externalId`` the form gives to the dossier of this reference (sandbox and test data)."""
    return f"{CASE_EXTERNAL_ID_PREFIX}{normalise_reference(reference)}{CASE_EXTERNAL_ID_SUFFIX}"


def normalise_reference(user_input: object) -> str:
    """Normalise what an agent or usager types into the stored 13-character reference.

    Accepts the bare 13 hex characters in any case, or the full ``Formulaire-QF-<REF>-01`` form, with
    stray spaces anywhere (copied from an e-mail or read over the phone). Raises
    ``ValidationError(code="invalid_reference")`` otherwise; the message does not echo the input.
    """
    if isinstance(user_input, str) and len(user_input) <= _MAX_USER_INPUT:
        candidate = _SPACES.sub("", user_input)
        # ASCII first: str.upper() maps some letters (e.g. the "ﬀ" ligature) onto ASCII hex digits.
        match = _USER_REFERENCE.fullmatch(candidate.upper()) if candidate.isascii() else None
        if match:
            return match.group(1)
    raise ValidationError(
        "a support reference is 13 hexadecimal characters (or Formulaire-QF-<reference>-01)",
        code="invalid_reference",
    )
