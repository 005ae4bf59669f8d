"""Lambda runs one invocation at a time per execution environment, and so does the laptop runtime:
Lambda code carries no lock, thread-local or per-thread object for the sake of concurrent
invocations. The only thread-safety code allowed guards state shared by threads that one invocation
starts itself, each named here with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_CODE = (ROOT / "layers" / "core" / "qfbridge", ROOT / "functions")
THREAD_SAFETY = {"Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "local"}
JUSTIFIED = {
    "layers/core/qfbridge/hubee/tokens.py": (
        "hubee_poll reaches HubEE from the worker threads of its own invocation (a thread pool), "
        "which share the process's token cache"
    ),
}


def _thread_safety_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "threading"
            and node.attr in THREAD_SAFETY
        ):
            uses.append(f"threading.{node.attr} (line {node.lineno})")
        if isinstance(node, ast.ImportFrom) and node.module == "threading":
            uses += [f"from threading import {a.name}" for a in node.names if a.name in THREAD_SAFETY]
    return uses


def test_lambda_code_has_no_lock_but_those_its_own_threads_need() -> None:
    found = {
        str(path.relative_to(ROOT)): uses
        for base in LAMBDA_CODE
        for path in sorted(base.rglob("*.py"))
        if (uses := _thread_safety_uses(path))
    }
    assert {path: uses for path, uses in found.items() if path not in JUSTIFIED} == {}


def test_the_scan_finds_a_lock(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import threading\n_lock = threading.Lock()\n", encoding="utf-8")
    assert _thread_safety_uses(sample) == ["threading.Lock (line 2)"]
