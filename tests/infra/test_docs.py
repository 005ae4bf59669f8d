"""The docs say only what exists: commands, routes, events, config keys, make targets, parameters."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from qfbridge.store.events import EVENT_TYPES
from qfbridge_local.apidoc import (
    ENVELOPE_SCHEMA_PATH,
    WEBHOOKS_SECTION_PATH,
    load_event_schemas,
    render_envelope_schema,
    render_event_catalogue,
    render_markdown,
)
from qfbridge_local.cli import build_parser
from qfbridge_local.serve import ServeConfig
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEXT = {path.name: path.read_text(encoding="utf-8") for path in DOCS}
OPENAPI = json.loads((REPO / "docs/openapi.json").read_text(encoding="utf-8"))
EVENT_SCHEMAS = load_event_schemas(REPO / "docs/events")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _code(text: str) -> list[str]:
    """Inline code spans and fenced code blocks: where the docs name commands."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return blocks + spans


def _command_paths() -> set[tuple[str, ...]]:
    found = set()
    for text in TEXT.values():
        for code in _code(text):
            for match in re.finditer(r"(?:^|[\s/])qfbridge((?: [a-z][a-z-]*)+)", code, flags=re.M):
                found.add(tuple(match.group(1).split()))
    return found


def _audit_actions() -> set[str]:
    sources = (REPO / "layers/core/qfbridge").rglob("*.py")
    actions = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        actions |= set(re.findall(r'@audited\("([a-z_.]+)"\)', text))
        if "dossier.auto_link." in text:
            actions |= {"dossier.auto_link.external_id", "dossier.auto_link.identity"}
        if "family.identity_read." in text:  # the refresh's reads, per refresh reason
            actions |= {"family.identity_read.monthly", "family.identity_read.manual"}
    return actions


def test_every_documented_command_exists() -> None:
    commands = _command_paths()
    assert ("demo",) in commands and ("local", "serve") in commands
    for words in commands:
        parser = build_parser()
        walked = 0
        for word in words:
            choices = _subcommands(parser)
            if not choices:
                break  # the rest are arguments (e.g. `dossiers review SIRET`)
            assert word in choices, f"`qfbridge {' '.join(words)}` is documented but `{word}` is no command"
            parser = choices[word]
            walked += 1
        assert walked >= 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["demo", "--help"],
        ["local", "serve", "--help"],
        ["dlq", "redrive", "--help"],
        ["audit", "query", "--help"],
    ],
)
def test_cli_help_works(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 0
    assert "usage: qfbridge" in capsys.readouterr().out


def test_every_documented_route_exists_in_the_openapi() -> None:
    documented = set()
    for text in TEXT.values():
        for method, path in re.findall(r"\b(GET|PUT|POST|DELETE|PATCH) (/v1/[A-Za-z0-9_{}/.:-]*)", text):
            documented.add((method.lower(), path.rstrip(".")))
    assert len(documented) >= 10
    for method, path in documented:
        assert path in OPENAPI["paths"], f"{path} is documented but not in docs/openapi.json"
        assert method in OPENAPI["paths"][path], f"{method.upper()} {path} is documented but not served"


def test_every_documented_event_has_a_schema_and_every_audit_action_exists() -> None:
    assert set(EVENT_SCHEMAS) == set(EVENT_TYPES)
    actions = _audit_actions()
    assert {"family.read", "dossier.resolve", "family.erase"} <= actions
    for text in TEXT.values():
        for name in re.findall(
            r"`((?:dossier|qf|refresh|tenant|family|form_link|credentials)\.[a-z_.]+)`", text
        ):
            assert name in EVENT_SCHEMAS or name in actions, (
                f"`{name}` is documented but is no event nor audit action"
            )


def test_every_documented_make_target_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    for text in TEXT.values():
        for target in re.findall(r"`make ([a-z][a-z-]*)`", text):
            assert target in targets, f"`make {target}` is documented but not in the Makefile"


def test_every_documented_template_parameter_exists() -> None:
    parameters = set(load_template(DEFAULT_TEMPLATE)["Parameters"])
    documented = set(re.findall(r"^\s*\| `([A-Z][A-Za-z]+)` \|", TEXT["README.md"], flags=re.M))
    assert documented and documented <= parameters
    assert parameters <= documented, f"undocumented parameters: {parameters - documented}"


def test_the_config_example_and_the_documented_config_keys_exist() -> None:
    ServeConfig.load(REPO / "config/local.example.toml")  # extra keys are refused
    sections = ServeConfig.model_fields
    for text in TEXT.values():
        for section in re.findall(r"`\[([a-z_]+)\]", text):
            assert section in sections, f"config section [{section}] is documented but does not exist"
        for section, key in re.findall(r"`\[([a-z_]+)\] ([a-z_]+) =", text):
            model = sections[section].annotation
            assert model is not None and key in model.model_fields, (
                f"config key {section}.{key} is documented but does not exist"
            )


def test_the_api_reference_and_event_catalogue_are_rendered_from_the_sources() -> None:
    assert (REPO / "docs/api.md").read_text(encoding="utf-8") == render_markdown(OPENAPI)
    webhooks = (REPO / "docs/events" / WEBHOOKS_SECTION_PATH).read_text(encoding="utf-8")
    assert (REPO / "docs/events.md").read_text(encoding="utf-8") == render_event_catalogue(
        EVENT_SCHEMAS, webhooks
    )
    envelope = (REPO / "docs/events" / ENVELOPE_SCHEMA_PATH).read_text(encoding="utf-8")
    assert envelope == render_envelope_schema(EVENT_SCHEMAS), "stale envelope schema: run make openapi"


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = TEXT["README.md"].split("## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_documentation_links_resolve() -> None:
    for path in DOCS:
        for target in re.findall(r"\]\(((?!http)[^)#]+)\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
