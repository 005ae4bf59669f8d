"""The editor API (API Gateway REST, AWS_IAM): Powertools resolver, routes, problems and audit.

``openapi_document()`` builds the committed ``docs/openapi.json`` from the routes; regenerate it
with ``python -m qfbridge.api --write docs/openapi.json``.
"""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    from qfbridge.api.resolver import openapi_document as build

    return build()
