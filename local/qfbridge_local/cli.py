"""The ``qfbridge`` command.

    qfbridge demo [--json]                       the whole story on the laptop runtime
    qfbridge local serve --config FILE           keep the laptop runtime running (API + schedules)
    qfbridge local credentials SIRET --cog COG   (local serve) the sandboxes issue a tenant's credentials
    qfbridge local deposit SIRET …               (local serve) the form deposits a dossier in HubEE
    qfbridge openapi [--write PATH] [--markdown PATH]   the editor API's OpenAPI document
    qfbridge tenants onboard FILE                register collectivités from a CSV or TOML file
    qfbridge tenants list                        collectivités with token expiry and health
    qfbridge directory import SIRET FILE.csv     import a directory, with a per-row error report
    qfbridge directory reindex SIRET             rewrite a directory's blocking index (after an upgrade)
    qfbridge dossiers review SIRET               the dossiers waiting for an agent
    qfbridge dossiers retry-status SIRET REF     post again a status HubEE refused
    qfbridge dlq inspect|redrive QUEUE           dead-letter queues (dossiers | refresh)
    qfbridge tokens report                       API Particulier token expiry report
    qfbridge audit query SIRET [--user-id ID]    who read or changed a family's data
    qfbridge webhook test|replay                 sample events to the webhook; replay the webhook DLQ

Operator commands talk to a deployed stack with the standard AWS configuration (``--profile``,
``--region`` or the environment): the stack's outputs (``--stack-name``, default ``qfbridge-dev``)
give the API URL, queues and log group; ``--api-url`` and friends override them. Against
``qfbridge local serve``, export the variables it prints at start. Every operator command takes
``--json``. Exit codes: 0 done, 1 done with invalid rows, 2 an ordinary mistake (one line on
stderr with a hint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from . import operator as ops


def _version() -> str:
    try:
        return metadata.version("qfbridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def _common() -> argparse.ArgumentParser:
    """The options every operator command takes."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("stack and output")
    group.add_argument("--profile", help="AWS profile (default: the environment's credentials)")
    group.add_argument("--region", help="AWS region (default: the profile's or AWS_REGION)")
    group.add_argument(
        "--stack-name", default="qfbridge-dev", help="CloudFormation stack (default: qfbridge-dev)"
    )
    group.add_argument("--api-url", help="editor API base URL (default: the stack's ApiUrl output)")
    group.add_argument("--agent-id", help="X-Agent-Id sent with API requests (audit trail)")
    group.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qfbridge",
        description="qfbridge: the editor-side bridge of the Formulaire QF.",
        epilog="Exit codes: 0 done, 1 done with invalid rows, 2 an ordinary mistake (see the hint).",
    )
    parser.add_argument("--version", action="version", version=f"qfbridge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    demo = sub.add_parser("demo", help="run the whole pipeline on the laptop runtime and print what happened")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")
    demo.add_argument(
        "--seed", type=int, default=2026, help="seed of the synthetic population (default: 2026)"
    )

    local = sub.add_parser("local", help="the laptop runtime")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    serve = local_sub.add_parser(
        "serve", help="serve the API on 127.0.0.1, run the schedules, print the endpoints"
    )
    serve.add_argument(
        "--config", required=True, help="TOML configuration file (see config/local.example.toml)"
    )
    from .rehearsal import add_local_commands

    add_local_commands(local_sub)

    openapi = sub.add_parser("openapi", help="print or write the editor API's OpenAPI document")
    openapi.add_argument("--write", metavar="PATH", help="write to PATH instead of stdout")
    openapi.add_argument("--markdown", metavar="PATH", help="also render the Markdown reference to PATH")

    tenants = sub.add_parser("tenants", help="collectivités of a deployed stack")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True, metavar="ACTION")
    onboard = tenants_sub.add_parser(
        "onboard",
        parents=[common],
        help="register collectivités from a CSV or TOML file",
        description=ops.TENANTS_HELP,
    )
    onboard.add_argument("file", help="tenants.csv or tenants.toml")
    tenants_sub.add_parser("list", parents=[common], help="collectivités with token expiry and health")

    directory = sub.add_parser("directory", help="the families directory of a collectivité")
    directory_sub = directory.add_subparsers(dest="directory_command", required=True, metavar="ACTION")
    importing = directory_sub.add_parser(
        "import",
        parents=[common],
        help="import families from a CSV file (progress bar, row report)",
        description=ops.DIRECTORY_HELP,
    )
    importing.add_argument("siret")
    importing.add_argument("file", help="families.csv")
    importing.add_argument("--report", help="write the per-row error report (CSV) to this path")
    reindex = directory_sub.add_parser(
        "reindex",
        parents=[common],
        help="rewrite the blocking index of families stored in an older layout (after an upgrade)",
    )
    reindex.add_argument("siret")
    reindex.add_argument("--table", help="the families table (default: from the stack outputs)")

    dossiers = sub.add_parser("dossiers", help="dossiers of a collectivité")
    dossiers_sub = dossiers.add_subparsers(dest="dossiers_command", required=True, metavar="ACTION")
    review = dossiers_sub.add_parser("review", parents=[common], help="the dossiers waiting for review")
    review.add_argument("siret")
    retry = dossiers_sub.add_parser(
        "retry-status",
        parents=[common],
        help="post again a status HubEE refused (after reading docs/operations.md)",
    )
    retry.add_argument("siret")
    retry.add_argument("reference", help="the dossier's 13-character reference")
    retry.add_argument("--table", help="the dossiers table (default: from the stack outputs)")
    retry.add_argument("--queue-url", help="the dossiers queue URL (default: from the stack outputs)")
    retry.add_argument("--operator", default="operator", help="who asks for it (recorded on the dossier)")

    dlq = sub.add_parser("dlq", help="dead-letter queues")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for action, text in (
        ("inspect", "show what waits in a DLQ (ids and reasons, no personal data)"),
        ("redrive", "move a DLQ's messages back to their queue (SQS message move task)"),
    ):
        p = dlq_sub.add_parser(action, parents=[common], help=text)
        p.add_argument("queue", choices=["dossiers", "refresh"])
        p.add_argument("--queue-url", help="the source queue URL (default: from the stack outputs)")
        p.add_argument("--dlq-url", help="the DLQ URL (default: from the stack outputs)")
        p.add_argument("--log-group", help="the audit log group (default: from the stack outputs)")
        p.add_argument(
            "--max",
            type=int,
            default=100 if action == "inspect" else 100_000,
            help="at most this many messages (inspect; redrive without a move task)",
        )
        if action == "redrive":
            p.add_argument("--rate", type=int, help="messages per second of the move task (default: SQS's)")

    tokens = sub.add_parser("tokens", help="API Particulier tokens")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    report = tokens_sub.add_parser("report", parents=[common], help="token expiry report (90/60/30/15 days)")
    report.add_argument("--days", type=int, default=90, help="list tokens expiring within this many days")

    webhook = sub.add_parser("webhook", help="events delivered to the editor's HTTPS endpoint")
    webhook_sub = webhook.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    wtest = webhook_sub.add_parser("test", help="send a sample event of each type to the local webhook URL")
    wtest.add_argument("--config", help="local configuration whose [webhook] section names the URL and key")
    wtest.add_argument("--url", help="the webhook URL (default: the configuration's)")
    wtest.add_argument("--api-key", help="the key sent in the key header (default: the configuration's)")
    wtest.add_argument(
        "--max-seconds", type=float, default=30, help="retry one event at most this long (default: 30)"
    )
    wreplay = webhook_sub.add_parser(
        "replay", parents=[common], help="deliver the webhook DLQ's events again (same ids)"
    )
    wreplay.add_argument("--dlq-url", help="the webhook DLQ URL (default: from the stack outputs)")
    wreplay.add_argument("--max", type=int, default=100, help="at most this many events")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    query = audit_sub.add_parser(
        "query",
        parents=[common],
        help="who read or changed a tenant's / family's data",
        description="Filters in CloudWatch Logs (a JSON filter pattern), sorts all the matches by time, "
        "then shows the most recent --limit.",
    )
    query.add_argument("siret")
    query.add_argument("--user-id")
    query.add_argument("--reference")
    query.add_argument("--since-days", type=int, default=90)
    query.add_argument("--limit", type=int, default=1000, help="show the most recent N (default: 1000)")
    query.add_argument("--log-group", help="the audit log group (default: from the stack outputs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        explained = ops.explain(exc, args)
        if explained is None:
            raise
        print(f"error: {explained.message}", file=sys.stderr)
        if explained.hint:
            print(f"hint: {explained.hint}", file=sys.stderr)
        return ops.EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(as_json=args.json, seed=args.seed)
    if args.command == "local":
        if args.local_command == "serve":
            from .serve import serve

            return serve(args.config)
        from .rehearsal import run_local_command

        return run_local_command(args)
    if args.command == "openapi":
        return ops.openapi(args.write, args.markdown)
    handlers = {
        ("tenants", "onboard"): ops.tenants_onboard,
        ("tenants", "list"): ops.tenants_list,
        ("directory", "import"): ops.directory_import,
        ("directory", "reindex"): ops.directory_reindex,
        ("dossiers", "review"): ops.dossiers_review,
        ("dossiers", "retry-status"): ops.dossiers_retry_status,
        ("dlq", "inspect"): ops.dlq_inspect,
        ("dlq", "redrive"): ops.dlq_redrive,
        ("tokens", "report"): ops.tokens_report,
        ("audit", "query"): ops.audit_query,
        ("webhook", "test"): ops.webhook_test,
        ("webhook", "replay"): ops.webhook_replay,
    }
    action = getattr(args, f"{args.command}_command")
    return handlers[(args.command, action)](args)


if __name__ == "__main__":
    sys.exit(main())
