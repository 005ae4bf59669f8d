"""Function settings read from the environment: a pydantic model filled from ``os.environ``.

The handlers' settings are flat (strings and numbers named like the template's environment
variables), which is all they need from pydantic-settings — whose import costs a cold request
more than the whole of this module and pydantic's validation it reuses (docs/performance.md,
cold request). A field reads the variable of its name, case-insensitively; values given to the
constructor (or to ``from_environment``) win over the environment; a missing or invalid variable raises pydantic's
``ValidationError`` naming the field.
"""

from __future__ import annotations

import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_validator


class BaseSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        environment = {name.lower(): value for name, value in os.environ.items()}
        found = {name: environment[name] for name in cls.model_fields if name in environment}
        return {**found, **data}

    @classmethod
    def from_environment(cls, **values: Any) -> Self:
        """The settings read from ``os.environ``; ``values`` win over it.

        What a handler calls: the required fields come from the environment, which a type checker
        cannot see in a plain constructor call.
        """
        return cls.model_validate(values)
