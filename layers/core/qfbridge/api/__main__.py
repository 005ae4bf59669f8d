"""``python -m qfbridge.api [--write PATH]``: print or write the OpenAPI document."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qfbridge.api import openapi_document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qfbridge.api", description=__doc__)
    parser.add_argument("--write", type=Path, help="write the document to this file instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
