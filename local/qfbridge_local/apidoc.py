"""Render the editor API's OpenAPI document as the Markdown reference ``docs/api.md``."""

from __future__ import annotations

from typing import Any

METHODS = ("get", "put", "post", "patch", "delete")


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return "-"
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items'))}"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_name(s) for s in schema[key])
    return f"`{schema.get('type', 'object')}`"


def _constraints(schema: dict[str, Any] | None) -> str:
    """What a value must be beyond its type: enum values, pattern, format, bounds."""
    if not schema:
        return ""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return "; ".join(c for c in (_constraints(s) for s in schema[key]) if c)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        inner = _constraints(schema["items"])
        parts = [f"items: {inner}"] if inner else []
    else:
        parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "const" in schema:
        parts.append(f"`{schema['const']}`")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if "format" in schema:
        parts.append(f"format {schema['format']}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "default" in schema and schema["default"] is not None:
        parts.append(f"default `{schema['default']}`")
    return ", ".join(parts).replace("|", "\\|")


def render_markdown(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    lines = [
        f"# {info.get('title', 'API')} — reference",
        "",
        "<!-- Generated from docs/openapi.json by `make openapi`; do not edit by hand. -->",
        "",
        str(info.get("description", "")).strip(),
        "",
        "Every request is signed with AWS SigV4 (API Gateway `AWS_IAM` authorization; security scheme",
        "`sigv4`, examples in docs/integration.md). An optional `X-Agent-Id` header names the agent",
        "acting through the editor's software (audit trail). Errors are `application/problem+json`",
        "bodies with a stable `code`; a method a path does not have is answered 405 with an `Allow` header.",
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    paths: dict[str, Any] = document.get("paths", {})
    for path in sorted(paths):
        for method in METHODS:
            operation = paths[path].get(method)
            if operation:
                lines.append(f"| `{method.upper()}` | `{path}` | {operation.get('summary', '')} |")
    lines.append("")
    for path in sorted(paths):
        for method in METHODS:
            operation = paths[path].get(method)
            if not operation:
                continue
            lines += [f"## `{method.upper()} {path}`", "", operation.get("summary", ""), ""]
            if operation.get("description"):
                lines += [str(operation["description"]).strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | in | required | type | constraints |", "|---|---|---|---|---|"]
                for p in parameters:
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                        f"{_schema_name(p.get('schema'))} | {_constraints(p.get('schema'))} |"
                    )
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                lines += [f"Request body ({media}): {_schema_name(content.get('schema'))}", ""]
            responses = operation.get("responses", {})
            if responses:
                lines += ["| status | meaning | body |", "|---|---|---|"]
                for status in sorted(responses):
                    response = responses[status]
                    answers: dict[str, Any] = response.get("content", {})
                    first: dict[str, Any] = next(iter(answers.values()), {})
                    body_schema = first.get("schema")
                    lines.append(
                        f"| {status} | {response.get('description', '')} | {_schema_name(body_schema)} |"
                    )
                lines.append("")
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            schema = schemas[name]
            lines += [f"### `{name}`", ""]
            if schema.get("description"):
                lines += [str(schema["description"]).strip(), ""]
            properties = schema.get("properties", {})
            if properties:
                required = set(schema.get("required", []))
                lines += [
                    "| field | type | required | constraints | description |",
                    "|---|---|---|---|---|",
                ]
                for field, spec in properties.items():
                    description = str(spec.get("description", "")).replace("\n", " ").replace("|", "\\|")
                    lines.append(
                        f"| `{field}` | {_schema_name(spec)} | {'yes' if field in required else 'no'} | "
                        f"{_constraints(spec)} | {description} |"
                    )
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


WEBHOOKS_SECTION_PATH = "webhook/webhooks.md"  # under docs/events/: the hand-written webhooks guide


def render_event_catalogue(schemas: dict[str, dict[str, Any]], webhooks: str = "") -> str:
    """``docs/events.md`` from the JSON Schemas of ``docs/events/`` (one per detail-type), followed by
    the webhooks guide ``docs/events/webhook/webhooks.md`` (written by hand, included as is)."""
    lines = [
        "# Event catalogue",
        "",
        "<!-- Generated from the event models (layers/core/qfbridge/messages/events.py) and docs/events/*.schema.json "
        "by `make openapi`; do not edit by hand. -->",
        "",
        "qfbridge publishes on the EventBridge bus `qfbridge-<stage>` (stack output `EventBusName`).",
        'Every event has `source: "qfbridge"` and its name as `detail-type`; `detail` follows the',
        "JSON Schema in `docs/events/<name>.schema.json`. Events carry ids and QF values, never",
        "identities. Delivery is at least once: use the ids to deduplicate.",
        "",
        'Example rule pattern: `{"source": ["qfbridge"], "detail-type": ["qf.updated"]}`.',
        "Software outside AWS can receive the same events as webhooks: see [Webhooks](#webhooks).",
        "",
        "| event | when |",
        "|---|---|",
    ]
    for name in sorted(schemas):
        lines.append(
            f"| `{name}` | {str(schemas[name].get('description', '')).split('. ')[0].rstrip('.')}. |"
        )
    lines.append("")
    for name in sorted(schemas):
        schema = schemas[name]
        lines += [f"## `{name}`", "", str(schema.get("description", "")).strip(), ""]
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, spec in schema.get("properties", {}).items():
            kind = spec.get("type") or (
                "enum: " + ", ".join(str(v) for v in spec["enum"]) if "enum" in spec else "any"
            )
            if isinstance(kind, list):
                kind = " or ".join(kind)
            description = str(spec.get("description", "")).replace("\n", " ").replace("|", "\\|")
            lines.append(f"| `{field}` | {kind} | {'yes' if field in required else 'no'} | {description} |")
        lines.append("")
    if webhooks:
        lines += [
            "<!-- The section below is docs/events/webhook/webhooks.md, included by `make openapi`. -->",
            "",
            webhooks.strip(),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def render_event_schemas() -> dict[str, str]:
    """``docs/events/<detail-type>.schema.json``, generated from the event models (``qfbridge.messages``)."""
    import json

    from qfbridge.messages import EVENTS, event_schema

    return {
        event.detail_type: json.dumps(event_schema(event), indent=2, ensure_ascii=False) + "\n"
        for event in EVENTS
    }


def load_event_schemas(directory: Any) -> dict[str, dict[str, Any]]:
    import json
    from pathlib import Path

    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(Path(directory).glob("*.schema.json"))
    }


ENVELOPE_SCHEMA_PATH = "webhook/envelope.schema.json"  # under docs/events/


def envelope_schema(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The webhook envelope's JSON Schema, with each event's ``detail`` schema as the ``data`` of its type.

    The envelope is what the template's webhook rules build with their input transformer:
    ``{"id": $.id, "type": $.detail-type, "time": $.time, "tenant": $.detail.tenant_siret, "data": $.detail}``.
    """
    names = sorted(schemas)
    defs = {
        name: {k: v for k, v in schemas[name].items() if k not in ("$schema", "$id", "x-eventbridge")}
        for name in names
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:qfbridge:webhook:envelope",
        "title": "qfbridge webhook envelope",
        "description": (
            "The body of every webhook request: one qfbridge event. Deliveries are at least once: "
            "the same event may arrive more than once, always with the same id."
        ),
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "description": "The event's id (EventBridge's): the same on every delivery of one event; "
                "deduplicate on it",
            },
            "type": {"enum": names, "description": "The event type (EventBridge detail-type)"},
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "When the event was published (UTC, ISO 8601)",
            },
            "tenant": {
                "type": "string",
                "pattern": "^[0-9]{14}$",
                "description": "SIRET of the collectivité the event is about (= data.tenant_siret)",
            },
            "data": {"type": "object", "description": "The event's detail: the schema of its type"},
        },
        "required": ["id", "type", "time", "tenant", "data"],
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"data": {"$ref": f"#/$defs/{name}"}}},
            }
            for name in names
        ],
        "$defs": defs,
    }


def render_envelope_schema(schemas: dict[str, dict[str, Any]]) -> str:
    import json

    return json.dumps(envelope_schema(schemas), indent=2, ensure_ascii=False) + "\n"
