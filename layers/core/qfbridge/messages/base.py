"""What every message and event model shares: strict, frozen, built on first use."""

from __future__ import annotations

from pydantic import ConfigDict

# defer_build: a function builds the validators and serialisers of the messages it handles, on first
# use — each handles a few of these, and building all of them was most of this package's import.
STRICT = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True)
"""Unknown fields refused, values frozen, bodies never in errors (they name the usager's case)."""
