"""Operator commands fit for operators: ordinary mistakes are one line and a hint, never a traceback;
CSV files as French offices export them; ``--json`` everywhere; a fast start without moto."""

from __future__ import annotations

import codecs
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qfbridge.domain.siret import complete_siret
from qfbridge_local.cli import build_parser, main
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime.start(RuntimeOptions()) as rt:
        yield rt


def _siret(n: int) -> str:
    return complete_siret(f"2105022{n:06d}")


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qfbridge_local.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _bare_env(home: Path, **extra: str) -> dict[str, str]:
    """No AWS configuration at all: no variables, an empty home, no instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {"HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true"} | extra


def assert_ordinary_mistake(code: int, stderr: str, *words: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[-1].startswith("hint: "), stderr
    assert len(lines) == 2, stderr
    for word in words:
        assert word in lines[0], stderr


# ---------------------------------------------------------------------- AWS configuration
def test_no_region_no_credentials_and_an_unknown_profile_are_one_line_each(tmp_path: Path) -> None:
    no_region = _cli(["tenants", "list"], _bare_env(tmp_path))
    no_credentials = _cli(["tenants", "list", "--region", "eu-west-3"], _bare_env(tmp_path))
    no_profile = _cli(["tokens", "report", "--profile", "nope"], _bare_env(tmp_path))

    assert_ordinary_mistake(no_region.returncode, no_region.stderr, "no AWS region")
    assert_ordinary_mistake(no_credentials.returncode, no_credentials.stderr, "no AWS credentials")
    assert_ordinary_mistake(no_profile.returncode, no_profile.stderr, "profile", "nope")


def test_an_unknown_stack_is_one_line_with_a_hint(runtime: LocalRuntime, tmp_path: Path) -> None:
    env = _bare_env(
        tmp_path,
        AWS_ENDPOINT_URL=runtime.endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="eu-west-3",
    )

    result = _cli(["dossiers", "review", _siret(1), "--stack-name", "qfbridge-nowhere"], env)

    assert_ordinary_mistake(result.returncode, result.stderr, "qfbridge-nowhere", "eu-west-3")


def test_an_unreachable_api_is_one_line_with_a_hint(tmp_path: Path) -> None:
    env = _bare_env(tmp_path, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="eu-west-3")

    result = _cli(["tenants", "list", "--api-url", "http://127.0.0.1:9"], env)

    assert_ordinary_mistake(result.returncode, result.stderr, "unreachable")


# ---------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["dossiers", "review", "123"], ["not a valid SIRET"]),
        (["directory", "import", "21040107100018", "x.csv"], ["not a valid SIRET"]),
        (["audit", "query", "12345678901234", "--log-group", "g"], ["not a valid SIRET"]),
        (["tenants", "onboard", "/nowhere/tenants.csv"], ["no such file"]),
    ],
)
def test_bad_arguments_are_one_line_with_a_hint(
    runtime: LocalRuntime, args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*args, "--api-url", runtime.api_url])

    assert_ordinary_mistake(code, capsys.readouterr().err, *words)


def test_an_unknown_tenant_is_one_line_with_a_hint(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "families.csv"
    path.write_text("user_id,parent1_nom_naissance\nf-1,MARTIN\n", encoding="utf-8")

    code = main(["directory", "import", _siret(2), str(path), "--api-url", runtime.api_url])

    err = capsys.readouterr().err
    assert_ordinary_mistake(code, err, "tenant_not_found")
    assert "tenants onboard" in err


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("tenants.toml", b"[[tenants]\nsiret = ", ["TOML", "malformed"]),
        ("tenants.csv", b"siret;nom\n21040107100019;X\n", ["missing column", "name", "cog"]),
        ("tenants.csv", b"", ["empty"]),
        ("tenants.csv", b"siret,name,cog\n\x81\x8d\x8f,\x90,\x9d\n", ["neither UTF-8 nor Windows-1252"]),
    ],
)
def test_malformed_files_are_one_line_with_a_hint(
    runtime: LocalRuntime,
    tmp_path: Path,
    name: str,
    content: bytes,
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    code = main(["tenants", "onboard", str(path), "--api-url", runtime.api_url])

    assert_ordinary_mistake(code, capsys.readouterr().err, *words)


# ---------------------------------------------------------------------- CSV as offices export it
ROWS = [
    ["user_id", "parent1_nom_naissance", "parent1_prenoms", "parent1_sexe", "parent1_date_naissance"],
    ["fam-1", "LEFÈVRE", "Hélène", "F", "03/02/1985"],
    ["fam-2", "GARÇON", "Zoé Anaïs", "f", "1990-12-31"],
    ["fam-3", "DUPONT", "Jean", "M", "31/02/1980"],  # not a date: reported, the others imported
    ["fam-4", "", "", "", ""],  # no parent: reported
    ["fam-5", "NGUYỄN", "Thi", "F", "1988-04-05"],
]


def _write(path: Path, encoding: str, delimiter: str, bom: bool) -> None:
    rows = ROWS if encoding != "cp1252" else [[c.replace("Ễ", "E") for c in row] for row in ROWS]
    with path.open("w", encoding=encoding, newline="") as fh:
        if bom:
            fh.write("\ufeff")
        csv.writer(fh, delimiter=delimiter, lineterminator="\r\n").writerows(rows)


@pytest.mark.parametrize(
    ("encoding", "delimiter", "bom"),
    [("utf-8", ",", False), ("utf-8", ";", True), ("cp1252", ";", False), ("utf-8", ";", False)],
    ids=["utf8-comma", "utf8-bom-semicolon", "windows1252-semicolon", "utf8-semicolon"],
)
def test_directory_import_reads_office_csv_and_reports_each_bad_row(
    runtime: LocalRuntime,
    tmp_path: Path,
    encoding: str,
    delimiter: str,
    bom: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    siret = _siret(
        10 + ["utf-8,False", "utf-8;True", "cp1252;False", "utf-8;False"].index(f"{encoding}{delimiter}{bom}")
    )
    tenants = tmp_path / "tenants.csv"
    tenants.write_bytes(codecs.BOM_UTF8 + f"siret;name;cog\n{siret};Commune;04107\n".encode())
    assert main(["tenants", "onboard", str(tenants), "--api-url", runtime.api_url]) == 0
    path = tmp_path / "families.csv"
    _write(path, encoding, delimiter, bom)
    capsys.readouterr()

    code = main(["directory", "import", siret, str(path), "--api-url", runtime.api_url, "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 1  # done, with invalid rows
    assert result["created"] == 3 and result["invalid"] == 2
    errors = {e["user_id"]: e for e in result["errors"]}
    assert set(errors) == {"fam-3", "fam-4"}
    assert errors["fam-3"]["line"] == 4 and "parents.0.date_naissance" in errors["fam-3"]["fields"]
    assert errors["fam-4"]["line"] == 5 and "parents" in errors["fam-4"]["fields"]
    assert "31/02/1980" not in json.dumps(result)  # the report names fields, never values
    assert "Hélène" not in json.dumps(result)


def test_directory_columns_are_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["directory", "import", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    for column in ("user_id", "parent1_*", "enfant1_prenoms", "DD/MM/YYYY", "Windows-1252", "; or ,"):
        assert column in text, column


def test_tenants_onboard_reads_windows_1252_with_semicolons_and_french_numbers(
    runtime: LocalRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = _siret(20), "21040107100018"
    path = tmp_path / "tenants.csv"
    path.write_bytes(
        (
            "siret;name;cog;redirect_hosts;token_expires_on;refresh_budget_rps\r\n"
            f"{good};Commune de Sainte-Tulle (Alpes-de-Haute-Provence);04197;portail.example.fr www.example.fr;"
            "30/06/2027;2,5\r\n"
            f"{bad};Mauvais SIRET;04107;;;\r\n"
        ).encode("cp1252")
    )

    code = main(["tenants", "onboard", str(path), "--api-url", runtime.api_url, "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["onboarded"] == 1
    assert [(r["line"], r["status"]) for r in result["rows"]] == [(2, "ok"), (3, "invalid")]
    assert result["rows"][1]["fields"] == "siret"
    assert main(["tenants", "list", "--api-url", runtime.api_url, "--json"]) == 0
    tenant = next(t for t in json.loads(capsys.readouterr().out) if t["siret"] == good)
    assert tenant["refresh_budget_rps"] == 2.5 and tenant["token_expires_on"] == "2027-06-30"
    assert tenant["redirect_hosts"] == ["portail.example.fr", "www.example.fr"]


# ---------------------------------------------------------------------- --json, --version, start
def test_every_operator_command_takes_the_common_options() -> None:
    parser = build_parser()
    commands = [
        ["tenants", "onboard", "f"],
        ["tenants", "list"],
        ["directory", "import", "s", "f"],
        ["dossiers", "review", "s"],
        ["dlq", "inspect", "refresh"],
        ["dlq", "redrive", "refresh"],
        ["tokens", "report"],
        ["audit", "query", "s"],
        ["webhook", "replay"],
    ]
    for command in commands:
        args = parser.parse_args(
            [*command, "--json", "--profile", "p", "--region", "r", "--stack-name", "n", "--api-url", "u"]
        )
        assert (args.json, args.profile, args.region, args.stack_name, args.api_url) == (
            True,
            "p",
            "r",
            "n",
            "u",
        )


def test_version_and_a_fast_start_without_moto(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from qfbridge_local.cli import build_parser\n"
        "for argv in (['--version'], ['tenants', 'list', '--help'], ['local', 'deposit', '--help']):\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('moto', 'boto3', 'botocore', 'qfbridge_local.runtime', 'yaml') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("qfbridge ")  # --version
    assert result.stdout.strip().splitlines()[-1] == "[]"
