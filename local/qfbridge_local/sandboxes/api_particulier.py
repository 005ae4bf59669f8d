"""A local API Particulier serving ``GET /v3/dss/quotient_familial/identite`` as the real one does.

Why a sandbox and not mocks: the refresh pipeline must be exercised over real HTTP, against the
behaviours that hurt in production: expired tokens (401 ``00103``), the 20 req/s per token limit
(429 + ``Retry-After``; ignoring it earns a 12 h ban), the Sunday maintenance (503 +
``meta.retry_in``), provider failures (502/504), duplicates in flight (409), timeouts, the 24 h
server cache that only ``Cache-Control: no-cache`` bypasses, and QFs that change from one month to
the next.

What answers a query, in order (the real service's: front, throttling, auth, recipient, validation,
provider):

1. maintenance (``set_maintenance(True)`` or, with ``follow_maintenance_schedule``, the injected
   clock on Sunday 23:00–23:45 Europe/Paris) → 503;
2. rate limit (sliding 1 s window per bearer token, counted before the token is checked: an unknown
   or expired token is throttled too; default 20 req/s) → 429 + ``Retry-After``;
   ``RateLimit-Limit/Remaining/Reset`` (Reset = Unix timestamp) are on every answer;
3. token: absent/unknown → 401 ``00101``; expired (``expire_token``) → 401 ``00103``;
4. recipient: absent → 422 ``00203``; not a SIRET → 422 ``00210``; not allowed for the token → 403;
5. parameters, before any lookup (OpenAPI and the API's rules): names (``nomNaissance``,
   ``nomUsage``, each ``prenoms[]``) must match ``^[a-zA-ZÀ-ÖØ-öø-ÿ' -]+$`` (a typographic
   apostrophe, ``œ`` or a letter beyond Latin-1 is refused); required parameters (a query without
   ``prenoms[]`` is a 422, not a 404); 1–3 prénoms; sexe M/F; COG codes; birth date; ``annee``/
   ``mois`` within the current month and the 23 before it (a later month is a 400) → 422 with one
   code per error (``00420`` nom de naissance, ``00422`` prénoms, ``00426`` nom d'usage, …);
6. the same request of the same token still running at the provider (``provider_latency_seconds``)
   → 409 ``00015``;
7. injected faults (``inject``, ``fault_rates``): 502, 504, 409, 503 or a timeout;
8. the 24 h cache (unless ``Cache-Control: no-cache``) → the cached answer, ``X-Response-Cached``;
9. the real staging cases (``data/api_particulier_fixtures``): a query whose parameters (recipient
   aside, numbers compared as numbers, names without regard to case or accents) are a case's
   ``params`` gets its status and payload byte for byte, as on staging;
10. the seeded population (``add_person``/``add_household``, matched leniently on normalised names,
    sex, birth country/commune and the date parts sent) → 200, else 404 ``37003``.

Everything is guarded by one lock (the server is threaded) and deterministic given ``seed`` and the
injected ``clock`` (wall time: current month, maintenance, cache) and ``monotonic`` (rate limit).
Nothing is logged: the population is personal data, even fake.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import yaml

from qfbridge.domain.errors import ValidationError
from qfbridge.domain.identity import FRANCE_COG, Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.domain.schedule import PARIS, in_maintenance, maintenance_ends_at

QF_IDENTITE_PATH = "/v3/dss/quotient_familial/identite"
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "data" / "api_particulier_fixtures"
DEFAULT_RATE_LIMIT_PER_SECOND = 20
CACHE_TTL = dt.timedelta(hours=24)

FaultKind = Literal["502", "504", "409", "503", "timeout"]
FAULT_KINDS: tuple[FaultKind, ...] = ("502", "504", "409", "503", "timeout")

_INT_PARAMS = frozenset({"anneeDateNaissance", "moisDateNaissance", "jourDateNaissance", "annee", "mois"})
_NAME = re.compile(r"^[a-zA-ZÀ-ÖØ-öø-ÿ' -]+$")
"""The API's own name rule: Latin-1 letters, space, hyphen and the straight apostrophe only (a
typographic apostrophe, a ligature such as œ or any letter beyond Latin-1 gets a 422)."""
QF_HISTORY_MONTHS = 24
"""``annee``/``mois`` may name the current month or one of the 23 before it."""
_COG_PAYS = re.compile(r"^99\d{3}$")
_COG_COMMUNE = re.compile(r"^[0-9][0-9AB][0-9]{3}$")
_COG_DEPARTEMENT = re.compile(r"^(?:\d{2,3}|2A|2B)$")
_INTEGER = re.compile(r"^\d{1,4}$")


# --- Error bodies (codes and titles of the OpenAPI, or of the staging cases) ------------------------


def _error(
    code: str, title: str, detail: str, *, parameter: str | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "errors": [
            {
                "code": code,
                "title": title,
                "detail": detail,
                "source": {"parameter": parameter} if parameter else None,
                "meta": meta,
            }
        ]
    }


INVALID_TOKEN = _error(
    "00101", "Interdit", "Votre token n'est pas valide ou n'est pas renseigné", parameter="token"
)
EXPIRED_TOKEN = _error(
    "00103", "Jeton expiré", "Votre token est expiré. Vous devez refaire une demande", parameter="token"
)
FORBIDDEN = _error(
    "00100",
    "Privilèges insuffisants",
    "Votre token est valide mais vos privilèges sont insuffisants. Listez vos privilèges sur /api/introspect",
    parameter="token",
)
TOO_MANY_REQUESTS = _error("00429", "Trop de requêtes", "Vous avez effectué trop de requêtes")
CONFLICT = _error(
    "00015",
    "Conflit",
    "Une requête associé à votre jeton est déjà en cours de traitement pour ces paramètres. "
    "Veuillez attendre la fin du traitement avant d'effectuer une nouvelle requête.",
)
RECIPIENT_MISSING = _error(
    "00203", "Entité non traitable", "Le paramètre recipient est obligatoire", parameter="recipient"
)
RECIPIENT_INVALID = _error(
    "00210", "Entité non traitable", "Le paramètre recipient n'est pas un siret valide", parameter="recipient"
)
CIVILITY_INVALID = _error(
    "00366",
    "Entité non traitable",
    "Un ou plusieurs paramètres de civilité ne sont pas correctement formatés",
)


def _civility_error(code: str, detail: str, parameter: str) -> dict[str, Any]:
    return _error(code, "Entité non traitable", detail, parameter=parameter)


# One code per civility error: the API answers 00366 when it cannot tell which parameter is wrong,
# and a parameter's own code otherwise (00420… for the names). Clients must rely on the 422 status
# and keep the codes only as the reason an agent reads.
NOM_NAISSANCE_MISSING = _civility_error("00419", "Le nom de naissance est obligatoire", "nomNaissance")
NOM_NAISSANCE_INVALID = _civility_error(
    "00420", "Le nom de naissance n'est pas correctement formaté", "nomNaissance"
)
PRENOMS_MISSING = _civility_error("00421", "Au moins un prénom est obligatoire", "prenoms")
PRENOMS_INVALID = _civility_error("00422", "Les prénoms ne sont pas correctement formatés", "prenoms")
PRENOMS_TOO_MANY = _civility_error("00423", "Trois prénoms au plus peuvent être transmis", "prenoms")
NOM_USAGE_INVALID = _civility_error("00426", "Le nom d'usage n'est pas correctement formaté", "nomUsage")
SEXE_INVALID = _civility_error("00361", "Le sexe doit valoir M ou F", "sexeEtatCivil")
PAYS_INVALID = _civility_error(
    "00362",
    "Le code COG INSEE du pays de naissance n'est pas correctement formaté",
    "codeCogInseePaysNaissance",
)
COMMUNE_INVALID = _civility_error(
    "00363",
    "Le code COG INSEE de la commune de naissance n'est pas correctement formaté",
    "codeCogInseeCommuneNaissance",
)
COMMUNE_MISSING = _civility_error(
    "00364",
    "La commune de naissance est obligatoire pour une personne née en France",
    "codeCogInseeCommuneNaissance",
)
COMMUNE_WHEN_ABROAD = _civility_error(
    "00365",
    "La commune de naissance ne doit pas être renseignée pour une personne née à l'étranger",
    "codeCogInseeCommuneNaissance",
)
BIRTH_DATE_INVALID = _civility_error(
    "00367", "La date de naissance n'est pas correctement formatée", "anneeDateNaissance"
)
QF_MONTH_OUT_OF_RANGE = _civility_error(
    "00368",
    "Le quotient familial n'est disponible que pour le mois en cours et les 23 mois précédents",
    "annee",
)
QF_MONTH_IN_FUTURE = _error(
    "00369", "Requête invalide", "Le mois demandé est postérieur au mois en cours", parameter="mois"
)
NOT_FOUND = _error(
    "37003",
    "Dossier allocataire absent CNAV",
    "Le dossier allocataire n'a pas été trouvé auprès de la CNAV.",
    provider="CNAV",
)
PROVIDER_UNKNOWN_ERROR = _error(
    "37999",
    "Erreur inconnue du fournisseur de données",
    "La réponse retournée par le fournisseur de données est invalide et inconnue de notre service. "
    "L'équipe technique a été notifiée de cette erreur pour investigation.",
    provider="CNAV",
)
PROVIDER_TIMEOUT = _error(
    "37002",
    "Intermédiaire hors-délai",
    "Temps d’attente d’une réponse du fournisseur de données écoulé.",
    provider="CNAV",
)
ROUTE_NOT_FOUND = _error("00404", "Route inconnue", "Ce chemin n'existe pas sur ce bac à sable.")


def _maintenance_body(retry_in: int) -> dict[str, Any]:
    # The code of the maintenance error is not documented (unconfirmed): clients rely on the
    # 503 status and ``meta.retry_in`` only.
    return _error(
        "00503",
        "Maintenance en cours",
        "Le service est en maintenance, veuillez réessayer plus tard.",
        retry_in=retry_in,
    )


# --- Staging cases ---------------------------------------------------------------------------------

ParamValue = str | tuple[str, ...]


@dataclass(frozen=True)
class StagingCase:
    """One real staging case: the exact query (recipient aside) and the answer it gets."""

    name: str
    params: Mapping[str, ParamValue]
    status: int
    payload: str


_NAME_PARAMS = frozenset({"nomNaissance", "nomUsage"})


def _normalise_scalar(key: str, value: object) -> str:
    text = str(value).strip()
    if key in _INT_PARAMS and _INTEGER.match(text):
        return str(int(text))
    if key in _NAME_PARAMS:
        return _fold(text)
    return text


def normalise_case_params(params: Mapping[str, object]) -> dict[str, ParamValue]:
    """A case's YAML ``params`` as comparable values (``prenoms`` is the ``prenoms[]`` list)."""
    normalised: dict[str, ParamValue] = {}
    for key, value in params.items():
        if key in ("prenoms", "prenoms[]"):
            values = value if isinstance(value, list) else [value]
            normalised["prenoms[]"] = tuple(_fold(str(item)) for item in values)
        elif key != "recipient" and value is not None:
            normalised[key] = _normalise_scalar(key, value)
    return normalised


def normalise_query(pairs: Iterable[tuple[str, str]]) -> dict[str, ParamValue]:
    """A received query as comparable values (recipient and empty values dropped)."""
    normalised: dict[str, ParamValue] = {}
    prenoms: list[str] = []
    for key, value in pairs:
        if key == "prenoms[]":
            prenoms.append(_fold(value))
        elif key != "recipient" and value.strip() and key not in normalised:
            normalised[key] = _normalise_scalar(key, value)
    if prenoms:
        normalised["prenoms[]"] = tuple(prenoms)
    return normalised


@lru_cache(maxsize=8)
def load_staging_cases(directory: Path = FIXTURES_DIR) -> tuple[StagingCase, ...]:
    """The staging cases of ``directory`` (parsed once per process: they are read-only)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    cases = []
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
        cases.append(
            StagingCase(
                name=path.stem,
                params=normalise_case_params(raw["params"]),
                status=int(raw["status"]),
                payload=raw["payload"],
            )
        )
    return tuple(cases)


# --- Population ------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Upper case, no accents, hyphens/apostrophes as spaces, single spaces (as CNAF compares)."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(re.sub(r"[-'’]", " ", bare).upper().split())


@dataclass(frozen=True)
class _SeededIdentity:
    identity: PivotIdentity
    nom_usage: str | None = None


@dataclass
class _Household:
    id: str
    identities: list[_SeededIdentity]
    allocataires: list[Person]
    enfants: list[Person]
    qf_history: list[QuotientFamilial]  # each applies from its (annee, mois), sorted
    adresse: Mapping[str, Any] | None

    def qf_for(self, annee: int, mois: int) -> QuotientFamilial:
        """The entry in force that month (the first entry also stands for earlier months)."""
        in_force = self.qf_history[0]
        for entry in self.qf_history:
            if (entry.annee, entry.mois) <= (annee, mois):
                in_force = entry
        return QuotientFamilial(
            fournisseur=in_force.fournisseur,
            valeur=in_force.valeur,
            annee=annee,
            mois=mois,
            annee_calcul=in_force.annee_calcul or in_force.annee,
            mois_calcul=in_force.mois_calcul or in_force.mois,
        )


@dataclass(frozen=True)
class _Query:
    nom_naissance: str
    nom_usage: str | None
    prenoms: tuple[str, ...]
    annee_naissance: int | None
    mois_naissance: int | None
    jour_naissance: int | None
    sexe: str
    pays: str
    commune: str | None


def _matches(seeded: _SeededIdentity, query: _Query) -> bool:
    identity = seeded.identity
    own_prenoms = [_fold(prenom) for prenom in identity.given_name.split()]
    asked_prenoms = [_fold(prenom) for prenom in query.prenoms]
    if _fold(query.nom_naissance) != _fold(identity.family_name):
        return False
    if not own_prenoms or asked_prenoms[0] != own_prenoms[0] or not set(asked_prenoms) <= set(own_prenoms):
        return False
    if query.sexe != identity.sexe or query.pays != identity.birthcountry:
        return False
    if query.commune and identity.birthplace and query.commune != identity.birthplace:
        return False
    if query.nom_usage and seeded.nom_usage and _fold(query.nom_usage) != _fold(seeded.nom_usage):
        return False
    born = identity.birthdate
    if query.annee_naissance is None:
        return identity.born_abroad  # too little to identify someone born in France
    if query.annee_naissance != born.year:
        return False
    if query.mois_naissance is None:
        return True
    if query.mois_naissance != born.month:
        return False
    return query.jour_naissance is None or query.jour_naissance == born.day


def person_from_identity(identity: PivotIdentity, *, nom_usage: str | None = None) -> Person:
    return Person(
        nom_naissance=identity.family_name,
        nom_usage=nom_usage,
        prenoms=identity.given_name,
        date_naissance=identity.birthdate,
        sexe=identity.sexe,
    )


# --- SIRET ------------------------------------------------------------------------------------------


def is_siret(value: str) -> bool:
    """14 digits with a valid Luhn checksum (La Poste's 356000000… establishments: digit sum % 5)."""
    if not re.fullmatch(r"\d{14}", value):
        return False
    if value.startswith("356000000"):
        return sum(int(digit) for digit in value) % 5 == 0
    total = 0
    for index, digit in enumerate(int(char) for char in reversed(value)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


# --- Validation -------------------------------------------------------------------------------------


def _first(pairs: Sequence[tuple[str, str]], key: str) -> str | None:
    for name, value in pairs:
        if name == key:
            return value
    return None


def _query_error(pairs: Sequence[tuple[str, str]], today: dt.date) -> tuple[int, dict[str, Any]] | None:
    """(status, body) for a query the API refuses before any lookup, or None.

    The API validates every parameter (presence and format, names against its Latin-1 rule) before it
    looks anybody up: a query without ``prenoms[]`` gets a 422, never a 404 nor a staging case.
    """
    values = {key: value.strip() for key, value in reversed(pairs) if key != "prenoms[]" and value.strip()}
    prenoms = [value.strip() for key, value in pairs if key == "prenoms[]"]
    nom = values.get("nomNaissance")
    if nom is None:
        return 422, NOM_NAISSANCE_MISSING
    if not _NAME.match(nom):
        return 422, NOM_NAISSANCE_INVALID
    if "nomUsage" in values and not _NAME.match(values["nomUsage"]):
        return 422, NOM_USAGE_INVALID
    if not any(prenoms):
        return 422, PRENOMS_MISSING
    if len(prenoms) > 3:
        return 422, PRENOMS_TOO_MANY
    if not all(_NAME.match(prenom) for prenom in prenoms):
        return 422, PRENOMS_INVALID
    if values.get("sexeEtatCivil") not in ("M", "F"):
        return 422, SEXE_INVALID
    pays = values.get("codeCogInseePaysNaissance")
    if pays is None or not _COG_PAYS.match(pays):
        return 422, PAYS_INVALID
    commune = values.get("codeCogInseeCommuneNaissance")
    if commune is not None and not _COG_COMMUNE.match(commune):
        return 422, COMMUNE_INVALID
    if commune is not None and pays != FRANCE_COG:
        return 422, COMMUNE_WHEN_ABROAD
    triplet = ("nomCommuneNaissance", "codeCogInseeDepartementNaissance", "anneeDateNaissance")
    if "codeCogInseeDepartementNaissance" in values and not _COG_DEPARTEMENT.match(
        values["codeCogInseeDepartementNaissance"]
    ):
        return 422, CIVILITY_INVALID
    if pays == FRANCE_COG and commune is None and not all(key in values for key in triplet):
        return 422, COMMUNE_MISSING
    numbers: dict[str, int] = {}
    for key in _INT_PARAMS & values.keys():
        if not _INTEGER.match(values[key]):
            return 422, QF_MONTH_OUT_OF_RANGE if key in ("annee", "mois") else BIRTH_DATE_INVALID
        numbers[key] = int(values[key])
    birth_bounds = {
        "anneeDateNaissance": (1900, today.year),
        "moisDateNaissance": (1, 12),
        "jourDateNaissance": (1, 31),
    }
    if any(not low <= numbers[key] <= high for key, (low, high) in birth_bounds.items() if key in numbers):
        return 422, BIRTH_DATE_INVALID
    date_parts = ("anneeDateNaissance", "moisDateNaissance", "jourDateNaissance")
    if all(part in numbers for part in date_parts):
        try:
            born = dt.date(*(numbers[part] for part in date_parts))
        except ValueError:
            return 422, BIRTH_DATE_INVALID
        if born > today:
            return 422, BIRTH_DATE_INVALID
    return _qf_month_error(numbers.get("annee"), numbers.get("mois"), today)


def qf_month_asked(annee: int | None, mois: int | None, today: dt.date) -> tuple[int, int]:
    """The QF month a query asks for: a missing year is the current one, a missing month too."""
    return (annee if annee is not None else today.year, mois if mois is not None else today.month)


def _qf_month_error(annee: int | None, mois: int | None, today: dt.date) -> tuple[int, dict[str, Any]] | None:
    """The current month and the 23 before it are available; a later month is a 400, an earlier a 422."""
    if mois is not None and not 1 <= mois <= 12:
        return 422, QF_MONTH_OUT_OF_RANGE
    year, month = qf_month_asked(annee, mois, today)
    asked = year * 12 + month - 1
    current = today.year * 12 + today.month - 1
    if asked > current:
        return 400, QF_MONTH_IN_FUTURE
    if asked <= current - QF_HISTORY_MONTHS:
        return 422, QF_MONTH_OUT_OF_RANGE
    return None


def _parse_query(pairs: Sequence[tuple[str, str]]) -> _Query:
    """The civility query of a query ``_query_error`` accepted."""
    values = {key: value.strip() for key, value in reversed(pairs) if key != "prenoms[]" and value.strip()}
    prenoms = tuple(value.strip() for key, value in pairs if key == "prenoms[]" and value.strip())

    def number(key: str) -> int | None:
        return int(values[key]) if key in values else None

    return _Query(
        nom_naissance=values["nomNaissance"],
        nom_usage=values.get("nomUsage"),
        prenoms=prenoms,
        annee_naissance=number("anneeDateNaissance"),
        mois_naissance=number("moisDateNaissance"),
        jour_naissance=number("jourDateNaissance"),
        sexe=values["sexeEtatCivil"],
        pays=values["codeCogInseePaysNaissance"],
        commune=values.get("codeCogInseeCommuneNaissance"),
    )


# --- State ------------------------------------------------------------------------------------------


@dataclass
class _Token:
    recipients: frozenset[str] | None
    rate_limit: int
    expired: bool = False
    window: deque[float] = field(default_factory=deque)  # accepted calls of the last second
    arrivals: list[float] = field(default_factory=list)  # every call, for max_rate_observed


@dataclass(frozen=True)
class SandboxStats:
    """Counters since the sandbox was created (or ``reset_stats``)."""

    requests: int
    by_status: dict[int, int]
    by_token: dict[str, int]
    throttled: int
    faults_injected: int


@dataclass(frozen=True)
class ReceivedRequest:
    """What a call carried, for assertions in tests (query included: sandbox data only)."""

    token: str | None
    query: tuple[tuple[str, str], ...]
    cache_control: str | None
    status: int


@dataclass(frozen=True)
class HttpAnswer:
    """One decided answer; ``delay_seconds`` holds it back (the timeout fault)."""

    status: int
    body: bytes
    headers: dict[str, str]
    delay_seconds: float = 0.0


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _error_answer(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> HttpAnswer:
    return HttpAnswer(status, _json_bytes(body), dict(headers or {}))


class ApiParticulierSandbox:
    """The API Particulier QF endpoint on 127.0.0.1 (context manager; ``url`` once started)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        load_fixtures: bool = True,
        fixtures_dir: Path = FIXTURES_DIR,
        default_rate_limit_per_second: int = DEFAULT_RATE_LIMIT_PER_SECOND,
        clock: Callable[[], dt.datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        follow_maintenance_schedule: bool = False,
        timeout_fault_delay_seconds: float = 6.0,
        provider_latency_seconds: float = 0.0,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._monotonic = monotonic or time.monotonic
        self._cases = load_staging_cases(fixtures_dir) if load_fixtures else ()
        self._default_rate_limit = default_rate_limit_per_second
        self._follow_schedule = follow_maintenance_schedule
        self._timeout_delay = timeout_fault_delay_seconds
        self._provider_latency = provider_latency_seconds
        self._running: dict[tuple[str, tuple[tuple[str, ParamValue], ...]], float] = {}
        self._anonymous_windows: dict[str, deque[float]] = {}
        self._tokens: dict[str, _Token] = {}
        self._households: dict[str, _Household] = {}
        self._maintenance_retry_in: int | None = None
        self._forced_faults: deque[FaultKind] = deque()
        self._fault_rates: dict[FaultKind, float] = {}
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[dt.datetime, HttpAnswer]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._by_status: dict[int, int] = {}
        self._by_token: dict[str, int] = {}
        self._throttled = 0
        self._faults = 0
        self._received: list[ReceivedRequest] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.sandbox = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="api-particulier-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_unless_stopping(self, seconds: float) -> bool:
        """Hold a call (timeout fault); True when the sandbox stopped meanwhile."""
        return self._stopping.wait(seconds)

    @property
    def url(self) -> str:
        if self._server is None:
            raise ValidationError("the sandbox is not started", code="sandbox_not_started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- tokens ------------------------------------------------------------------------------------

    def add_token(
        self, token: str, recipients: Iterable[str] | None = None, *, rate_limit_per_second: int | None = None
    ) -> None:
        """Accept ``token`` for ``recipients`` (SIRETs; None = any) at its own rate limit."""
        with self._lock:
            self._tokens[token] = _Token(
                recipients=None if recipients is None else frozenset(recipients),
                rate_limit=rate_limit_per_second or self._default_rate_limit,
            )

    def expire_token(self, token: str) -> None:
        with self._lock:
            self._token(token).expired = True

    def prolong_token(self, token: str) -> None:
        """Tokens are prolonged in place: the same token works again."""
        with self._lock:
            self._token(token).expired = False

    def set_rate_limit(self, token: str, per_second: int) -> None:
        with self._lock:
            self._token(token).rate_limit = per_second

    def _token(self, token: str) -> _Token:
        try:
            return self._tokens[token]
        except KeyError:
            raise ValidationError("unknown sandbox token", code="sandbox_unknown_token") from None

    # -- population ---------------------------------------------------------------------------------

    def add_person(
        self,
        identity: PivotIdentity,
        qf: QuotientFamilial,
        *,
        allocataires: Sequence[Person] | None = None,
        enfants: Sequence[Person] = (),
        nom_usage: str | None = None,
        adresse: Mapping[str, Any] | None = None,
    ) -> str:
        """A household found by one pivot identity; returns its id (for ``set_qf``)."""
        return self._add([_SeededIdentity(identity, nom_usage)], qf, allocataires, enfants, adresse)

    def add_household(
        self,
        identities: Sequence[PivotIdentity],
        qf: QuotientFamilial,
        *,
        allocataires: Sequence[Person] | None = None,
        enfants: Sequence[Person] = (),
        adresse: Mapping[str, Any] | None = None,
    ) -> str:
        """A household found by any of ``identities`` (e.g. both parents). ``allocataires``
        default to the identities; ``adresse`` is omitted from answers when None (as when the
        token lacks that scope)."""
        if not identities:
            raise ValidationError("a household needs at least one identity", code="sandbox_invalid_household")
        return self._add(
            [_SeededIdentity(identity) for identity in identities], qf, allocataires, enfants, adresse
        )

    def _add(
        self,
        identities: list[_SeededIdentity],
        qf: QuotientFamilial,
        allocataires: Sequence[Person] | None,
        enfants: Sequence[Person],
        adresse: Mapping[str, Any] | None,
    ) -> str:
        members = (
            list(allocataires)
            if allocataires is not None
            else [person_from_identity(seeded.identity, nom_usage=seeded.nom_usage) for seeded in identities]
        )
        with self._lock:
            household_id = f"household-{len(self._households) + 1}"
            self._households[household_id] = _Household(
                id=household_id,
                identities=identities,
                allocataires=members,
                enfants=list(enfants),
                qf_history=[qf],
                adresse=adresse,
            )
        return household_id

    def set_qf(
        self,
        household_id: str,
        qf: int | QuotientFamilial,
        *,
        annee: int | None = None,
        mois: int | None = None,
    ) -> QuotientFamilial:
        """Change a household's QF from a month on: a ``QuotientFamilial`` applies from its own
        annee/mois; a bare value from (annee, mois) if given, else from next month (clock)."""
        with self._lock:
            household = self._household(household_id)
            if isinstance(qf, QuotientFamilial):
                entry = qf
            else:
                if annee is None or mois is None:
                    today = self._clock().astimezone(PARIS)
                    annee, mois = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
                entry = QuotientFamilial(
                    fournisseur=household.qf_history[-1].fournisseur,
                    valeur=qf,
                    annee=annee,
                    mois=mois,
                    annee_calcul=annee,
                    mois_calcul=mois,
                )
            history = [
                old for old in household.qf_history if (old.annee, old.mois) != (entry.annee, entry.mois)
            ]
            household.qf_history = sorted([*history, entry], key=lambda item: (item.annee, item.mois))
            return entry

    def current_qf(
        self, household_id: str, *, annee: int | None = None, mois: int | None = None
    ) -> QuotientFamilial:
        """The QF the sandbox would answer for that month (default: the clock's month)."""
        with self._lock:
            today = self._clock().astimezone(PARIS)
            return self._household(household_id).qf_for(annee or today.year, mois or today.month)

    def _household(self, household_id: str) -> _Household:
        try:
            return self._households[household_id]
        except KeyError:
            raise ValidationError("unknown sandbox household", code="sandbox_unknown_household") from None

    # -- maintenance and faults ------------------------------------------------------------------------

    def set_provider_latency(self, seconds: float) -> None:
        """How long CNAF/MSA take to answer; meanwhile the same request of the same token gets 409."""
        with self._lock:
            self._provider_latency = seconds

    def set_maintenance(self, on: bool, *, retry_in_seconds: int = 600) -> None:
        with self._lock:
            self._maintenance_retry_in = retry_in_seconds if on else None

    def inject(self, kind: FaultKind | int, times: int = 1) -> None:
        """The next ``times`` authorised calls fail with ``kind`` (502, 504, 409, 503, timeout)."""
        fault = self._fault_kind(kind)
        with self._lock:
            self._forced_faults.extend([fault] * times)

    def fault_rates(self, rates: Mapping[FaultKind | int, float] | None = None) -> None:
        """Each authorised call fails with probability ``rates[kind]`` (seeded); None clears."""
        parsed = {self._fault_kind(kind): rate for kind, rate in (rates or {}).items()}
        if any(rate < 0 for rate in parsed.values()) or sum(parsed.values()) > 1:
            raise ValidationError("fault rates must be >= 0 and sum to <= 1", code="sandbox_invalid_rates")
        with self._lock:
            self._fault_rates = parsed

    @staticmethod
    def _fault_kind(kind: FaultKind | int) -> FaultKind:
        text = str(kind)
        for known in FAULT_KINDS:
            if known == text:
                return known
        raise ValidationError("unknown fault kind", code="sandbox_unknown_fault")

    # -- counters ------------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        with self._lock:
            self._by_status = {}
            self._by_token = {}
            self._throttled = 0
            self._faults = 0
            self._received = []
            for state in self._tokens.values():
                state.arrivals.clear()

    def stats(self) -> SandboxStats:
        with self._lock:
            return SandboxStats(
                requests=sum(self._by_status.values()),
                by_status=dict(self._by_status),
                by_token=dict(self._by_token),
                throttled=self._throttled,
                faults_injected=self._faults,
            )

    def requests_received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    def arrival_times(self, token: str) -> list[float]:
        """When each call of ``token`` arrived (``monotonic`` seconds, throttled ones included)."""
        with self._lock:
            return sorted(self._token(token).arrivals)

    def max_rate_observed(self, token: str) -> int:
        """The most calls ``token`` made within any 1 s window (throttled ones included)."""
        with self._lock:
            arrivals = sorted(self._token(token).arrivals)
        best, start = 0, 0
        for end, at in enumerate(arrivals):
            while arrivals[start] <= at - 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- answering ---------------------------------------------------------------------------------

    def answer(self, path: str, pairs: list[tuple[str, str]], headers: Mapping[str, str]) -> HttpAnswer:
        """Decide the answer of one call (thread-safe; the HTTP handler only writes it)."""
        authorization = headers.get("authorization") or ""
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        with self._lock:
            now = self._clock()
            mono = self._monotonic()
            state = self._tokens.get(token) if token else None
            if state is not None:
                state.arrivals.append(mono)
            window, limit = self._window_of(token, state)
            decided = self._decide(path, pairs, headers, token, state, window, limit, now, mono)
            remaining, reset = self._rate_headers(window, limit, now, mono)
            response_headers = {
                "Content-Type": "application/json; charset=utf-8",
                "X-Request-ID": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(reset),
                **decided.headers,
            }
            self._by_status[decided.status] = self._by_status.get(decided.status, 0) + 1
            self._by_token[token or ""] = self._by_token.get(token or "", 0) + 1
            self._received.append(
                ReceivedRequest(
                    token=token,
                    query=tuple(pairs),
                    cache_control=headers.get("cache-control"),
                    status=decided.status,
                )
            )
        return HttpAnswer(decided.status, decided.body, response_headers, decided.delay_seconds)

    def _window_of(self, token: str | None, state: _Token | None) -> tuple[deque[float], int]:
        """The rate window a call counts against: its bearer token's, whether the token is valid or not
        (the limiter runs before authentication), at that token's limit (the default for others)."""
        if state is not None:
            return state.window, state.rate_limit
        window = self._anonymous_windows.setdefault(token or "", deque())
        return window, self._default_rate_limit

    @staticmethod
    def _rate_headers(window: deque[float], limit: int, now: dt.datetime, mono: float) -> tuple[int, int]:
        remaining = max(0, limit - len(window))
        frees_in = (window[0] + 1.0 - mono) if window else 0.0
        return remaining, math.ceil(now.timestamp() + frees_in)

    def _decide(
        self,
        path: str,
        pairs: list[tuple[str, str]],
        headers: Mapping[str, str],
        token: str | None,
        state: _Token | None,
        window: deque[float],
        limit: int,
        now: dt.datetime,
        mono: float,
    ) -> HttpAnswer:
        if path != QF_IDENTITE_PATH:
            return _error_answer(404, ROUTE_NOT_FOUND)
        retry_in = self._maintenance_now(now)
        if retry_in is not None:
            return _error_answer(503, _maintenance_body(retry_in))
        wait = self._consume_rate(window, limit, mono)
        if wait is not None:
            self._throttled += 1
            return _error_answer(429, TOO_MANY_REQUESTS, {"Retry-After": str(wait)})
        if state is None:
            return _error_answer(401, INVALID_TOKEN)
        if state.expired:
            return _error_answer(401, EXPIRED_TOKEN)
        recipient = (_first(pairs, "recipient") or "").strip()
        if not recipient:
            return _error_answer(422, RECIPIENT_MISSING)
        if not is_siret(recipient):
            return _error_answer(422, RECIPIENT_INVALID)
        if state.recipients is not None and recipient not in state.recipients:
            return _error_answer(403, FORBIDDEN)
        today = now.astimezone(PARIS).date()
        refused = _query_error(pairs, today)
        if refused is not None:
            return _error_answer(*refused)
        running_key = (token or "", tuple(sorted(normalise_query(pairs).items())))
        running_until = self._running.get(running_key)
        if running_until is not None and running_until > mono:
            return _error_answer(409, CONFLICT)
        fault = self._next_fault()
        if fault is not None:
            self._faults += 1
            return self._fault_answer(fault)
        cache_key = (token or "", tuple(sorted(pairs)))
        cached = self._cache.get(cache_key)
        no_cache = "no-cache" in (headers.get("cache-control") or "").lower()
        if cached is not None and not no_cache and cached[0] > now:
            expires_in = int((cached[0] - now).total_seconds())
            cached_headers = {"X-Response-Cached": "true", "X-Cache-Expires-in": str(expires_in)}
            return HttpAnswer(cached[1].status, cached[1].body, cached_headers)
        answer = self._provider_answer(pairs, today)
        if self._provider_latency > 0:  # the request runs at the provider meanwhile: a duplicate gets 409
            self._running[running_key] = mono + self._provider_latency
            answer = HttpAnswer(answer.status, answer.body, answer.headers, self._provider_latency)
        if answer.status != 200:
            return answer
        self._cache[cache_key] = (now + CACHE_TTL, answer)
        fresh_headers = {
            "X-Response-Cached": "false",
            "X-Cache-Expires-in": str(int(CACHE_TTL.total_seconds())),
        }
        return HttpAnswer(answer.status, answer.body, fresh_headers, answer.delay_seconds)

    def _maintenance_now(self, now: dt.datetime) -> int | None:
        if self._maintenance_retry_in is not None:
            return self._maintenance_retry_in
        if self._follow_schedule and in_maintenance(now):
            ends = maintenance_ends_at(now)
            assert ends is not None
            return math.ceil((ends - now).total_seconds())
        return None

    @staticmethod
    def _consume_rate(window: deque[float], limit: int, mono: float) -> int | None:
        """Sliding 1 s window: None when the call is accepted, else the seconds to wait."""
        while window and window[0] <= mono - 1.0:
            window.popleft()
        if len(window) >= limit:
            return max(1, math.ceil(window[0] + 1.0 - mono))
        window.append(mono)
        return None

    def _next_fault(self) -> FaultKind | None:
        if self._forced_faults:
            return self._forced_faults.popleft()
        if not self._fault_rates:
            return None
        draw, cumulative = self._rng.random(), 0.0
        for kind, rate in self._fault_rates.items():
            cumulative += rate
            if draw < cumulative:
                return kind
        return None

    def _fault_answer(self, fault: FaultKind) -> HttpAnswer:
        if fault == "502":
            return _error_answer(502, PROVIDER_UNKNOWN_ERROR)
        if fault == "409":
            return _error_answer(409, CONFLICT)
        if fault == "503":
            return _error_answer(503, _maintenance_body(600))
        delay = self._timeout_delay if fault == "timeout" else 0.0
        return HttpAnswer(504, _json_bytes(PROVIDER_TIMEOUT), {}, delay)

    def _provider_answer(self, pairs: list[tuple[str, str]], today: dt.date) -> HttpAnswer:
        asked = normalise_query(pairs)
        for case in self._cases:
            if case.params == asked:
                return HttpAnswer(case.status, case.payload.encode("utf-8"), {})
        query = _parse_query(pairs)
        found = {
            household.id: household
            for household in self._households.values()
            if any(_matches(seeded, query) for seeded in household.identities)
        }
        if len(found) != 1:  # unknown, or ambiguous: CNAF does not guess
            return _error_answer(404, NOT_FOUND)
        household = next(iter(found.values()))
        annee_asked, mois_asked = _first(pairs, "annee"), _first(pairs, "mois")
        annee, mois = qf_month_asked(
            int(annee_asked) if annee_asked else None, int(mois_asked) if mois_asked else None, today
        )
        data: dict[str, Any] = {
            "allocataires": [person.model_dump(mode="json") for person in household.allocataires],
            "enfants": [person.model_dump(mode="json") for person in household.enfants],
        }
        if household.adresse is not None:
            data["adresse"] = dict(household.adresse)
        data["quotient_familial"] = household.qf_for(annee, mois).model_dump(mode="json")
        return HttpAnswer(200, _json_bytes({"data": data, "links": {}, "meta": {}}), {})


# --- HTTP plumbing ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True
    sandbox: ApiParticulierSandbox


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server_version = "api-particulier-sandbox"
    timeout = 30  # idle keep-alive connections
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        headers = {key.lower(): value for key, value in self.headers.items()}
        sandbox = self.server.sandbox
        if sandbox.stopping:
            self.close_connection = True
            return
        answer = sandbox.answer(parts.path, pairs, headers)
        if answer.delay_seconds and sandbox.wait_unless_stopping(answer.delay_seconds):
            self.close_connection = True
            return
        self._write(answer)

    def _write(self, answer: HttpAnswer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines carry identities."""
