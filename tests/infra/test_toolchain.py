"""The toolchain is reproducible: the development environment installs from a hashed lock of the
project's extras, every tool pinned, and the package's runtime dependencies are exactly the Lambda
layer's (the laptop runtime's own packages live in the ``local`` extra)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEV_LOCK = REPO / "requirements-dev.txt"
LAYER_INPUTS = REPO / "layers/core/requirements.in"
# name==version, an optional environment marker (the lock is universal), then one or more hashes
LOCK_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?: ;[^\\\n]*)? \\\n"
    r"(?:[ ]+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+",
    flags=re.M,
)


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>\[ ;]", requirement.strip())[0]).lower()


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def _lock() -> dict[str, str]:
    return {_name(m["name"]): m["version"] for m in LOCK_ENTRY.finditer(DEV_LOCK.read_text())}


def test_the_package_needs_at_run_time_exactly_what_the_layer_ships() -> None:
    runtime = {_name(dep): dep for dep in _project()["dependencies"]}
    layer = {
        _name(line): line.strip()
        for line in LAYER_INPUTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert runtime == layer
    assert not {"moto", "rich", "pyyaml"} & set(runtime)
    assert {"moto", "rich", "pyyaml"} <= {_name(dep) for dep in _project()["optional-dependencies"]["local"]}


def test_the_dev_lock_pins_every_package_with_its_hashes() -> None:
    text = DEV_LOCK.read_text()
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    # every requirement is an exact pin followed by its hashes (pip installs it in hash-checking
    # mode); no option line (index, editable, unhashed requirement) slips in
    # (a package may appear twice, each version under its own marker: the lock is universal)
    assert requirement_lines and len(requirement_lines) == len(list(LOCK_ENTRY.finditer(text)))
    assert not [line for line in requirement_lines if line.startswith("-")]


def test_every_requirement_of_the_project_is_pinned_and_locked_at_its_pin() -> None:
    project = _project()
    requirements = [
        *project["dependencies"],
        *(dep for extra in ("dev", "local") for dep in project["optional-dependencies"][extra]),
    ]
    lock = _lock()
    for requirement in requirements:
        pinned = re.search(r"==([^\s;,]+)$", requirement.strip())
        assert pinned, f"{requirement}: not an exact pin"
        assert lock.get(_name(requirement)) == pinned[1], (
            f"{requirement} vs the lock's {lock.get(_name(requirement))}"
        )


def test_the_virtualenv_installs_the_lock_in_hash_checking_mode_and_nothing_else() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements-dev.txt" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
