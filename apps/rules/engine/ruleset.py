"""The rules file (SPEC "Rules file"): parse, validate with line numbers, and write back.

Import reports every problem of every rule at once, each with its line, so an operator fixes a file in
one pass. YAML is read at ``safe_load`` level and tags, anchors and aliases are refused: a rules file is
data, never code. Pure Python, no Django.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import yaml

from apps.rules.engine.catalogue import SUBJECT_TYPES
from apps.rules.engine.durations import format_duration, parse_duration
from apps.rules.engine.evaluator import (
    CompiledCondition,
    RuleProblem,
    RuleValidationError,
    compile_condition,
    validate_condition,
)

__all__ = [
    "ACTIONS",
    "FIELDS",
    "ROUTES",
    "SEVERITIES",
    "RuleProblem",
    "RuleSpec",
    "RulesFileError",
    "dump_rules",
    "parse_rules",
    "rule_from_dict",
]

ACTIONS: Final = (
    "email_account_manager",
    "email_executives",
    "flag_dashboard",
    "note_crm",
    "note_accounting",
    "escalate_pm",
    "webhook",
)
ROUTES: Final = ("executive", "standard")
SEVERITIES: Final = ("low", "medium", "high", "critical")
FIELDS: Final = (
    "key",
    "name",
    "description",
    "subject",
    "when",
    "route",
    "severity",
    "priority",
    "actions",
    "cooldown",
    "max_fact_age",
    "auto_resolve",
)
REQUIRED: Final = ("key", "name", "subject", "when")
DEFAULT_COOLDOWN: Final = timedelta(days=7)
DEFAULT_MAX_FACT_AGE: Final = timedelta(hours=24)

_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
_MAX_KEY = 80  # Rule.key is a SlugField(max_length=80)
_MAX_NAME = 200
_MAX_DESCRIPTION = 2000


class RulesFileError(ValueError):
    """A rules file with problems; ``errors`` lists all of them in file order, with line numbers."""

    def __init__(self, errors: Sequence[RuleProblem]) -> None:
        self.errors: list[RuleProblem] = sorted(errors, key=lambda p: p.line or 0)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class RuleSpec:
    """One validated rule as the rules file states it; ``when`` is the canonical condition tree."""

    key: str
    name: str
    subject: str
    when: dict[str, Any] = field(hash=False)
    route: str = "standard"
    severity: str = "medium"
    priority: int = 100
    actions: tuple[str, ...] = ()
    cooldown: timedelta = DEFAULT_COOLDOWN
    max_fact_age: timedelta = DEFAULT_MAX_FACT_AGE
    description: str = ""
    auto_resolve: bool = True

    def compile(self) -> CompiledCondition:
        return compile_condition(self.when, self.subject)

    def to_dict(self) -> dict[str, Any]:
        """The rule in the rules file's shape (JSON-safe; durations as ``7d``)."""
        data: dict[str, Any] = {"key": self.key, "name": self.name}
        if self.description:
            data["description"] = self.description
        data.update(
            subject=self.subject,
            when=copy.deepcopy(self.when),
            route=self.route,
            severity=self.severity,
            priority=self.priority,
            actions=list(self.actions),
            cooldown=format_duration(self.cooldown),
            max_fact_age=format_duration(self.max_fact_age),
            auto_resolve=self.auto_resolve,
        )
        return data


# --------------------------------------------------------------------------------------------------
# Reading.


class _Lines:
    """Where each path of the document starts: ``[0].when.all[1].op`` → line 7 (1-based)."""

    def __init__(self) -> None:
        self.by_path: dict[str, int] = {}
        self.problems: list[RuleProblem] = []

    def walk(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.problems.append(
                        RuleProblem(
                            _relative(child), f"duplicate key {key!r} (first on line {seen[key]})", line
                        )
                    )
                seen.setdefault(key, line)
                self.by_path.setdefault(child, line)
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self.by_path.setdefault(child, item.start_mark.line + 1)
                self.walk(item, child)

    def find(self, index: int | None, path: str) -> int | None:
        """The line of ``path`` in rule ``index``, or of its nearest enclosing part that exists."""
        full = f"[{index}]" if index is not None else ""
        if path:
            full = f"{full}.{path}" if full else path
        while full:
            if full in self.by_path:
                return self.by_path[full]
            cut = max(full.rfind("."), full.rfind("["))
            full = full[:cut] if cut > 0 else ""
        return 1 if index is None else None


def _relative(full: str) -> str:
    """``[3].when.all[0]`` → ``when.all[0]``: problems are reported per rule, located by line."""
    if full.startswith("["):
        rest = full[full.index("]") + 1 :]
        return rest[1:] if rest.startswith(".") else rest
    return full


def _yaml_problem(exc: yaml.YAMLError) -> RuleProblem:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return RuleProblem("", f"not valid YAML: {exc}", None)
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    context = f"{exc.context}, " if exc.context else ""
    return RuleProblem("", f"not valid YAML: {context}{exc.problem or exc}", line)


def _load(text: str) -> tuple[object, _Lines]:
    """Parse ``text`` as plain YAML data, refusing tags, anchors and aliases."""
    lines = _Lines()
    refused: list[RuleProblem] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.TagToken):
                refused.append(
                    RuleProblem(
                        "", "YAML tags (!...) are not allowed in a rules file", token.start_mark.line + 1
                    )
                )
            elif isinstance(token, yaml.AnchorToken | yaml.AliasToken):
                refused.append(
                    RuleProblem(
                        "",
                        "YAML anchors and aliases (&name, *name) are not allowed in a rules file",
                        token.start_mark.line + 1,
                    )
                )
    except yaml.YAMLError as exc:
        raise RulesFileError([_yaml_problem(exc)]) from None
    if refused:
        raise RulesFileError(refused)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        lines.walk(node, "")
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise RulesFileError([_yaml_problem(exc)]) from None
    except RecursionError:
        raise RulesFileError([RuleProblem("", "the file is nested too deeply", None)]) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python will convert
        raise RulesFileError([RuleProblem("", f"unreadable value: {exc}", None)]) from None
    finally:
        loader.dispose()
    if lines.problems:
        raise RulesFileError(lines.problems)
    return data, lines


def parse_rules(text: str) -> list[RuleSpec]:
    """Parse and validate a rules file. Raises :class:`RulesFileError` with every problem and its line."""
    data, lines = _load(text)
    if data is None:
        return []
    if not isinstance(data, list):
        raise RulesFileError(
            [RuleProblem("", "a rules file is a list of rules, each starting with '- key: ...'", 1)]
        )
    specs: list[RuleSpec] = []
    problems: list[RuleProblem] = []
    first_line: dict[str, int | None] = {}
    for index, raw in enumerate(data):
        spec, found = _check_rule(raw, functools.partial(lines.find, index))
        problems.extend(found)
        if isinstance(raw, Mapping) and isinstance(raw.get("key"), str):
            key = raw["key"]
            line = lines.find(index, "key")
            if key in first_line:
                where = f" (first used on line {first_line[key]})" if first_line[key] else ""
                problems.append(RuleProblem("key", f"duplicate rule key {key!r}{where}", line))
            else:
                first_line[key] = line
        if spec is not None:
            specs.append(spec)
    if problems:
        raise RulesFileError(problems)
    return specs


def rule_from_dict(data: Mapping[str, Any]) -> RuleSpec:
    """Validate one rule given as a mapping (the rules file shape, e.g. a stored draft)."""
    spec, problems = _check_rule(data, lambda path: None)
    if problems or spec is None:
        raise RulesFileError(problems)
    return spec


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    hint = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _check_rule(
    raw: object, locate: Callable[[str], int | None]
) -> tuple[RuleSpec | None, list[RuleProblem]]:
    problems: list[RuleProblem] = []

    def bad(path: str, message: str) -> None:
        problems.append(RuleProblem(path, message, locate(path)))

    if not isinstance(raw, Mapping):
        bad("", "a rule is a mapping with key, name, subject and when")
        return None, problems
    for name in raw:
        if name not in FIELDS:
            shown = str(name)
            hint = _did_you_mean(shown, FIELDS)
            bad(shown, f"unknown field {shown!r}{hint or '; fields are: ' + ', '.join(FIELDS)}")
    for name in REQUIRED:
        if name not in raw:
            bad(name, "this field is required")

    def text(name: str, limit: int, *, required: bool) -> str:
        value = raw.get(name, "")
        if not isinstance(value, str):
            bad(name, f"expected text, got {value!r}")
            return ""
        if required and name in raw and not value.strip():
            bad(name, "must not be empty")
        if len(value) > limit:
            bad(name, f"too long ({len(value)} characters, at most {limit})")
        return value

    def choice(name: str, options: tuple[str, ...], default: str) -> str:
        value = raw.get(name, default)
        if value not in options:
            hint = _did_you_mean(value, options) if isinstance(value, str) else ""
            bad(name, f"{value!r} is not one of {', '.join(options)}{hint}")
        return str(value)

    def duration(name: str, default: timedelta) -> timedelta:
        if name not in raw:
            return default
        try:
            return parse_duration(raw[name])
        except ValueError as exc:
            bad(name, str(exc))
            return default

    key = text("key", _MAX_KEY, required=True)
    if key and not _KEY.fullmatch(key):
        bad(
            "key",
            f"{key!r} is not a slug: lowercase letters, digits and '-', starting with a letter or digit",
        )
    name = text("name", _MAX_NAME, required=True)
    description = text("description", _MAX_DESCRIPTION, required=False)

    subject = raw.get("subject")
    if "subject" in raw and subject not in SUBJECT_TYPES:
        hint = _did_you_mean(subject, SUBJECT_TYPES) if isinstance(subject, str) else ""
        bad("subject", f"{subject!r} is not a subject type; choose from {', '.join(SUBJECT_TYPES)}{hint}")
        subject = None

    when: dict[str, Any] = {}
    if "when" in raw:
        if isinstance(subject, str):
            try:
                when = compile_condition(raw["when"], subject).to_tree()
            except RuleValidationError as exc:
                for problem in exc.errors:
                    bad(problem.path, problem.message)
        else:
            for problem in validate_condition(raw["when"], None):
                bad(problem.path, problem.message)

    route = choice("route", ROUTES, "standard")
    severity = choice("severity", SEVERITIES, "medium")

    priority = raw.get("priority", 100)
    if isinstance(priority, bool) or not isinstance(priority, int):
        bad("priority", f"expected a whole number (lower runs first), got {priority!r}")
        priority = 100
    elif not 0 <= priority <= 1_000_000:
        bad("priority", f"{priority} is out of range (0 to 1000000)")

    actions: list[str] = []
    raw_actions = raw.get("actions", [])
    if not isinstance(raw_actions, list):
        bad("actions", f"expected a list of actions ({', '.join(ACTIONS)}), got {raw_actions!r}")
    else:
        for i, action in enumerate(raw_actions):
            if action not in ACTIONS:
                hint = _did_you_mean(action, ACTIONS) if isinstance(action, str) else ""
                bad(f"actions[{i}]", f"{action!r} is not an action; choose from {', '.join(ACTIONS)}{hint}")
            elif action in actions:
                bad(f"actions[{i}]", f"{action!r} is listed twice")
            else:
                actions.append(action)

    cooldown = duration("cooldown", DEFAULT_COOLDOWN)
    max_fact_age = duration("max_fact_age", DEFAULT_MAX_FACT_AGE)

    auto_resolve = raw.get("auto_resolve", True)
    if not isinstance(auto_resolve, bool):
        bad("auto_resolve", f"expected true or false, got {auto_resolve!r}")
        auto_resolve = True

    if problems or not isinstance(subject, str):
        return None, problems
    spec = RuleSpec(
        key=key,
        name=name,
        subject=subject,
        when=when,
        route=route,
        severity=severity,
        priority=priority,
        actions=tuple(actions),
        cooldown=cooldown,
        max_fact_age=max_fact_age,
        description=description,
        auto_resolve=auto_resolve,
    )
    return spec, problems


# --------------------------------------------------------------------------------------------------
# Writing.


class _FlowMap(dict[str, Any]):
    """A leaf condition, written on one line as in the SPEC: ``{fact: ..., op: ..., value: ...}``."""


class _FlowList(list[Any]):
    """A short list written inline: ``actions: [email_executives, flag_dashboard]``."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key ("when:\n  all:\n    - ..."), as people write them.
        super().increase_indent(flow, False)


def _represent_flow_map(dumper: yaml.SafeDumper, data: _FlowMap) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def _represent_flow_list(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # PyYAML writes these line breaks raw in plain and single-quoted scalars and then reads them back
    # as folding points; double quotes escape them.
    if any(ch in data for ch in "\x85\u2028\u2029"):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
    return dumper.represent_str(data)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_FlowMap, _represent_flow_map)
_Dumper.add_representer(_FlowList, _represent_flow_list)


def _styled(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        if "fact" in tree:
            return _FlowMap(tree)
        return {k: _styled(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_styled(v) for v in tree]
    return tree


def dump_rules(specs: Iterable[RuleSpec]) -> str:
    """The rules as a rules file; ``parse_rules(dump_rules(specs)) == list(specs)``."""
    documents = []
    for spec in specs:
        data = spec.to_dict()
        data["when"] = _styled(data["when"])
        data["actions"] = _FlowList(data["actions"])
        documents.append(data)
    text: str = yaml.dump(
        documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False
    )
    return text
