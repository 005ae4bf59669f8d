"""Package size: the layer and each function's package after ``sam build``, unzipped and zipped.

``sam build`` runs into a temporary directory with the SAM CLI of ``.venv-sam`` (``make sam-check``
installs it), so that the figures are those of the code as it is now. Without the SAM CLI, or if
the build fails (it installs the layer's requirements for arm64 from PyPI), the last
``.aws-sam/build`` is measured instead and the result says so.

Budget: Lambda's hard limit of 250 MB unzipped for a function and all its layers; the value is the
layer plus the largest function package over that limit.
"""

from __future__ import annotations

import io
import os
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
FALLBACK = REPO / ".aws-sam" / "build"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
MB = 1024 * 1024


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


def _sam_build(build_dir: Path) -> tuple[bool, str]:
    if not SAM.is_file():
        return False, "SAM CLI not installed (make sam-check installs it in .venv-sam)"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    python_dir = _python313_dir()
    if python_dir:
        env["PATH"] = python_dir + os.pathsep + env.get("PATH", "")
    completed = subprocess.run(
        [str(SAM), "build", "-t", str(TEMPLATE), "--build-dir", str(build_dir)],
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


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="qfbridge-bench-sam-"))
    try:
        started = time.perf_counter()
        built, source = _sam_build(workdir / "build")
        build_seconds = time.perf_counter() - started
        build_dir = workdir / "build" if built else FALLBACK
        if not build_dir.is_dir():
            return {"error": f"{source}; and no {FALLBACK.relative_to(REPO)} to measure"}
        layer = build_dir / "CoreLayer"
        functions = {d.name: d for d in sorted(build_dir.iterdir()) if d.is_dir() and d.name != "CoreLayer"}
        layer_unzipped = _unzipped(layer)
        function_sizes = {
            name: {"unzipped_bytes": _unzipped(d), "zipped_bytes": _zipped(d)}
            for name, d in functions.items()
        }
        largest = max((s["unzipped_bytes"] for s in function_sizes.values()), default=0)
        return {
            "source": source if built else f"{source} — measured the last .aws-sam/build instead",
            "fresh": built,
            "build_seconds": round(build_seconds, 1),
            "layer": {
                "unzipped_mb": round(layer_unzipped / MB, 2),
                "zipped_mb": round(_zipped(layer) / MB, 2),
                "largest_packages_mb": _largest_dirs(layer),
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
