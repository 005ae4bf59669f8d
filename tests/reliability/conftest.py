"""Prints the fault campaign's figures at the end of the session that ran it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = (
    REPO / "bench" / "results" / "reliability-full.json",
    REPO / "artifacts" / "reliability-quick.json",
)
_SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures written by test_fault_campaign.py during this session (xdist workers included)."""
    written = [p for p in RESULTS if p.exists() and p.stat().st_mtime >= _SESSION_STARTED]
    if not written:
        return
    path = max(written, key=lambda p: p.stat().st_mtime)
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return
    terminalreporter.section("reliability campaign")
    terminalreporter.write_line(
        f"{figures['dossiers']} dossiers over {figures['tenants']} collectivités ({figures['mode']} mix, "
        f"seed {figures['seed']}), {figures['rounds']} poll rounds in {figures['duration_s']} s"
    )
    for label, key in (
        ("faults injected", "faults_injected"),
        ("reconcile environments killed, by step", "reconcile_kills"),
        ("SQS deliveries", "sqs"),
        ("failed deliveries by cause", "failures_by_code"),
        ("outcomes", "outcomes"),
    ):
        terminalreporter.write_line(f"{label}: {_inline(figures.get(key, {}))}")
    terminalreporter.write_line(f"DLQ messages: {figures.get('dlq_messages')}  (figures: {path})")


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items()) or "none"
