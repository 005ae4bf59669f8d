"""Shared fixtures: the laptop runtime (moto + template + real handlers), and sandboxes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Metrics are flushed as EMF lines on stdout by Powertools; tests don't need them.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "qfbridge")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "qfbridge")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def local_runtime() -> Iterator[object]:
    """A fresh laptop runtime (moto reset and provisioned from infra/template.yaml)."""
    from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

    runtime = LocalRuntime.start(RuntimeOptions(env_overrides={"DOSSIER_LEASE_SECONDS": "0"}))
    try:
        yield runtime
    finally:
        runtime.stop()
