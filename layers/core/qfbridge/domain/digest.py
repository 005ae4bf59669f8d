"""Integrity checks of a downloaded HubEE attachment: its ``digest`` header and its declared size.

HubEE may send a ``digest`` header with the attachment bytes: the base64 SHA-256 of the bytes. Whether
the value is bare or ``SHA-256=`` prefixed is not settled by HubEE's documentation, so both are accepted, as well as
the RFC 3230 list form (``SHA-256=…, MD5=…``) and, as a last tolerance, a hexadecimal SHA-256.

Decision on an absent header (``DIGEST_ABSENT``): the header is optional in HubEE's contract, so its
absence is not an error — ``verify_digest`` returns normally and the caller records ``DIGEST_ABSENT``
among the dossier's processing evidence (the size check and the JSON parse still guard the content).
A header that is present but unreadable, or carries no SHA-256 digest, is refused: we asked for
integrity and cannot tell whether we got it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from qfbridge.domain.errors import DossierError

DIGEST_ABSENT = "digest_absent"
"""Evidence value the caller records when HubEE sent no ``digest`` header."""

_SHA256_SIZE = 32
_MAX_HEADER_LENGTH = 2048
_SHA256_NAMES = frozenset({"sha-256", "sha256"})
_ALGORITHM_PREFIXED = re.compile(r"([A-Za-z][A-Za-z0-9-]*)=(.+)", re.DOTALL)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _unreadable() -> DossierError:
    return DossierError("attachment digest header is unreadable", code="digest_unreadable")


def _decode_sha256(value: str) -> bytes | None:
    """The 32 digest bytes encoded in ``value`` (base64, base64url or hex), or None."""
    value = value.strip().strip('"').strip()
    if _HEX_SHA256.fullmatch(value):
        return bytes.fromhex(value)
    padded = value + "=" * (-len(value) % 4)  # some encoders drop the padding
    for alphabet in (None, b"-_"):
        try:
            decoded = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == _SHA256_SIZE:
            return decoded
    return None


def _sha256_values(header: str) -> list[str]:
    """The SHA-256 values the header announces; raises ``digest_unreadable`` when there is none."""
    if len(header) > _MAX_HEADER_LENGTH or not header.isascii():
        raise _unreadable()
    values: list[str] = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        prefixed = _ALGORITHM_PREFIXED.fullmatch(part)
        # A bare base64 value only has "=" as trailing padding, so it never matches "<algo>=<value>".
        if prefixed:
            if prefixed.group(1).lower() in _SHA256_NAMES:
                values.append(prefixed.group(2))
            continue  # another algorithm (MD5, SHA-512…): RFC 3230 lets us ignore it
        values.append(part)
    if not values:
        raise _unreadable()
    return values


def verify_digest(data: bytes, header: str | None) -> None:
    """Check ``data`` against HubEE's ``digest`` header.

    * ``header is None``: returns without error — the caller records ``DIGEST_ABSENT`` (module doc).
    * every SHA-256 value in the header must decode and match, otherwise
      ``DossierError(code="digest_mismatch")``;
    * a header we cannot read (garbage, too long, no SHA-256 among its digests):
      ``DossierError(code="digest_unreadable")``.
    """
    if header is None:
        return
    expected: list[bytes] = []
    for value in _sha256_values(header):
        decoded = _decode_sha256(value)
        if decoded is None:
            raise _unreadable()
        expected.append(decoded)
    actual = hashlib.sha256(data).digest()
    for digest in expected:
        if not hmac.compare_digest(digest, actual):
            raise DossierError("attachment bytes do not match their digest", code="digest_mismatch")


def sha256_digest_header(data: bytes) -> str:
    """The ``digest`` header value for ``data`` in its prefixed form (used by the HubEE sandbox and tests)."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def verify_size(data: bytes, declared_size: int | None) -> None:
    """Check the downloaded length against the case's declared attachment ``size``.

    ``None`` (size not declared) passes; any difference raises ``DossierError(code="size_mismatch")``
    — a truncated download must never be parsed as a shorter valid document.
    """
    if declared_size is None:
        return
    if isinstance(declared_size, bool) or not isinstance(declared_size, int) or len(data) != declared_size:
        raise DossierError("attachment length differs from its declared size", code="size_mismatch")
