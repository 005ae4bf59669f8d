"""Secrets Manager: tenants' credentials (write from the API, read by the pipeline) and link keys.

Values only ever live in memory: never logged, never returned, never put in an event or an error.
Reads are cached for ``CACHE_SECONDS`` per execution environment (:func:`read_secret`), through the
one Secrets Manager client the environment already has: Powertools' ``parameters.get_secret`` built a
second boto3 session for its provider on a cold request's first read (~45 ms of CPU, plus ~12 ms to
import the parameters utility) for a cache of a few lines (docs/performance.md, cold request).

Every write stamps the tenant's secret with a new ``version`` (not a secret: a random id), which the
API also records on the tenant (``credentials_version``). A reader that holds a cached secret of
another version than the tenant's reads it again, bypassing the cache: a token replaced through the
API is used at once, not after the cache's five minutes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from qfbridge.domain.errors import NotFoundError

CACHE_SECONDS = 300
SECRETS_PER_BATCH = 20
"""BatchGetSecretValue's maximum secrets per call."""


class TenantCredentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hubee_client_id: str | None = None
    hubee_client_secret: SecretStr | None = None
    api_particulier_token: SecretStr | None = None
    version: str | None = None
    """Stamped by every write (``new_version``); compared with the tenant's ``credentials_version``."""


def new_version() -> str:
    return uuid.uuid4().hex


@cache
def _client() -> Any:
    from qfbridge.store import aws

    return aws.client("secretsmanager")


_CACHE: dict[str, tuple[float, str]] = {}
"""Secret id → (monotonic time it expires, SecretString). Only ever in memory."""


def read_secret(secret_id: str, *, force_fetch: bool = False) -> str:
    """The secret's current ``SecretString``: from this environment's cache when read less than
    ``CACHE_SECONDS`` ago, unless ``force_fetch``. ``NotFoundError`` when there is no such secret (or
    it is scheduled for deletion); any other error (throttling, permissions) propagates, to be retried."""
    now = time.monotonic()
    cached = _CACHE.get(secret_id)
    if cached is not None and cached[0] > now and not force_fetch:
        return cached[1]
    client = _client()
    try:
        value = str(client.get_secret_value(SecretId=secret_id)["SecretString"])
    except (client.exceptions.ResourceNotFoundException, client.exceptions.InvalidRequestException) as exc:
        _CACHE.pop(secret_id, None)
        raise NotFoundError("No such secret.", code="secret_missing") from exc
    _CACHE[secret_id] = (now + CACHE_SECONDS, value)
    return value


def clear_cache() -> None:
    """Forget every secret read (the laptop runtime, between two stacks)."""
    _CACHE.clear()


class SecretStore:
    def __init__(self, tenant_prefix: str) -> None:
        self.tenant_prefix = tenant_prefix

    def tenant_secret_name(self, siret: str) -> str:
        return f"{self.tenant_prefix}{siret}"

    def read_tenant(
        self, siret: str, *, force_fetch: bool = False, version: str | None = None
    ) -> TenantCredentials:
        """The tenant's credentials; from the cache unless ``force_fetch``, or unless the cached secret
        is not of ``version`` (the tenant's ``credentials_version``: it was replaced meanwhile)."""
        credentials = self._read_tenant(siret, force_fetch=force_fetch)
        if version is not None and credentials.version != version and not force_fetch:
            credentials = self._read_tenant(siret, force_fetch=True)
        return credentials

    def _read_tenant(self, siret: str, *, force_fetch: bool) -> TenantCredentials:
        try:
            raw = read_secret(self.tenant_secret_name(siret), force_fetch=force_fetch)
        except NotFoundError as exc:
            raise NotFoundError(
                f"No credentials stored for tenant {siret}.", code="credentials_missing"
            ) from exc
        return TenantCredentials.model_validate(json.loads(raw))

    def read_many(self, sirets: Sequence[str]) -> dict[str, TenantCredentials]:
        """The tenants' credentials, one BatchGetSecretValue call per ``SECRETS_PER_BATCH`` (at most 20)
        tenants instead of one GetSecretValue each, past the cache.

        A tenant without a readable secret is left out; a batch that fails (permission not granted,
        throttling) leaves all of its tenants out: ``read_tenant`` then reads them one by one and
        reports the real error.
        """
        from qfbridge.observability import logger

        found: dict[str, TenantCredentials] = {}
        for start in range(0, len(sirets), SECRETS_PER_BATCH):
            names = {
                self.tenant_secret_name(siret): siret for siret in sirets[start : start + SECRETS_PER_BATCH]
            }
            try:
                response = _client().batch_get_secret_value(SecretIdList=list(names))
            except Exception as exc:  # the per-tenant read takes over and reports real errors
                logger.info("batch secret read unavailable", extra={"error_code": type(exc).__name__})
                continue
            for value in response.get("SecretValues", []):
                siret = names.get(str(value.get("Name")))
                if siret is None or "SecretString" not in value:
                    continue
                try:
                    found[siret] = TenantCredentials.model_validate(json.loads(value["SecretString"]))
                except ValueError:
                    continue
        return found

    def write_tenant(self, siret: str, update: TenantCredentials) -> str:
        """Merge the given credentials into the tenant's secret (created on first write); returns the
        secret's new version.

        Needs read access to the secret (operators, tests); the api uses ``replace_tenant``.
        """
        name = self.tenant_secret_name(siret)
        client = _client()
        current: dict[str, Any] = {}
        try:
            current = json.loads(client.get_secret_value(SecretId=name)["SecretString"])
            exists = True
        except client.exceptions.ResourceNotFoundException:
            exists = False
        # Any other error (no read permission: the api role) propagates: merging blind would drop
        # the fields not given. The api replaces the whole set instead (replace_tenant).
        for field, value in update:
            if value is not None:
                current[field] = value.get_secret_value() if isinstance(value, SecretStr) else value
        version = current["version"] = new_version()
        document = json.dumps(current)
        if exists:
            client.put_secret_value(SecretId=name, SecretString=document)
        else:
            client.create_secret(
                Name=name,
                SecretString=document,
                Description="qfbridge tenant credentials (HubEE, API Particulier)",
                Tags=[{"Key": "qfbridge:tenant", "Value": siret}],
            )
        return version

    def replace_tenant(self, siret: str, credentials: TenantCredentials) -> str:
        """Make the tenant's secret exactly ``credentials`` (fields left None are dropped), stamped
        with a new version, which is returned (the API records it on the tenant).

        Unlike ``write_tenant`` this never reads the secret: the API role may only write it, so the
        API replaces the whole set (PUT semantics) instead of merging into what it cannot read.
        """
        name = self.tenant_secret_name(siret)
        version = new_version()
        fields = {
            field: value.get_secret_value() if isinstance(value, SecretStr) else value
            for field, value in credentials
            if value is not None
        }
        document = json.dumps(fields | {"version": version})
        client = _client()
        try:
            client.create_secret(
                Name=name,
                SecretString=document,
                Description="qfbridge tenant credentials (HubEE, API Particulier)",
                Tags=[{"Key": "qfbridge:tenant", "Value": siret}],
            )
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=name, SecretString=document)
        return version

    def read_link_keys(self, secret_id: str) -> tuple[dict[str, bytes], str]:
        """The link-signing keys ({"active_kid": "k1", "k1": "...", "k2": "..."}) and the active kid."""
        document = json.loads(read_secret(secret_id))
        active = str(document.pop("active_kid"))
        keys = {kid: str(value).encode() for kid, value in document.items()}
        if active not in keys:
            raise NotFoundError("The active link-signing key is missing.", code="link_key_missing")
        return keys, active
