"""Identities as the domain knows them.

* ``PivotIdentity``: the FranceConnect identity of the usager, as the form transmits it and as API
  Particulier expects it for the monthly refresh.
* ``Person``: one member of a household (an allocataire or a child), as CAF/MSA or the editor's
  directory describe them.
* ``DirectoryParent`` / ``DirectoryChild`` / ``Family``: the editor's directory of families.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Sexe = Literal["F", "M"]
FRANCE_COG = "99100"


class PivotIdentity(BaseModel):
    """FranceConnect pivot identity (raw claims of the form)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    family_name: str = Field(min_length=1, max_length=200)
    given_name: str = Field(min_length=1, max_length=300)
    gender: Literal["male", "female"]
    birthdate: dt.date
    birthplace: str | None = Field(default=None, max_length=5)
    birthcountry: str = Field(default=FRANCE_COG, min_length=5, max_length=5)

    @field_validator("birthplace", mode="before")
    @classmethod
    def _empty_birthplace_is_none(cls, value: object) -> object:
        return value or None

    @property
    def born_abroad(self) -> bool:
        return self.birthcountry != FRANCE_COG

    @property
    def sexe(self) -> Sexe:
        return "F" if self.gender == "female" else "M"

    @property
    def prenoms(self) -> list[str]:
        return self.given_name.split()


class Person(BaseModel):
    """A household member as CAF/MSA return it (allocataire or enfant)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    nom_naissance: str = Field(min_length=1, max_length=200)
    nom_usage: str | None = Field(default=None, max_length=200)
    prenoms: str = Field(default="", max_length=300)
    date_naissance: dt.date | None = None
    sexe: Sexe | None = None


class DirectoryParent(BaseModel):
    """A parent of a family in the editor's directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nom_naissance: str = Field(min_length=1, max_length=100)
    nom_usage: str | None = Field(default=None, max_length=100)
    prenoms: str = Field(min_length=1, max_length=200, description="All first names, space-separated")
    sexe: Sexe
    date_naissance: dt.date
    code_cog_naissance: str | None = Field(default=None, pattern=r"^[0-9][0-9AB][0-9]{3}$")
    code_pays_naissance: str | None = Field(default=None, pattern=r"^[0-9]{5}$")


class DirectoryChild(BaseModel):
    """A child of a family in the editor's directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nom: str = Field(min_length=1, max_length=100)
    prenoms: str = Field(min_length=1, max_length=200)
    date_naissance: dt.date


class Family(BaseModel):
    """A family of the editor's software: its user id and its members."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    parents: list[DirectoryParent] = Field(min_length=1, max_length=2)
    enfants: list[DirectoryChild] = Field(default_factory=list, max_length=20)
