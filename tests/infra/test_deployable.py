"""The template as CloudFormation receives it: translated by SAM's own translator, offline.

`sam validate --lint` passes templates that break only on AWS; these tests read the resources SAM
generates (roles, stages, schedules, mappings, invoke configs) as `sam deploy` would create them.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-3"
PARAMETERS = {"AlarmEmail": "alertes@editeur.fr"}
# SAM looks named managed policies up in this map; the template names none, so a lookup is a defect.
MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{name}"
    for name in ("AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess", "AWSLambdaSQSQueueExecutionRole")
}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` then the AWS::Serverless transform make of the template."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):  # sam package uploads the directory
                props[key] = f"s3://artifacts/{Path(props[key]).name}"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    translated: dict[str, Any] = translator.translate(
        template, parameter_values=dict(PARAMETERS), get_managed_policy_map=lambda: MANAGED_POLICIES
    )
    return translated


@cache
def cfn() -> dict[str, Any]:
    return translate(load_template(DEFAULT_TEMPLATE))


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in cfn()["Resources"].items() if r["Type"] == kind}


def ref(value: Any) -> str:
    """The logical id a Ref or GetAtt points at."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    raise AssertionError(f"not a reference: {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(role_id: str) -> list[dict[str, Any]]:
    role = cfn()["Resources"][role_id]
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def grants(role_id: str, service: str) -> list[tuple[str, Any]]:
    return [
        (action, resource)
        for s in role_statements(role_id)
        for action in as_list(s["Action"])
        if action.startswith(f"{service}:")
        for resource in as_list(s["Resource"])
    ]


FUNCTIONS = resources("AWS::Lambda::Function")
MAPPINGS = resources("AWS::Lambda::EventSourceMapping")
SCHEDULES = resources("AWS::Scheduler::Schedule")


def function_role(function_id: str) -> str:
    return ref(FUNCTIONS[function_id]["Properties"]["Role"])


def log_group_arn_names(resource: Any) -> str | None:
    """The log group a `arn:...:log-group:${Group}:*` resource names (its logical id), if any."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"] if isinstance(resource["Fn::Sub"], str) else resource["Fn::Sub"][0]
        match = re.fullmatch(r".*:log-group:\$\{(\w+)\}:\*", text) or re.fullmatch(
            r"\$\{(\w+)\.Arn\}:\*", text
        )
        return match.group(1) if match else None
    return None


# ---------------------------------------------------------------------------------- IAM


def test_the_translation_yields_the_six_functions() -> None:
    assert len(FUNCTIONS) == 6


def test_no_role_carries_an_aws_managed_policy() -> None:
    roles = resources("AWS::IAM::Role")
    assert roles
    for lid, role in roles.items():
        assert not role["Properties"].get("ManagedPolicyArns"), lid
    assert "arn:aws:iam::aws:policy" not in json.dumps(cfn())
    assert ":iam::aws:policy" not in json.dumps(cfn())


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_each_function_runs_under_its_own_declared_role(function_id: str) -> None:
    role = function_role(function_id)
    assert role in load_template(DEFAULT_TEMPLATE)["Resources"], "a role SAM generated"
    others = [f for f in FUNCTIONS if f != function_id and function_role(f) == role]
    assert not others, f"{function_id} shares its role with {others}"


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_each_function_logs_to_its_own_log_group_with_a_retention_and_a_customer_key(
    function_id: str,
) -> None:
    props = FUNCTIONS[function_id]["Properties"]
    group_id = ref(props["LoggingConfig"]["LogGroup"])
    group = cfn()["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "FunctionLogRetentionDays"}
    key = cfn()["Resources"][ref(group["Properties"]["KmsKeyId"])]
    assert key["Type"] == "AWS::KMS::Key"
    owners = [
        f for f, fn in FUNCTIONS.items() if ref(fn["Properties"]["LoggingConfig"]["LogGroup"]) == group_id
    ]
    assert owners == [function_id]
    # Logs go to the declared groups only: its own, and the audit trail for the functions that audit.
    # A retried audit write may look its record up first: FilterLogEvents, on the audit trail only.
    for action, resource in grants(function_role(function_id), "logs"):
        audit = log_group_arn_names(resource) == "AuditLogGroup"
        allowed = ("logs:CreateLogStream", "logs:PutLogEvents") + (("logs:FilterLogEvents",) if audit else ())
        assert action in allowed, action
        assert log_group_arn_names(resource) in (group_id, "AuditLogGroup"), resource
    own = {a for a, r in grants(function_role(function_id), "logs") if log_group_arn_names(r) == group_id}
    assert own == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_the_retention_parameter_is_a_valid_cloudwatch_retention() -> None:
    valid = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557}
    params = load_template(DEFAULT_TEMPLATE)["Parameters"]
    for name in ("FunctionLogRetentionDays", "ApiAccessLogRetentionDays"):
        assert set(params[name]["AllowedValues"]) <= valid and params[name]["Default"] in valid


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_each_traced_function_may_put_traces_and_nothing_else_of_xray(function_id: str) -> None:
    assert FUNCTIONS[function_id]["Properties"]["TracingConfig"]["Mode"] == "Active"
    xray = {action for action, _ in grants(function_role(function_id), "xray")}
    assert xray == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_a_function_receives_only_from_its_own_queue(function_id: str) -> None:
    own = {
        ref(m["Properties"]["EventSourceArn"])
        for m in MAPPINGS.values()
        if ref(m["Properties"]["FunctionName"]) == function_id
    }
    consumed = {
        ref(resource)
        for action, resource in grants(function_role(function_id), "sqs")
        if action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    }
    assert consumed == own
    for action, resource in grants(function_role(function_id), "sqs"):
        assert resource != "*" and "*" not in action, (action, resource)


def test_grants_nothing_uses_are_gone() -> None:
    api = grants(function_role("ApiFunction"), "dynamodb") + grants(
        function_role("ApiFunction"), "secretsmanager"
    )
    assert not grants(function_role("ApiFunction"), "events")
    assert not [a for a, _ in api if a in ("secretsmanager:DescribeSecret", "dynamodb:ConditionCheckItem")]
    assert {ref(r) for a, r in api if a == "dynamodb:DeleteItem"} == {"FormLinksTable"}
    poll = grants(function_role("HubeePollFunction"), "dynamodb")
    assert ("dynamodb:GetItem", {"Fn::GetAtt": ["TenantsTable", "Arn"]}) not in poll
    assert not [r for a, r in poll if "FamiliesTable" in json.dumps(r)]


# ---------------------------------------------------------------------------------- schedules


def test_every_schedule_is_named_with_the_stage() -> None:
    assert len(SCHEDULES) == 3
    names = []
    for lid, schedule in SCHEDULES.items():
        name = schedule["Properties"]["Name"]
        assert isinstance(name, dict) and "${Stage}" in name["Fn::Sub"], lid
        names.append(name["Fn::Sub"])
    assert len(set(names)) == len(names)


def test_every_scheduled_function_is_invoked_once_per_tick() -> None:
    configs = {
        ref(c["Properties"]["FunctionName"]): c["Properties"]
        for c in resources("AWS::Lambda::EventInvokeConfig").values()
    }
    for lid, schedule in SCHEDULES.items():
        target = schedule["Properties"]["Target"]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0, lid
        function = ref(target["Arn"])
        assert configs[function]["MaximumRetryAttempts"] == 0, function
        # a throttled tick (the previous one still running) is dropped, not queued for hours
        assert configs[function]["MaximumEventAgeInSeconds"] <= 3600, function
        reserved = FUNCTIONS[function]["Properties"]["ReservedConcurrentExecutions"]
        assert reserved == {"Fn::If": ["ReservesConcurrency", 1, {"Ref": "AWS::NoValue"}]}, function


def test_the_refresh_dispatch_has_its_own_schedule_and_function() -> None:
    targets = {ref(s["Properties"]["Target"]["Arn"]): s["Properties"] for s in SCHEDULES.values()}
    assert set(targets) == {"HubeePollFunction", "RefreshDispatchFunction", "TokenWatchFunction"}
    assert json.loads(targets["RefreshDispatchFunction"]["Target"]["Input"]) == {"task": "refresh_dispatch"}
    poll_env = FUNCTIONS["HubeePollFunction"]["Properties"]["Environment"]["Variables"]
    assert "REFRESH_QUEUE_URL" not in poll_env
    dispatch_queues = {ref(r) for a, r in grants(function_role("RefreshDispatchFunction"), "sqs")}
    assert dispatch_queues == {"RefreshQueue"}


# ---------------------------------------------------------------------------------- alarms, retention


def test_alarms_reach_a_topic_cloudwatch_may_publish_to() -> None:
    topic = cfn()["Resources"]["AlertsTopic"]["Properties"]
    if "KmsMasterKeyId" in topic:
        key_id = ref(topic["KmsMasterKeyId"])  # a key of the stack, never the alias/aws/sns AWS-managed key
        policy = cfn()["Resources"][key_id]["Properties"]["KeyPolicy"]
        allowed = {
            action
            for s in policy["Statement"]
            if s["Effect"] == "Allow" and s["Principal"].get("Service") == "cloudwatch.amazonaws.com"
            for action in as_list(s["Action"])
        }
        assert "kms:Decrypt" in allowed and ({"kms:GenerateDataKey*", "kms:GenerateDataKey"} & allowed)
    for lid, alarm in resources("AWS::CloudWatch::Alarm").items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlertsTopic"}], lid
    subscription = cfn()["Resources"]["AlertsEmailSubscription"]
    assert "Condition" not in subscription and subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert "Default" not in load_template(DEFAULT_TEMPLATE)["Parameters"]["AlarmEmail"]


@pytest.mark.parametrize(
    "logical_id",
    [
        "AuditLogKey",
        "AuditLogGroup",
        "LinkSigningKeySecret",
        "TenantsTable",
        "FamiliesTable",
        "DossiersTable",
        "FormLinksTable",
    ],
)
def test_data_outlives_the_stack_with_what_reads_it(logical_id: str) -> None:
    resource = cfn()["Resources"][logical_id]
    assert resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain"


def test_the_audit_trail_is_encrypted_with_the_retained_key() -> None:
    group = cfn()["Resources"]["AuditLogGroup"]["Properties"]
    assert ref(group["KmsKeyId"]) == "AuditLogKey" and group["RetentionInDays"] == 1096


# ---------------------------------------------------------------------------------- API Gateway


def test_the_api_has_one_stage_named_after_the_stage_parameter() -> None:
    stages = resources("AWS::ApiGateway::Stage")
    assert [s["Properties"]["StageName"] for s in stages.values()] == [{"Ref": "Stage"}]
    for lid, deployment in resources("AWS::ApiGateway::Deployment").items():
        assert "StageName" not in deployment["Properties"], f"{lid} creates a stray stage"


def test_the_qr_code_is_binary_for_ordinary_clients() -> None:
    (api,) = resources("AWS::ApiGateway::RestApi").values()
    types = set(api["Properties"]["BinaryMediaTypes"])
    assert {"image~1png", "image~1*", "*~1*"} <= types  # image/png, a browser's image/*, httpx's */*


@pytest.mark.parametrize(
    ("response_type", "status"),
    [
        ("ACCESS_DENIED", 403),
        ("MISSING_AUTHENTICATION_TOKEN", 403),
        ("INVALID_SIGNATURE", 403),
        ("REQUEST_TOO_LARGE", 413),
        ("THROTTLED", 429),
        ("INTEGRATION_TIMEOUT", 504),
    ],
)
def test_gateway_responses_are_problem_json(response_type: str, status: int) -> None:
    (api,) = resources("AWS::ApiGateway::RestApi").values()
    response = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"][response_type]
    assert int(response["statusCode"]) == status
    assert (
        response["responseParameters"]["gatewayresponse.header.Content-Type"] == "'application/problem+json'"
    )
    body = response["responseTemplates"]["application/json"].replace(
        "$context.error.messageString", json.dumps("User is not authorized")
    )
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"].startswith("urn:qfbridge:problem:")
    assert {"title", "code", "detail"} <= set(problem)


def test_api_access_logs_go_to_a_declared_log_group() -> None:
    (stage,) = resources("AWS::ApiGateway::Stage").values()
    setting = stage["Properties"]["AccessLogSetting"]
    destination = setting["DestinationArn"]["Fn::Sub"]
    match = re.fullmatch(
        r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}:log-group:\$\{(\w+)\}",
        destination,
    )
    assert match, destination  # API Gateway wants the group's ARN without the ":*" GetAtt gives
    group = cfn()["Resources"][match.group(1)]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "ApiAccessLogRetentionDays"} and "KmsKeyId" in group
    fields = json.loads(setting["Format"])
    assert {"requestId", "userArn", "status", "errorType"} <= set(fields)  # an IAM 403 is traceable
    # API Gateway writes logs through the account's CloudWatch role: set before the stage exists.
    account = resources("AWS::ApiGateway::Account")
    assert len(account) == 1
    assert "ApiGatewayAccount" in as_list(cfn()["Resources"]["EditorApi"].get("DependsOn", []))


# ---------------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize(
    ("function_id", "parameter"),
    [
        ("ReconcileFunction", "ReconcileMaximumConcurrency"),
        ("QfRefreshFunction", "RefreshMaximumConcurrency"),
    ],
)
def test_queue_consumers_are_bounded_by_a_parameter(function_id: str, parameter: str) -> None:
    (mapping,) = [m for m in MAPPINGS.values() if ref(m["Properties"]["FunctionName"]) == function_id]
    assert mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": parameter}
    # reserved as much as the mapping may run: a bound for every caller, and no throttled batch
    reserved = FUNCTIONS[function_id]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": ["ReservesConcurrency", {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
    assert load_template(DEFAULT_TEMPLATE)["Parameters"][parameter]["MinValue"] >= 2


def test_every_function_has_a_concurrency_bound() -> None:
    for lid, function in FUNCTIONS.items():
        assert "ReservedConcurrentExecutions" in function["Properties"], lid
    api = FUNCTIONS["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert api["Fn::If"][1] == {"Ref": "ApiReservedConcurrency"}


def test_translating_the_old_shape_would_be_caught() -> None:
    # The checks above read what SAM generates: a function left to SAM's role would get managed policies.
    template = load_template(DEFAULT_TEMPLATE)
    props = template["Resources"]["TokenWatchFunction"]["Properties"]
    del props["Role"]
    translated = translate(template)
    generated = translated["Resources"]["TokenWatchFunctionRole"]["Properties"]
    assert any("AWSLambdaBasicExecutionRole" in json.dumps(arn) for arn in generated["ManagedPolicyArns"])


# ---------------------------------------------------------------------------------- samconfig


SAMCONFIG = tomllib.loads((REPO / "samconfig.toml").read_text())


@pytest.mark.parametrize("env", ["dev", "staging", "prod", "default"])
def test_every_environment_deploys_the_built_template_to_paris(env: str) -> None:
    config = SAMCONFIG[env]
    assert config["global"]["parameters"]["region"] == "eu-west-3"
    assert config["build"]["parameters"]["template_file"] == "infra/template.yaml"
    deploy = config["deploy"]["parameters"]
    assert deploy["template_file"] == ".aws-sam/build/template.yaml"  # the layer with its dependencies
    overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"].split())
    stage = overrides["Stage"]
    assert deploy["stack_name"] == f"qfbridge-{stage}"
    assert env in (stage, "default")
    # a placeholder CloudFormation refuses until the environment's alarm address replaces it
    pattern = load_template(DEFAULT_TEMPLATE)["Parameters"]["AlarmEmail"]["AllowedPattern"]
    assert re.fullmatch(pattern, "alertes@editeur.fr")
    assert "AlarmEmail" in overrides and not re.fullmatch(pattern, overrides["AlarmEmail"])
    assert set(overrides) <= set(load_template(DEFAULT_TEMPLATE)["Parameters"])


# ---------------------------------------------------------------------------------- runbook

OPERATIONS = (REPO / "docs/operations.md").read_text(encoding="utf-8")


def test_the_runbook_imports_every_retained_resource() -> None:
    retained = {
        lid
        for lid, r in load_template(DEFAULT_TEMPLATE)["Resources"].items()
        if r.get("DeletionPolicy") == "Retain"
    }
    block = re.search(r"```json\n\s*(\[.*?\])\n\s*```", OPERATIONS, flags=re.S)
    assert block, "the import list of the delete/re-create runbook"
    entries = json.loads(block.group(1))
    assert {e["LogicalResourceId"] for e in entries} == retained
    types = {lid: r["Type"] for lid, r in load_template(DEFAULT_TEMPLATE)["Resources"].items()}
    assert all(types[e["LogicalResourceId"]] == e["ResourceType"] for e in entries)


def test_the_first_deploy_checklist_covers_region_alarm_address_and_secrets() -> None:
    section = OPERATIONS.split("## First deploy", 1)[1].split("\n## ", 1)[0]
    for needed in ("eu-west-3", "AlarmEmail", "confirm the subscription", "link-signing", "credentials"):
        assert needed in section, needed
