"""The rules file: parsing, every problem with its line, safety, and the round trip. Also durations."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.rules.engine.durations import format_duration, parse_duration
from apps.rules.engine.evaluator import RuleProblem, Verdict
from apps.rules.engine.ruleset import (
    ACTIONS,
    ROUTES,
    SEVERITIES,
    RulesFileError,
    RuleSpec,
    dump_rules,
    parse_rules,
    rule_from_dict,
)
from apps.rules.tests.test_evaluator import SPEC_CONTEXT, SPEC_WHEN, trees

SPEC_EXAMPLE = """\
- key: co-exec-review
  name: Change order needs executive judgment
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
      - {fact: project.margin_pct, op: lt, value: 12}
      - any:
          - {fact: client.missed_last_milestone, op: is, value: true}
          - {fact: client.days_to_renewal, op: lte, value: 60}
  route: executive            # executive | standard
  severity: high              # low | medium | high | critical
  priority: 10                # lower runs first; a higher route for a subject suppresses lower ones
  actions: [email_account_manager, email_executives, flag_dashboard, note_crm, note_accounting]
  cooldown: 7d                # the same rule and subject escalate again only after this
  max_fact_age: 24h           # decide only on data synced within this window, else insufficient data
"""

SPEC_RULE = RuleSpec(
    key="co-exec-review",
    name="Change order needs executive judgment",
    subject="change_order",
    when=SPEC_WHEN,
    route="executive",
    severity="high",
    priority=10,
    actions=("email_account_manager", "email_executives", "flag_dashboard", "note_crm", "note_accounting"),
    cooldown=timedelta(days=7),
    max_fact_age=timedelta(hours=24),
)


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RulesFileError) as caught:
        parse_rules(text)
    return [(p.line, p.path, p.message) for p in caught.value.errors]


# --------------------------------------------------------------------------------------------------
# The SPEC example.


def test_spec_example_parses_to_its_rule() -> None:
    assert parse_rules(SPEC_EXAMPLE) == [SPEC_RULE]


def test_spec_example_round_trips_through_dump() -> None:
    text = dump_rules([SPEC_RULE])
    assert parse_rules(text) == [SPEC_RULE]
    assert text.startswith("- key: co-exec-review\n  name: Change order needs executive judgment\n")
    # Leaves and actions are written inline, as people write them.
    assert "      - {fact: change_order.amount, op: gte, value: 50000}\n" in text
    assert (
        "  actions: [email_account_manager, email_executives, flag_dashboard, note_crm, note_accounting]\n"
        in text
    )
    assert "  cooldown: 7d\n" in text


def test_to_dict_has_the_rules_file_shape_and_is_json() -> None:
    data = SPEC_RULE.to_dict()
    assert data == {
        "key": "co-exec-review",
        "name": "Change order needs executive judgment",
        "subject": "change_order",
        "when": SPEC_WHEN,
        "route": "executive",
        "severity": "high",
        "priority": 10,
        "actions": list(SPEC_RULE.actions),
        "cooldown": "7d",
        "max_fact_age": "1d",
        "auto_resolve": True,
    }
    assert json.loads(json.dumps(data)) == data
    assert rule_from_dict(data) == SPEC_RULE
    data["when"]["all"].clear()  # a copy: the spec is not changed through it
    assert SPEC_RULE.when["all"]


def test_spec_rule_compiles_and_matches_the_spec_context() -> None:
    evaluation = parse_rules(SPEC_EXAMPLE)[0].compile().evaluate(SPEC_CONTEXT)
    assert evaluation.outcome is Verdict.MATCHED


def test_defaults() -> None:
    [spec] = parse_rules(
        "- key: quiet\n  name: Quiet\n  subject: client\n"
        "  when: {fact: client.open_escalations, op: gt, value: 3}\n"
    )
    assert (spec.route, spec.severity, spec.priority, spec.actions) == ("standard", "medium", 100, ())
    assert (spec.cooldown, spec.max_fact_age) == (timedelta(days=7), timedelta(hours=24))
    assert (spec.description, spec.auto_resolve) == ("", True)


def test_exported_choices() -> None:
    assert ROUTES == ("executive", "standard")
    assert SEVERITIES == ("low", "medium", "high", "critical")
    assert set(ACTIONS) == {
        "email_account_manager",
        "email_executives",
        "flag_dashboard",
        "note_crm",
        "note_accounting",
        "escalate_pm",
        "webhook",
    }


def test_empty_file_has_no_rules() -> None:
    assert parse_rules("") == []
    assert parse_rules("# nothing yet\n") == []
    assert parse_rules("[]") == []
    assert dump_rules([]) == "[]\n"


# --------------------------------------------------------------------------------------------------
# Every problem, with its line.


def test_three_mistakes_on_known_lines_are_all_reported() -> None:
    text = """\
- key: co-exec-review
  name: Change order needs executive judgment
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
      - {fact: project.margin_pct, op: greater, value: 12}
      - any:
          - {fact: client.missed_last_milestone, op: is, value: yes please}
          - {fact: client.days_to_renewal, op: lte, value: 60}
  route: executive
  severity: urgent
"""
    with pytest.raises(RulesFileError) as caught:
        parse_rules(text)
    assert [(p.line, p.path) for p in caught.value.errors] == [
        (7, "when.all[1].op"),
        (9, "when.all[2].any[0].value"),
        (12, "severity"),
    ]
    assert str(caught.value).splitlines()[0] == (
        "line 7: when.all[1].op: 'greater' is not an operator; valid for percent: "
        "eq, ne, gt, gte, lt, lte, between, in, not_in, is_null"
    )


def test_problems_across_several_rules_are_reported_together_in_file_order() -> None:
    text = """\
- key: Bad Key
  name: x
  subject: change_order
  when:
    all:
      - {fact: change_order.amout, op: gte, value: 50000}
      - {fact: change_order.status, op: eq, value: pendng}
  severty: high
  cooldown: 7
- key: same
  name: y
  subject: projekt
  when: {fact: vendor.late_submittal_rate, op: gt, value: abc}
- key: same
  name: ""
  subject: project
  when: {not: [{fact: change_order.amount, op: gt, value: 1}]}
  actions: [email, webhook, webhook]
  priority: high
  auto_resolve: maybe
  max_fact_age: 0h
- name: no key
  when: {fact: project.margin_pct, op: lt, value: 1}
- just a string
"""
    found = problems(text)
    assert [(line, path) for line, path, _ in found] == [
        (1, "key"),
        (6, "when.all[0].fact"),
        (7, "when.all[1].value"),
        (8, "severty"),
        (9, "cooldown"),
        (12, "subject"),
        (13, "when.value"),
        (14, "key"),
        (15, "name"),
        (17, "when.not[0].fact"),
        (18, "actions[0]"),
        (18, "actions[2]"),
        (19, "priority"),
        (20, "auto_resolve"),
        (21, "max_fact_age"),
        (22, "key"),
        (22, "subject"),
        (24, ""),
    ]
    messages = {(line, path): message for line, path, message in found}
    assert messages[8, "severty"] == "unknown field 'severty'; did you mean 'severity'?"
    assert "did you mean 'project'?" in messages[12, "subject"]
    assert messages[22, "subject"] == "this field is required"
    assert messages[18, "actions[2]"] == "'webhook' is listed twice"
    assert "a duration must be more than zero" in messages[21, "max_fact_age"]
    assert "duplicate rule key 'same' (first used on line 10)" in [m for _, _, m in found]


def test_a_problem_on_a_missing_part_points_at_the_nearest_line() -> None:
    text = "- key: a\n  name: A\n  subject: project\n  when:\n    any:\n      - {fact: project.margin_pct}\n"
    assert problems(text) == [
        (6, "when.any[0].op", "missing 'op'"),
        (6, "when.any[0].value", "missing 'value'"),
    ]


def test_duplicate_mapping_keys_are_refused() -> None:
    text = (
        "- key: a\n  name: A\n  name: B\n  subject: project\n"
        "  when: {fact: project.margin_pct, op: lt, value: 1}\n"
    )
    assert problems(text) == [(3, "name", "duplicate key 'name' (first on line 2)")]


def test_the_file_must_be_a_list_of_mappings() -> None:
    assert problems("key: a\nname: A\n") == [
        (1, "", "a rules file is a list of rules, each starting with '- key: ...'")
    ]


def test_yaml_syntax_errors_have_their_line() -> None:
    [(line, _, message)] = problems("- key: a\n  name: A\n  when: {fact: x, op: [\n")
    assert line == 4
    assert message.startswith("not valid YAML")


# --------------------------------------------------------------------------------------------------
# Safety.


@pytest.mark.parametrize(
    "text",
    [
        "- !!python/object/apply:os.system ['touch /tmp/pwned-yaml']\n",
        "- key: a\n  name: !!python/name:os.system\n",
        "- key: !custom a\n",
        "- key: !!binary aGVsbG8=\n",
    ],
)
def test_yaml_tags_are_refused(text: str) -> None:
    [(line, _, message)] = problems(text)
    assert message == "YAML tags (!...) are not allowed in a rules file"
    assert line in (1, 2)


def test_anchors_and_aliases_are_refused() -> None:
    laughs = 'a: &a ["lol","lol"]\nb: &b [*a,*a,*a]\nc: &c [*b,*b,*b]\n'
    assert {message for _, _, message in problems(laughs)} == {
        "YAML anchors and aliases (&name, *name) are not allowed in a rules file"
    }


def test_malicious_strings_stay_strings() -> None:
    text = """\
- key: evil
  name: "__import__('os').system('x')"
  subject: change_order
  when: {fact: change_order.status, op: contains, value: "__import__('os').system('x')"}
  description: "{{ 7*7 }} ${jndi:ldap://x}"
"""
    [spec] = parse_rules(text)
    assert spec.name == "__import__('os').system('x')"
    assert spec.description == "{{ 7*7 }} ${jndi:ldap://x}"
    assert spec.compile().evaluate({"change_order.status": "pending"}).outcome is Verdict.NOT_MATCHED
    bad = text.replace("op: contains", "op: eq")
    assert "is not a change_order.status" in problems(bad)[0][2]


def test_huge_integers_are_refused_not_crashing() -> None:
    text = (
        "- key: a\n  name: A\n  subject: project\n"
        "  when: {fact: project.milestones_missed, op: gt, value: %s}\n"
    )
    [(line, _, message)] = problems(text % ("9" * 5000))
    assert line is None
    assert message.startswith("unreadable value: Exceeds the limit")
    assert problems(text % ("9" * 20)) == [(4, "when.value", f"{'9' * 20} is too large")]


# --------------------------------------------------------------------------------------------------
# Round trip, for any valid rule.

keys = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
specs = st.builds(
    RuleSpec,
    key=keys,
    name=st.text(min_size=1, max_size=40).filter(str.strip),
    subject=st.just("submittal"),
    when=trees,
    route=st.sampled_from(ROUTES),
    severity=st.sampled_from(SEVERITIES),
    priority=st.integers(0, 1000),
    actions=st.lists(st.sampled_from(ACTIONS), unique=True).map(tuple),
    cooldown=st.integers(1, 10**6).map(lambda s: timedelta(seconds=s)),
    max_fact_age=st.sampled_from([timedelta(minutes=90), timedelta(hours=24), timedelta(days=3)]),
    description=st.text(max_size=60),
    auto_resolve=st.booleans(),
)


def _canonical(spec: RuleSpec) -> RuleSpec:
    return rule_from_dict(spec.to_dict())


@settings(max_examples=150, deadline=None)
@given(st.lists(specs, max_size=4, unique_by=lambda s: s.key))
def test_any_rules_round_trip_through_the_file(rules: list[RuleSpec]) -> None:
    canonical = [_canonical(r) for r in rules]
    assert parse_rules(dump_rules(canonical)) == canonical


@settings(max_examples=100, deadline=None)
@given(specs)
def test_to_dict_is_stable_json(rule: RuleSpec) -> None:
    data = _canonical(rule).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert rule_from_dict(data).to_dict() == data
    assert yaml.safe_load(dump_rules([_canonical(rule)])) == [data]


def test_rule_from_dict_reports_problems_without_lines() -> None:
    with pytest.raises(RulesFileError) as caught:
        rule_from_dict({"key": "x", "name": "X", "subject": "project", "when": {}})
    assert caught.value.errors == [
        RuleProblem("when.fact", "missing 'fact'"),
        RuleProblem("when.op", "missing 'op'"),
        RuleProblem("when.value", "missing 'value'"),
    ]
    assert str(caught.value).splitlines()[0] == "when.fact: missing 'fact'"


# --------------------------------------------------------------------------------------------------
# Durations.


@pytest.mark.parametrize(
    ("text", "value", "formatted"),
    [
        ("90m", timedelta(minutes=90), "90m"),
        ("24h", timedelta(hours=24), "1d"),
        ("7d", timedelta(days=7), "7d"),
        ("30s", timedelta(seconds=30), "30s"),
        ("120s", timedelta(minutes=2), "2m"),
        (" 36h ", timedelta(hours=36), "36h"),
    ],
)
def test_durations(text: str, value: timedelta, formatted: str) -> None:
    assert parse_duration(text) == value
    assert format_duration(value) == formatted
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "7", "d", "7w", "1.5h", "-1d", "0m", "7 d", "7D", "99999999999d"])
def test_bad_durations_are_clear_errors(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_must_be_text() -> None:
    with pytest.raises(ValueError, match="expected a duration such as 90m"):
        parse_duration(7)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-5), timedelta(milliseconds=1500)])
def test_format_duration_refuses_what_parse_would(value: timedelta) -> None:
    with pytest.raises(ValueError):
        format_duration(value)


@given(st.integers(1, 10**8))
def test_format_parse_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
