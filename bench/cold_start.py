"""Cold-start proxy: the import (init) time of each handler in a fresh Python process.

Each measurement is a new interpreter (``sys.executable``, Python 3.13) that puts the function's
code directory and the layer's package first on ``sys.path``, as Lambda does (``/var/task``,
``/opt/python``), with the environment the template gives the function plus the variables Lambda
sets (``LAMBDA_TASK_ROOT``, ``AWS_REGION``…), then times ``import app`` — Lambda's init phase. The
handler's cached factory (its boto3 clients, settings and services) is not called there; it is
timed separately, as "wiring", because the first invocation pays it.

Floor, timed the same way in the same rounds: ``import boto3; boto3.client("sqs", ...)`` — the init
of the smallest useful Python function. Rounds interleave the floor and the handlers so that the
machine's load moves them together; each figure is the median of ``ROUNDS`` runs.

Two environments: ``lambda`` (tracing active, as deployed: the budget) and ``trace_disabled``
(``POWERTOOLS_TRACE_DISABLED=true``, as on the laptop runtime), reported beside it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from qfbridge_local.template import LOCAL_REGION, resolve_stack

REPO = Path(__file__).resolve().parents[1]
LAYER = REPO / "layers" / "core"
ROUNDS = 7
LIMIT = 1.4

_CHILD = r"""
import functools, importlib, json, sys, time
code_dir, layer_dir, wire = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
started = time.perf_counter()
sys.path[:0] = [code_dir, layer_dir]
module = importlib.import_module("app")
imported = time.perf_counter()
at_import = {"modules": len(sys.modules), "xray_loaded": "aws_xray_sdk.core" in sys.modules,
             "boto3_loaded": "boto3" in sys.modules}
factories = []
if wire:
    for name, value in vars(module).items():
        if callable(value) and hasattr(value, "cache_info") and getattr(value, "__module__", "") == "app":
            value()
            factories.append(name)
wired = time.perf_counter()
print(json.dumps({
    "import_ms": (imported - started) * 1000,
    "wiring_ms": (wired - imported) * 1000,
    "factories": factories,
    **at_import,
}))
"""

_FLOOR = r"""
import json, sys, time
started = time.perf_counter()
import boto3
boto3.client("sqs", region_name=sys.argv[1])
print(json.dumps({"import_ms": (time.perf_counter() - started) * 1000}))
"""


def _functions() -> dict[str, tuple[Path, dict[str, str]]]:
    stack = resolve_stack(endpoint="https://example.invalid")
    result = {}
    for logical_id, spec in stack.functions.items():
        env = {k: v for k, v in spec.environment.items() if k != "AWS_ENDPOINT_URL"}
        result[spec.code_uri.name] = (
            spec.code_uri,
            env
            | {
                "AWS_REGION": LOCAL_REGION,
                "AWS_DEFAULT_REGION": LOCAL_REGION,
                "AWS_LAMBDA_FUNCTION_NAME": logical_id,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
                "LAMBDA_TASK_ROOT": str(spec.code_uri),
                "_HANDLER": spec.handler,
            },
        )
    return result


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ} | {
        # Credentials are never read at import; these keep botocore from searching for any.
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }


def _run(code: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {completed.stderr[-2000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def import_profile(code_dir: Path, env: dict[str, str], top: int = 12) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time (``python -X importtime``), top-level first."""
    completed = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            f"import sys; sys.path[:0] = [{str(code_dir)!r}, {str(LAYER)!r}]; import app",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows: list[dict[str, Any]] = []
    for line in completed.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            depth = len(match.group(3)) // 2
            rows.append(
                {
                    "module": match.group(4),
                    "self_ms": int(match.group(1)) / 1000,
                    "cumulative_ms": int(match.group(2)) / 1000,
                    "depth": depth,
                }
            )
    shallow = [r for r in rows if int(r["depth"]) <= 2]
    return sorted(shallow, key=lambda r: -float(r["cumulative_ms"]))[:top]


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    functions = _functions()
    base = _base_env()
    variants = {"lambda": {}, "trace_disabled": {"POWERTOOLS_TRACE_DISABLED": "true"}}
    floor: list[float] = []
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {v: {f: [] for f in functions} for v in variants}
    # One round to warm the bytecode caches and the page cache, not counted; the trace-disabled
    # variant (a figure, not the budget) runs every other round to keep the benchmark short.
    for index, counted in enumerate([False] + [True] * rounds):
        floor_ms = _run(_FLOOR, [LOCAL_REGION], base)["import_ms"]
        if counted:
            floor.append(floor_ms)
        for variant, extra in variants.items():
            if variant != "lambda" and index % 2 == 0:
                continue
            for name, (code_dir, env) in functions.items():
                sample = _run(_CHILD, [str(code_dir), str(LAYER), "1"], base | env | extra)
                if counted:
                    samples[variant][name].append(sample)
    floor_median = statistics.median(floor)
    result: dict[str, Any] = {
        "python": sys.version.split()[0],
        "rounds": rounds,
        "floor": {
            "what": 'import boto3; boto3.client("sqs")',
            "median_ms": round(floor_median, 1),
            "runs_ms": [round(x, 1) for x in floor],
        },
        "limit": LIMIT,
        "handlers": {},
    }
    for name, (code_dir, env) in functions.items():
        entry: dict[str, Any] = {}
        for variant in variants:
            runs = samples[variant][name]
            import_ms = statistics.median(r["import_ms"] for r in runs)
            entry[variant] = {
                "import_median_ms": round(import_ms, 1),
                "ratio_to_floor": round(import_ms / floor_median, 3),
                "wiring_median_ms": round(statistics.median(r["wiring_ms"] for r in runs), 1),
                "import_plus_wiring_ratio": round(
                    statistics.median(r["import_ms"] + r["wiring_ms"] for r in runs) / floor_median, 3
                ),
                "factories": runs[0]["factories"],
                "modules_loaded": runs[0]["modules"],
                "xray_loaded_at_import": runs[0]["xray_loaded"],
                "boto3_loaded_at_import": runs[0]["boto3_loaded"],
            }
        if entry["lambda"]["ratio_to_floor"] > LIMIT:
            entry["top_imports"] = import_profile(code_dir, base | env)
        result["handlers"][name] = entry
    return result
