"""Signed, opaque ``external_id`` values for the form link.

The form copies ``external_id`` verbatim into the dossier and validates nothing, so the value is
user-editable input. It therefore carries its own integrity::

    qfb1.<kid>.<link_id>.<mac>

* ``qfb1`` — format version.
* ``kid`` — id of the signing key, 1–8 characters ``[a-z0-9]``: keys rotate, old ids keep verifying.
* ``link_id`` — 16 random bytes (128 bits), base64url without padding (22 characters): the
  unguessable handle under which the store keeps ``(tenant, user_id, expires_at)`` with a TTL.
  It never reveals the editor's user id.
* ``mac`` — HMAC-SHA256 over ``qfb1|kid|link_id|tenant SIRET``, truncated to 12 bytes (96 bits),
  base64url (16 characters): an id issued for one collectivité does not verify for another.

Total length ≤ 52 characters, URL-safe (no encoding needed). Parsing is strict (fixed lengths,
ASCII alphabet, length cap before any work) and comparison is constant-time, so any input only
ever yields a ``VerifiedLink`` or a typed ``LinkError``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from qfbridge.domain.errors import LinkError

VERSION = "qfb1"
LINK_ID_BYTES = 16
MAC_BYTES = 12
MIN_KEY_BYTES = 32
MAX_EXTERNAL_ID_LENGTH = 64

_KID = re.compile(r"[a-z0-9]{1,8}", re.ASCII)
_SIRET = re.compile(r"[0-9]{14}", re.ASCII)
_EXTERNAL_ID = re.compile(
    r"qfb1\.(?P<kid>[a-z0-9]{1,8})\.(?P<link_id>[A-Za-z0-9_-]{22})\.(?P<mac>[A-Za-z0-9_-]{16})", re.ASCII
)


class MalformedLink(LinkError):
    """The external_id does not have the shape of one of ours."""

    code = "malformed"


class UnknownKey(LinkError):
    """The external_id names a signing key we do not hold (retired or forged)."""

    code = "unknown_key"


class BadSignature(LinkError):
    """The external_id was altered, forged, or issued for another collectivité."""

    code = "bad_signature"


class InvalidTenant(LinkError):
    """The tenant SIRET given to the signer is not 14 digits."""

    code = "invalid_tenant"


class KeyConfigurationError(LinkError):
    """The signing keys are unusable (unknown active key, bad key id, key too short)."""

    code = "key_config"


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A freshly issued external_id and the link id the store keys the mapping on."""

    external_id: str
    link_id: str
    kid: str


@dataclass(frozen=True, slots=True)
class VerifiedLink:
    """An external_id whose signature holds for the tenant: look ``link_id`` up in the store."""

    link_id: str
    kid: str


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LinkSigner:
    """Issues and verifies external_ids with HMAC keys identified by a key id.

    ``keys`` maps key id → secret (≥ 32 bytes); ``active_kid`` signs new links, every key in
    ``keys`` verifies (rotation: add the new key, make it active, drop the old one once the links
    it signed have expired).
    """

    def __init__(self, keys: Mapping[str, bytes], active_kid: str) -> None:
        if not keys:
            raise KeyConfigurationError("no link-signing key configured")
        for kid, secret in keys.items():
            if not isinstance(kid, str) or not _KID.fullmatch(kid):
                raise KeyConfigurationError("a link-signing key id is not 1-8 characters [a-z0-9]")
            if not isinstance(secret, bytes) or len(secret) < MIN_KEY_BYTES:
                raise KeyConfigurationError(f"link-signing key {kid!r} is shorter than {MIN_KEY_BYTES} bytes")
        if active_kid not in keys:
            raise KeyConfigurationError("the active link-signing key id is not among the keys")
        self._keys = dict(keys)
        self._active_kid = active_kid

    @property
    def active_kid(self) -> str:
        return self._active_kid

    def issue(self, tenant_siret: str) -> IssuedLink:
        """A new external_id for ``tenant_siret``, signed with the active key."""
        _check_siret(tenant_siret)
        kid = self._active_kid
        link_id = _b64url(secrets.token_bytes(LINK_ID_BYTES))
        mac = self._mac(kid, link_id, tenant_siret)
        return IssuedLink(external_id=f"{VERSION}.{kid}.{link_id}.{mac}", link_id=link_id, kid=kid)

    def verify(self, external_id: object, tenant_siret: str) -> VerifiedLink:
        """Check an external_id read from a dossier of ``tenant_siret``.

        Raises ``MalformedLink``, ``UnknownKey`` or ``BadSignature``; never anything else for any
        ``external_id`` value (the SIRET is ours and is checked as configuration).
        """
        _check_siret(tenant_siret)
        if not isinstance(external_id, str) or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
            raise MalformedLink("external_id is not a qfbridge link id")
        match = _EXTERNAL_ID.fullmatch(external_id)
        if match is None:
            raise MalformedLink("external_id is not a qfbridge link id")
        kid, link_id, mac = match.group("kid"), match.group("link_id"), match.group("mac")
        if kid not in self._keys:
            raise UnknownKey("external_id was signed with an unknown key")
        expected = self._mac(kid, link_id, tenant_siret)
        if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii")):
            raise BadSignature("external_id signature does not verify for this collectivité")
        return VerifiedLink(link_id=link_id, kid=kid)

    def _mac(self, kid: str, link_id: str, tenant_siret: str) -> str:
        message = "|".join((VERSION, kid, link_id, tenant_siret)).encode("ascii")
        digest = hmac.new(self._keys[kid], message, hashlib.sha256).digest()
        return _b64url(digest[:MAC_BYTES])


def _check_siret(tenant_siret: object) -> None:
    if not isinstance(tenant_siret, str) or not _SIRET.fullmatch(tenant_siret):
        raise InvalidTenant("tenant SIRET must be 14 digits")
