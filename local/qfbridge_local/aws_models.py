"""The AWS service models qfbridge's clients load: botocore's, cut to the operations qfbridge calls.

Creating a botocore client parses its service's whole model (every operation, every shape, their
documentation) and builds a method per operation: DynamoDB's model is 94 KB gzipped, CloudWatch
Logs' 118 operations. A cold request builds four or five clients, ~31 ms of CPU beyond the one the
floor builds; with the models below, ~11 ms (docs/performance.md, cold request). The cut keeps each
kept operation's input, output and error shapes (what ``client.exceptions`` offers), whole, and
drops the documentation strings. The first client of a session also parses botocore's endpoint data
(``endpoints.json``, 1.2 MB, ~20 ms): its cut keeps every partition whole (regions, defaults, DNS
suffixes) and, of its services, those of ``OPERATIONS``. ``qfbridge.store.aws`` puts the directory
first on its own session's search path (the endpoint rules, partitions, paginators and botocore's
other data still come from botocore).

``OPERATIONS`` is every operation qfbridge's clients send, the tests' and benchmarks' direct calls
included. tests/unit/test_aws_models.py fails when a call in the code names an operation left out,
when the code catches an exception the models do not define, and when the committed models differ
from what this module generates from the installed botocore (``make aws-models`` writes them).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[2] / "layers" / "core" / "qfbridge" / "aws_models"

OPERATIONS: dict[str, tuple[str, ...]] = {
    "dynamodb": (
        "BatchGetItem",
        "BatchWriteItem",
        "DeleteItem",
        "GetItem",
        "PutItem",
        "Query",
        "TransactWriteItems",
        "UpdateItem",
    ),
    "events": ("PutEvents",),
    "logs": ("CreateLogStream", "FilterLogEvents", "PutLogEvents"),
    "secretsmanager": ("BatchGetSecretValue", "CreateSecret", "GetSecretValue", "PutSecretValue"),
    "sqs": ("ChangeMessageVisibility", "SendMessage", "SendMessageBatch"),
}


def _botocore_data() -> Path:
    import botocore

    return Path(botocore.__file__).parent / "data"


def latest_version(service: str) -> str:
    return sorted(
        p.name for p in (_botocore_data() / service).iterdir() if (p / "service-2.json.gz").exists()
    )[-1]


def full_model(service: str) -> dict[str, Any]:
    path = _botocore_data() / service / latest_version(service) / "service-2.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as raw:
        model: dict[str, Any] = json.load(raw)
    return model


def _undocumented(value: Any) -> Any:
    """The model without its documentation strings (a member named ``documentation`` is a dict: kept)."""
    if isinstance(value, dict):
        return {
            key: _undocumented(item)
            for key, item in value.items()
            if not (key in ("documentation", "documentationUrl") and isinstance(item, str))
        }
    if isinstance(value, list):
        return [_undocumented(item) for item in value]
    return value


def cut(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """``model`` with ``operations`` only, and the shapes they reach."""
    shapes: dict[str, Any] = model["shapes"]
    kept: dict[str, Any] = {}

    def reach(name: str) -> None:
        if name in kept:
            return
        shape = kept[name] = shapes[name]
        for key in ("member", "key", "value"):
            if key in shape:
                reach(shape[key]["shape"])
        for member in shape.get("members", {}).values():
            reach(member["shape"])

    for name in operations:
        operation = model["operations"][name]
        for key in ("input", "output"):
            if key in operation:
                reach(operation[key]["shape"])
        for error in operation.get("errors", []):
            reach(error["shape"])
    result = {k: v for k, v in model.items() if k not in ("operations", "shapes")}
    result["operations"] = {name: model["operations"][name] for name in operations}
    result["shapes"] = {name: kept[name] for name in sorted(kept)}
    return dict(_undocumented(result))


def full_endpoints() -> dict[str, Any]:
    endpoints: dict[str, Any] = json.loads((_botocore_data() / "endpoints.json").read_text(encoding="utf-8"))
    return endpoints


def endpoint_prefixes() -> set[str]:
    """The names botocore looks the services up by in its endpoint data (``cloudwatch`` is
    ``monitoring`` there; qfbridge's five are their own)."""
    return {full_model(service)["metadata"]["endpointPrefix"] for service in OPERATIONS}


def cut_endpoints(endpoints: dict[str, Any], services: set[str]) -> dict[str, Any]:
    """botocore's endpoint data with every partition whole but its ``services`` cut to ``services``
    (endpoint prefixes)."""
    return endpoints | {
        "partitions": [
            partition | {"services": {k: v for k, v in partition["services"].items() if k in services}}
            for partition in endpoints["partitions"]
        ]
    }


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n"


def generate() -> dict[Path, str]:
    """Relative path → content of every file of the directory, from the installed botocore."""
    files = {Path("endpoints.json"): _dumps(cut_endpoints(full_endpoints(), endpoint_prefixes()))}
    for service, operations in sorted(OPERATIONS.items()):
        files[Path(service) / latest_version(service) / "service-2.json"] = _dumps(
            cut(full_model(service), operations)
        )
    return files


def write(directory: Path = MODELS) -> list[Path]:
    """Write the models (and only them) under ``directory``; returns the files written."""
    files = generate()
    for stale in directory.rglob("*.json") if directory.exists() else []:
        if stale.relative_to(directory) not in files:
            stale.unlink()
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"{path.relative_to(MODELS.parents[3])}: {path.stat().st_size:,} bytes")
