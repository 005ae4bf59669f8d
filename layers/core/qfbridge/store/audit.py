"""The audit trail of access to families' data, in a dedicated CloudWatch Logs group.

One JSON record per audited action: who (IAM principal, agent id), when, which tenant, route,
action, family user id or dossier reference, and the outcome. Records carry no identity and no QF
value. The group is declared in the template with a 1,096-day retention and KMS encryption.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qfbridge.clock import epoch, utc_now

Actor = Literal["editor", "service", "operator"]
SERVICE_PRINCIPAL = "qfbridge:service"


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: str = Field(default_factory=lambda: utc_now().isoformat(timespec="milliseconds"))
    request_id: str
    actor: Actor
    principal: str
    agent_id: str | None = None
    tenant_siret: str | None = None
    route: str
    action: str
    user_id: str | None = None
    user_ids: list[str] | None = None  # a batch route changes many families: one record names them all
    reference: str | None = None
    outcome: str  # "success" | "denied" | "not_found" | "invalid" | "error" | "conflict"
    status_code: int | None = None


@cache
def _client() -> Any:
    from qfbridge.store import aws

    return aws.client("logs")


class AuditTrail:
    """Appends records to the audit log group; one stream per execution environment.

    Not thread-safe, and need not be: an execution environment runs one invocation at a time and
    the functions that audit (api, reconcile) write from the invocation's thread.
    """

    def __init__(self, log_group: str) -> None:
        self.log_group = log_group
        self._stream: str | None = None
        self.written = 0

    def _ensure_stream(self) -> str:
        if self._stream is None:
            name = f"{utc_now():%Y/%m/%d}/{uuid.uuid4().hex}"
            _client().create_log_stream(logGroupName=self.log_group, logStreamName=name)
            self._stream = name
        return self._stream

    def write(self, record: AuditRecord) -> None:
        self.write_many([record])

    def write_many(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        stream = self._ensure_stream()
        now_ms = int(epoch() * 1000)
        _client().put_log_events(
            logGroupName=self.log_group,
            logStreamName=stream,
            logEvents=[
                {
                    "timestamp": now_ms,
                    "message": json.dumps(r.model_dump(exclude_none=True), sort_keys=True),
                }
                for r in records
            ],
        )
        self.written += len(records)

    def contains(self, *, request_id: str, action: str) -> bool:
        """Whether the trail already holds the record of ``request_id``/``action`` (a retry that may
        have written it before crashing checks before writing it again): one filtered read."""
        kwargs: dict[str, Any] = {"logGroupName": self.log_group, "filterPattern": f'"{request_id}"'}
        while True:
            response = _client().filter_log_events(**kwargs)
            for event in response.get("events", []):
                record = json.loads(event["message"])
                if record.get("request_id") == request_id and record.get("action") == action:
                    return True
            token = response.get("nextToken")
            if not token:
                return False
            kwargs["nextToken"] = token


def read_records(
    log_group: str,
    *,
    tenant_siret: str | None = None,
    user_id: str | None = None,
    reference: str | None = None,
    start: dt.datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Audit records of a tenant / family / dossier, oldest first (Logs Insights does the same at scale)."""
    kwargs: dict[str, Any] = {"logGroupName": log_group}
    if start is not None:
        kwargs["startTime"] = int(start.timestamp() * 1000)
    records: list[dict[str, Any]] = []
    while True:
        response = _client().filter_log_events(**kwargs)
        for event in response.get("events", []):
            record = json.loads(event["message"])
            if tenant_siret and record.get("tenant_siret") != tenant_siret:
                continue
            if user_id and record.get("user_id") != user_id and user_id not in record.get("user_ids", ()):
                continue
            if reference and record.get("reference") != reference:
                continue
            records.append(record)
        token = response.get("nextToken")
        if not token or len(records) >= limit:
            break
        kwargs["nextToken"] = token
    records.sort(key=lambda r: r["time"])
    return records[:limit]
