"""Operator commands against a deployed stack, or against ``qfbridge local serve``.

They find the stack with the standard AWS configuration (``--profile``, ``--region``, or the
environment) and read its outputs (``--stack-name``: the API URL, queues, log group); ``--api-url``
and friends override them. They print identifiers, statuses and counts — never identities, QF
values or secrets. An ordinary mistake is one line on stderr (``error: …`` then ``hint: …``) and
exit code 2; a command that ran but met invalid rows exits 1; success is 0. ``--json`` prints a
machine-readable result on stdout; messages and progress bars go to stderr.

This module imports neither moto nor the laptop runtime, and defers boto3 to the first AWS call:
``qfbridge --help`` and ``qfbridge --version`` answer at once.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import datetime as dt
import io
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .editor_client import ApiError, EditorApiClient

console = Console(width=None if sys.stdout.isatty() else 200)  # full tables in files and pipes
messages = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
BATCH_SIZE = 500
EXIT_USAGE = 2
EXIT_PARTIAL = 1


class OperatorError(Exception):
    """An ordinary mistake: told in one line with a hint, never as a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------------- AWS and the stack
def aws_session(args: argparse.Namespace) -> Any:
    cached = getattr(args, "_session", None)
    if cached is not None:
        return cached
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(
            profile_name=getattr(args, "profile", None),
            # botocore reads AWS_DEFAULT_REGION; the other SDKs (and Lambda, CI runners) set AWS_REGION
            region_name=getattr(args, "region", None) or os.environ.get("AWS_REGION") or None,
        )
    except ProfileNotFound:
        raise OperatorError(
            f"the AWS profile {args.profile!r} does not exist",
            "list yours with `aws configure list-profiles`, or drop --profile to use the environment",
        ) from None
    if not session.region_name:
        raise OperatorError(
            "no AWS region is configured",
            "pass --region eu-west-3 (or set AWS_REGION, or use a --profile that has a region)",
        )
    args._session = session
    return session


def aws_client(args: argparse.Namespace, service: str) -> Any:
    return aws_session(args).client(service)


def stack_outputs(args: argparse.Namespace) -> dict[str, str]:
    cached = getattr(args, "_outputs", None)
    if cached is not None:
        return dict(cached)
    from botocore.exceptions import ClientError

    name = args.stack_name
    try:
        response = aws_client(args, "cloudformation").describe_stacks(StackName=name)
    except ClientError as exc:
        if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
            region = aws_session(args).region_name
            raise OperatorError(
                f"no stack named {name!r} in {region}",
                "pass --stack-name (see `aws cloudformation list-stacks`), --region, or --api-url; "
                "for `qfbridge local serve`, export the variables it prints at start",
            ) from None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in response["Stacks"][0].get("Outputs", [])}
    args._outputs = outputs
    return dict(outputs)


def output(args: argparse.Namespace, explicit: str | None, key: str, option: str) -> str:
    if explicit:
        return explicit
    outputs = stack_outputs(args)
    if key not in outputs:
        raise OperatorError(
            f"the stack {args.stack_name!r} has no output {key}", f"pass {option}, or update the stack"
        )
    return outputs[key]


def api_client(args: argparse.Namespace) -> EditorApiClient:
    url = output(args, getattr(args, "api_url", None), "ApiUrl", "--api-url")
    session = aws_session(args)
    credentials = session.get_credentials()
    if credentials is None:
        raise OperatorError(
            "no AWS credentials to sign the API requests with",
            "pass --profile, run `aws sso login`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    frozen = credentials.get_frozen_credentials()
    from botocore.credentials import Credentials

    return EditorApiClient(
        url,
        credentials=Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token),
        region=session.region_name,
        agent_id=getattr(args, "agent_id", None),
    )


def explain(exc: BaseException, args: argparse.Namespace | None = None) -> OperatorError | None:
    """The ordinary mistakes behind an exception, as an ``OperatorError`` (None: a real bug)."""
    if isinstance(exc, OperatorError):
        return exc
    if isinstance(exc, ApiError):
        return _explain_api_error(exc)
    if isinstance(exc, FileNotFoundError):
        return OperatorError(f"no such file: {exc.filename}", "check the path")
    if isinstance(exc, IsADirectoryError | PermissionError):
        return OperatorError(f"cannot read {exc.filename}: {exc.strerror}", "check the path")
    if isinstance(exc, tomllib.TOMLDecodeError):
        return OperatorError(f"the TOML file is malformed: {exc}", "see config/tenants.example.toml")
    module = type(exc).__module__
    if module.startswith("httpx") or module.startswith("httpcore"):
        url = getattr(args, "api_url", None) or "the stack's ApiUrl"
        return OperatorError(
            f"the editor API ({url}) is unreachable: {type(exc).__name__}",
            "is `qfbridge local serve` running, or the stack deployed? check --api-url / --stack-name",
        )
    if module.startswith("botocore") or module.startswith("boto3"):
        return _explain_aws_error(exc)
    return None


def _explain_api_error(exc: ApiError) -> OperatorError:
    body = exc.body if isinstance(exc.body, dict) else {}
    code = body.get("code")
    detail = body.get("detail") or body.get("message") or str(exc)
    if exc.status == 403:
        return OperatorError(
            f"the editor API refused the request (403: {detail})",
            "the signing principal needs execute-api:Invoke on the API; check --profile and --region",
        )
    hints = {
        "tenant_not_found": "register it first: `qfbridge tenants onboard FILE`; list: `qfbridge tenants list`",
        "invalid_siret": "a SIRET is 14 digits with a valid Luhn key",
        "route_not_found": "check --api-url: it ends with the stage, without /v1",
    }
    return OperatorError(
        f"the editor API answered {exc.status} {code or ''}: {detail}".strip(), hints.get(code or "")
    )


def _explain_aws_error(exc: BaseException) -> OperatorError | None:
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoRegionError):
        return OperatorError("no AWS region is configured", "pass --region eu-west-3 (or set AWS_REGION)")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return OperatorError(
            "no AWS credentials found",
            "pass --profile, run `aws sso login`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(exc, bx.TokenRetrievalError | bx.SSOError | bx.UnauthorizedSSOTokenError):
        return OperatorError("the AWS SSO session has expired", "run `aws sso login` (with --profile)")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return OperatorError(f"AWS is unreachable: {exc}", "check the network, --region, or AWS_ENDPOINT_URL")
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code"))
        if code in (
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "UnrecognizedClientException",
        ):
            return OperatorError(
                f"AWS refused the credentials ({code})", "refresh them (`aws sso login`) or pass --profile"
            )
        if code in ("AccessDenied", "AccessDeniedException"):
            return OperatorError(
                f"AWS denied the call: {error.get('Message')}", "use a --profile allowed to operate the stack"
            )
        if code in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "ResourceNotFoundException",
        ):
            return OperatorError(
                f"not found: {error.get('Message')}", "check --stack-name, --region or the URL given"
            )
        return OperatorError(
            f"AWS answered {code}: {error.get('Message')}",
            "retry; if it persists, check the stack in the console",
        )
    return None


def require_siret(siret: str) -> str:
    from qfbridge.domain.siret import is_valid_siret

    if not is_valid_siret(siret):
        raise OperatorError(
            f"{siret!r} is not a valid SIRET",
            "a SIRET is 14 digits with a valid Luhn key (La Poste: 356000000…)",
        )
    return siret


def _progress(args: argparse.Namespace) -> Any:
    """A progress bar on stderr (quiet with --json or when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=messages,
        transient=True,
        disable=bool(getattr(args, "json", False)) or not messages.is_terminal,
    )
    return progress


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


# ---------------------------------------------------------------------- CSV as offices export it
CSV_ENCODINGS = "UTF-8 (with or without BOM) or Windows-1252"


def read_csv(
    path: Path, required: tuple[str, ...], known: Callable[[str], bool]
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file as spreadsheets export it: ``;`` or ``,`` separated, UTF-8 (BOM or not)
    or Windows-1252. Returns (line number, row) pairs; refuses a file without the required columns."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="strict")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                raise OperatorError(
                    f"{path} is neither UTF-8 nor Windows-1252 text", f"save it as CSV in {CSV_ENCODINGS}"
                ) from None
    header = next((line for line in text.splitlines() if line.strip()), "")
    if not header:
        raise OperatorError(f"{path} is empty", f"the first line names the columns: {', '.join(required)}, …")
    delimiter = ";" if header.count(";") > header.count(",") else ","
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise OperatorError(f"{path} is not a readable CSV file: {exc}", "export it again as CSV") from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    columns = [name.strip().lower() for name in rows[0][1]]
    missing = [name for name in required if name not in columns]
    unknown = [name for name in columns if name and not known(name)]
    if missing or unknown:
        problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        )
        raise OperatorError(
            f"{path}: {'; '.join(problems)}", "see the columns in `--help` or docs/operations.md"
        )
    result = []
    for line, row in rows[1:]:
        result.append(
            (
                line,
                {columns[i]: cell.strip() for i, cell in enumerate(row) if i < len(columns) and columns[i]},
            )
        )
    return result


_FRENCH_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def iso_date(value: str) -> str:
    """``31/01/1985`` (as French spreadsheets write dates) → ``1985-01-31``; anything else unchanged."""
    match = _FRENCH_DATE.match(value.strip())
    if not match:
        return value.strip()
    day, month, year = (int(g) for g in match.groups())
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return value.strip()  # not a date: the API names the field


# ---------------------------------------------------------------------- tenants
TENANT_COLUMNS = ("siret", "name", "cog", "redirect_hosts", "token_expires_on", "refresh_budget_rps")
TENANTS_HELP = (
    "FILE is TOML ([[tenants]] tables) or CSV with the columns siret, name, cog (required), "
    "redirect_hosts (hosts separated by spaces or |), token_expires_on (YYYY-MM-DD or DD/MM/YYYY), "
    "refresh_budget_rps (requests per second, 2.5 or 2,5). CSV: ; or , separated, "
    f"{CSV_ENCODINGS}. Each row is registered on its own: a bad row is reported and the others go on."
)


def _tenant_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() == ".toml":
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return [(n, dict(row)) for n, row in enumerate(document.get("tenants", []), start=1)]
    rows = []
    for line, row in read_csv(path, ("siret", "name", "cog"), lambda c: c in TENANT_COLUMNS):
        entry: dict[str, Any] = {k: v for k, v in row.items() if v}
        if "redirect_hosts" in entry:
            entry["redirect_hosts"] = [h for h in re.split(r"[\s|;,]+", entry["redirect_hosts"]) if h]
        if "token_expires_on" in entry:
            entry["token_expires_on"] = iso_date(entry["token_expires_on"])
        if "refresh_budget_rps" in entry:
            text = entry["refresh_budget_rps"].replace(",", ".")
            with contextlib.suppress(ValueError):  # not a number: the API names the field
                entry["refresh_budget_rps"] = float(text)
        rows.append((line, entry))
    return rows


def tenants_onboard(args: argparse.Namespace) -> int:
    rows = _tenant_rows(Path(args.file))
    results: list[dict[str, Any]] = []
    progress = _progress(args)
    description = "registering collectivités"
    with api_client(args) as api, progress:
        task = progress.add_task(description, total=len(rows))
        for line, row in rows:
            siret = str(row.pop("siret", "") or "")
            body = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}
            result: dict[str, Any] = {"line": line, "siret": siret}
            try:
                require_siret(siret)
                api.call("PUT", f"/v1/tenants/{siret}", json_body=body)
                result["status"] = "ok"
            except OperatorError:
                result |= {"status": "invalid", "code": "invalid_siret", "fields": "siret"}
            except ApiError as exc:
                problem = exc.body if isinstance(exc.body, dict) else {}
                fields = " ".join(
                    ".".join(str(p) for p in e["loc"][1:])
                    for e in problem.get("errors") or []
                    if e.get("loc")
                )
                result |= {
                    "status": "invalid",
                    "code": problem.get("code") or str(exc.status),
                    "fields": fields,
                }
            results.append(result)
            progress.advance(task)
    failed = [r for r in results if r["status"] != "ok"]
    if args.json:
        print_json({"onboarded": len(results) - len(failed), "failed": len(failed), "rows": results})
    else:
        for r in results:
            if r["status"] == "ok":
                console.print(f"[green]ok[/green]   row {r['line']}: {r['siret']}")
            else:
                where = f" ({r['fields']})" if r.get("fields") else ""
                console.print(
                    f"[red]fail[/red] row {r['line']}: {r['siret'] or '(no siret)'} — {r['code']}{where}"
                )
        console.print(f"{len(results) - len(failed)} onboarded, {len(failed)} failed")
    return EXIT_PARTIAL if failed else 0


def _all_tenants(api: EditorApiClient) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = api.call("GET", "/v1/tenants", params={"cursor": cursor, "limit": 100})
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _days_left(tenant: dict[str, Any], today: dt.date) -> int | None:
    expiry = tenant.get("token_expires_on")
    return (dt.date.fromisoformat(expiry) - today).days if expiry else None


def tenants_list(args: argparse.Namespace) -> int:
    today = dt.date.today()
    with api_client(args) as api:
        tenants = list(_all_tenants(api))
    if args.json:
        print_json([t | {"token_days_left": _days_left(t, today)} for t in tenants])
        return 0
    table = Table(title="Collectivités")
    for column in ("SIRET", "name", "status", "token expires", "days left", "budget (req/s)"):
        table.add_column(column)
    for tenant in tenants:
        left = _days_left(tenant, today)
        table.add_row(
            tenant["siret"],
            tenant["name"],
            tenant["status"],
            str(tenant.get("token_expires_on") or "-"),
            "-" if left is None else str(left),
            str(tenant.get("refresh_budget_rps")),
        )
    console.print(table)
    return 0


def _alert(left: int | None) -> str:
    if left is None:
        return "unknown expiry"
    if left <= 0:
        return "EXPIRED"
    if left <= 90:
        return f"alert {min(t for t in (90, 60, 30, 15) if left <= t)}"
    return "-"


def tokens_report(args: argparse.Namespace) -> int:
    today = dt.date.today()
    rows = []
    with api_client(args) as api:
        for tenant in _all_tenants(api):
            left = _days_left(tenant, today)
            if left is None or left <= args.days:
                rows.append((left, tenant))
    rows.sort(key=lambda r: (r[0] is not None, r[0] if r[0] is not None else 0))
    if args.json:
        print_json(
            [
                {
                    "siret": t["siret"],
                    "name": t["name"],
                    "token_expires_on": t.get("token_expires_on"),
                    "days_left": left,
                    "state": _alert(left),
                }
                for left, t in rows
            ]
        )
        return 0
    table = Table(title=f"API Particulier tokens expiring within {args.days} days (or unknown)")
    for column in ("SIRET", "name", "expires on", "days left", "status"):
        table.add_column(column)
    for left, tenant in rows:
        table.add_row(
            tenant["siret"],
            tenant["name"],
            str(tenant.get("token_expires_on") or "-"),
            "-" if left is None else str(left),
            _alert(left),
        )
    console.print(table)
    return 0


# ---------------------------------------------------------------------- directory
PARENT_FIELDS = (
    "nom_naissance",
    "nom_usage",
    "prenoms",
    "sexe",
    "date_naissance",
    "code_cog_naissance",
    "code_pays_naissance",
)
CHILD_FIELDS = ("prenoms", "nom", "date_naissance")
_DIRECTORY_COLUMN = re.compile(
    rf"^(user_id|enfants|parent[12]_({'|'.join(PARENT_FIELDS)})|enfant\d{{1,2}}_({'|'.join(CHILD_FIELDS)}))$"
)
DIRECTORY_HELP = (
    "FILE.csv columns: user_id (required), parent1_* and parent2_* with * one of "
    f"{', '.join(PARENT_FIELDS)}; the children as enfant1_prenoms, enfant1_nom, enfant1_date_naissance, "
    "enfant2_…, or in one column enfants with items prenoms|nom|date separated by ; (quote the cell in a "
    "; separated file). Dates YYYY-MM-DD or DD/MM/YYYY; sexe F or M. ; or , separated, "
    f"{CSV_ENCODINGS}. Rows are checked one by one: each invalid row is reported with its line, "
    "user_id and the fields at fault (never their values), the others are imported."
)


def family_from_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row → the API's family body (see ``DIRECTORY_HELP`` for the columns)."""
    parents = []
    for n in (1, 2):
        prefix = f"parent{n}_"
        fields = {
            k[len(prefix) :]: v.strip() for k, v in row.items() if k.startswith(prefix) and v and v.strip()
        }
        if "date_naissance" in fields:
            fields["date_naissance"] = iso_date(fields["date_naissance"])
        if "sexe" in fields:
            fields["sexe"] = fields["sexe"].upper()
        if fields:
            parents.append(fields)
    enfants = []
    for item in (row.get("enfants") or "").split(";"):
        if item.strip():
            prenoms, _, rest = item.partition("|")
            nom, _, date = rest.partition("|")
            enfants.append({"prenoms": prenoms.strip(), "nom": nom.strip(), "date_naissance": iso_date(date)})
    numbers = sorted({int(m.group(1)) for k in row if (m := re.match(r"^enfant(\d+)_", k))})
    for n in numbers:
        child = {f: (row.get(f"enfant{n}_{f}") or "").strip() for f in CHILD_FIELDS}
        if any(child.values()):
            child["date_naissance"] = iso_date(child["date_naissance"])
            enfants.append(child)
    return {"user_id": (row.get("user_id") or "").strip(), "parents": parents, "enfants": enfants}


def directory_import(args: argparse.Namespace) -> int:
    require_siret(args.siret)
    rows = read_csv(Path(args.file), ("user_id",), lambda c: bool(_DIRECTORY_COLUMN.match(c)))
    families = [(line, family_from_row(row)) for line, row in rows]
    errors: list[dict[str, Any]] = []
    created = updated = 0
    progress = _progress(args)
    description = "importing families"
    with api_client(args) as api, progress:
        task = progress.add_task(description, total=len(families))
        for start in range(0, len(families), BATCH_SIZE):
            chunk = families[start : start + BATCH_SIZE]
            result = api.call(
                "POST",
                f"/v1/tenants/{args.siret}/families:batch",
                json_body={"families": [family for _line, family in chunk]},
            )
            created += result["created"]
            updated += result["updated"]
            for row in result["results"]:
                if row["status"] == "invalid":
                    errors.append(
                        {
                            "line": chunk[row["index"]][0],
                            "user_id": row.get("user_id") or chunk[row["index"]][1]["user_id"],
                            "code": row.get("code") or "invalid",
                            "fields": " ".join(
                                ".".join(str(p) for p in e["loc"]) for e in row.get("errors", [])
                            ),
                        }
                    )
            progress.advance(task, len(chunk))
    if args.json:
        print_json({"created": created, "updated": updated, "invalid": len(errors), "errors": errors})
    else:
        console.print(f"{created} created, {updated} updated, {len(errors)} invalid")
    if errors and (args.report or not args.json):
        out = open(args.report, "w", newline="", encoding="utf-8") if args.report else sys.stdout  # noqa: SIM115
        writer = csv.DictWriter(out, fieldnames=["line", "user_id", "code", "fields"])
        writer.writeheader()
        writer.writerows(errors)
        if out is not sys.stdout:
            out.close()
    return EXIT_PARTIAL if errors else 0


# ---------------------------------------------------------------------- dossiers
def directory_reindex(args: argparse.Namespace) -> int:
    """Rewrite the tenant's blocking index in the current layout, from the family items themselves
    (after an upgrade that changed it: docs/operations.md, "Reindexing a directory")."""
    import boto3

    from qfbridge.store.families import FamilyRepository

    require_siret(args.siret)
    table_name = args.table or stack_outputs(args)["FamiliesTableName"]
    session = aws_session(args)
    boto3.setup_default_session(profile_name=getattr(args, "profile", None), region_name=session.region_name)
    rewritten = FamilyRepository(table_name).reindex(args.siret)
    if args.json:
        print_json({"siret": args.siret, "rewritten": rewritten})
        return 0
    console.print(f"{args.siret}: {rewritten} families rewritten in the current blocking layout")
    return 0


def dossiers_review(args: argparse.Namespace) -> int:
    require_siret(args.siret)
    items: list[dict[str, Any]] = []
    with api_client(args) as api:
        cursor = None
        while True:
            page = api.call(
                "GET",
                f"/v1/tenants/{args.siret}/dossiers",
                params={"status": "needs_review", "cursor": cursor, "limit": 100},
            )
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    if args.json:
        print_json(items)
        return 0
    table = Table(title=f"Dossiers waiting for review — {args.siret}")
    for column in ("reference", "received", "candidates", "external_id"):
        table.add_column(column)
    for item in items:
        table.add_row(
            str(item["reference"]),
            item["received_at"][:16],
            str(item["candidates"]),
            str(item.get("external_id_status") or "-"),
        )
    console.print(table)
    console.print(f"{len(items)} dossier(s) waiting")
    return 0


# ---------------------------------------------------------------------- DLQs
_QUEUE_OUTPUTS = {
    "dossiers": ("DossiersQueueUrl", "DossiersDeadLetterQueueUrl"),
    "refresh": ("RefreshQueueUrl", "RefreshDeadLetterQueueUrl"),
}


def dossiers_retry_status(args: argparse.Namespace) -> int:
    from qfbridge.domain.errors import QfbridgeError
    from qfbridge.services.status_retry import retry_refused_status
    from qfbridge.store.dossiers import DossierRepository
    from qfbridge.store.queues import SqsDossierQueue

    require_siret(args.siret)
    outputs = {} if args.table and args.queue_url else stack_outputs(args)
    table_name = args.table or outputs["DossiersTableName"]
    queue_url = args.queue_url or outputs["DossiersQueueUrl"]
    try:
        record = retry_refused_status(
            DossierRepository(table_name),
            SqsDossierQueue(queue_url, client=aws_session(args).client("sqs")),
            args.siret,
            args.reference,
            actor=args.operator,
        )
    except QfbridgeError as exc:
        raise OperatorError(f"{exc.code}: {exc}", "docs/operations.md, HubEE refused a status") from None
    refused = record.last_status_refusal or {}
    if args.json:
        print_json({"case_id": record.case_id, "retried": refused})
        return 0
    console.print(
        f"dossier {args.reference}: retry of {refused.get('status')} queued (case {record.case_id}, "
        f"refused with HTTP {refused.get('http_status')})"
    )
    return 0


def _dlq_messages(sqs: Any, url: str, limit: int, visibility: int = 30) -> list[dict[str, Any]]:
    messages_: list[dict[str, Any]] = []
    while len(messages_) < limit:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(messages_)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=visibility,
        ).get("Messages", [])
        if not batch:
            break
        messages_.extend(batch)
    return messages_


def describe_message(body: str) -> dict[str, Any]:
    """Technical identifiers of a queued message (the bodies carry ids only, never identities)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {"kind": "unreadable", "tenant": None, "case_id": None, "user_id": None}
    if not isinstance(data, dict):
        return {"kind": "unreadable", "tenant": None, "case_id": None, "user_id": None}
    notification = data.get("notification") or {}
    return {
        "kind": data.get("kind") or ("refresh" if "user_id" in data else "unknown"),
        "tenant": data.get("siret")
        or (notification.get("recipient") or {}).get("companyRegister")
        or data.get("credential_holder"),
        "case_id": notification.get("caseId") or data.get("case_id"),
        "user_id": data.get("user_id"),
    }


def _queue_urls(args: argparse.Namespace) -> tuple[str, str]:
    source_key, dlq_key = _QUEUE_OUTPUTS[args.queue]
    dlq_url = output(args, args.dlq_url, dlq_key, "--dlq-url")
    queue_url = output(args, args.queue_url, source_key, "--queue-url")
    return queue_url, dlq_url


def _audit_operator(args: argparse.Namespace, action: str, infos: list[dict[str, Any]]) -> None:
    """One audit record per DLQ command — who (the operator's AWS principal), which queue, which
    families the messages name — written before anything is shown or moved: an access that cannot
    be traced is not made."""
    import time
    import uuid

    from qfbridge.store.audit import AuditRecord

    group = output(args, getattr(args, "log_group", None), "AuditLogGroupName", "--log-group")
    tenants = {str(i["tenant"]) for i in infos if i.get("tenant")}
    user_ids = sorted({str(i["user_id"]) for i in infos if i.get("user_id")})
    record = AuditRecord(
        request_id=f"cli-{uuid.uuid4().hex}",
        actor="operator",
        principal=str(aws_client(args, "sts").get_caller_identity()["Arn"]),
        tenant_siret=tenants.pop() if len(tenants) == 1 else None,
        route=f"cli:dlq {action} {args.queue}",
        action=f"dlq.{action}",
        user_ids=user_ids or None,
        outcome="success",
    )
    logs = aws_client(args, "logs")
    stream = f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/operator-{uuid.uuid4().hex}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[
            {
                "timestamp": int(time.time() * 1000),
                "message": json.dumps(record.model_dump(exclude_none=True), sort_keys=True),
            }
        ],
    )


def dlq_inspect(args: argparse.Namespace) -> int:
    sqs = aws_client(args, "sqs")
    _queue_url, dlq_url = _queue_urls(args)
    found = _dlq_messages(sqs, dlq_url, args.max)
    _audit_operator(args, "inspect", [describe_message(m["Body"]) for m in found])
    rows = []
    for message in found:
        info = describe_message(message["Body"])
        rows.append(
            {
                "message_id": message["MessageId"],
                "receive_count": message["Attributes"].get("ApproximateReceiveCount"),
            }
            | info
        )
        # Inspection must not hide the message: make it visible again at once.
        sqs.change_message_visibility(
            QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    if args.json:
        print_json(rows)
        return 0
    table = Table(title=f"{args.queue} DLQ")
    for column in ("message id", "received", "kind", "tenant", "case / user"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["message_id"],
            str(row["receive_count"] or "?"),
            str(row["kind"]),
            str(row["tenant"] or "-"),
            str(row["case_id"] or row["user_id"] or "-"),
        )
    console.print(table)
    console.print(f"{len(rows)} message(s)")
    return 0


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def _move_task_unavailable(exc: Exception) -> bool:
    """SQS without StartMessageMoveTask (an emulator such as moto answers 5xx or "unknown action")."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    # AWS's own 5xx carry a code (InternalError…): those are raised; an emulator's bare 5xx has none.
    return code in ("InvalidAction", "UnsupportedOperation", "NotImplemented") or (
        status >= 500 and code.isdigit()
    )


def dlq_redrive(args: argparse.Namespace) -> int:
    """Move the DLQ's messages back with SQS's message move task (attributes kept, any queue size);
    where the service lacks it (moto), receive / send with the same attributes / delete."""
    import time

    from botocore.exceptions import ClientError

    sqs = aws_client(args, "sqs")
    queue_url, dlq_url = _queue_urls(args)
    waiting = _depth(sqs, dlq_url)
    _audit_operator(args, "redrive", [])  # the move task does not show the messages: ids unknown
    method = "message_move_task"
    moved = 0
    progress = _progress(args)
    description = f"moving the {args.queue} DLQ back"
    with progress:
        task = progress.add_task(description, total=waiting or None)
        try:
            started = sqs.start_message_move_task(
                SourceArn=_queue_arn(sqs, dlq_url),
                DestinationArn=_queue_arn(sqs, queue_url),
                **({"MaxNumberOfMessagesPerSecond": args.rate} if args.rate else {}),
            )
        except ClientError as exc:
            if not _move_task_unavailable(exc):
                raise
            started = None
        if started is not None:
            handle = started["TaskHandle"]
            source_arn = _queue_arn(sqs, dlq_url)
            while True:
                tasks = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1).get("Results", [])
                current = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
                moved = int(current.get("ApproximateNumberOfMessagesMoved", 0))
                progress.update(task, completed=moved)
                status = current.get("Status")
                if status in ("COMPLETED", "CANCELLED", "FAILED"):
                    if status == "FAILED":
                        raise OperatorError(
                            f"the message move task failed: {current.get('FailureReason')}",
                            "see the queue's permissions and KMS key",
                        )
                    break
                time.sleep(2)
        else:
            method = "receive_send_delete"
            while moved < args.max:
                batch = _dlq_messages(sqs, dlq_url, min(10, args.max - moved), visibility=120)
                if not batch:
                    break
                for message in batch:
                    sqs.send_message(
                        QueueUrl=queue_url,
                        MessageBody=message["Body"],
                        **(
                            {"MessageAttributes": message["MessageAttributes"]}
                            if message.get("MessageAttributes")
                            else {}
                        ),
                    )
                    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                    moved += 1
                    progress.advance(task)
    if args.json:
        print_json({"queue": args.queue, "moved": moved, "method": method})
    else:
        console.print(f"{moved} message(s) moved back to the {args.queue} queue ({method.replace('_', ' ')})")
    return 0


# ---------------------------------------------------------------------- audit
def audit_filter_pattern(siret: str, user_id: str | None, reference: str | None) -> str:
    """A CloudWatch Logs JSON filter pattern: the service does the filtering, not the operator's laptop."""
    terms = [f'$.tenant_siret = "{siret}"']
    if user_id:
        terms.append(f'($.user_id = "{user_id}" || $.user_ids[*] = "{user_id}")')
    if reference:
        terms.append(f'$.reference = "{reference}"')
    return "{ " + " && ".join(terms) + " }"


def audit_query(args: argparse.Namespace) -> int:
    require_siret(args.siret)
    for name, value in (("--user-id", args.user_id), ("--reference", args.reference)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._:@-]{1,128}", value):
            raise OperatorError(f"{name} {value!r} is not an id", "letters, digits and . _ : @ - only")
    group = output(args, args.log_group, "AuditLogGroupName", "--log-group")
    logs = aws_client(args, "logs")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.since_days)
    kwargs: dict[str, Any] = {
        "logGroupName": group,
        "startTime": int(since.timestamp() * 1000),
        "filterPattern": audit_filter_pattern(args.siret, args.user_id, args.reference),
    }
    records: list[dict[str, Any]] = []
    progress = _progress(args)
    description = "reading the audit trail"
    with progress:
        task = progress.add_task(description, total=None)
        while True:
            response = logs.filter_log_events(**kwargs)
            for event in response.get("events", []):
                record = json.loads(event["message"])
                # The service applied the pattern; checking again costs nothing and keeps emulators honest.
                if record.get("tenant_siret") != args.siret:
                    continue
                if (
                    args.user_id
                    and args.user_id != record.get("user_id")
                    and args.user_id not in record.get("user_ids", ())
                ):
                    continue
                if args.reference and record.get("reference") != args.reference:
                    continue
                records.append(record)
            progress.update(task, completed=len(records))
            token = response.get("nextToken")
            if not token:
                break
            kwargs["nextToken"] = token
    records.sort(key=lambda r: str(r.get("time", "")))
    total = len(records)
    records = records[-args.limit :] if args.limit else records  # the most recent, after sorting them all
    if args.json:
        print_json({"total": total, "records": records})
        return 0
    table = Table(title=f"Audit trail — {args.siret}" + (f" / {args.user_id}" if args.user_id else ""))
    for column in ("time", "principal", "agent", "route", "action", "target", "outcome"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.get("time", "-"),
            r.get("principal", "-"),
            r.get("agent_id") or "-",
            r.get("route", "-"),
            r.get("action", "-"),
            r.get("user_id") or r.get("reference") or "-",
            r.get("outcome", "-"),
        )
    console.print(table)
    shown = f" (the {len(records)} most recent shown)" if len(records) < total else ""
    console.print(f"{total} record(s){shown}")
    return 0


# ---------------------------------------------------------------------- OpenAPI
def openapi(path: str | None, markdown: str | None = None) -> int:
    from qfbridge.api.__main__ import render

    from .apidoc import render_markdown

    text = render()
    document = json.loads(text)  # render what is committed, in its key order
    if path:
        Path(path).write_text(text, encoding="utf-8")
    elif not markdown:
        sys.stdout.write(text)
    if markdown:
        Path(markdown).write_text(render_markdown(document), encoding="utf-8")
    return 0


def event_catalogue(schemas_dir: str, path: str) -> int:
    """Write each event's JSON Schema (from its model), the webhook envelope's and the catalogue."""
    from .apidoc import (
        ENVELOPE_SCHEMA_PATH,
        WEBHOOKS_SECTION_PATH,
        load_event_schemas,
        render_envelope_schema,
        render_event_catalogue,
        render_event_schemas,
    )

    for name, text in render_event_schemas().items():
        (Path(schemas_dir) / f"{name}.schema.json").write_text(text, encoding="utf-8")
    schemas = load_event_schemas(schemas_dir)
    envelope = Path(schemas_dir) / ENVELOPE_SCHEMA_PATH
    envelope.parent.mkdir(parents=True, exist_ok=True)
    envelope.write_text(render_envelope_schema(schemas), encoding="utf-8")
    webhooks = (Path(schemas_dir) / WEBHOOKS_SECTION_PATH).read_text(encoding="utf-8")
    Path(path).write_text(render_event_catalogue(schemas, webhooks), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------- webhooks
def webhook_test(args: argparse.Namespace) -> int:
    """One sample event of each type to the local webhook, through the template's transformer."""
    from .webhooks import local_rules, send_samples

    url, api_key = args.url, args.api_key
    if args.config:
        from .serve import ServeConfig

        section = ServeConfig.load(args.config).webhook
        url = url or section.url
        api_key = api_key or section.api_key
    if not url:
        console.print("[red]no webhook URL: give --url or a configuration with [webhook] url[/red]")
        return 2
    rules, headers = local_rules(url, api_key or "local-webhook-key")
    table = Table(title=f"Webhook test — {url}")
    for column in ("event", "envelope id", "outcome", "attempts", "last answer"):
        table.add_column(column)
    failed = 0
    for result in send_samples(rules, url, headers, max_seconds=args.max_seconds):
        failed += result.outcome != "delivered"
        table.add_row(
            result.detail_type, result.envelope_id, result.outcome, str(result.attempts), result.last
        )
    console.print(table)
    return 0 if failed == 0 else 1


def webhook_replay(args: argparse.Namespace) -> int:
    """Deliver the webhook DLQ's events again, with their original ids."""
    from .webhooks import deployed_headers, deployed_rules, replay_dead_letters

    cloudformation = aws_client(args, "cloudformation")
    stack = cloudformation.describe_stacks(StackName=args.stack_name)["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    rules, url = deployed_rules(parameters)
    secrets = aws_client(args, "secretsmanager")
    headers = deployed_headers(parameters, lambda sid: secrets.get_secret_value(SecretId=sid)["SecretString"])
    dlq_url = args.dlq_url or outputs["WebhookDeadLetterQueueUrl"]
    report = replay_dead_letters(aws_client(args, "sqs"), dlq_url, rules, url, headers, limit=args.max)
    for error in report.errors:
        console.print(f"kept: {error}")
    console.print(f"{report.replayed} event(s) delivered again, {report.kept} kept in the webhook DLQ")
    return 0 if report.kept == 0 else 1
