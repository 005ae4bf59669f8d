"""Read ``infra/template.yaml`` — the single source of truth of the AWS resources.

The laptop runtime provisions moto and wires triggers from what this module extracts, so that the
local stack is exactly the deployed one: a table, an index, a queue or a mapping exists locally
because the template declares it, with the template's keys, TTL, redrive policy and batch sizes.

Intrinsic functions are resolved against *local* physical names (``qfbridge-<stage>-<LogicalId>``)
for the subset the template uses: ``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::FindInMap``, ``Fn::Join``,
``Fn::If``/``Fn::Equals``/``Fn::Not``/``Fn::And``/``Fn::Or`` (conditions), ``AWS::*`` pseudo parameters.
A resource whose ``Condition`` is false is not part of the local stack, as on AWS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "infra" / "template.yaml"

LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_REGION = "eu-west-3"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short-form tags into their long form."""


def _construct_tag(loader: yaml.Loader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path | str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    global_secondary_indexes: list[dict[str, Any]]
    ttl_attribute: str | None
    billing_mode: str
    pitr: bool
    sse: bool


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    attributes: dict[str, str]
    dead_letter_logical_id: str | None
    max_receive_count: int | None


@dataclass(frozen=True)
class SqsMapping:
    function_logical_id: str
    queue_logical_id: str
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None
    batching_window_seconds: float


@dataclass(frozen=True)
class ScheduleSpec:
    function_logical_id: str
    name: str
    expression: str
    input: dict[str, Any]
    timezone: str = "UTC"
    maximum_retry_attempts: int = 185  # EventBridge Scheduler's defaults
    maximum_event_age_seconds: int = 86400
    enabled: bool = True


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory_size: int
    environment: dict[str, str]
    policies: list[Any]
    sqs_mappings: list[SqsMapping] = field(default_factory=list)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    api_events: list[dict[str, Any]] = field(default_factory=list)
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions
    async_maximum_retry_attempts: int = 2  # Lambda's asynchronous invocation (EventInvokeConfig)
    async_maximum_event_age_seconds: int = 21600

    @property
    def module_path(self) -> Path:
        module, _ = self.handler.rsplit(".", 1)
        return self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]


@dataclass(frozen=True)
class GatewayResponseSpec:
    """A customised API Gateway response (SAM ``GatewayResponses`` or ``AWS::ApiGateway::GatewayResponse``)."""

    response_type: str
    status_code: int | None
    headers: dict[str, str]
    templates: dict[str, str]


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    binary_media_types: tuple[str, ...] = ()
    gateway_responses: dict[str, GatewayResponseSpec] = field(default_factory=dict)

    def is_binary(self, media_type: str | None) -> bool:
        """Whether ``media_type`` matches one of the API's binary media types (``*/*`` wildcards)."""
        if not media_type:
            return False
        kind = media_type.split(";", 1)[0].strip().lower()
        for pattern in self.binary_media_types:
            p_main, _, p_sub = pattern.lower().partition("/")
            k_main, _, k_sub = kind.partition("/")
            if p_main in ("*", k_main) and p_sub in ("*", k_sub):
                return True
        return False


def _quoted(value: Any) -> str:
    """A response parameter's static value is a quoted string: ``'value'``."""
    text = str(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


@dataclass
class Stack:
    """The template resolved for one local stage."""

    template: dict[str, Any]
    stage: str
    parameters: dict[str, str]
    tables: dict[str, TableSpec]
    queues: dict[str, QueueSpec]
    functions: dict[str, FunctionSpec]
    buses: dict[str, str]
    secrets: dict[str, dict[str, Any]]
    log_groups: dict[str, dict[str, Any]]
    # Every resource the stage creates (its Condition true): type and resolved properties.
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    api: ApiSpec = field(default_factory=lambda: ApiSpec("none"))

    def table_name(self, logical_id: str) -> str:
        return self.tables[logical_id].name

    def queue_name(self, logical_id: str) -> str:
        return self.queues[logical_id].name


class _Resolver:
    def __init__(
        self,
        template: dict[str, Any],
        parameters: Mapping[str, str],
        names: Mapping[str, str],
        endpoint: str,
        region: str,
        account: str,
    ) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.names = names
        self.endpoint = endpoint
        self.region = region
        self.account = account
        self.conditions: dict[str, bool] = {}
        for cname, cexpr in (template.get("Conditions") or {}).items():
            self.conditions[cname] = bool(self.resolve(cexpr))

    def resource_type(self, logical_id: str) -> str:
        return str(self.template["Resources"][logical_id]["Type"])

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": f"qfbridge-{self.parameters.get('Stage', 'local')}",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.names:
            raise KeyError(f"Ref to unknown name {name!r}")
        rtype = self.resource_type(name)
        physical = self.names[name]
        if rtype == "AWS::SQS::Queue":
            return f"{self.endpoint}/{self.account}/{physical}"
        if rtype == "AWS::SecretsManager::Secret":
            return physical
        return physical

    def get_att(self, logical_id: str, attribute: str) -> Any:
        rtype = self.resource_type(logical_id)
        physical = self.names[logical_id]
        service = {
            "AWS::DynamoDB::Table": ("dynamodb", f"table/{physical}"),
            "AWS::SQS::Queue": ("sqs", physical),
            "AWS::Events::EventBus": ("events", f"event-bus/{physical}"),
            "AWS::Logs::LogGroup": ("logs", f"log-group:{physical}"),
            "AWS::KMS::Key": ("kms", f"key/{physical}"),
            "AWS::SNS::Topic": ("sns", physical),
            "AWS::Events::Rule": ("events", f"rule/{physical}"),
            "AWS::Events::ApiDestination": ("events", f"api-destination/{physical}"),
            "AWS::Events::Connection": ("events", f"connection/{physical}"),
        }.get(rtype, ("lambda", physical))
        arn = f"arn:aws:{service[0]}:{self.region}:{self.account}:{service[1]}"
        if attribute == "Arn":
            return arn
        if attribute == "QueueUrl":
            return f"{self.endpoint}/{self.account}/{physical}"
        if attribute in ("QueueName", "Name"):
            return physical
        raise KeyError(f"GetAtt {logical_id}.{attribute} is not supported locally")

    def sub(self, value: Any) -> str:
        if isinstance(value, list):
            text, variables = value[0], {k: self.resolve(v) for k, v in value[1].items()}
        else:
            text, variables = value, {}

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in variables:
                return str(variables[token])
            if "." in token and not token.startswith("AWS::"):
                logical, attr = token.split(".", 1)
                return str(self.get_att(logical, attr))
            return str(self.ref(token))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, value),) = node.items()
                if key == "Ref":
                    return self.ref(value)
                if key == "Fn::Sub":
                    return self.sub(value)
                if key == "Fn::GetAtt":
                    logical, attr = value if isinstance(value, list) else str(value).split(".", 1)
                    return self.get_att(logical, attr)
                if key == "Fn::FindInMap":
                    mapping, top, second = (self.resolve(v) for v in value)
                    return self.template["Mappings"][mapping][top][second]
                if key == "Fn::Join":
                    sep, items = value
                    return sep.join(str(self.resolve(i)) for i in items)
                if key == "Fn::Equals":
                    left, right = (self.resolve(v) for v in value)
                    return str(left) == str(right)
                if key == "Fn::Not":
                    return not self.resolve(value[0])
                if key == "Fn::And":
                    return all(self.resolve(v) for v in value)
                if key == "Fn::Or":
                    return any(self.resolve(v) for v in value)
                if key == "Condition":
                    return self.conditions[value]
                if key == "Fn::If":
                    cond, when_true, when_false = value
                    return self.resolve(when_true if self.conditions[cond] else when_false)
            return {k: self.resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        return node


def _parameter_values(template: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        values[name] = str(overrides.get(name, spec.get("Default", "")))
    unknown = set(overrides) - set(values)
    if unknown:
        raise KeyError(f"unknown template parameters: {sorted(unknown)}")
    return values


def local_physical_name(stage: str, logical_id: str, properties: Mapping[str, Any], resolver: Any) -> str:
    """The physical name CloudFormation would give; explicit names win, else ``qfbridge-<stage>-<id>``."""
    for key in ("TableName", "QueueName", "Name", "LogGroupName", "FunctionName"):
        if key in properties and resolver is not None:
            return str(resolver.resolve(properties[key]))
    return f"qfbridge-{stage}-{logical_id}"


def resolve_stack(
    *,
    endpoint: str,
    template_path: Path | str = DEFAULT_TEMPLATE,
    parameter_overrides: Mapping[str, str] | None = None,
    region: str = LOCAL_REGION,
    account: str = LOCAL_ACCOUNT_ID,
) -> Stack:
    """Resolve the template for a local stack whose AWS endpoint is ``endpoint``."""
    template = load_template(template_path)
    parameters = _parameter_values(template, parameter_overrides or {})
    stage = parameters.get("Stage", "dev")
    # Resources whose Condition is false do not exist in this stage (as CloudFormation skips them).
    conditions = _Resolver(template, parameters, {}, endpoint, region, account).conditions
    resources: dict[str, Any] = {
        lid: res
        for lid, res in template["Resources"].items()
        if "Condition" not in res or conditions[res["Condition"]]
    }

    # Names first (explicit names may use parameters only), then everything else.
    bootstrap = _Resolver(template, parameters, {}, endpoint, region, account)
    names = {
        lid: local_physical_name(stage, lid, res.get("Properties") or {}, bootstrap)
        for lid, res in resources.items()
    }
    resolver = _Resolver(template, parameters, names, endpoint, region, account)

    tables: dict[str, TableSpec] = {}
    queues: dict[str, QueueSpec] = {}
    functions: dict[str, FunctionSpec] = {}
    buses: dict[str, str] = {}
    secrets: dict[str, dict[str, Any]] = {}
    log_groups: dict[str, dict[str, Any]] = {}
    api: ApiSpec | None = None
    standalone_responses: dict[str, GatewayResponseSpec] = {}
    globals_fn = resolver.resolve((template.get("Globals") or {}).get("Function") or {})

    resolved: dict[str, dict[str, Any]] = {}
    for lid, res in resources.items():
        rtype = res["Type"]
        props = resolver.resolve(res.get("Properties") or {})
        resolved[lid] = {"Type": rtype, "Properties": props}
        if rtype == "AWS::DynamoDB::Table":
            ttl = props.get("TimeToLiveSpecification") or {}
            tables[lid] = TableSpec(
                logical_id=lid,
                name=names[lid],
                key_schema=props["KeySchema"],
                attribute_definitions=props["AttributeDefinitions"],
                global_secondary_indexes=props.get("GlobalSecondaryIndexes") or [],
                ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
                billing_mode=props.get("BillingMode", "PROVISIONED"),
                pitr=bool(
                    (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")
                ),
                sse=bool((props.get("SSESpecification") or {}).get("SSEEnabled")),
            )
        elif rtype == "AWS::SQS::Queue":
            attributes = {
                key: str(props[key])
                for key in (
                    "VisibilityTimeout",
                    "MessageRetentionPeriod",
                    "DelaySeconds",
                    "ReceiveMessageWaitTimeSeconds",
                    "SqsManagedSseEnabled",
                )
                if key in props
            }
            raw_redrive = (res.get("Properties") or {}).get("RedrivePolicy")
            dlq_lid = None
            max_receive = None
            if raw_redrive:
                target = raw_redrive["deadLetterTargetArn"]
                dlq_lid = target["Fn::GetAtt"][0]
                max_receive = int(props["RedrivePolicy"]["maxReceiveCount"])
            queues[lid] = QueueSpec(lid, names[lid], attributes, dlq_lid, max_receive)
        elif rtype == "AWS::Events::EventBus":
            buses[lid] = names[lid]
        elif rtype == "AWS::Serverless::Api" and api is None:
            responses = {}
            for rtype_name, response in (props.get("GatewayResponses") or {}).items():
                params = response.get("ResponseParameters") or {}
                responses[rtype_name] = GatewayResponseSpec(
                    response_type=rtype_name,
                    status_code=int(response["StatusCode"]) if "StatusCode" in response else None,
                    headers={k: _quoted(v) for k, v in (params.get("Headers") or {}).items()},
                    templates=dict(response.get("ResponseTemplates") or {}),
                )
            api = ApiSpec(
                logical_id=lid,
                binary_media_types=tuple(
                    str(t).replace("~1", "/") for t in (props.get("BinaryMediaTypes") or [])
                ),
                gateway_responses=responses,
            )
        elif rtype == "AWS::ApiGateway::GatewayResponse":
            params = props.get("ResponseParameters") or {}
            standalone_responses[props["ResponseType"]] = GatewayResponseSpec(
                response_type=props["ResponseType"],
                status_code=int(props["StatusCode"]) if "StatusCode" in props else None,
                headers={
                    k.removeprefix("gatewayresponse.header."): _quoted(v)
                    for k, v in params.items()
                    if k.startswith("gatewayresponse.header.")
                },
                templates=dict(props.get("ResponseTemplates") or {}),
            )
        elif rtype == "AWS::SecretsManager::Secret":
            secrets[lid] = {"name": names[lid], **props}
        elif rtype == "AWS::Logs::LogGroup":
            log_groups[lid] = {"name": names[lid], **props}
        elif rtype == "AWS::Serverless::Function":
            merged_env = dict((globals_fn.get("Environment") or {}).get("Variables") or {})
            merged_env.update((props.get("Environment") or {}).get("Variables") or {})
            spec = FunctionSpec(
                logical_id=lid,
                code_uri=(Path(template_path).resolve().parent / props["CodeUri"]).resolve(),
                handler=props["Handler"],
                timeout=int(props.get("Timeout", globals_fn.get("Timeout", 3))),
                memory_size=int(props.get("MemorySize", globals_fn.get("MemorySize", 128))),
                environment={k: str(v) for k, v in merged_env.items() if v is not None},
                policies=props.get("Policies") or [],
                reserved_concurrency=(
                    int(props["ReservedConcurrentExecutions"])
                    if props.get("ReservedConcurrentExecutions") is not None
                    else None
                ),
                async_maximum_retry_attempts=int(
                    (props.get("EventInvokeConfig") or {}).get("MaximumRetryAttempts", 2)
                ),
                async_maximum_event_age_seconds=int(
                    (props.get("EventInvokeConfig") or {}).get("MaximumEventAgeInSeconds", 21600)
                ),
            )
            raw_events = (res.get("Properties") or {}).get("Events") or {}
            for ename, event in (props.get("Events") or {}).items():
                eprops = event.get("Properties") or {}
                if event["Type"] == "SQS":
                    queue_lid = raw_events[ename]["Properties"]["Queue"]["Fn::GetAtt"][0]
                    spec.sqs_mappings.append(
                        SqsMapping(
                            function_logical_id=lid,
                            queue_logical_id=queue_lid,
                            batch_size=int(eprops.get("BatchSize", 10)),
                            report_batch_item_failures="ReportBatchItemFailures"
                            in (eprops.get("FunctionResponseTypes") or []),
                            maximum_concurrency=(
                                int(eprops["ScalingConfig"]["MaximumConcurrency"])
                                if "ScalingConfig" in eprops
                                else None
                            ),
                            batching_window_seconds=int(eprops.get("MaximumBatchingWindowInSeconds", 0)),
                        )
                    )
                elif event["Type"] in ("Schedule", "ScheduleV2"):
                    spec.schedules.append(
                        ScheduleSpec(
                            function_logical_id=lid,
                            name=ename,
                            expression=str(eprops["ScheduleExpression"]),
                            input=json.loads(eprops.get("Input") or "{}"),
                            timezone=str(eprops.get("ScheduleExpressionTimezone") or "UTC"),
                            maximum_retry_attempts=int(
                                (eprops.get("RetryPolicy") or {}).get("MaximumRetryAttempts", 185)
                            ),
                            maximum_event_age_seconds=int(
                                (eprops.get("RetryPolicy") or {}).get("MaximumEventAgeInSeconds", 86400)
                            ),
                            enabled=str(eprops.get("State", "ENABLED")).upper() != "DISABLED",
                        )
                    )
                elif event["Type"] == "Api":
                    spec.api_events.append(eprops)
            functions[lid] = spec

    return Stack(
        template=template,
        stage=stage,
        parameters=parameters,
        tables=tables,
        queues=queues,
        functions=functions,
        buses=buses,
        secrets=secrets,
        log_groups=log_groups,
        resources=resolved,
        api=ApiSpec(
            logical_id=api.logical_id if api else "none",
            binary_media_types=api.binary_media_types if api else (),
            gateway_responses={**(api.gateway_responses if api else {}), **standalone_responses},
        ),
    )
