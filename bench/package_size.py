"""Package size: the layer and each function's package after ``sam build``, unzipped and zipped.

Always a build into a temporary directory, so that the figures are those of the code as it is now
(never a stale ``.aws-sam/build``): ``sam build`` with the SAM CLI of ``.venv-sam`` (``make
sam-check`` installs it) or ``sam`` on the PATH; without it, what ``sam build`` runs for the layer —
its Makefile (``layers/core/Makefile``: the lock's arm64 wheels, qfbridge's sources, their bytecode)
— and a copy of each function's code directory. When neither can build (no SAM CLI, and no
python3.13 or the arm64 wheels out of reach of pip), the result says "not measured" and why: the
budgets are then reported as not measured, not as failed.

The layer must ship its bytecode (``layer.bytecode``: every module with a hash-based ``.pyc``):
Lambda's /opt is read-only, and a module without one is compiled at every cold request.

Budget: Lambda's hard limit of 250 MB unzipped for a function and all its layers; the value is the
layer plus the largest function package over that limit.

The layer is installed from its lock (``layers/core/requirements.txt``: every package pinned, with
hashes); the result records the versions the build installed (from the ``*.dist-info`` directories)
and whether they are exactly the lock's, so two builds of one commit ship the same layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAM = REPO / ".venv-sam" / "bin" / "sam"
TEMPLATE = REPO / "infra" / "template.yaml"
LAYER_SOURCE = REPO / "layers" / "core"
FUNCTIONS_SOURCE = REPO / "functions"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
MB = 1024 * 1024
LOCK = REPO / "layers" / "core" / "requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", flags=re.M)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """name → version of every package the layer's lock pins."""
    return {_normalise(name): version for name, version in _PIN.findall(lock.read_text(encoding="utf-8"))}


def installed_versions(layer: Path) -> dict[str, str]:
    """name → version of every distribution installed in a built layer (its ``*.dist-info``)."""
    root = layer / "python" if (layer / "python").is_dir() else layer
    found = {}
    for info in root.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[_normalise(name)] = version
    return dict(sorted(found.items()))


def pinning(layer: Path, lock: Path = LOCK) -> dict[str, Any]:
    """What the build installed against what the lock pins."""
    installed, locked = installed_versions(layer), locked_versions(lock)
    return {
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
        "installed": installed,
        "matches_lock": installed == locked,
        "not_in_lock": sorted(set(installed) - set(locked)),
        "differing": {n: [v, locked.get(n)] for n, v in installed.items() if locked.get(n) not in (None, v)},
        "boto3": installed.get("boto3"),
        "botocore": installed.get("botocore"),
    }


def _unzipped(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _zipped(path: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(path))
    return len(buffer.getvalue())


def _largest_dirs(path: Path, top: int = 6) -> dict[str, float]:
    root = path / "python" if (path / "python").is_dir() else path
    sizes = {d.name: _unzipped(d) for d in root.iterdir() if d.is_dir()}
    return {name: round(size / MB, 2) for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def _python313_dir() -> str | None:
    """The directory of a real python3.13 (SAM refuses pyenv shims of an inactive version)."""
    base = Path(sys.base_prefix) / "bin"
    if (base / "python3.13").is_file():
        return str(base)
    found = shutil.which("python3.13")
    return str(Path(found).parent) if found else None


def _sam() -> str | None:
    if SAM.is_file():
        return str(SAM)
    return shutil.which("sam")


def _sam_build(build_dir: Path) -> tuple[bool, str]:
    sam = _sam()
    if sam is None:
        return False, "SAM CLI not installed (make sam-check installs it in .venv-sam)"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    python_dir = _python313_dir()
    if python_dir:
        env["PATH"] = python_dir + os.pathsep + env.get("PATH", "")
    completed = subprocess.run(
        [sam, "build", "-t", str(TEMPLATE), "--build-dir", str(build_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        return False, "sam build failed: " + completed.stderr.strip().splitlines()[-1][:300]
    return True, "sam build (fresh)"


def _make_build(build_dir: Path) -> tuple[bool, str]:
    """Without a SAM CLI, what ``sam build`` runs: the layer's Makefile (``make build-CoreLayer``, in a
    copy of ``layers/core``, into ``CoreLayer/``), and each function's code directory copied as is."""
    python_dir = _python313_dir()
    if python_dir is None:
        return False, "no python3.13 to build the layer's bytecode with"
    source = build_dir / "source"
    shutil.copytree(LAYER_SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    completed = subprocess.run(
        ["make", "build-CoreLayer", f"ARTIFACTS_DIR={build_dir / 'CoreLayer'}",
         f"PYTHON={Path(python_dir) / 'python3.13'}"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    shutil.rmtree(source, ignore_errors=True)
    if completed.returncode != 0:
        errors = [line for line in completed.stderr.splitlines() if line.startswith("ERROR")]
        return False, "the layer's Makefile could not build it for arm64: " + (errors or ["?"])[-1][:300]
    for code in sorted(FUNCTIONS_SOURCE.iterdir()):
        if code.is_dir() and (code / "app.py").is_file():
            shutil.copytree(code, build_dir / code.name, ignore=shutil.ignore_patterns("__pycache__"))
    return True, "the layer's Makefile for arm64 (no SAM CLI), fresh"


def bytecode(site: Path, tag: str = "cpython-313") -> dict[str, Any]:
    """Which of the layer's modules ship their bytecode, and how it is checked (PEP 552's flags:
    hash-based, checked or not). Lambda's /opt is read-only: a module without a ``.pyc`` that
    Python can use is compiled at every cold request that imports it."""
    modules = without = 0
    modes: dict[str, int] = {}
    for source in site.rglob("*.py"):
        if any(part.endswith(".dist-info") or part.endswith(".data") for part in source.parts):
            continue
        modules += 1
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not pyc.is_file():
            without += 1
            continue
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        mode = "timestamp" if not flags & 1 else ("checked-hash" if flags & 2 else "unchecked-hash")
        modes[mode] = modes.get(mode, 0) + 1
    return {"modules": modules, "without_bytecode": without, "invalidation": modes}


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="qfbridge-bench-sam-"))
    try:
        started = time.perf_counter()
        build_dir = workdir / "build"
        built, source = _sam_build(build_dir)
        if not built:
            shutil.rmtree(build_dir, ignore_errors=True)
            made, made_source = _make_build(build_dir)
            if not made:
                return {"measured": False, "reason": f"{source}; {made_source}"}
            source = made_source
        build_seconds = time.perf_counter() - started
        layer = build_dir / "CoreLayer"
        functions = {d.name: d for d in sorted(build_dir.iterdir()) if d.is_dir() and d.name != "CoreLayer"}
        layer_unzipped = _unzipped(layer)
        function_sizes = {
            name: {"unzipped_bytes": _unzipped(d), "zipped_bytes": _zipped(d)}
            for name, d in functions.items()
        }
        largest = max((s["unzipped_bytes"] for s in function_sizes.values()), default=0)
        return {
            "measured": True,
            "source": source,
            "build_seconds": round(build_seconds, 1),
            "layer": {
                "unzipped_mb": round(layer_unzipped / MB, 2),
                "zipped_mb": round(_zipped(layer) / MB, 2),
                "largest_packages_mb": _largest_dirs(layer),
                "pinned": pinning(layer),
                "bytecode": bytecode(layer / "python"),
            },
            "functions": {
                name: {
                    "unzipped_kb": round(s["unzipped_bytes"] / 1024, 1),
                    "zipped_kb": round(s["zipped_bytes"] / 1024, 1),
                }
                for name, s in function_sizes.items()
            },
            "limit_mb": LAMBDA_UNZIPPED_LIMIT / MB,
            "ratio_to_limit": round((layer_unzipped + largest) / LAMBDA_UNZIPPED_LIMIT, 4),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
