"""The ``refresh`` queue (read by qf_refresh): one family's QF to refresh."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from qfbridge.messages.base import STRICT


class RefreshMessage(BaseModel):
    """Refresh one family's QF from API Particulier."""

    model_config = STRICT

    siret: str
    user_id: str
    reason: Literal["monthly", "manual"]
    admitted: bool = False
    """Its release was booked on the tenant's schedule (it does not wait for the pacer's permit)."""
    attempts_before: int = Field(default=0, ge=0)
    """Attempts spent by the earlier copies of this message (a copy is sent back for a wait)."""

    def body(self) -> str:
        return self.model_dump_json(exclude_defaults=True)


def parse_refresh_message(body: str | bytes) -> RefreshMessage:
    return RefreshMessage.model_validate_json(body)
