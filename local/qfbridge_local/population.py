"""A seeded, synthetic population of French families, for the demo, the tests and the benchmarks.

Every name and date here is invented. The same seed always gives the same families, SIRETs and
dossiers, so a failing run can be replayed.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from qfbridge.domain.identity import DirectoryChild, DirectoryParent, Family
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.domain.siret import complete_siret

SURNAMES = [
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFÈVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MULLER",
    "LEFÈBVRE",
    "FAURE",
    "ANDRÉ",
    "MERCIER",
    "BLANC",
    "GUÉRIN",
    "BOYER",
    "GARNIER",
    "CHEVALIER",
    "FRANÇOIS",
    "LEGRAND",
    "GAUTHIER",
    "GARCIA",
    "PERRIN",
    "ROBIN",
    "CLÉMENT",
    "MORIN",
    "NICOLAS",
    "HENRY",
    "ROUSSEL",
    "MATHIEU",
    "GAUTIER",
    "MASSON",
    "DE LA FONTAINE",
    "N'DIAYE",
    "LE GALL",
    "SAINT-JUST",
    "D'ARTAGNAN",
    "NGUYEN",
    "DA SILVA",
    "BEN SALEM",
]
GIVEN_F = [
    "MARIE",
    "JULIE",
    "CAMILLE",
    "LÉA",
    "CHLOÉ",
    "EMMA",
    "SARAH",
    "INÈS",
    "ANNE",
    "CLAIRE",
    "HÉLÈNE",
    "SOPHIE",
    "LAURE",
    "ZOÉ",
    "AMÉLIE",
    "MARIE-CLAIRE",
    "ANNE-SOPHIE",
    "NADIA",
    "FATOU",
    "AÏCHA",
]
GIVEN_M = [
    "JEAN",
    "PIERRE",
    "LUC",
    "PAUL",
    "HUGO",
    "LOUIS",
    "NATHAN",
    "THÉO",
    "ÉLIOT",
    "MARC",
    "ANTOINE",
    "FRANÇOIS",
    "JÉRÔME",
    "JEAN-PHILIPPE",
    "KARIM",
    "MAMADOU",
    "YANN",
    "NOÉ",
    "GAËL",
    "BENOÎT",
]
COMMUNES = [
    "75056",
    "69123",
    "13055",
    "31555",
    "06088",
    "44109",
    "67482",
    "34172",
    "33063",
    "59350",
    "35238",
    "26079",
    "04107",
    "2A004",
    "2B033",
    "08480",
]
FOREIGN_COUNTRIES = ["99350", "99134", "99127", "99109"]  # Maroc, Espagne, Italie, Allemagne


@dataclass(frozen=True)
class Collectivite:
    siret: str
    name: str
    cog: str


@dataclass(frozen=True)
class Household:
    """A family as the directory knows it, its QF, and the data the form would transmit."""

    family: Family
    qf: QuotientFamilial

    def formulaire(
        self, *, parent: int = 0, external_id: str | None = None, qf: QuotientFamilial | None = None
    ) -> dict[str, Any]:
        """FormulaireQF.json as the form deposits it when ``parent`` confirms the household's QF."""
        return formulaire_for(
            self.family, self.qf if qf is None else qf, parent=parent, external_id=external_id
        )


def collectivites(count: int, seed: int = 7) -> list[Collectivite]:
    rng = random.Random(seed)
    result = []
    for i in range(count):
        cog = COMMUNES[i % len(COMMUNES)]
        prefix = f"21{cog[:2].replace('A', '0').replace('B', '0')}{rng.randrange(10_000, 99_999):05d}{i:04d}"
        result.append(
            Collectivite(siret=complete_siret(prefix[:13]), name=f"Commune de test {i + 1}", cog=cog)
        )
    return result


def _birthdate(rng: random.Random, start_year: int, end_year: int) -> dt.date:
    start = dt.date(start_year, 1, 1)
    return start + dt.timedelta(days=rng.randrange((dt.date(end_year, 12, 31) - start).days))


def _parent(rng: random.Random, sexe: str, surname: str, married_name: str | None) -> DirectoryParent:
    names = GIVEN_F if sexe == "F" else GIVEN_M
    prenoms = " ".join(rng.sample(names, rng.choice([1, 1, 2, 3])))
    abroad = rng.random() < 0.1
    return DirectoryParent(
        nom_naissance=surname,
        nom_usage=married_name,
        prenoms=prenoms,
        sexe=sexe,
        date_naissance=_birthdate(rng, 1965, 2000),
        code_cog_naissance=None if abroad else rng.choice(COMMUNES),
        code_pays_naissance=rng.choice(FOREIGN_COUNTRIES) if abroad else "99100",
    )


def households(count: int, seed: int = 11, *, id_prefix: str = "famille") -> list[Household]:
    rng = random.Random(seed)
    last_month = dt.date.today().replace(day=1) - dt.timedelta(days=1)  # the QF the form shows this month
    result = []
    for i in range(count):
        father_name = rng.choice(SURNAMES)
        couple = rng.random() < 0.65
        mother_birth = rng.choice(SURNAMES)
        mother = _parent(rng, "F", mother_birth, father_name if couple and rng.random() < 0.6 else None)
        parents = [mother]
        if couple:
            parents.append(_parent(rng, "M", father_name, None))
        rng.shuffle(parents)
        children_name = father_name if couple else mother_birth
        enfants = [
            DirectoryChild(
                nom=children_name,
                prenoms=rng.choice(GIVEN_F + GIVEN_M),
                date_naissance=_birthdate(rng, 2010, 2023),
            )
            for _ in range(rng.choice([1, 1, 2, 2, 3]))
        ]
        qf = QuotientFamilial(
            fournisseur=rng.choice(["CNAF", "CNAF", "CNAF", "MSA"]),
            valeur=rng.randrange(150, 2600, 10),
            annee=last_month.year,
            mois=last_month.month,
            annee_calcul=last_month.year,
            mois_calcul=last_month.month,
        )
        result.append(Household(Family(user_id=f"{id_prefix}-{i:05d}", parents=parents, enfants=enfants), qf))
    return result


def _person_json(parent: DirectoryParent) -> dict[str, Any]:
    return {
        "nom_naissance": parent.nom_naissance,
        "nom_usage": parent.nom_usage,
        "prenoms": parent.prenoms,
        "date_naissance": parent.date_naissance.isoformat(),
        "sexe": parent.sexe,
    }


def formulaire_for(
    family: Family, qf: QuotientFamilial, *, parent: int = 0, external_id: str | None = None
) -> dict[str, Any]:
    usager = family.parents[parent]
    enfants = [
        {
            "nom_naissance": c.nom,
            "nom_usage": None,
            "prenoms": c.prenoms,
            "date_naissance": c.date_naissance.isoformat(),
            "sexe": "F" if c.prenoms in GIVEN_F else "M",
        }
        for c in family.enfants
    ]
    abroad = (usager.code_pays_naissance or "99100") != "99100"
    return {
        "external_id": external_id,
        "pivot_identity": {
            "family_name": usager.nom_naissance,
            "given_name": usager.prenoms.title(),
            "gender": "female" if usager.sexe == "F" else "male",
            "birthdate": usager.date_naissance.isoformat(),
            "birthplace": None if abroad else usager.code_cog_naissance,
            "birthcountry": usager.code_pays_naissance or "99100",
        },
        "quotient_familial_v3": {
            "allocataires": [_person_json(p) for p in family.parents],
            "enfants": enfants,
            "quotient_familial": qf.model_dump(),
            "version": "v3",
        },
        "quotient_familial": {
            "regime": qf.fournisseur,
            "quotientFamilial": qf.valeur,
            "annee": qf.annee,
            "mois": qf.mois,
            "allocataires": [
                {
                    "nomNaissance": p.nom_naissance,
                    "nomUsuel": p.nom_usage,
                    "prenoms": p.prenoms,
                    "anneeDateDeNaissance": f"{p.date_naissance.year}",
                    "moisDateDeNaissance": f"{p.date_naissance.month:02d}",
                    "jourDateDeNaissance": f"{p.date_naissance.day:02d}",
                    "sexe": p.sexe,
                }
                for p in family.parents
            ],
            "enfants": [],
            "version": "v2",
        },
    }
