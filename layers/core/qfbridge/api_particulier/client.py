"""HTTP client of API Particulier's ``/v3/dss/quotient_familial/identite`` (the monthly QF refresh).

The client turns a stored pivot identity into the exact query API Particulier expects
(``build_query``), makes one call with the tenant's token, and maps whatever happens to a typed
``RefreshOutcome`` (``outcome_from_response``). It never raises for an HTTP answer nor for a
transport failure: deciding to retry, stop a tenant or alert is the refresh use case's job.
It never logs: outcomes carry the safe fields (``log_fields()``) for the caller to log.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import httpx
from pydantic import ValidationError as PydanticValidationError

from qfbridge.api_particulier.names import NameNotAccepted, for_api
from qfbridge.api_particulier.outcomes import (
    DEFAULT_ALREADY_RUNNING_WAIT_SECONDS,
    DEFAULT_MAINTENANCE_WAIT_SECONDS,
    DEFAULT_PROVIDER_WAIT_SECONDS,
    DEFAULT_THROTTLE_WAIT_SECONDS,
    DEFAULT_TRANSPORT_WAIT_SECONDS,
    ERROR_CODE_JETON_EXPIRE,
    AlreadyRunning,
    FamilyNotFound,
    Forbidden,
    IdentityRejected,
    Maintenance,
    ProviderUnavailable,
    QfFound,
    RateLimitInfo,
    RefreshOutcome,
    Throttled,
    TokenExpired,
    TransportFailure,
    UnexpectedAnswer,
    ceil_seconds,
)
from qfbridge.clock import utc_now
from qfbridge.domain.errors import ValidationError
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.observability import trace_http
from qfbridge.tls import tls_context

trace_http()  # this module sends with httpx: X-Ray traces its calls (qfbridge.observability)

QF_IDENTITE_PATH = "/v3/dss/quotient_familial/identite"
MAX_PRENOMS = 3

Environment = Literal["staging", "prod"]
_BASE_URLS: dict[str, str] = {
    "prod": "https://particulier.api.gouv.fr",
    "staging": "https://staging.particulier.api.gouv.fr",
}


@dataclass(frozen=True)
class ApiParticulierConfig:
    """Where API Particulier is and how long one call may take (5 s: a refresh is not interactive,
    but a stuck call holds a Lambda and a slot of the tenant's rate budget)."""

    base_url: str
    timeout_seconds: float = 5.0

    @classmethod
    def for_environment(cls, environment: Environment, *, timeout_seconds: float = 5.0) -> Self:
        try:
            base_url = _BASE_URLS[environment]
        except KeyError:
            raise ValidationError("unknown API Particulier environment", code="invalid_environment") from None
        return cls(base_url=base_url, timeout_seconds=timeout_seconds)

    @property
    def qf_identite_url(self) -> str:
        return self.base_url.rstrip("/") + QF_IDENTITE_PATH


# --- Query -----------------------------------------------------------------------------------------


def build_query(
    identity: PivotIdentity,
    recipient_siret: str,
    *,
    annee: int | None = None,
    mois: int | None = None,
    nom_usage: str | None = None,
) -> list[tuple[str, str]]:
    """The query string of the refresh call, as ordered (key, value) pairs.

    Mapping from the FranceConnect pivot identity: family_name → nomNaissance
    (always sent); given_name split on spaces → ``prenoms[]`` repeated, at most 3 (the API refuses
    more); birthdate → annee/mois/jourDateNaissance (plain integers, like the staging cases);
    gender → sexeEtatCivil M/F; birthcountry → codeCogInseePaysNaissance; birthplace →
    codeCogInseeCommuneNaissance only when born in France and known (the API wants it omitted for a
    birth abroad); ``nom_usage`` → nomUsage unless empty or equal to the nom de naissance (the API
    never holds a nom d'usage identical to the nom de naissance); recipient = the collectivité's
    SIRET. Names are rewritten into what the API accepts (``qfbridge.api_particulier.names``:
    ``’`` → ``'``, ``œ`` → ``oe``, letters beyond Latin-1 → their Latin base letter); Latin-1
    accents and case are sent as stored: API Particulier does its own case and accent normalisation.

    Raises ``ValidationError`` (code ``pivot_identity_unusable``) when the identity has no first
    name left or the requested QF month is impossible, and (code ``name_not_accepted``) when a name
    holds a character with no accepted equivalent: such a call could only earn a 422.
    """
    try:
        nom_naissance = for_api(identity.family_name) if identity.family_name.strip() else ""
        prenoms = for_api(identity.given_name).split()[:MAX_PRENOMS] if identity.given_name.strip() else []
        usage = for_api(nom_usage) if nom_usage and nom_usage.strip() else ""
    except NameNotAccepted:
        raise ValidationError(
            "a name has no form API Particulier accepts", code=NameNotAccepted.code
        ) from None
    if not nom_naissance or not prenoms:
        raise ValidationError("pivot identity lacks a name or a first name", code="pivot_identity_unusable")
    if mois is not None and not 1 <= mois <= 12:
        raise ValidationError("mois must be within 1..12", code="pivot_identity_unusable")
    if annee is not None and not 2000 <= annee <= 2100:
        raise ValidationError("annee is out of range", code="pivot_identity_unusable")

    query: list[tuple[str, str]] = [("nomNaissance", nom_naissance)]
    if usage and usage.casefold() != nom_naissance.casefold():
        query.append(("nomUsage", usage))
    query.extend(("prenoms[]", prenom) for prenom in prenoms)
    birthdate = identity.birthdate
    query += [
        ("anneeDateNaissance", str(birthdate.year)),
        ("moisDateNaissance", str(birthdate.month)),
        ("jourDateNaissance", str(birthdate.day)),
        ("sexeEtatCivil", identity.sexe),
        ("codeCogInseePaysNaissance", identity.birthcountry),
    ]
    if not identity.born_abroad and identity.birthplace:
        query.append(("codeCogInseeCommuneNaissance", identity.birthplace))
    query.append(("recipient", recipient_siret))
    if annee is not None:
        query.append(("annee", str(annee)))
    if mois is not None:
        query.append(("mois", str(mois)))
    return query


# --- Answer → outcome ------------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _errors(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping) and isinstance(body.get("errors"), list):
        return [error for error in body["errors"] if isinstance(error, Mapping)]
    return []


def _error_codes(body: Any) -> tuple[str, ...]:
    return tuple(str(error["code"]) for error in _errors(body) if error.get("code") is not None)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def _rate_limit(headers: httpx.Headers) -> RateLimitInfo | None:
    info = RateLimitInfo(
        limit=_int_header(headers, "RateLimit-Limit"),
        remaining=_int_header(headers, "RateLimit-Remaining"),
        reset=_int_header(headers, "RateLimit-Reset"),
    )
    return None if info == RateLimitInfo() else info


def _retry_after(headers: httpx.Headers, now: dt.datetime) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return ceil_seconds(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return ceil_seconds((when - now).total_seconds())


def _retry_in(body: Any) -> float | None:
    """``errors[].meta.retry_in`` (seconds) of a maintenance answer."""
    for error in _errors(body):
        meta = error.get("meta")
        if isinstance(meta, Mapping) and meta.get("retry_in") is not None:
            try:
                return ceil_seconds(float(meta["retry_in"]))
            except (TypeError, ValueError):
                continue
    return None


def _person(raw: Any) -> Person | None:
    """A household member, leniently: a malformed birth date or sex is dropped, not fatal."""
    if not isinstance(raw, Mapping):
        return None
    member = dict(raw)
    date_naissance = member.get("date_naissance")
    if date_naissance is not None:
        try:
            dt.date.fromisoformat(str(date_naissance))
        except ValueError:
            member["date_naissance"] = None
    if member.get("sexe") not in ("F", "M"):
        member["sexe"] = None
    try:
        return Person.model_validate(member)
    except PydanticValidationError:
        return None


def _qf_found(body: Any, common: dict[str, Any]) -> RefreshOutcome:
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, Mapping):
        return UnexpectedAnswer(reason="invalid_payload", **common)
    quotient_familial = None
    if data.get("quotient_familial") is not None:
        try:
            quotient_familial = QuotientFamilial.model_validate(data["quotient_familial"])
        except PydanticValidationError:
            return UnexpectedAnswer(reason="invalid_payload", **common)
    members: dict[str, list[Person]] = {"allocataires": [], "enfants": []}
    skipped = 0
    for block, people in members.items():
        raw_members = data.get(block) or []
        if not isinstance(raw_members, list):
            return UnexpectedAnswer(reason="invalid_payload", **common)
        for raw in raw_members:
            person = _person(raw)
            if person is None:
                skipped += 1
            else:
                people.append(person)
    return QfFound(
        quotient_familial=quotient_familial,
        allocataires=members["allocataires"],
        enfants=members["enfants"],
        members_skipped=skipped,
        **common,
    )


def outcome_from_response(response: httpx.Response, *, now: dt.datetime | None = None) -> RefreshOutcome:
    """Map one HTTP answer of the QF endpoint to its outcome (pure; ``now`` only dates Retry-After)."""
    now = now or utc_now()
    status = response.status_code
    body = _json(response)
    common: dict[str, Any] = {
        "status": status,
        "request_id": response.headers.get("X-Request-ID"),
        "error_codes": _error_codes(body),
        "rate_limit": _rate_limit(response.headers),
    }
    retry_after = _retry_after(response.headers, now)
    match status:
        case 200:
            return _qf_found(body, common)
        case 404:
            return FamilyNotFound(**common)
        case 422:
            return IdentityRejected(**common)
        case 401:
            return TokenExpired(expired=ERROR_CODE_JETON_EXPIRE in common["error_codes"], **common)
        case 403:
            return Forbidden(**common)
        case 429:
            return Throttled(retry_after_seconds=_throttle_wait(retry_after, common, now), **common)
        case 409:
            wait = _first_known(retry_after, DEFAULT_ALREADY_RUNNING_WAIT_SECONDS)
            return AlreadyRunning(retry_after_seconds=wait, **common)
        case 503:
            wait = _first_known(_retry_in(body), retry_after, DEFAULT_MAINTENANCE_WAIT_SECONDS)
            return Maintenance(retry_after_seconds=wait, **common)
        case 502 | 504:
            wait = _first_known(retry_after, DEFAULT_PROVIDER_WAIT_SECONDS)
            return ProviderUnavailable(retry_after_seconds=wait, **common)
        case _:
            return UnexpectedAnswer(retry_after_seconds=retry_after, **common)


def _first_known(*waits: float | None) -> float:
    return next(wait for wait in waits if wait is not None)


def _throttle_wait(retry_after: float | None, common: Mapping[str, Any], now: dt.datetime) -> float:
    """Retry-After first; else until RateLimit-Reset; else a conservative default."""
    if retry_after is not None:
        return max(1.0, retry_after)
    rate_limit: RateLimitInfo | None = common["rate_limit"]
    if rate_limit is not None:
        until_reset = rate_limit.seconds_until_reset(now.timestamp())
        if until_reset is not None:
            return max(1.0, ceil_seconds(until_reset))
    return DEFAULT_THROTTLE_WAIT_SECONDS


# --- Client ----------------------------------------------------------------------------------------


class ApiParticulierClient:
    """One tenant-agnostic client; the tenant's token and SIRET are passed per call.

    Give it an ``httpx.Client`` to share connections (and a transport in tests); otherwise it owns
    one and ``close()`` (or ``with``) releases it. ``clock`` dates HTTP-date ``Retry-After`` values.
    """

    def __init__(
        self,
        config: ApiParticulierConfig,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._config = config
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=config.timeout_seconds, verify=tls_context())
        self._clock = clock or utc_now

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch_quotient_familial(
        self,
        identity: PivotIdentity,
        recipient_siret: str,
        token: str,
        *,
        no_cache: bool = True,
        annee: int | None = None,
        mois: int | None = None,
        nom_usage: str | None = None,
    ) -> RefreshOutcome:
        """Ask API Particulier for the family's QF; every answer or failure is an outcome.

        ``no_cache`` (default) sends ``Cache-Control: no-cache``: the monthly refresh must reach
        CNAF/MSA, not API Particulier's 24 h cache. The answer's ``X-Request-ID`` is the outcome's
        ``request_id``.
        """
        try:
            query = build_query(identity, recipient_siret, annee=annee, mois=mois, nom_usage=nom_usage)
        except ValidationError as error:
            return IdentityRejected(error_codes=(error.code,))
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if no_cache:
            headers["Cache-Control"] = "no-cache"
        try:
            response = self._http.get(
                self._config.qf_identite_url,
                params=tuple(query),
                headers=headers,
                timeout=self._config.timeout_seconds,
            )
        except httpx.TimeoutException:
            return TransportFailure(reason="timeout", retry_after_seconds=DEFAULT_TRANSPORT_WAIT_SECONDS)
        except httpx.TransportError:
            return TransportFailure(reason="connection", retry_after_seconds=DEFAULT_TRANSPORT_WAIT_SECONDS)
        return outcome_from_response(response, now=self._clock())
