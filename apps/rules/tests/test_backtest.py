"""Backtest over stored decision contexts, the ``backtest`` command, and the draft preview."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.connectors.models import StreamState
from apps.escalations.models import Escalation
from apps.rules.authoring.preview import needs_confirmation, preview_draft
from apps.rules.engine.ruleset import RulesFileError, parse_rules
from apps.rules.evaluation.backtest import BacktestError, backtest, context_from_snapshot, draft_from_file
from apps.rules.evaluation.facts import ENTITY_STREAMS, compute_contexts
from apps.rules.evaluation.services import evaluate_subjects, rules_import
from apps.rules.models import Decision, Rule
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
)

pytestmark = pytest.mark.django_db

RULE = """
- key: big-co
  name: Big change order on a thin margin
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: AMOUNT}
      - {fact: project.margin_pct, op: lt, value: 12}
  route: executive
  severity: high
  actions: [flag_dashboard]
  max_fact_age: 24h
"""


def rule_yaml(amount=50000, key="big-co"):
    return RULE.replace("AMOUNT", str(amount)).replace("big-co", key)


def fresh_streams(age=dt.timedelta(minutes=5)):
    synced = timezone.now() - age
    for entity, streams in ENTITY_STREAMS.items():
        conn = ConnectionFactory(slug=f"src-{entity}")
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=conn, stream=stream, defaults={"last_success_at": synced}
            )


def change_order(amount, margin_income="1000000", cost="910000"):
    """A change order whose project's margin is (income - cost) / income: 9% by default."""
    project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    if margin_income is not None:
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal(margin_income))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal(cost))
    return ChangeOrderFactory(project=project, amount=Decimal(amount))


@pytest.fixture
def company():
    """Four change orders, evaluated once by the live rule so that their contexts are stored."""
    fresh_streams()
    rules_import(text=rule_yaml(), actor="system:test")
    cos = {
        "big": change_order("60000"),
        "huge": change_order("90000"),
        "mid": change_order("20000"),
        "no_income": change_order("70000", margin_income=None),
    }
    evaluate_subjects(subject_type="change_order")
    return cos


def label(co, outcome):
    Escalation.objects.filter(subject_type="change_order", subject_id=co.pk).update(
        status="resolved", outcome=outcome, closed_at=timezone.now()
    )


def run(*args):
    out = StringIO()
    call_command("backtest", *args, stdout=out)
    return out.getvalue()


# --- backtest ------------------------------------------------------------------------------------------


def test_replaying_the_live_version_reproduces_the_stored_outcomes(company):
    result = backtest("big-co")
    assert result.replayed == 4
    assert result.outcomes == {"matched": 2, "not_matched": 1, "insufficient_data": 1}
    stored = dict(Decision.objects.values_list("subject_id", "outcome"))
    assert stored[company["big"].pk] == "matched" and stored[company["no_income"].pk] == "insufficient_data"
    assert not result.is_draft and result.newly_matching_count == 0


def test_precision_counts_labelled_matches_only(company):
    label(company["big"], "actioned")
    label(company["huge"], "false_alarm")
    result = backtest("big-co")
    assert (result.precision.positive, result.precision.negative) == (1, 1)
    assert result.precision.value == 0.5
    text = str(result)
    assert "1 of 2 = 50.0%" in text
    assert "positive = actioned, approved, rejected; negative = no_action_needed, false_alarm" in text


def test_a_draft_from_a_file_shows_the_delta_to_the_live_version(company, tmp_path):
    label(company["huge"], "approved")
    path = tmp_path / "rules.yaml"
    path.write_text(rule_yaml(amount=75000) + rule_yaml(key="other"))
    draft = draft_from_file(path.read_text(), "big-co")
    result = backtest("big-co", draft=draft, file_name=str(path))
    assert result.matches == 1  # only "huge" (90,000) is over 75,000
    assert result.live_outcomes["matched"] == 2
    assert result.newly_matching_count == 0
    assert result.no_longer_matching == [company["big"].pk]
    assert result.precision.value == 1.0
    lowered = backtest("big-co", draft=draft_from_file(rule_yaml(amount=10000), "big-co"))
    assert lowered.newly_matching == [company["mid"].pk] and lowered.no_longer_matching_count == 0
    output = run("big-co", "--file", str(path))
    assert "Contexts replayed: 4" in output
    assert "no longer matching: 1 (ids " in output and "Matches: 1 (live v1: 2)" in output


def test_replay_is_point_in_time_and_uses_the_newest_context(company):
    big = company["big"]
    big.amount = Decimal("10")  # today's data no longer matches, but the stored context does
    big.save()
    assert backtest("big-co").outcomes["matched"] == 2
    # A later evaluation stores a newer context for that subject (a change of outcome keeps the facts).
    evaluate_subjects(subject_type="change_order", ids=[big.pk], now=timezone.now() + dt.timedelta(minutes=1))
    result = backtest("big-co")
    assert result.replayed == 4 and result.outcomes["matched"] == 1
    since = (timezone.now() + dt.timedelta(days=1)).replace(hour=0, minute=0)
    assert backtest("big-co", since=since).replayed == 0


def test_stored_ages_decide_staleness_as_they_were_then(company):
    Decision.objects.filter(subject_id=company["big"].pk).update(
        facts={
            "change_order.amount": {"value": "60000.00", "age_s": 90_000.0},
            "project.margin_pct": {"value": "9.0000", "age_s": 60.0},
        }
    )
    result = backtest("big-co")
    assert result.outcomes["insufficient_data"] == 2 and result.outcomes["error"] == 0


def test_limit_caps_the_replay(company):
    result = backtest("big-co", limit=3)
    assert result.replayed == 3 and result.limited
    assert "limit 3, reached" in str(result)
    assert not backtest("big-co", limit=4).limited


def test_snapshot_values_come_back_typed():
    values, ages = context_from_snapshot(
        {
            "change_order.amount": {"value": "60000.00", "age_s": 5},
            "change_order.age_days": {"value": 3, "age_s": None},
            "project.margin_pct": {"value": None, "age_s": 5},
            "client.missed_last_milestone": {"value": True, "age_s": 5},
            "project.contract_value": {"value": "junk", "age_s": 5},
            "not.a_fact": {"value": 1},
        }
    )
    assert values == {
        "change_order.amount": Decimal("60000.00"),
        "change_order.age_days": 3,
        "project.margin_pct": None,
        "client.missed_last_milestone": True,
        "project.contract_value": "junk",  # left alone: the evaluator reports an error outcome
    }
    assert ages["change_order.age_days"] is None


def test_unknown_key_and_broken_files_fail_clearly(company, tmp_path):
    with pytest.raises(CommandError, match="unknown rule 'big-c'; did you mean 'big-co'"):
        run("big-c")
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        rule_yaml().replace("op: lt", "op: below").replace("change_order.amount", "change_order.amout")
    )
    with pytest.raises(CommandError) as caught:
        run("big-co", "--file", str(broken))
    message = str(caught.value)
    assert "2 problem(s)" in message and "line 7" in message and "line 8" in message
    with pytest.raises(CommandError, match="has no rule 'big-co'"):
        other = tmp_path / "other.yaml"
        other.write_text(rule_yaml(key="other"))
        run("big-co", "--file", str(other))
    with pytest.raises(CommandError, match="cannot read"):
        run("big-co", "--file", str(tmp_path / "missing.yaml"))
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        run("big-co", "--since", "last week")


def test_a_draft_of_a_new_rule_replays_without_a_live_version(company, tmp_path):
    path = Path(tmp_path / "new.yaml")
    path.write_text(rule_yaml(key="brand-new", amount=65000))
    output = run("brand-new", "--file", str(path), "--since", "2000-01-01")
    assert "Matches: 1" in output and "no live version" in output
    with pytest.raises(BacktestError, match="no published version"):
        Rule.objects.create(key="unpublished", name="U", subject_type="change_order", draft={})
        backtest("unpublished")


# --- preview -------------------------------------------------------------------------------------------


def test_preview_counts_the_draft_and_its_delta_to_the_live_version(company):
    rule = Rule.objects.get(key="big-co")
    rule.draft = parse_rules(rule_yaml(amount=10000))[0].to_dict()
    result = preview_draft(rule)
    assert result.subjects == 4
    assert result.counts == {"matched": 3, "not_matched": 0, "insufficient_data": 1}
    assert result.live_counts["matched"] == 2 and result.live_version == 1
    assert result.new == [company["mid"].pk] and result.new_count == 1 and result.gone_count == 0
    assert sorted(result.samples) == sorted([company["big"].pk, company["huge"].pk, company["mid"].pk])
    assert "3 of 4 change orders" in result.summary()
    assert needs_confirmation(result, 0) and not needs_confirmation(result, 1)


def test_preview_agrees_with_the_evaluator_on_current_data(company):
    rule = Rule.objects.get(key="big-co")
    result = preview_draft(rule)  # the draft is the live spec
    compiled = parse_rules(rule_yaml())[0]
    expected = [
        c.subject_id
        for c in compute_contexts("change_order")
        if compiled.compile().matches(c.values, ages=c.ages, max_age=compiled.max_fact_age).value == "matched"
    ]
    assert sorted(result.samples) == sorted(expected)
    assert result.new_count == result.gone_count == 0


def test_preview_of_a_rule_never_published_and_of_an_invalid_draft(company):
    rule = Rule.objects.create(
        key="fresh",
        name="F",
        subject_type="change_order",
        draft=parse_rules(rule_yaml(key="fresh"))[0].to_dict(),
    )
    result = preview_draft(rule)
    assert result.live_version is None and result.new_count == 2
    switch_off = preview_draft(
        Rule.objects.get(key="big-co"), draft=parse_rules(rule_yaml(amount=10**9))[0].to_dict()
    )
    assert switch_off.gone_count == 2 and needs_confirmation(switch_off, 1)
    with pytest.raises(RulesFileError):
        preview_draft(
            rule, draft={**rule.draft, "when": {"fact": "change_order.amount", "op": "contains", "value": 1}}
        )
