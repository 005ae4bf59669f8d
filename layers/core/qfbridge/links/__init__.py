"""Form links: signed opaque external_ids, the form URL with its redirect allowlist, QR codes."""

from qfbridge.links.qr import qr_png, qr_svg
from qfbridge.links.signing import (
    BadSignature,
    InvalidTenant,
    IssuedLink,
    KeyConfigurationError,
    LinkSigner,
    MalformedLink,
    UnknownKey,
    VerifiedLink,
)
from qfbridge.links.urls import (
    DEFAULT_FORM_BASE_URL,
    InvalidFormUrl,
    RedirectNotAllowed,
    build_form_url,
    validate_redirect_uri,
)

__all__ = [
    "DEFAULT_FORM_BASE_URL",
    "BadSignature",
    "InvalidFormUrl",
    "InvalidTenant",
    "IssuedLink",
    "KeyConfigurationError",
    "LinkSigner",
    "MalformedLink",
    "RedirectNotAllowed",
    "UnknownKey",
    "VerifiedLink",
    "build_form_url",
    "qr_png",
    "qr_svg",
    "validate_redirect_uri",
]
