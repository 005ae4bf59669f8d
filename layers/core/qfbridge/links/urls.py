"""The form URL a collectivité's usagers open, and the allowlist of its ``redirect_uri``.

``https://quotient-familial.numerique.gouv.fr/collectivites/<SIRET>?external_id=…&redirect_uri=…``
The form reads only these two parameters and validates neither. ``redirect_uri``
becomes a "Retourner sur le site de ma collectivité" button on a government page, so we only ever
put there an ``https`` URL whose host is exactly one the tenant registered: no userinfo, no
explicit port, no backslash, no non-ASCII (IDN must be registered in its ``xn--`` form), no
percent-encoded or empty host, no scheme-relative ``//`` path.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from qfbridge.domain.errors import LinkError

DEFAULT_FORM_BASE_URL = "https://quotient-familial.numerique.gouv.fr"
MAX_REDIRECT_URI_LENGTH = 2048

_SIRET = re.compile(r"[0-9]{14}", re.ASCII)
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})+", re.ASCII)
_LOCAL_HOSTS = {"localhost", "127.0.0.1"}


class RedirectNotAllowed(LinkError):
    """The redirect_uri is not an https URL on one of the collectivité's registered hosts."""

    code = "redirect_not_allowed"


class InvalidFormUrl(LinkError):
    """The form link cannot be built from these parts (base URL, SIRET or external_id)."""

    code = "invalid_form_url"


def normalise_host(host: str) -> str:
    """Lower-case an allowlist entry and check it is a plain DNS name (ASCII, ≥ 2 labels)."""
    candidate = host.strip().lower()
    if not _HOSTNAME.fullmatch(candidate) or len(candidate) > 253:
        raise RedirectNotAllowed(
            "allowlist entry is not a plain ASCII host name", code="redirect_host_invalid"
        )
    return candidate


def validate_redirect_uri(uri: str, allowed_hosts: Collection[str]) -> str:
    """Return ``uri`` (scheme and host lower-cased) if it may be offered as redirect, else raise.

    Error codes: ``redirect_invalid`` (not a clean absolute URL), ``redirect_scheme`` (not https),
    ``redirect_userinfo``, ``redirect_port``, ``redirect_host_invalid``, ``redirect_not_allowed``
    (host not registered for the collectivité). Messages never echo the URI.
    """
    if not isinstance(uri, str) or not uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise RedirectNotAllowed("redirect_uri is empty or too long", code="redirect_invalid")
    if not uri.isascii() or any(ch <= " " or ch == "\x7f" for ch in uri):
        raise RedirectNotAllowed(
            "redirect_uri must be ASCII without spaces or control characters (use xn-- for IDN)",
            code="redirect_invalid",
        )
    if "\\" in uri:
        raise RedirectNotAllowed("redirect_uri must not contain backslashes", code="redirect_invalid")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise RedirectNotAllowed("redirect_uri is not a valid URL", code="redirect_invalid") from exc
    if parts.scheme.lower() != "https":
        raise RedirectNotAllowed("redirect_uri must use https", code="redirect_scheme")
    if not uri[len(parts.scheme) :].startswith("://"):
        raise RedirectNotAllowed("redirect_uri must be an absolute https:// URL", code="redirect_invalid")
    netloc = parts.netloc
    if "@" in netloc:
        raise RedirectNotAllowed("redirect_uri must not carry user information", code="redirect_userinfo")
    if "[" in netloc or "]" in netloc:
        raise RedirectNotAllowed(
            "redirect_uri host must be a name, not an IP literal", code="redirect_host_invalid"
        )
    if ":" in netloc:
        raise RedirectNotAllowed("redirect_uri must not name a port", code="redirect_port")
    host = netloc.lower()
    if not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise RedirectNotAllowed(
            "redirect_uri host is not a plain ASCII host name", code="redirect_host_invalid"
        )
    allowed = {normalise_host(h) for h in allowed_hosts}
    if host not in allowed:
        raise RedirectNotAllowed(
            "redirect_uri host is not registered for this collectivité", code="redirect_not_allowed"
        )
    if parts.path.startswith("//"):
        raise RedirectNotAllowed("redirect_uri path must not start with //", code="redirect_invalid")
    return urlunsplit(("https", host, parts.path, parts.query, parts.fragment))


def build_form_url(
    base_url: str,
    siret: str,
    external_id: str | None,
    redirect_uri: str | None,
    *,
    allowed_redirect_hosts: Collection[str] | None = None,
) -> str:
    """``<base>/collectivites/<SIRET>`` with ``external_id`` and ``redirect_uri`` query-encoded.

    ``base_url`` is the form's origin (https; http only for a local sandbox on localhost).
    ``redirect_uri`` is checked against ``allowed_redirect_hosts`` when given; callers that do
    not pass it must have validated it with ``validate_redirect_uri`` already.
    """
    base = _check_base_url(base_url)
    if not isinstance(siret, str) or not _SIRET.fullmatch(siret):
        raise InvalidFormUrl("SIRET must be 14 digits", code="invalid_siret")
    if external_id is not None and (not external_id or len(external_id) > 255):
        raise InvalidFormUrl("external_id must be 1-255 characters")
    if redirect_uri is not None and allowed_redirect_hosts is not None:
        redirect_uri = validate_redirect_uri(redirect_uri, allowed_redirect_hosts)
    params: list[tuple[str, str]] = []
    if external_id is not None:
        params.append(("external_id", external_id))
    if redirect_uri is not None:
        params.append(("redirect_uri", redirect_uri))
    url = f"{base}/collectivites/{siret}"
    if params:
        url += "?" + urlencode(params, quote_via=quote, safe="")
    return url


def _check_base_url(base_url: str) -> str:
    try:
        parts = urlsplit(base_url)
    except ValueError as exc:
        raise InvalidFormUrl("form base URL is not a valid URL", code="invalid_base_url") from exc
    local = parts.hostname in _LOCAL_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise InvalidFormUrl("form base URL must be https (http only on localhost)", code="invalid_base_url")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidFormUrl("form base URL must be a bare origin and path", code="invalid_base_url")
    return base_url.rstrip("/")
