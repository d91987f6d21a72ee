"""Differences between two states of a rule, as the canonical rules-file YAML an operator reads."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from apps.rules.engine.ruleset import RulesFileError, dump_rules, rule_from_dict


def spec_yaml(spec: Mapping[str, Any]) -> str:
    """The rule as the rules file writes it; a draft too broken to validate is shown as plain YAML, so
    a diff still shows what is there."""
    try:
        return dump_rules([rule_from_dict(spec)])
    except RulesFileError:
        return yaml.safe_dump([dict(spec)], sort_keys=False, allow_unicode=True, width=110)


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff, with its kind for the template: add, del, hunk, ctx or head."""

    kind: str
    text: str


def spec_diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], *, old_label: str, new_label: str
) -> list[DiffLine]:
    """A unified diff of the two specs' YAML (empty when they read the same). The template escapes
    every line: rule names and descriptions are operator text."""
    before = spec_yaml(old).splitlines() if old is not None else []
    after = spec_yaml(new).splitlines()
    lines = []
    for raw in difflib.unified_diff(before, after, fromfile=old_label, tofile=new_label, lineterm="", n=3):
        if raw.startswith(("---", "+++")):
            kind = "head"
        elif raw.startswith("@@"):
            kind = "hunk"
        elif raw.startswith("+"):
            kind = "add"
        elif raw.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, raw))
    return lines
