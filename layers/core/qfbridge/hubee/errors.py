"""Typed errors of the HubEE client.

Every message names the call (HTTP method and the swagger *path template*, never the concrete
path with ids), the HTTP status and the HubEE error code. Bodies are never quoted: HubEE's error
messages may echo request data, and attachment file names carry the usager's name. Secrets and
tokens never reach an exception.
"""

from __future__ import annotations

from qfbridge.domain.errors import DossierError, QfbridgeError


class HubeeError(QfbridgeError):
    """A HubEE call failed."""

    code = "hubee_error"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        hubee_code: int | None = None,
        method: str | None = None,
        path_template: str | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.hubee_code = hubee_code
        self.method = method
        self.path_template = path_template
        super().__init__(message or self._describe(), code=code)

    def _describe(self) -> str:
        summary = (self.__class__.__doc__ or self.code).strip().splitlines()[0].rstrip(".")
        parts = [summary]
        if self.method and self.path_template:
            parts.append(f"call={self.method} {self.path_template}")
        if self.status is not None:
            parts.append(f"http_status={self.status}")
        if self.hubee_code is not None:
            parts.append(f"hubee_code={self.hubee_code}")
        return "; ".join(parts)


class HubeeAuthError(HubeeError):
    """HubEE refused the credentials or the token (token endpoint refusal, or 401 after renewal)."""

    code = "hubee_auth"


class HubeeForbiddenError(HubeeError):
    """HubEE answered 403: the resource belongs to another subscription."""

    code = "hubee_forbidden"


class HubeeNotFoundError(HubeeError):
    """HubEE answered 404: the resource does not exist (or no longer does)."""

    code = "hubee_not_found"


class HubeeBadRequestError(HubeeError):
    """HubEE answered 400: the request breaks the contract (e.g. an illegal status transition)."""

    code = "hubee_bad_request"


class HubeeTransitionRefused(HubeeError):
    """The status transition is not in HubEE's table: refused locally, nothing was sent."""

    code = "hubee_transition_refused"


class HubeeServerError(HubeeError):
    """HubEE kept answering 5xx on a call that was safe to retry."""

    code = "hubee_server_error"

    def __init__(self, message: str = "", *, retry_after_s: float | None = None, **kwargs: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class HubeeTransportError(HubeeError):
    """HubEE could not be reached (connection error or timeout), and the call did not take effect."""

    code = "hubee_transport"


class HubeeOutcomeUnknown(HubeeError):
    """A non-idempotent call may or may not have taken effect: read the case before trying again."""

    code = "hubee_outcome_unknown"


class HubeeProtocolError(HubeeError):
    """HubEE answered something the contract does not allow (unparsable or unexpected body)."""

    code = "hubee_protocol"


class AttachmentTooLarge(HubeeError, DossierError):
    """An attachment is larger than the configured cap: the dossier cannot be used as is."""

    code = "hubee_attachment_too_large"

    def __init__(self, message: str = "", *, max_bytes: int, **kwargs: object) -> None:
        self.max_bytes = max_bytes
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    def _describe(self) -> str:
        return f"{super()._describe()}; max_bytes={self.max_bytes}"
