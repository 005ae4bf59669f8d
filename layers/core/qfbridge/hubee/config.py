"""Where HubEE is, who we say we are, and how patient we are with it."""

from __future__ import annotations

from typing import Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

HubeeEnvironment = Literal["bas", "prod"]

_ENVIRONMENTS: dict[str, tuple[str, str]] = {
    # (api_url, token_url): HubEE production and its "bas" iso-prod test platform
    "prod": ("https://api.hubee.numerique.gouv.fr", "https://auth.hubee.numerique.gouv.fr/oauth2/token"),
    "bas": (
        "https://api.bas.hubee.numerique.gouv.fr",
        "https://auth.bas.hubee.numerique.gouv.fr/oauth2/token",
    ),
}

BASE_PATH = "/teledossiers/v1"


class HubeeConfig(BaseModel):
    """Client settings. Timeouts are explicit: a Lambda must never hang on HubEE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str = Field(
        description="API root without the base path, e.g. https://api.bas.hubee.numerique.gouv.fr"
    )
    token_url: str
    editor_name: str = Field(default="qfbridge", min_length=1, max_length=50)
    application_name: str = Field(default="qfbridge", min_length=1, max_length=50)
    software_version: str = Field(default="0.1.0", min_length=1, max_length=50)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=20.0, gt=0)
    retry_attempts: int = Field(default=3, ge=1, le=10, description="total attempts of a safe call")
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    max_attachment_bytes: int = Field(default=1024 * 1024, gt=0)
    max_json_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="cap on a JSON answer")
    token_expiry_margin_s: float = Field(default=60.0, ge=0)
    max_pages: int = Field(default=200, ge=1, description="guard against a notification list that never ends")

    @field_validator("api_url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("editor_name", "application_name", "software_version")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if not value.isascii() or not value.isprintable():
            raise ValueError("must be printable ASCII (sent as an HTTP header)")
        return value

    @classmethod
    def for_environment(cls, environment: HubeeEnvironment, **settings: object) -> Self:
        """The real HubEE URLs of ``environment`` ("bas" = iso-prod test platform, or "prod")."""
        api_url, token_url = _ENVIRONMENTS[environment]
        return cls.model_validate({"api_url": api_url, "token_url": token_url, **settings})

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.read_timeout_s,
            pool=self.connect_timeout_s,
        )

    @property
    def worst_case_call_s(self) -> float:
        """The longest one call can take: every attempt hanging to its timeouts, every backoff at its cap.

        A Lambda's timeout must leave room for at least one such call (tests/infra checks the template).
        """
        attempts = self.retry_attempts
        per_attempt = self.connect_timeout_s + self.read_timeout_s
        backoffs = sum(
            min(self.backoff_max_s, self.backoff_base_s * 2 ** (a - 1)) for a in range(1, attempts)
        )
        return attempts * per_attempt + backoffs

    @property
    def api_root(self) -> str:
        return self.api_url + BASE_PATH


class HubeeCredentials(BaseModel):
    """One HubEE subscription's OAuth2 client (one per collectivité, or shared by a delegation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretStr
