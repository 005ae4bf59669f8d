"""What cfn-lint cannot check: handlers resolve, partial batch failures, DLQs, timeouts, IAM scope."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(DEFAULT_TEMPLATE)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {lid: r for lid, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
QUEUES = {lid: r for lid, r in RESOURCES.items() if r["Type"] == "AWS::SQS::Queue"}
TABLES = {lid: r for lid, r in RESOURCES.items() if r["Type"] == "AWS::DynamoDB::Table"}
DATA_SERVICES = ("dynamodb", "sqs", "secretsmanager", "events", "logs", "s3", "kms")
# Actions without an IAM resource type: "*" is the only valid resource, and they reach no data by
# themselves (BatchGetSecretValue returns only the secrets GetSecretValue allows on each; X-Ray's
# put actions write traces only).
RESOURCELESS_ACTIONS = {
    "secretsmanager:BatchGetSecretValue",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}


def _param_default(value: Any) -> Any:
    if isinstance(value, dict) and "Ref" in value:
        return TEMPLATE["Parameters"][value["Ref"]]["Default"]
    return value


def _timeout(function: dict[str, Any]) -> int:
    return int(function["Properties"].get("Timeout", TEMPLATE["Globals"]["Function"]["Timeout"]))


def test_the_six_functions_of_the_architecture_are_declared() -> None:
    code_uris = sorted(Path(f["Properties"]["CodeUri"]).name for f in FUNCTIONS.values())
    assert code_uris == ["api", "hubee_poll", "qf_refresh", "reconcile", "refresh_dispatch", "token_watch"]


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_function_handler_resolves_to_a_callable(
    logical_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    props = FUNCTIONS[logical_id]["Properties"]
    code_dir = (DEFAULT_TEMPLATE.parent / props["CodeUri"]).resolve()
    module_name, attribute = props["Handler"].rsplit(".", 1)
    path = code_dir / f"{module_name}.py"
    assert path.is_file(), f"{logical_id}: {path} missing"
    # Import exactly as Lambda does: the code directory on sys.path, the layer's package importable.
    monkeypatch.syspath_prepend(str(code_dir))
    spec = importlib.util.spec_from_file_location(f"handler_check_{logical_id}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert callable(getattr(module, attribute))


def test_every_sqs_event_source_reports_batch_item_failures() -> None:
    sources = [
        (lid, event)
        for lid, f in FUNCTIONS.items()
        for event in (f["Properties"].get("Events") or {}).values()
        if event["Type"] == "SQS"
    ]
    assert len(sources) == 2
    for lid, event in sources:
        assert "ReportBatchItemFailures" in event["Properties"].get("FunctionResponseTypes", []), lid


def test_the_refresh_mapping_bounds_its_concurrency() -> None:
    event = FUNCTIONS["QfRefreshFunction"]["Properties"]["Events"]["Refresh"]
    assert int(_param_default(event["Properties"]["ScalingConfig"]["MaximumConcurrency"])) >= 2


def test_every_consumed_queue_has_a_dlq_and_a_visibility_of_six_times_its_consumer_timeout() -> None:
    consumers = {}
    for f in FUNCTIONS.values():
        for event in (f["Properties"].get("Events") or {}).values():
            if event["Type"] == "SQS":
                consumers[event["Properties"]["Queue"]["Fn::GetAtt"][0]] = _timeout(f)
    assert set(consumers) == {"DossiersQueue", "RefreshQueue"}
    for queue_id, timeout in consumers.items():
        props = QUEUES[queue_id]["Properties"]
        dlq = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert QUEUES[dlq]["Type"] == "AWS::SQS::Queue"
        assert int(_param_default(props["RedrivePolicy"]["maxReceiveCount"])) >= 2
        assert int(props["VisibilityTimeout"]) >= 6 * timeout, queue_id


def test_every_queue_is_encrypted() -> None:
    for lid, queue in QUEUES.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, lid


def test_every_dlq_depth_and_every_function_has_an_alarm() -> None:
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched_queues = {
        d["Value"]["Fn::GetAtt"][0] for a in alarms for d in a["Dimensions"] if d["Name"] == "QueueName"
    }
    watched_functions = {
        d["Value"]["Ref"] for a in alarms for d in a["Dimensions"] if d["Name"] == "FunctionName"
    }
    assert watched_queues == {"DossiersDeadLetterQueue", "RefreshDeadLetterQueue", "WebhookDeadLetterQueue"}
    assert watched_functions == set(FUNCTIONS)


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the function's own role (SAM's Policies would bring managed policies)."""
    assert "Policies" not in function["Properties"], "the function's role is written out, not generated"
    role = RESOURCES[function["Properties"]["Role"]["Fn::GetAtt"][0]]
    assert role["Type"] == "AWS::IAM::Role" and "ManagedPolicyArns" not in role["Properties"]
    statements = []
    for policy in role["Properties"]["Policies"]:
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_policy_grants_full_access_or_wildcard_actions_on_data(logical_id: str) -> None:
    for statement in _statements(FUNCTIONS[logical_id]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            service, verb = action.split(":", 1)
            assert "*" not in verb, f"{logical_id}: wildcard action {action}"
            assert service in DATA_SERVICES or service in ("xray", "cloudwatch"), action
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if "*" in resources:
            assert set(actions) <= RESOURCELESS_ACTIONS, (
                f"{logical_id}: {statement.get('Sid')} on every resource"
            )


def test_tables_have_point_in_time_recovery_encryption_and_on_demand_billing() -> None:
    assert TABLES
    for lid, table in TABLES.items():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, lid
        assert props["SSESpecification"]["SSEEnabled"] is True, lid
        assert props["BillingMode"] == "PAY_PER_REQUEST", lid


def test_expiring_records_have_a_ttl() -> None:
    assert TABLES["DossiersTable"]["Properties"]["TimeToLiveSpecification"]["Enabled"] is True
    assert TABLES["FormLinksTable"]["Properties"]["TimeToLiveSpecification"]["Enabled"] is True


def test_globals_pin_the_runtime_architecture_and_json_logs() -> None:
    globals_fn = TEMPLATE["Globals"]["Function"]
    assert globals_fn["Runtime"] == "python3.13"
    assert globals_fn["Architectures"] == ["arm64"]
    assert globals_fn["LoggingConfig"]["LogFormat"] == "JSON"
    assert globals_fn["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "qfbridge"


def test_the_api_uses_iam_authorization() -> None:
    api = RESOURCES["EditorApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"


def test_schedules_poll_and_dispatch_every_n_minutes_and_watch_tokens_daily() -> None:
    for function, event in (("HubeePollFunction", "Poll"), ("RefreshDispatchFunction", "Dispatch")):
        schedule = FUNCTIONS[function]["Properties"]["Events"][event]
        assert schedule["Type"] == "ScheduleV2"
        assert schedule["Properties"]["ScheduleExpression"] == {
            "Fn::Sub": "rate(${PollIntervalMinutes} minutes)"
        }
    watch = FUNCTIONS["TokenWatchFunction"]["Properties"]["Events"]["Daily"]
    assert watch["Type"] == "ScheduleV2" and watch["Properties"]["ScheduleExpression"].startswith("cron(")


def test_environment_parameters_are_constrained() -> None:
    params = TEMPLATE["Parameters"]
    assert params["HubeeEnvironment"]["AllowedValues"] == ["bas", "prod"]
    assert params["ApiParticulierEnvironment"]["AllowedValues"] == ["staging", "prod"]
    assert set(params["Stage"]["AllowedValues"]) == {"dev", "staging", "prod"}


LAYER = REPO / "layers/core"
LOCK_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+) \\\n"
    r"(?:[ ]+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+",
    flags=re.M,
)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    """name → version of every package the layer's lock pins (each with its hashes)."""
    text = (LAYER / "requirements.txt").read_text()
    return {_normalise(m["name"]): m["version"] for m in LOCK_ENTRY.finditer(text)}


def _direct() -> dict[str, str]:
    """name → requirement line of the layer's direct dependencies (requirements.in)."""
    return {
        _normalise(re.split(r"[=<>\[]", line.strip())[0]): line.strip()
        for line in (LAYER / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_the_layer_lock_pins_every_package_with_its_hashes() -> None:
    text = (LAYER / "requirements.txt").read_text()
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#", "-"))]
    lock = _lock()
    # every requirement line of the file is an exact pin followed by its hashes (pip then installs
    # in hash-checking mode: nothing unpinned, nothing altered, two builds install the same files)
    assert len(requirement_lines) == len(lock) > len(_direct())
    assert not [line for line in text.splitlines() if line.startswith("-") and "--hash" not in line]


def test_the_lock_agrees_with_the_layer_inputs_and_the_project() -> None:
    import tomllib

    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {_normalise(re.split(r"[=<>\[]", dep)[0]): dep for dep in project}
    for name, requirement in _direct().items():
        assert requirement.endswith(f"=={lock[name]}"), f"{name}: {requirement} vs lock {lock[name]}"
        assert pinned.get(name) == requirement, f"{name}: layer {requirement} vs project {pinned.get(name)}"


def test_boto3_and_botocore_ship_together_at_matching_versions() -> None:
    # A layer's botocore shadows the runtime's: alone, it would pair with the runtime's boto3.
    lock = _lock()
    assert ("boto3" in lock) == ("botocore" in lock)
    if "boto3" in lock:
        assert lock["boto3"] == lock["botocore"]
        assert "s3transfer" in lock and "jmespath" in lock


def test_tzdata_ships_when_the_code_needs_a_named_time_zone() -> None:
    uses_zoneinfo = any(
        "ZoneInfo(" in path.read_text(encoding="utf-8") for path in (LAYER / "qfbridge").rglob("*.py")
    )
    assert not uses_zoneinfo or "tzdata" in _lock()


def test_the_longest_refresh_delay_is_one_sqs_accepts() -> None:
    # SQS refuses a visibility that would end more than 12 h after the receipt; the delay is asked
    # at most the function's timeout (plus any batching window) after it.
    from qfbridge.services.refresh import MAX_VISIBILITY_SECONDS, backoff_seconds, whole_seconds

    event = FUNCTIONS["QfRefreshFunction"]["Properties"]["Events"]["Refresh"]["Properties"]
    held = _timeout(FUNCTIONS["QfRefreshFunction"]) + int(event.get("MaximumBatchingWindowInSeconds", 0))
    longest = max(backoff_seconds(50, 3600), whole_seconds(10**9))
    assert longest == MAX_VISIBILITY_SECONDS
    assert longest + held <= 43_200


def test_the_bench_records_what_the_build_installed_against_the_lock(tmp_path: Path) -> None:
    from bench.package_size import locked_versions, pinning

    layer = tmp_path / "CoreLayer" / "python"
    for name, version in locked_versions().items():
        (layer / f"{name.replace('-', '_')}-{version}.dist-info").mkdir(parents=True)
    assert pinning(tmp_path / "CoreLayer")["matches_lock"] is True
    (layer / "botocore-1.0.0.dist-info").mkdir()
    (layer / "stray-1.0.dist-info").mkdir()
    report = pinning(tmp_path / "CoreLayer")
    assert report["matches_lock"] is False and report["not_in_lock"] == ["stray"]
