"""QR codes of a form link, for the counter, posters and letters.

segno is pure Python (no Pillow needed for PNG). Error correction "M" (15 %) survives a
printed and slightly damaged code while keeping a form URL with a signed external_id small.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from qfbridge.domain.errors import ValidationError

if TYPE_CHECKING:
    import segno

MAX_URL_LENGTH = 2048


def _make(url: str) -> segno.QRCode:
    import segno  # deferred: only the QR and poster routes need it

    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ValidationError("QR code content must be a URL of 1-2048 characters", code="invalid_qr_content")
    return segno.make_qr(url, error="m", boost_error=False)


def qr_svg(url: str, *, scale: int = 4, border: int = 4) -> bytes:
    """The QR code as a standalone SVG document (UTF-8 bytes, with XML declaration)."""
    buffer = io.BytesIO()
    _make(url).save(buffer, kind="svg", scale=scale, border=border, xmldecl=True, svgns=True)
    return buffer.getvalue()


def qr_png(url: str, *, scale: int = 8, border: int = 4) -> bytes:
    """The QR code as a PNG image; each module is ``scale`` pixels wide."""
    if not 1 <= scale <= 40:
        raise ValidationError("QR code scale must be between 1 and 40", code="invalid_qr_scale")
    buffer = io.BytesIO()
    _make(url).save(buffer, kind="png", scale=scale, border=border)
    return buffer.getvalue()
