"""Typed domain errors.

Messages never carry personal data (identities, QF values) nor secrets: they name the
problem with a stable ``code`` and, at most, technical identifiers (SIRET, case id, reference).
"""

from __future__ import annotations


class QfbridgeError(Exception):
    """Base of every error qfbridge raises on purpose."""

    code: str = "qfbridge_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ValidationError(QfbridgeError):
    """Input does not satisfy the contract."""

    code = "invalid_input"


class NotFoundError(QfbridgeError):
    """The resource does not exist (or belongs to another tenant)."""

    code = "not_found"


class ConflictError(QfbridgeError):
    """The resource is not in a state that allows the operation."""

    code = "conflict"


class RuleViolation(QfbridgeError):
    """The request is well formed but breaks a domain rule (e.g. a review linking to no known family)."""

    code = "rule_violation"


class DossierError(QfbridgeError):
    """A dossier cannot be used: it is recorded as rejected with this code as its reason."""

    code = "dossier_unusable"


class LinkError(QfbridgeError):
    """A form link or an external_id is not acceptable."""

    code = "link_invalid"
