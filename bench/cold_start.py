"""Cold request: what a Lambda execution environment's first request costs before any network.

Each measurement is a new interpreter (``sys.executable``, Python 3.13) that puts the function's
code directory and the layer's package first on ``sys.path``, as Lambda does (``/var/task``,
``/opt/python``), with the environment the template gives the function plus the variables Lambda
sets (``LAMBDA_TASK_ROOT``, ``AWS_REGION``…), and refuses the modules the layer does not ship (the
benchmark's virtualenv holds more). It times ``import app`` — Lambda's init phase — then the
"wiring" the first invocation pays before its first request goes out: the handler's cached
factories (settings, services, repositories), the X-Ray tracer its decorators build on first call
(tracing active) and the AWS clients the loaded qfbridge modules create on first use (their
zero-argument cached factories).

The budget is the whole: init + wiring ≤ ``LIMIT`` × the floor. The init alone is reported as
information (``ratio_to_floor``): moving imports from the init into the first invocation lowers it
and changes nothing for the request that pays both.

Floor, timed the same way in the same rounds: ``import boto3; boto3.client("sqs", ...)`` — the init
of the smallest useful Python function. Rounds interleave the floor and the handlers so that the
machine's load moves them together; a handler's ratio is the median, over ``ROUNDS`` rounds, of its
run divided by the floor's run of the same round (the milliseconds are medians too). Paired so, a
slower stretch of a shared machine moves both sides of a ratio: the medians of the two series, taken
apart, had moved a handler's ratio by ±0.1 from one run to the next.

The environment is Lambda's (``AWS_EXECUTION_ENV`` included), so a handler's cold start runs as it
does there: ``qfbridge.startup`` pauses the cyclic garbage collector until the first invocation has
built the handler's factories.
The cached factories count what a first request builds before its first byte goes out: the tenant's
secret is read through the environment's one Secrets Manager client (``qfbridge.store.secrets``),
and the first HTTPS client builds the environment's one TLS context (``qfbridge.tls.tls_context``,
whose roots OpenSSL reads at the handshake that names one: network time, not counted).

Three environments: ``lambda`` (tracing active, as deployed: the budget), ``trace_disabled``
(``POWERTOOLS_TRACE_DISABLED=true``, as on the laptop runtime) and ``from_source``, both reported
beside it. The budget reads each module's bytecode, as the layer ships it (``layers/core/Makefile``
compiles it; the package-size section checks every module has its ``.pyc``); ``from_source`` reads
none and compiles every module it imports — what each cold request paid on Lambda when the layer
shipped its sources alone (/opt is read-only: nothing compiled there is kept).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from qfbridge_local.template import LOCAL_REGION, resolve_stack

REPO = Path(__file__).resolve().parents[1]
LAYER = REPO / "layers" / "core"
ROUNDS = 11
LIMIT = 2.0

_NOT_IN_LAYER = r"""
import importlib.machinery, json, sys
class _NotInLayer:
    # Lambda has the layer's packages and the runtime's boto3, not the benchmark's virtualenv:
    # a package of the virtualenv that the layer does not ship fails to import, as it would on
    # Lambda (httpx, for one, imports its command-line tool's rich, click and pygments when they
    # are installed).
    allowed = set(json.loads(sys.argv[4]))
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is not None or name in cls.allowed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is not None and "site-packages" in (spec.origin or str(spec.submodule_search_locations)):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the layer)", name=name)
        return None
sys.meta_path.insert(0, _NotInLayer)
"""

_CHILD = (
    _NOT_IN_LAYER
    + r"""
import functools, importlib, inspect, json, os, sys, time
code_dir, layer_dir, wire = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
started, started_cpu = time.perf_counter(), time.process_time()
sys.path[:0] = [code_dir, layer_dir]
module = importlib.import_module("app")
imported = time.perf_counter()
at_import = {"modules": len(sys.modules), "xray_loaded": "aws_xray_sdk.core" in sys.modules,
             "boto3_loaded": "boto3" in sys.modules}

def cached_factories(mod):
    for name, value in sorted(vars(mod).items()):
        if (callable(value) and hasattr(value, "cache_info") and getattr(value, "__module__", "") == mod.__name__
                and not inspect.signature(value).parameters):
            yield name, value

factories, clients = [], []
tracer_built = False
if wire:
    # 1. The handler's own factories (settings, services, repositories).
    for name, value in cached_factories(module):
        value()
        factories.append(name)
    # 2. What the first request builds before any byte goes out: the deferred X-Ray tracer (its
    #    decorators build it on the first call, patching with tracing active) and the AWS clients the
    #    loaded qfbridge modules create on first use (their zero-argument cached factories).
    observability = sys.modules.get("qfbridge.observability")
    if observability is not None and hasattr(getattr(observability, "tracer", None), "tracer"):
        if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() != "true":
            observability.tracer.tracer
            tracer_built = True
    for mod_name in sorted(m for m in list(sys.modules) if m.startswith("qfbridge.")):
        for name, value in cached_factories(sys.modules[mod_name]):
            value()
            clients.append(f"{mod_name}.{name}")
wired = time.perf_counter()
print(json.dumps({
    "cpu_ms": (time.process_time() - started_cpu) * 1000,
    "import_ms": (imported - started) * 1000,
    "wiring_ms": (wired - imported) * 1000,
    "factories": factories,
    "first_use": clients,
    "tracer_built": tracer_built,
    **at_import,
}))
"""
)

_FLOOR = (
    _NOT_IN_LAYER
    + r"""
import json, sys, time
started, started_cpu = time.perf_counter(), time.process_time()
import boto3
boto3.client("sqs", region_name=sys.argv[5])
print(json.dumps({"import_ms": (time.perf_counter() - started) * 1000,
                  "cpu_ms": (time.process_time() - started_cpu) * 1000}))
"""
)


def layer_modules() -> list[str]:
    """Top-level modules of the distributions the layer ships: its lock (``requirements.txt``) pins
    every one of them, transitive ones and boto3 included."""
    from importlib import metadata

    lock = (LAYER / "requirements.txt").read_text(encoding="utf-8")
    distributions = {
        name.lower().replace("_", "-") for name in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M)
    }
    return sorted(
        module
        for module, names in metadata.packages_distributions().items()
        if any(n.lower().replace("_", "-") in distributions for n in names)
    )


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


def _run(code: str, args: list[str], env: dict[str, str], from_source: bool = False) -> dict[str, Any]:
    """One fresh interpreter. ``from_source``: with no bytecode to read (an empty cache directory,
    none written), every module is compiled as it is imported."""
    python = [sys.executable]
    if from_source:
        python += ["-X", f"pycache_prefix={tempfile.mkdtemp(prefix='qfbridge-no-pyc-')}"]
        env = env | {"PYTHONDONTWRITEBYTECODE": "1"}
    completed = subprocess.run(
        [*python, "-c", code, *args],
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
            _NOT_IN_LAYER + f"\nsys.path[:0] = [{str(code_dir)!r}, {str(LAYER)!r}]; import app",
            str(code_dir),
            str(LAYER),
            "0",
            json.dumps(layer_modules()),
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
    variants = {
        "lambda": {},
        "trace_disabled": {"POWERTOOLS_TRACE_DISABLED": "true"},
        "from_source": {},  # information: the layer without its bytecode (SAM's Python builder)
    }
    allowed = json.dumps(layer_modules())
    floor: list[float] = []
    floor_cpu: list[float] = []
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {v: {f: [] for f in functions} for v in variants}
    # One round to warm the bytecode caches and the page cache, not counted; the trace-disabled
    # variant (a figure, not the budget) runs every other round to keep the benchmark short.
    for index, counted in enumerate([False] + [True] * rounds):
        floor_run = _run(_FLOOR, [str(LAYER), str(LAYER), "0", allowed, LOCAL_REGION], base)
        floor_ms = floor_run["import_ms"]
        if counted:
            floor.append(floor_ms)
            floor_cpu.append(floor_run["cpu_ms"])
        for variant, extra in variants.items():
            if variant != "lambda" and index % 2 == 0:
                continue
            for name, (code_dir, env) in functions.items():
                sample = _run(
                    _CHILD,
                    [str(code_dir), str(LAYER), "1", allowed],
                    base | env | extra,
                    from_source=variant == "from_source",
                )
                if counted:
                    samples[variant][name].append(sample | {"floor_ms": floor_ms})
    floor_median = statistics.median(floor)
    result: dict[str, Any] = {
        "python": sys.version.split()[0],
        "rounds": rounds,
        "floor": {
            "what": 'import boto3; boto3.client("sqs")',
            "median_ms": round(floor_median, 1),
            "runs_ms": [round(x, 1) for x in floor],
            "cpu_median_ms": round(statistics.median(floor_cpu), 1),
        },
        "limit": LIMIT,
        "budget": "import + wiring (the whole first request before any network) ÷ the same round's floor, median over the rounds",
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
                "first_request_cpu_ratio": round(
                    statistics.median(r["cpu_ms"] for r in runs) / statistics.median(floor_cpu), 3
                ),
                "import_plus_wiring_ratio": round(
                    statistics.median((r["import_ms"] + r["wiring_ms"]) / r["floor_ms"] for r in runs),
                    3,
                ),
                "first_request_median_ms": round(
                    statistics.median(r["import_ms"] + r["wiring_ms"] for r in runs), 1
                ),
                "factories": runs[0]["factories"],
                "first_use": runs[0]["first_use"],
                "tracer_built": runs[0]["tracer_built"],
                "modules_loaded": runs[0]["modules"],
                "xray_loaded_at_import": runs[0]["xray_loaded"],
                "boto3_loaded_at_import": runs[0]["boto3_loaded"],
            }
        if entry["lambda"]["import_plus_wiring_ratio"] > LIMIT:
            entry["top_imports"] = import_profile(code_dir, base | env)
        result["handlers"][name] = entry
    return result
