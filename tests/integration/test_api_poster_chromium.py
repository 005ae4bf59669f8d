"""The counter poster renders in headless Chromium (A4), and the test saves
a screenshot (``artifacts/poster.png`` at the repository root, gitignored, and pytest's tmp_path).

Chromium comes from the system: ``apt-get update && apt-get install -y chromium``.
"""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest_api import ApiHarness, api, api_runtime  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
A4_AT_96_DPI = (794, 1123)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get update && apt-get install -y chromium)"
)


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--user-data-dir={cwd / 'profile'}",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_poster_renders_in_headless_chromium_and_a_screenshot_is_saved(
    api: ApiHarness, tmp_path: Path
) -> None:
    siret = api.tenant(name="Commune de Digne-les-Bains")
    page = tmp_path / "poster.html"
    page.write_text(api.http.get(f"/v1/tenants/{siret}/poster").text, encoding="utf-8")
    screenshot = tmp_path / "poster.png"

    shot = chromium(
        f"--screenshot={screenshot}",
        f"--window-size={A4_AT_96_DPI[0]},{A4_AT_96_DPI[1]}",
        page.as_uri(),
        cwd=tmp_path,
    )
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    pdf = tmp_path / "poster.pdf"
    printed = chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri(), cwd=tmp_path)

    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    assert png_size(screenshot) == A4_AT_96_DPI
    assert screenshot.stat().st_size > 20_000  # a QR code and text, not a blank page
    assert f"/collectivites/{siret}" in dom.stdout and "<svg" in dom.stdout
    assert "Commune de Digne-les-Bains" in dom.stdout
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes())) == 1  # fits on one A4 sheet
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "poster.png")
