"""Contract tests: the vendors' published shapes, written by hand from their documentation, hold both the
connectors (what they send) and the bundled simulator (what it serves).

Each vendor has a folder here with JSON Schemas and the documented example payloads, every file naming the doc
page it comes from in its ``"$comment"`` (schemas) or ``"_source"`` key (examples). The simulator and the
connectors were written by us, so they can share a misreading; these files are the third party between them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

HERE = Path(__file__).resolve().parent


def load(vendor: str, name: str) -> Any:
    """A schema or documented example from ``contracts/<vendor>/<name>``."""
    return json.loads((HERE / vendor / name).read_text())


def example(vendor: str, name: str) -> Any:
    """A documented example without its ``_source`` note (what the vendor actually sends)."""
    data = load(vendor, name)
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key != "_source"}
    return data


def assert_conforms(vendor: str, schema: str, instance: Any) -> None:
    """Fail with the first violation (its path and message) of ``instance`` against a vendor schema."""
    validator = jsonschema.Draft202012Validator(load(vendor, schema))
    errors = sorted(validator.iter_errors(instance), key=lambda error: list(error.absolute_path))
    if errors:
        first = errors[0]
        path = "/".join(str(part) for part in first.absolute_path) or "(root)"
        raise AssertionError(f"{vendor}/{schema}: {path}: {first.message} ({len(errors)} violation(s))")
