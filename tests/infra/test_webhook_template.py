"""The optional webhook, on the template as CloudFormation receives it (after SAM's transform).

SAM's translator runs offline; CloudFormation's conditions are then evaluated for the given
parameters, so a resource "exists" here exactly when CloudFormation would create it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from qfbridge.store.events import EVENT_TYPES
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template, resolve_stack
from qfbridge_local.webhooks import SAMPLE_DETAILS, sample_event, transform_input, webhook_rules

REPO = Path(__file__).resolve().parents[2]
ENVELOPE = json.loads((REPO / "docs/events/webhook/envelope.schema.json").read_text(encoding="utf-8"))
WEBHOOK_TYPES = {
    "AWS::Events::Connection",
    "AWS::Events::ApiDestination",
    "AWS::Events::Rule",
}
URL = "https://editeur.example.fr/qfbridge/events"
SECRET = "arn:aws:secretsmanager:eu-west-3:111122223333:secret:qfbridge/webhook-AbCdEf"


def _evaluate(node: Any, parameters: dict[str, str], conditions: dict[str, bool]) -> Any:
    if isinstance(node, dict) and len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref" and value in parameters:
            return parameters[value]
        if key == "Fn::Equals":
            left, right = (_evaluate(v, parameters, conditions) for v in value)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not _evaluate(value[0], parameters, conditions)
        if key == "Fn::And":
            return all(_evaluate(v, parameters, conditions) for v in value)
        if key == "Fn::Or":
            return any(_evaluate(v, parameters, conditions) for v in value)
        if key == "Condition":
            return conditions[value]
    return node


def deployed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources CloudFormation creates from SAM's translation, for these parameter values."""
    template = copy.deepcopy(load_template(DEFAULT_TEMPLATE))
    for resource in template["Resources"].values():  # the translator wants S3 code locations
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in props:
                props[key] = "s3://qfbridge-artifacts/code.zip"
    values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    values.update(parameters or {})
    session = boto3.session.Session(region_name="eu-west-3")  # no call is made: ARNs only
    translated = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session).translate(
        sam_template=template, parameter_values=dict(values)
    )
    conditions: dict[str, bool] = {}
    for name, expression in translated.get("Conditions", {}).items():
        conditions[name] = bool(_evaluate(expression, values, conditions))
    return {
        lid: r
        for lid, r in translated["Resources"].items()
        if "Condition" not in r or conditions[r["Condition"]]
    }


WITHOUT = deployed()
WITH = deployed({"WebhookUrl": URL, "WebhookCredentialsSecretArn": SECRET})


def _of_type(resources: dict[str, Any], rtype: str) -> dict[str, Any]:
    return {lid: r for lid, r in resources.items() if r["Type"] == rtype}


def test_nothing_of_the_webhook_exists_without_its_url() -> None:
    assert not [r for r in WITHOUT.values() if r["Type"] in WEBHOOK_TYPES]
    assert not [lid for lid in WITHOUT if lid.startswith("Webhook")]
    # and the webhook adds resources, it changes none of the others
    assert {lid: r for lid, r in WITH.items() if not lid.startswith("Webhook")} == WITHOUT


def test_with_a_url_a_connection_an_api_destination_and_a_rule_per_event_family_exist() -> None:
    (connection,) = _of_type(WITH, "AWS::Events::Connection").values()
    (destination_id, destination), *_ = _of_type(WITH, "AWS::Events::ApiDestination").items()
    assert len(_of_type(WITH, "AWS::Events::ApiDestination")) == 1
    assert connection["Properties"]["AuthorizationType"] == {"Ref": "WebhookAuthorization"}
    assert destination["Properties"]["InvocationEndpoint"] == {"Ref": "WebhookUrl"}
    assert destination["Properties"]["HttpMethod"] == "POST"

    rules = _of_type(WITH, "AWS::Events::Rule")
    families: dict[str, list[str]] = {}
    transformers = []
    for rule in rules.values():
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [destination_id, "Arn"]}
        assert rule["Properties"]["EventPattern"]["source"] == ["qfbridge"]
        types = rule["Properties"]["EventPattern"]["detail-type"]
        families.setdefault(types[0].split(".")[0], []).extend(types)
        transformers.append(target["InputTransformer"])
        # retried for a day, then the webhook DLQ
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    # one rule per family, every event type delivered exactly once, all through one envelope
    assert sorted(families) == ["dossier", "qf", "refresh", "tenant"]
    assert sorted(t for types in families.values() for t in types) == sorted(EVENT_TYPES)
    assert all(t == transformers[0] for t in transformers)


def test_the_api_key_comes_from_the_secret_and_oauth_is_the_alternative() -> None:
    (connection,) = _of_type(WITH, "AWS::Events::Connection").values()
    when_key, when_oauth = connection["Properties"]["AuthParameters"]["Fn::If"][1:]
    key_value = when_key["ApiKeyAuthParameters"]["ApiKeyValue"]["Fn::Sub"]
    assert key_value == "{{resolve:secretsmanager:${WebhookCredentialsSecretArn}:SecretString:api_key_value}}"
    client = when_oauth["OAuthParameters"]["ClientParameters"]
    assert "SecretString:client_secret}}" in client["ClientSecret"]["Fn::Sub"]


def test_the_webhook_dlq_accepts_only_the_webhook_rules_and_its_depth_is_alarmed() -> None:
    assert WITH["WebhookDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert WITH["WebhookDeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True
    (policy,) = _of_type(WITH, "AWS::SQS::QueuePolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    allowed = {arn["Fn::GetAtt"][0] for arn in statement["Condition"]["ArnEquals"]["aws:SourceArn"]}
    assert allowed == set(_of_type(WITH, "AWS::Events::Rule"))

    alarms = [
        a["Properties"]
        for a in _of_type(WITH, "AWS::CloudWatch::Alarm").values()
        if {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}}
        in a["Properties"]["Dimensions"]
    ]
    assert len(alarms) == 1
    assert alarms[0]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarms[0]["Threshold"] == 0 and alarms[0]["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms[0]["AlarmActions"] == [{"Ref": "AlertsTopic"}]


def test_the_rules_role_may_only_invoke_the_webhook_destination() -> None:
    role = WITH["WebhookInvokeRole"]["Properties"]
    (principal,) = [s["Principal"] for s in role["AssumeRolePolicyDocument"]["Statement"]]
    assert principal == {"Service": "events.amazonaws.com"}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["events:InvokeApiDestination"], {"Fn::GetAtt": ["WebhookDestination", "Arn"]})
    ]


@pytest.mark.parametrize("detail_type", EVENT_TYPES)
def test_the_rules_input_transformer_makes_an_envelope_valid_against_the_committed_schema(
    detail_type: str,
) -> None:
    stack = resolve_stack(endpoint="http://127.0.0.1:1", parameter_overrides={"WebhookUrl": URL})
    event = sample_event(detail_type)
    (rule,) = [r for r in webhook_rules(stack) if r.matches(event)]

    envelope = json.loads(rule.envelope_body(event))

    jsonschema.Draft202012Validator(ENVELOPE, format_checker=jsonschema.FormatChecker()).validate(envelope)
    assert envelope == {
        "id": event["id"],
        "type": detail_type,
        "time": event["time"],
        "tenant": SAMPLE_DETAILS[detail_type]["tenant_siret"],
        "data": SAMPLE_DETAILS[detail_type],
    }


def test_the_envelope_schema_refuses_data_of_another_type_and_unknown_fields() -> None:
    validator = jsonschema.Draft202012Validator(ENVELOPE)
    good = {
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "type": "qf.updated",
        "time": "2026-06-08T06:00:00Z",
        "tenant": SAMPLE_DETAILS["qf.updated"]["tenant_siret"],
        "data": SAMPLE_DETAILS["qf.updated"],
    }
    validator.validate(good)
    assert not validator.is_valid({**good, "data": SAMPLE_DETAILS["dossier.rejected"]})
    assert not validator.is_valid({**good, "extra": 1})
    assert not validator.is_valid({k: v for k, v in good.items() if k != "id"})


def test_the_transformer_quotes_strings_and_inserts_objects_as_eventbridge_does() -> None:
    event = {"id": 'a"b', "detail": {"n": 1, "s": "é"}}
    body = transform_input(
        {"id": "$.id", "d": "$.detail", "missing": "$.detail.nope"},
        '{"id": <id>, "d": <d>, "m": <missing>}',
        event,
    )
    assert json.loads(body) == {"id": 'a"b', "d": {"n": 1, "s": "é"}, "m": None}
    with pytest.raises(ValueError, match="inside JSON strings"):
        transform_input({"id": "$.id"}, '{"id": "x <id>"}', event)
