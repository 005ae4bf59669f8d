"""Under Lambda's logging configuration, no log record of any logger carries a family's identity or QF.

With ``LogFormat: JSON`` Lambda sets the root logger to ``ApplicationLogLevel`` (INFO): every
library logging at INFO then reaches CloudWatch — httpx logs each request URL, and API
Particulier's URLs carry the usager's names, birth date and birthplace in the query string.
The demo's intake and monthly refresh run here with the root logger at INFO, and every record any
logger emits is scanned for the names, birth dates and QF values the demo's families carry.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from qfbridge.domain.identity import PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from qfbridge_local.sandboxes.hubee import HubeeSandbox

_STANDARD = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None)))


def _records() -> tuple[list[logging.LogRecord], Any, Any]:
    seen: list[logging.LogRecord] = []
    original = logging.Logger.callHandlers

    def capture(self: logging.Logger, record: logging.LogRecord) -> None:
        seen.append(record)
        original(self, record)

    return seen, original, capture


def _texts(record: logging.LogRecord) -> Iterator[str]:
    yield record.getMessage()
    for key, value in vars(record).items():
        if key in _STANDARD:
            continue
        if isinstance(value, str):
            yield value
        elif isinstance(value, (list, tuple, dict)):
            yield repr(value)
        elif isinstance(value, int) and re.search("qf|quotient|valeur", key, re.IGNORECASE):
            yield f"qf={value}"
    if record.exc_info and record.exc_info[1] is not None:
        yield str(record.exc_info[1])


def test_the_demo_logs_no_name_birth_date_or_qf_under_lambdas_root_logger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the identities and QFs the demo's families carry, as the sandboxes receive them
    names: set[str] = set()
    dates: set[str] = set()
    qf_values: set[int] = set()
    deposit = HubeeSandbox.deposit_formulaire_qf
    add_household = ApiParticulierSandbox.add_household

    def remember_deposit(self: HubeeSandbox, siret: str, cog: str, formulaire: Any, **kw: Any) -> Any:
        identity = formulaire.get("pivot_identity") or {}
        names.update({str(identity.get("family_name") or ""), *str(identity.get("given_name") or "").split()})
        dates.add(str(identity.get("birthdate") or ""))
        block = formulaire.get("quotient_familial_v3") or {}
        for person in [*block.get("allocataires", []), *block.get("enfants", [])]:
            names.update({str(person.get("nom_naissance") or ""), *str(person.get("prenoms") or "").split()})
            dates.add(str(person.get("date_naissance") or ""))
        if block.get("quotient_familial"):
            qf_values.add(int(block["quotient_familial"]["valeur"]))
        return deposit(self, siret, cog, formulaire, **kw)

    def remember_household(
        self: ApiParticulierSandbox, identities: list[PivotIdentity], qf: QuotientFamilial, **kw: Any
    ) -> str:
        for identity in identities:
            names.update({identity.family_name, *identity.given_name.split()})
            dates.add(identity.birthdate.isoformat())
        qf_values.add(int(qf.valeur))
        return add_household(self, identities, qf, **kw)

    monkeypatch.setattr(HubeeSandbox, "deposit_formulaire_qf", remember_deposit)
    monkeypatch.setattr(ApiParticulierSandbox, "add_household", remember_household)
    # And the root logger configured as Lambda does with LogFormat JSON (ApplicationLogLevel INFO),
    # the functions' own logger at INFO too, every emitted record of every logger captured
    monkeypatch.setenv("QFBRIDGE_DEMO_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    seen, _original, capture = _records()
    monkeypatch.setattr(logging.Logger, "callHandlers", capture)
    # When the demo runs its intake and its monthly refresh
    from qfbridge_local.demo import run_demo

    summary = run_demo(quiet=True, tenants=2, families_per_tenant=6)
    assert summary.refresh.get("qf_found", 0) > 0 and sum(summary.dossiers.values()) > 0
    # Then records were emitted (libraries included), and none carries a name, a birth date or a QF
    assert seen
    names = {n.upper() for n in names if len(n) >= 4}
    date_forms = {d for d in dates if d} | {dt.date.fromisoformat(d).strftime("%d/%m/%Y") for d in dates if d}
    qf_pattern = re.compile(r"\b(" + "|".join(str(v) for v in sorted(qf_values)) + r")\b")
    hits = []
    for record in seen:
        for text in _texts(record):
            upper = text.upper()
            found = [n for n in names if re.search(rf"\b{re.escape(n)}\b", upper)]
            found += [d for d in date_forms if d in text]
            if re.search(r"qf|quotient|valeur", text, re.IGNORECASE) and qf_pattern.search(text):
                found.append("qf value")
            if found:
                hits.append((record.name, record.levelname, found))
    assert hits == []
