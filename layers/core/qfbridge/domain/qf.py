"""The quotient familial as CAF/MSA compute it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Fournisseur = Literal["CNAF", "MSA"]


class QuotientFamilial(BaseModel):
    """A QF value with the month it applies to and the month it was computed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    fournisseur: Fournisseur
    valeur: int = Field(ge=0, le=1_000_000)
    annee: int = Field(ge=2000, le=2100)
    mois: int = Field(ge=1, le=12)
    annee_calcul: int | None = Field(default=None, ge=2000, le=2100)
    mois_calcul: int | None = Field(default=None, ge=1, le=12)
