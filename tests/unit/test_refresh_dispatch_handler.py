"""refresh_dispatch's handler hands the dispatcher the function's deadline."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qfbridge.services.dispatch import DispatchReport
from qfbridge_local.lambdas import LambdaContext
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

APP = Path(__file__).resolve().parents[2] / "functions/refresh_dispatch/app.py"


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refresh_dispatch_app_under_test", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class RecordingDispatcher:
    answers: list[bool] = field(default_factory=list)

    def run(self, tenants: Any = None, should_stop: Any = None) -> DispatchReport:
        self.answers.append(should_stop())
        return DispatchReport(stopped_early=self.answers[-1])


@pytest.mark.parametrize(("timeout_seconds", "stops"), [(120, False), (15, True)])
def test_the_dispatch_stops_with_the_lambda_deadline_near(
    timeout_seconds: int, stops: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = load_handler()
    dispatcher = RecordingDispatcher()
    monkeypatch.setattr(app, "dispatcher", lambda: dispatcher)
    context = LambdaContext("qfbridge-dev-RefreshDispatchFunction", 512, timeout_seconds)
    result = app.lambda_handler({"task": "refresh_dispatch"}, context)
    assert dispatcher.answers == [stops]
    assert result["refresh"]["stopped_early"] is stops


def test_the_deadline_margin_leaves_the_function_most_of_its_timeout() -> None:
    app = load_handler()
    function = load_template(DEFAULT_TEMPLATE)["Resources"]["RefreshDispatchFunction"]["Properties"]
    assert int(function["Timeout"]) * 1000 >= app.STOP_WITH_REMAINING_MS * 4


def test_a_failing_poll_does_not_starve_the_refresh_dispatch_on_the_laptop_runtime() -> None:
    from qfbridge_local.runtime import LocalRuntime

    fired: list[str] = []

    class Triggers:
        def fire_schedule(self, function: str, name: str | None = None) -> dict[str, Any]:
            fired.append(function)
            if function == "HubeePollFunction":
                raise TimeoutError("HubEE did not answer")
            return {"refresh": {"enqueued": 3}}

    runtime = LocalRuntime()
    runtime.triggers = Triggers()  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        runtime.poll()
    assert fired == ["HubeePollFunction", "RefreshDispatchFunction"]
