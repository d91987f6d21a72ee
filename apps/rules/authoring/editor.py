"""The admin condition editor's side of the rules format: the catalogue as the editor needs it, the
values a form submits turned into the types the rules file uses, and problems placed on their condition.

The editor submits the condition tree as JSON (a visible textarea when JavaScript is off). Form inputs
are text, so ``normalise_tree`` turns ``"50000"`` into ``50000`` for a whole-number fact and
``"a, b"`` into a list for ``in``; everything else is left for the one validation the import also uses
(:func:`apps.rules.engine.ruleset.rule_from_dict`), so the admin and the rules file accept exactly the same
rules. Pure Python, no Django.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from apps.rules.engine.catalogue import (
    FACTS,
    OPERATOR_LABELS,
    SUBJECT_TYPES,
    VISIBLE,
    Fact,
    FactType,
    custom_definitions,
    operators_for,
)
from apps.rules.engine.evaluator import COMPARE_OPS, GROUPS, RuleProblem

_LIST_OPS: Final = ("in", "not_in", "between")
_TRUE: Final = frozenset({"true", "yes", "1", "on"})
_FALSE: Final = frozenset({"false", "no", "0", "off"})
_WHOLE: Final = re.compile(r"[+-]?\d+")
# People type money as they read it; the separators carry no meaning for the rule.
_NUMBER_NOISE: Final = str.maketrans("", "", "$%, _")
_STEP: Final = re.compile(r"\.?(all|any|not)(?:\[(\d+)\])?")

TYPE_LABELS: Final = {
    FactType.MONEY: "money",
    FactType.PERCENT: "percent",
    FactType.INT: "whole number",
    FactType.TEXT: "text",
    FactType.BOOL: "true/false",
    FactType.DATE: "date",
    FactType.SCORE: "score (0–1)",
}


def fact_label(fact: Fact) -> str:
    """The picker's option text: name, meaning, type and unit, so nobody needs the SPEC open. An
    operator-defined fact's meaning is its definition, so its label comes first: ``custom.co_pending_30d —
    Pending change orders: count of change orders … (whole number, count)``."""
    unit = f", {fact.unit}" if fact.unit else ""
    meaning = f"{fact.label}: {fact.description}" if fact.applies_to else fact.description
    return f"{fact.name} — {meaning} ({TYPE_LABELS[fact.type]}{unit})"


def fact_groups() -> list[tuple[str, list[Fact]]]:
    """Facts grouped by the subject type they describe, in catalogue order (the picker's optgroups)."""
    order = {
        prefix: i
        for i, prefix in enumerate(("change_order", "project", "client", "submittal", "vendor", "document"))
    }
    groups: dict[str, list[Fact]] = {}
    for fact in FACTS.values():
        groups.setdefault(fact.subject, []).append(fact)
    # Operator-defined facts, one group per subject type that sees them ("custom:project").
    for fact in sorted(custom_definitions_facts(), key=lambda f: f.name):
        for subject in fact.applies_to:
            groups.setdefault(f"custom:{subject}", []).append(fact)
    return sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def custom_definitions_facts() -> list[Fact]:
    return [d.as_fact() for d in custom_definitions().values()]


def catalogue_data() -> dict[str, Any]:
    """What the editor's script needs, JSON-safe: facts, operators per type, who sees which facts."""
    facts = {name: {**fact.as_dict(), "label": fact_label(fact)} for name, fact in FACTS.items()}
    visible = {subject: list(prefixes) for subject, prefixes in VISIBLE.items()}
    for fact in custom_definitions_facts():
        [subject] = fact.applies_to
        facts[fact.name] = {**fact.as_dict(), "label": fact_label(fact), "subject": f"custom:{subject}"}
    for subject in visible:
        visible[subject].append(f"custom:{subject}")
    return {
        "facts": facts,
        "operators": {t.value: list(operators_for(t)) for t in FactType},
        "operator_labels": dict(OPERATOR_LABELS),
        "type_labels": {t.value: label for t, label in TYPE_LABELS.items()},
        "visible": visible,
        "subjects": list(SUBJECT_TYPES),
        "compare_ops": list(COMPARE_OPS),
    }


# --------------------------------------------------------------------------------------------------
# Form values → rules-file values.


def _number(raw: object, fact_type: FactType) -> object:
    if not isinstance(raw, str):
        return raw
    text = raw.strip().translate(_NUMBER_NOISE)
    if fact_type is FactType.INT:
        return int(text) if _WHOLE.fullmatch(text) else raw
    return text if text else raw


def _boolean(raw: object) -> object:
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    return raw


def _scalar(raw: object, fact: Fact) -> object:
    if fact.type in (FactType.MONEY, FactType.PERCENT, FactType.INT, FactType.SCORE):
        return _number(raw, fact.type)
    if fact.type is FactType.BOOL:
        return _boolean(raw)
    if fact.type is FactType.DATE and isinstance(raw, str):
        return raw.strip()
    return raw


def _leaf(node: Mapping[str, Any]) -> dict[str, Any]:
    leaf = dict(node)
    name = leaf.get("fact")
    fact = FACTS.get(name) if isinstance(name, str) else None
    op = leaf.get("op")
    if fact is None or "value" not in leaf or not isinstance(op, str):
        return leaf
    value = leaf["value"]
    if op in ("is", "is_null"):
        leaf["value"] = _boolean(value)
    elif op in _LIST_OPS:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list):
            leaf["value"] = [_scalar(item, fact) for item in value]
    elif op != "contains":
        leaf["value"] = _scalar(value, fact)
    return leaf


def normalise_tree(tree: object) -> object:
    """Typed values for what a form sent as text; anything unrecognised is returned unchanged, for the
    validation to report with its reason."""
    if isinstance(tree, list):
        return [normalise_tree(item) for item in tree]
    if not isinstance(tree, Mapping):
        return tree
    if any(key in tree for key in GROUPS):
        return {key: normalise_tree(value) for key, value in tree.items()}
    return _leaf(tree)


# --------------------------------------------------------------------------------------------------
# Problems → the condition they belong to.


def _node_at(tree: object, steps: Sequence[tuple[str, int | None]]) -> object:
    node = tree
    for kind, index in steps:
        if not isinstance(node, Mapping):
            return None
        node = node.get(kind)
        if index is not None:
            node = node[index] if isinstance(node, list) and 0 <= index < len(node) else None
    return node


def condition_label(tree: object, path: str) -> tuple[str, str]:
    """``("all #3 › any #1 (client.days_to_renewal)", "value")`` for ``when.all[2].any[0].value``:
    which condition a problem is about, in words, and which of its parts."""
    rest = path[len("when") :] if path.startswith("when") else path
    steps: list[tuple[str, int | None]] = []
    while match := _STEP.match(rest):
        steps.append((match.group(1), int(match.group(2)) if match.group(2) is not None else None))
        rest = rest[match.end() :]
    part = rest.lstrip(".")
    words = [f"{kind} #{index + 1}" if index is not None else kind for kind, index in steps]
    node = _node_at(tree, steps)
    where = " › ".join(words) if words else "the top condition"
    if isinstance(node, Mapping) and isinstance(node.get("fact"), str):
        where = f"{where} ({node['fact']})"
    return where, part


def condition_messages(tree: object, problems: Sequence[RuleProblem]) -> list[str]:
    """One readable line per problem in the condition: where, which part, what is wrong."""
    lines = []
    for problem in problems:
        where, part = condition_label(tree, problem.path)
        lines.append(f"Condition {where}: {part + ': ' if part else ''}{problem.message}")
    return lines


def condition_errors_by_path(problems: Sequence[RuleProblem]) -> dict[str, list[str]]:
    """``{node path: [messages]}`` so the editor's script can show each message beside its condition."""
    found: dict[str, list[str]] = {}
    for problem in problems:
        path = re.sub(r"\.(fact|op|value|other)(\[\d+\])?$", "", problem.path)
        found.setdefault(path, []).append(problem.message)
    return found


# --------------------------------------------------------------------------------------------------
# A condition tree in words, for reading without the script (and in diffs of the draft).


def _value_text(value: object, fact: Fact | None) -> str:
    unit = f" {fact.unit}" if fact is not None and fact.unit and fact.unit != "%" else ""
    pct = "%" if fact is not None and fact.unit == "%" else ""
    if isinstance(value, list):
        return ", ".join(f"{v}{pct}" for v in value) + unit
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value}{pct}{unit}"


def _named(name: object) -> str:
    """A fact as the condition names it; an operator-defined one with its label, which only the operator
    who defined it knows the key of: ``custom.co_pending_30d (Pending change orders)``."""
    fact = FACTS.get(name) if isinstance(name, str) else None
    if fact is None or not fact.applies_to:
        return str(name)
    return f"{name} ({fact.label})"


def describe(tree: object, depth: int = 0) -> list[tuple[int, str]]:
    """``[(depth, text)]`` lines: "all of:", "change_order.amount at least 50000 USD", ..."""
    if not isinstance(tree, Mapping):
        return [(depth, f"(not a condition: {tree!r})")]
    for kind in GROUPS:
        if kind in tree:
            body = tree[kind]
            heading = {"all": "all of:", "any": "any of:", "not": "not:"}[kind]
            children = body if isinstance(body, list) else [body]
            lines = [(depth, heading)]
            for child in children:
                lines.extend(describe(child, depth + 1))
            return lines
    raw_name = tree.get("fact")
    fact = FACTS.get(raw_name) if isinstance(raw_name, str) else None
    name = _named(raw_name)
    op = tree.get("op")
    label = OPERATOR_LABELS.get(op, str(op)) if isinstance(op, str) else str(op)
    value = tree.get("value")
    if "other" in tree:
        return [(depth, f"{name} {label} {_named(tree.get('other'))}")]
    if op == "is_null":
        text = f"{name} has no data" if value else f"{name} has data"
    elif op == "between" and isinstance(value, list) and len(value) == 2:
        text = f"{name} between {_value_text(value[0], fact)} and {_value_text(value[1], fact)}"
    else:
        text = f"{name} {label} {_value_text(value, fact)}"
    return [(depth, text)]
