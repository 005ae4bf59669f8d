"""Rehearsing intake with ``qfbridge local serve``: what HubEE and API Particulier do outside qfbridge.

In production a collectivité's credentials come from HubEE's and API Particulier's portals, and
dossiers come from parents filling the Formulaire QF. With ``local serve`` the sandboxes stand in
for them, through a small HTTP console on 127.0.0.1 (``[runtime] sandbox_console_port``) that
``local serve`` prints at start, and two commands:

    qfbridge local credentials SIRET --cog COG
        the HubEE sandbox opens a FormulaireQF subscription for the collectivité and the API
        Particulier sandbox issues it a token; prints hubee_client_id, hubee_client_secret and
        api_particulier_token, to store with PUT /v1/tenants/{siret}/credentials.
    qfbridge local deposit SIRET (--user-id ID | --external-id ID | --family FILE.json) [--qf N]
        the form deposits a FormulaireQF dossier for the collectivité: the identity of a family of
        the directory (--user-id), of the family behind a form link (--external-id, also carried in
        the dossier as a parent coming from the editor's portal would), or any family given as the
        body of PUT /v1/tenants/{siret}/families/{user_id} (--family). The API Particulier sandbox
        learns the household too, so the monthly refresh finds it.

Console routes (JSON): ``POST /credentials`` ``{"siret", "cog"}`` and ``POST /dossiers``
``{"siret", "user_id" | "external_id" | "family", "parent", "qf"}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_CONSOLE_URL = "http://127.0.0.1:8788"


# ---------------------------------------------------------------------- the console (inside local serve)
class SandboxConsole:
    """Serves the rehearsal routes for a running ``local serve`` (its sandboxes and tables)."""

    def __init__(self, hubee: Any, particulier: Any, environment: dict[str, str], port: int = 0) -> None:
        self.hubee = hubee
        self.particulier = particulier
        self.environment = environment
        self._issued: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        console = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # bodies carry identities: nothing is logged

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, answer = console.handle(self.path, self.rfile.read(min(length, 1 << 20)))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-console", daemon=True
        )

    def start(self) -> SandboxConsole:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def handle(self, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if path not in ("/credentials", "/dossiers"):
            return 404, {"error": "routes: POST /credentials, POST /dossiers"}
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return 400, {"error": "the body is not a JSON object"}
        try:
            if path == "/credentials":
                return 200, self.issue_credentials(str(body.get("siret", "")), str(body.get("cog", "")))
            return 201, self.deposit(body)
        except RehearsalError as exc:
            return exc.status, {"error": str(exc)}

    # -- what the console does ------------------------------------------------------------------
    def issue_credentials(self, siret: str, cog: str) -> dict[str, str]:
        from qfbridge.domain.errors import QfbridgeError
        from qfbridge.domain.siret import validate_cog_commune, validate_siret

        try:
            siret, cog = validate_siret(siret), validate_cog_commune(cog)
        except QfbridgeError as exc:
            raise RehearsalError(400, f"{exc.code}: give a valid siret and cog") from None
        with self._lock:
            issued = self._issued.get(siret)
            if issued is None:
                issued = {
                    "hubee_client_id": f"sandbox-{siret}",
                    "hubee_client_secret": secrets.token_urlsafe(24),
                    "api_particulier_token": secrets.token_urlsafe(32),
                }
                self._issued[siret] = issued
        if self.hubee is not None:
            self.hubee.add_subscription(
                issued["hubee_client_id"], issued["hubee_client_secret"], [(siret, cog)]
            )
        if self.particulier is not None:
            self.particulier.add_token(issued["api_particulier_token"], {siret})
        return dict(issued)

    def deposit(self, body: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        from qfbridge.domain.identity import Family, PivotIdentity
        from qfbridge.domain.qf import QuotientFamilial
        from qfbridge.store.families import FamilyRepository
        from qfbridge.store.links import LinkRepository
        from qfbridge.store.tenants import TenantRepository

        from .population import formulaire_for

        if self.hubee is None:
            raise RehearsalError(409, 'HubEE is not the sandbox here ([hubee] mode = "remote")')
        siret = str(body.get("siret", ""))
        tenant = TenantRepository(self.environment["TENANTS_TABLE"]).get(siret)
        if tenant is None:
            raise RehearsalError(404, f"tenant {siret} is not registered (PUT /v1/tenants/{siret} first)")
        external_id = body.get("external_id")
        user_id = body.get("user_id")
        family: Family | None = None
        if external_id is not None:
            parts = str(external_id).split(".")
            link = (
                LinkRepository(self.environment["FORM_LINKS_TABLE"]).get(parts[2])
                if len(parts) == 4
                else None
            )
            if link is None or link.tenant_siret != siret:
                raise RehearsalError(404, "no form link of this tenant has that external_id")
            user_id = user_id or link.user_id
        if body.get("family") is not None:
            try:
                family = Family.model_validate({"user_id": "deposit", **dict(body["family"])})
            except (ValidationError, TypeError) as exc:
                raise RehearsalError(422, f"family: {_fields(exc)}") from None
        elif user_id is not None:
            record = FamilyRepository(self.environment["FAMILIES_TABLE"]).get(siret, str(user_id))
            if record is None or record.family is None:
                raise RehearsalError(404, f"family {user_id} is not in the tenant's directory")
            family = record.family
        if family is None:
            raise RehearsalError(400, "give user_id, external_id or family")
        parent = int(body.get("parent", 1)) - 1
        if not 0 <= parent < len(family.parents):
            raise RehearsalError(400, f"parent must be 1..{len(family.parents)}")
        last_month = dt.date.today().replace(day=1) - dt.timedelta(days=1)
        try:
            qf = QuotientFamilial(
                fournisseur="CNAF",
                valeur=int(body.get("qf", 850)),
                annee=last_month.year,
                mois=last_month.month,
                annee_calcul=last_month.year,
                mois_calcul=last_month.month,
            )
        except (ValidationError, ValueError, TypeError):
            raise RehearsalError(422, "qf: an integer from 0 to 1000000") from None
        form = formulaire_for(family, qf, parent=parent, external_id=external_id)
        case = self.hubee.deposit_formulaire_qf(siret, tenant.cog, form)
        if self.particulier is not None:
            pivots = [
                PivotIdentity.model_validate(formulaire_for(family, qf, parent=p)["pivot_identity"])
                for p in range(len(family.parents))
            ]
            self.particulier.add_household(pivots, qf)
        return {"case_id": case.case_id, "reference": case.reference}


class RehearsalError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fields(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return ", ".join(".".join(str(p) for p in e.get("loc", ())) + f" ({e.get('type')})" for e in errors())
    return "not an object"


# ---------------------------------------------------------------------- the commands
def add_local_commands(local_sub: Any) -> None:
    credentials = local_sub.add_parser(
        "credentials",
        help="(local serve) the sandboxes issue a collectivité's HubEE and API Particulier credentials",
        description="Prints the credentials to store with PUT /v1/tenants/{siret}/credentials.",
    )
    credentials.add_argument("siret")
    credentials.add_argument("--cog", required=True, help="the commune's COG code (as in PUT /v1/tenants)")
    deposit = local_sub.add_parser(
        "deposit",
        help="(local serve) the form deposits a FormulaireQF dossier for a collectivité",
        description="The identity is a directory family's (--user-id), the family behind a form link "
        "(--external-id, carried in the dossier), or a family JSON file shaped as the body of "
        "PUT /v1/tenants/{siret}/families/{user_id} (--family).",
    )
    deposit.add_argument("siret")
    who = deposit.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", help="a family of the tenant's directory")
    who.add_argument("--external-id", help="a form link's external_id (the portal's way in)")
    who.add_argument("--family", type=Path, help="a JSON file: {parents: [...], enfants: [...]}")
    deposit.add_argument("--parent", type=int, default=1, help="which parent fills the form (1 or 2)")
    deposit.add_argument("--qf", type=int, default=850, help="the QF the form shows (default 850)")
    for parser in (credentials, deposit):
        parser.add_argument(
            "--sandbox-url",
            default=DEFAULT_CONSOLE_URL,
            help=f"the sandbox console local serve prints (default {DEFAULT_CONSOLE_URL})",
        )
        parser.add_argument("--json", action="store_true", help="print a machine-readable result")


def run_local_command(args: argparse.Namespace) -> int:
    import httpx

    from .operator import OperatorError, print_json

    if args.local_command == "credentials":
        path, body = "/credentials", {"siret": args.siret, "cog": args.cog}
    else:
        body = {"siret": args.siret, "parent": args.parent, "qf": args.qf}
        if args.user_id:
            body["user_id"] = args.user_id
        elif args.external_id:
            body["external_id"] = args.external_id
        else:
            try:
                body["family"] = json.loads(args.family.read_text(encoding="utf-8"))
            except ValueError:
                raise OperatorError(
                    f"{args.family} is not JSON", "see docs/onboarding.md for the shape"
                ) from None
        path = "/dossiers"
    try:
        response = httpx.post(args.sandbox_url.rstrip("/") + path, json=body, timeout=30)
    except httpx.HTTPError:
        raise OperatorError(
            f"the sandbox console ({args.sandbox_url}) is unreachable",
            "start `qfbridge local serve` (it prints the console's URL), or pass --sandbox-url",
        ) from None
    answer = response.json() if response.content else {}
    if response.status_code >= 400:
        raise OperatorError(str(answer.get("error", f"HTTP {response.status_code}")), None)
    if args.json:
        print_json(answer)
    else:
        for key, value in answer.items():
            print(f"{key}: {value}")
    return 0
