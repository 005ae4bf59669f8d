"""A Lambda execution environment's cold start runs without cyclic garbage collection, which resumes
once the first invocation has ended; outside Lambda nothing changes. Each case runs in a fresh
interpreter: the collector's state is the process's."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted((REPO / "functions").glob("*/app.py"))
LAMBDA = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.13"}

_SETTLED_HANDLER = """
import gc, json, weakref
from qfbridge import startup
report = {"paused_at_import": not gc.isenabled()}

def wiring():
    report["paused_while_wiring"] = not gc.isenabled()

def failing_wiring():
    raise RuntimeError("a setting is missing")

class Cycle:
    pass

@startup.settled(failing_wiring, wiring)
def handler(event, context):
    report.setdefault("paused_during_first", not gc.isenabled())
    garbage = Cycle()
    garbage.itself = garbage  # a reference cycle the request leaves behind
    report.setdefault("garbage", []).append(weakref.ref(garbage))
    if event == "fail":
        raise RuntimeError("first invocation failed")
    return event

try:
    handler(EVENT, None)
except RuntimeError:
    report["raised"] = True
report["enabled_after_first"] = gc.isenabled()
report["frozen_after_first"] = gc.get_freeze_count()
handler("again", None)
report["enabled_after_second"] = gc.isenabled()
gc.collect()
report["request_garbage_left"] = sum(1 for ref in report.pop("garbage") if ref() is not None)
print(json.dumps(report))
"""


def _run(code: str, environment: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_EXECUTION_ENV"} | environment
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "layers" / "core"), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("event", ["ok", "fail"])
def test_in_lambda_the_collector_waits_until_the_handler_is_wired(event: str) -> None:
    report = _run(_SETTLED_HANDLER.replace("EVENT", repr(event)), LAMBDA)

    assert report["paused_at_import"] is True
    assert report["paused_while_wiring"] is True  # a failing factory does not stop the others
    assert report["paused_during_first"] is False  # the request runs with the collector on
    assert report.get("raised", False) is (event == "fail")
    assert report["enabled_after_first"] is True
    assert report["frozen_after_first"] > 0  # what the cold start loaded: out of later collections
    assert report["enabled_after_second"] is True
    assert report["request_garbage_left"] == 0  # the first request's cycles are not frozen


def test_outside_lambda_importing_it_changes_nothing() -> None:
    report = _run(_SETTLED_HANDLER.replace("EVENT", "'ok'"), {})

    assert report["paused_at_import"] is False
    assert "paused_while_wiring" not in report  # outside Lambda the request wires itself, as before
    assert report["paused_during_first"] is False
    assert report["frozen_after_first"] == 0
    assert report["request_garbage_left"] == 0


def test_a_cold_start_leaves_only_a_few_hundred_objects_of_cyclic_garbage() -> None:
    """What the pause costs: the cyclic garbage of the import and the wiring is never reclaimed.
    Measured on reconcile's (the largest wiring), as the cold-start benchmark runs it."""
    from bench import cold_start

    code_dir, environment = cold_start._functions()["reconcile"]
    child = cold_start._CHILD + (
        "\nimport gc\nprint(json.dumps({'paused': not gc.isenabled(), 'garbage': gc.collect()}))\n"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            child,
            str(code_dir),
            str(cold_start.LAYER),
            "1",
            json.dumps(cold_start.layer_modules()),
        ],
        env=cold_start._base_env() | environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert report["paused"] is True
    assert 0 < report["garbage"] < 5_000


@pytest.mark.parametrize("app", FUNCTIONS, ids=lambda p: p.parent.name)
def test_every_handler_imports_startup_first_and_is_settled_by_its_outermost_decorator(app: Path) -> None:
    module = ast.parse(app.read_text(encoding="utf-8"))
    imports = [node for node in module.body if isinstance(node, ast.Import | ast.ImportFrom)]
    first = (
        imports[1]
        if isinstance(imports[0], ast.ImportFrom) and imports[0].module == "__future__"
        else imports[0]
    )
    assert isinstance(first, ast.ImportFrom) and first.module == "qfbridge"
    assert [alias.name for alias in first.names] == ["startup"]

    handler = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "lambda_handler")
    outermost = handler.decorator_list[0]
    assert isinstance(outermost, ast.Call) and ast.unparse(outermost.func) == "startup.settled"
    factories = {
        n.name
        for n in module.body
        if isinstance(n, ast.FunctionDef) and any(ast.unparse(d) == "cache" for d in n.decorator_list)
    }
    assert {ast.unparse(a) for a in outermost.args} <= factories  # it builds the handler's own factories
