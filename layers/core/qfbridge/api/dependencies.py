"""What the routes need at run time, configured once per execution environment by the handler.

The resolver is a module-level object (routes are declared at import time, which is also what
lets ``openapi_document()`` run without AWS); its dependencies are set by ``configure`` from the
handler's settings, or by tests with their own service and audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from qfbridge.services.editor import EditorService
from qfbridge.store.audit import AuditTrail


@dataclass
class ApiDependencies:
    service: EditorService
    audit: AuditTrail


_current: ApiDependencies | None = None


def configure(dependencies: ApiDependencies) -> None:
    global _current
    _current = dependencies


def dependencies() -> ApiDependencies:
    if _current is None:
        raise RuntimeError("qfbridge.api is not configured: call qfbridge.api.dependencies.configure first")
    return _current


def editor() -> EditorService:
    return dependencies().service
