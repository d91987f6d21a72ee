"""Publishing, importing and evaluating rules against the database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from unittest import mock

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone

from apps.connectors.models import StreamState
from apps.entities.models import ChangeOrder
from apps.escalations.models import Escalation
from apps.escalations.tests.helpers import escalations_wipe
from apps.orchestration import pipeline
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.engine.ruleset import RulesFileError
from apps.rules.evaluation import services
from apps.rules.evaluation.facts import ENTITY_STREAMS
from apps.rules.evaluation.services import (
    _by_rule_subject,
    _plain_columns,
    rows_by_rule_subject,
    rule_publish,
    rules_export,
    rules_import,
    state_cooldowns,
)
from apps.rules.models import ContextSnapshot, Decision, EvaluationRun, Rule, RuleVersion, SubjectState
from tests.concurrency import run_concurrently
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
)

RULE = """
- key: big-co
  name: Big change order
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
      - {fact: project.margin_pct, op: lt, value: 12}
  route: ROUTE
  severity: high
  priority: PRIORITY
  actions: [email_account_manager, flag_dashboard]
  cooldown: 7d
  max_fact_age: 24h
"""


def bulk_runs():
    """The runs these tests make (publishing also queues one per published version; no worker runs it
    here, and apps/rules/tests/test_publishing.py tests it)."""
    return EvaluationRun.objects.exclude(trigger="publish")


def rule_yaml(key="big-co", route="executive", priority=10, amount=50000):
    return (
        RULE.replace("big-co", key)
        .replace("ROUTE", route)
        .replace("PRIORITY", str(priority))
        .replace("value: 50000", f"value: {amount}")
    )


def fresh_streams(age=dt.timedelta(minutes=5)):
    synced = timezone.now() - age
    for entity, streams in ENTITY_STREAMS.items():
        conn = ConnectionFactory(slug=f"src-{entity}")
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=conn, stream=stream, defaults={"last_success_at": synced}
            )


def risky_change_order(amount="60000", income="1000000", cost="910000"):
    owner = CrmOwnerFactory(email="maria.chen@fulcrum-demo.test")
    project = ProjectFactory(client=ClientFactory(owner=owner))
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal(income))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal(cost))
    return ChangeOrderFactory(project=project, amount=Decimal(amount))


@pytest.mark.django_db
class TestPublishing:
    def test_import_creates_a_published_version_and_reimport_is_unchanged(self):
        assert rules_import(text=rule_yaml(), actor="system:test")["created"] == ["big-co"]
        assert rules_import(text=rule_yaml(), actor="system:test")["unchanged"] == ["big-co"]
        rule = Rule.objects.get(key="big-co")
        assert rule.live_version.number == 1 and rule.versions.count() == 1

    def test_a_changed_rule_gets_a_new_version_and_old_ones_stay(self):
        rules_import(text=rule_yaml(), actor="system:test")
        assert rules_import(text=rule_yaml(amount=75000), actor="system:test")["updated"] == ["big-co"]
        rule = Rule.objects.get(key="big-co")
        assert [v.number for v in rule.versions.order_by("number")] == [1, 2]
        assert rule.live_version.spec["when"]["all"][0]["value"] == 75000
        assert rule.versions.get(number=1).spec["when"]["all"][0]["value"] == 50000

    def test_versions_are_immutable_in_the_database(self):
        rules_import(text=rule_yaml(), actor="system:test")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            RuleVersion.objects.update(spec={})

    def test_import_with_errors_changes_nothing_and_reports_every_line(self):
        rules_import(text=rule_yaml(), actor="system:test")
        bad = rule_yaml(amount=1) + rule_yaml(key="second").replace("op: lt", "op: below").replace(
            "project.margin_pct", "project.margin"
        )
        with pytest.raises(RulesFileError) as caught:
            rules_import(text=bad, actor="system:test")
        assert len(caught.value.errors) == 2
        assert all(problem.line for problem in caught.value.errors)
        assert Rule.objects.get(key="big-co").live_version.number == 1
        assert not Rule.objects.filter(key="second").exists()

    def test_export_round_trips(self):
        rules_import(text=rule_yaml(), actor="system:test")
        exported = rules_export()
        assert rules_import(text=exported, actor="system:test")["unchanged"] == ["big-co"]

    def test_publishing_an_invalid_draft_is_refused(self):
        rules_import(text=rule_yaml(), actor="system:test")
        rule = Rule.objects.get(key="big-co")
        rule.draft["when"] = {"all": [{"fact": "change_order.amount", "op": "contains", "value": "x"}]}
        with pytest.raises(RulesFileError):
            rule_publish(rule=rule, actor="system:test")


@pytest.mark.django_db
class TestEvaluation:
    def test_match_opens_one_escalation_with_its_evidence(self):
        fresh_streams()
        co = risky_change_order()
        rules_import(text=rule_yaml(), actor="system:test")
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert report.escalations_opened == 1
        escalation = Escalation.objects.get()
        assert (escalation.subject_id, escalation.route, escalation.status) == (co.pk, "executive", "open")
        assert escalation.evidence["facts"]["project.margin_pct"]["value"] == "9.0000"
        assert "Change order amount $60,000.00 is at least $50,000.00" in escalation.summary
        decision = Decision.objects.get(outcome="matched")
        assert decision.escalation == escalation and decision.facts and decision.explanation
        # Its evidence is its opening decision's, read from there: no copy in the row.
        assert escalation.evidence_decision_id == escalation.opened_decision_id == decision.pk
        assert escalation.evidence_copy == {} and escalation.evidence["facts"] == decision.facts
        assert sorted(escalation.deliveries.values_list("action", flat=True)) == [
            "email_account_manager",
            "flag_dashboard",
        ]

    def test_traces_are_kept_for_matches_and_changes_of_outcome_only(self):
        fresh_streams()
        co = risky_change_order(amount="100")
        rules_import(text=rule_yaml(), actor="system:test")

        def run(amount: str) -> Decision:
            ChangeOrder.objects.filter(pk=co.pk).update(amount=Decimal(amount))
            evaluate_subjects(subject_type="change_order", ids=[co.pk])
            return Decision.objects.order_by("-id").first()

        # A pair never decided before was not matched: its first non-match is a repeat, kept slim.
        steps = [run("100"), run("100"), run("60000"), run("60000"), run("100"), run("100")]
        assert [d.outcome for d in steps] == ["not_matched"] * 2 + ["matched"] * 2 + ["not_matched"] * 2
        assert [d.facts is not None for d in steps] == [False, False, True, True, True, False]
        assert [bool(d.explanation) for d in steps] == [False, False, True, True, True, False]
        assert SubjectState.objects.get().last_outcome == "not_matched"

    def test_a_bulk_run_traces_matches_and_changes_and_summarises_the_rest(self, monkeypatch):
        monkeypatch.setattr("apps.orchestration.pipeline.BULK_THRESHOLD", 1)
        fresh_streams()
        co = risky_change_order(amount="100")
        rules_import(text=rule_yaml(), actor="system:test")

        def run(amount: str) -> None:
            ChangeOrder.objects.filter(pk=co.pk).update(amount=Decimal(amount))
            evaluate_subjects(subject_type="change_order", ids=[co.pk])

        for amount in ("100", "100", "60000", "60000", "100", "100"):
            run(amount)
        decisions = Decision.objects.order_by("id")
        assert [(d.outcome, d.facts is not None, bool(d.explanation)) for d in decisions] == [
            ("matched", True, True),
            ("matched", True, True),
            ("not_matched", True, True),
        ]
        runs = bulk_runs().order_by("id")
        assert [r.subject_ids for r in runs] == [[co.pk]] * 6
        assert all(r.completed_at for r in runs)
        assert [(r.outcomes[0]["matched"], r.outcomes[0]["decisions"]) for r in runs] == [
            (0, 0),
            (0, 0),
            (1, 1),
            (1, 1),
            (0, 1),
            (0, 0),
        ]
        assert SubjectState.objects.get().last_outcome == "not_matched"

    def test_sql_first_and_traced_paths_write_the_same_traces(self, monkeypatch):
        fresh_streams()
        cos = [risky_change_order(amount=a) for a in ("100", "60000", "70000", "49999.99")]
        stale = risky_change_order(income="0", cost="5000")  # null margin: insufficient data
        rules_import(text=rule_yaml(), actor="system:test")
        ids = [c.pk for c in [*cos, stale]]

        def outcomes() -> list[tuple[int, str, bool, str]]:
            rows = Decision.objects.order_by("subject_id").values_list(
                "subject_id", "outcome", "facts", "suppressed"
            )
            return [(s, o, f is not None, x) for s, o, f, x in rows]

        traced_report = evaluate_subjects(subject_type="change_order", ids=ids)
        traced = outcomes()
        escalations_wipe()  # the event log is append-only
        Decision.objects.all().delete()
        SubjectState.objects.all().delete()
        monkeypatch.setattr("apps.orchestration.pipeline.BULK_THRESHOLD", 1)
        bulk_report = evaluate_subjects(subject_type="change_order", ids=ids)
        # The same traces; the two not-matched first evaluations are slim rows on one path and the
        # run's summary on the other.
        assert outcomes() == [row for row in traced if row[2]]
        assert [row[1] for row in traced if not row[2]] == ["not_matched", "not_matched"]
        assert (
            bulk_report.outcomes
            == traced_report.outcomes
            == {
                "matched": 2,
                "not_matched": 2,
                "insufficient_data": 1,
            }
        )
        assert bulk_report.subjects == traced_report.subjects == 5
        assert bulk_report.escalations_opened == 2
        [run] = bulk_runs().all()
        assert run.outcomes[0] | {"rule_version_id": 0} == {
            "rule": "big-co",
            "version": 1,
            "rule_version_id": 0,
            "matched": 2,
            "not_matched": 2,
            "insufficient_data": 1,
            "decisions": 3,
        }

    def test_a_full_run_evaluates_every_subject(self):
        fresh_streams()
        cos = [risky_change_order(amount=a) for a in ("100", "60000")]
        rules_import(text=rule_yaml(), actor="system:test")
        report = evaluate_subjects(subject_type="change_order")  # ids=None: the SQL-first path
        assert report.subjects == 2 and report.escalations_opened == 1
        assert Escalation.objects.get().subject_id == cos[1].pk
        assert Decision.objects.get().subject_id == cos[1].pk  # the quiet one is in the run's summary
        run = bulk_runs().get()
        assert (run.subjects, run.subject_ids) == (2, [c.pk for c in cos])
        assert set(ContextSnapshot.objects.values_list("subject_id", flat=True)) == {c.pk for c in cos}

    def test_stale_inputs_are_insufficient_data_not_a_decision(self):
        fresh_streams(age=dt.timedelta(hours=30))
        co = risky_change_order()
        rules_import(text=rule_yaml(), actor="system:test")
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert report.outcomes == {"insufficient_data": 1}
        assert not Escalation.objects.exists()

    def test_null_margin_is_insufficient_data(self):
        fresh_streams()
        co = risky_change_order(income="0", cost="5000")
        rules_import(text=rule_yaml(), actor="system:test")
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert Decision.objects.get().outcome == "insufficient_data"

    def test_executive_route_suppresses_a_standard_rule_on_the_same_subject(self):
        fresh_streams()
        co = risky_change_order()
        rules_import(text=rule_yaml(key="exec-rule", route="executive", priority=10), actor="system:test")
        rules_import(text=rule_yaml(key="std-rule", route="standard", priority=50), actor="system:test")
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert report.escalations_opened == 1 and report.suppressed == 1
        assert Escalation.objects.get().rule.key == "exec-rule"
        suppressed = Decision.objects.get(rule_version__rule__key="std-rule")
        assert suppressed.outcome == "matched" and "exec-rule" in suppressed.suppressed

    def test_refire_bumps_the_counter_and_cooldown_holds_after_close(self, executive):
        fresh_streams()
        co = risky_change_order()
        rules_import(text=rule_yaml(), actor="system:test")
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
        escalation = Escalation.objects.get()
        assert escalation.fire_count == 2
        from apps.escalations.services import escalation_decide

        escalation_decide(escalation=escalation, actor=executive, approve=True)
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert report.escalations_opened == 0 and Escalation.objects.count() == 1
        assert "cooldown" in Decision.objects.latest("id").suppressed
        # After the cooldown the same match escalates again.
        later = timezone.now() + dt.timedelta(days=8)
        fresh_streams()
        StreamState.objects.update(last_success_at=later)
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk], now=later)
        assert report.escalations_opened == 1

    def test_snooze_suppresses_actions_not_evaluation(self, ops_manager):
        fresh_streams()
        co = risky_change_order()
        rules_import(text=rule_yaml(), actor="system:test")
        rule = Rule.objects.get()
        SubjectState.objects.create(
            rule=rule,
            subject_type="change_order",
            subject_id=co.pk,
            last_outcome="not_matched",
            last_evaluated_at=timezone.now(),
            snoozed_until=timezone.now() + dt.timedelta(days=1),
            snoozed_by=ops_manager,
            snooze_reason="client call on Friday",
        )
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
        decision = Decision.objects.get()
        assert decision.outcome == "matched" and "client call on Friday" in decision.suppressed
        assert not Escalation.objects.exists()
        # Once the snooze expires, the next evaluation escalates.
        SubjectState.objects.update(snoozed_until=timezone.now() - dt.timedelta(seconds=1))
        assert evaluate_subjects(subject_type="change_order", ids=[co.pk]).escalations_opened == 1

    def test_auto_resolved_when_the_rule_stops_matching(self):
        fresh_streams()
        co = risky_change_order()
        rules_import(text=rule_yaml(), actor="system:test")
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
        co.amount = Decimal("100")
        co.save()
        report = evaluate_subjects(subject_type="change_order", ids=[co.pk])
        assert report.auto_resolved == 1
        escalation = Escalation.objects.get()
        assert (escalation.status, escalation.outcome) == ("resolved", "auto_resolved")


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_evaluations_of_one_subject_make_one_escalation():
    fresh_streams()
    co = risky_change_order()
    rules_import(text=rule_yaml(), actor="system:test")
    errors = run_concurrently(lambda: evaluate_subjects(subject_type="change_order", ids=[co.pk]), threads=8)
    assert errors == []
    escalation = Escalation.objects.get()
    assert escalation.fire_count == 8
    assert escalation.deliveries.count() == 2
    assert Decision.objects.filter(outcome="matched").count() == 8


@pytest.mark.django_db
def test_state_cooldowns_name_the_cooldown_of_each_pair_that_has_a_state():
    """Opening asks every claimed pair's cooldown (11,816 pairs on a first run): plain values, not a
    SubjectState instance each."""
    rule = Rule.objects.create(key="cool", name="Cool", subject_type="change_order", draft={})
    now = timezone.now()
    until = now + dt.timedelta(days=3)
    for subject_type, subject_id, cooldown in (("change_order", 1, until), ("change_order", 2, None),
                                               ("project", 3, until)):  # fmt: skip
        SubjectState.objects.create(
            rule=rule,
            subject_type=subject_type,
            subject_id=subject_id,
            last_evaluated_at=now,
            cooldown_until=cooldown,
        )
    got = state_cooldowns("change_order", [(rule.pk, 1), (rule.pk, 2), (rule.pk, 3), (rule.pk + 1, 1)])
    assert got == {(rule.pk, 1): until, (rule.pk, 2): None}


@pytest.mark.django_db
def test_rows_by_rule_subject_with_named_columns_gives_what_raw_gives():
    """Named plain columns become instances straight from the rows (a warm run locks 11,816 open
    escalations): the same pairs, values and deferred fields as ``raw()``, the rest read on access."""
    rule = Rule.objects.create(key="rows", name="Rows", subject_type="change_order", draft={})
    now = timezone.now()
    until = now + dt.timedelta(days=2)
    for subject_type, subject_id, cooldown in (("change_order", 1, until), ("change_order", 2, None),
                                               ("project", 1, until)):  # fmt: skip
        SubjectState.objects.create(
            rule=rule,
            subject_type=subject_type,
            subject_id=subject_id,
            last_outcome="matched",
            last_evaluated_at=now,
            cooldown_until=cooldown,
            snooze_reason=f"why {subject_id}",
        )
    keys = [(rule.pk, 2), (rule.pk, 1), (rule.pk, 3), (rule.pk + 1, 1)]
    columns = ("id", "rule_id", "subject_id", "cooldown_until")
    with transaction.atomic():
        fast = rows_by_rule_subject(SubjectState, "change_order", keys, columns=columns, lock=True)
    built = _by_rule_subject("rules_subjectstate", "change_order", keys, columns, "", False)
    slow = {(row.rule_id, row.subject_id): row for row in SubjectState.objects.raw(*built)}
    assert list(fast) == list(slow) == [(rule.pk, 1), (rule.pk, 2)]  # key order
    for key, row in fast.items():
        assert type(row) is SubjectState and not row._state.adding and row._state.db == "default"
        assert row.get_deferred_fields() == slow[key].get_deferred_fields()
        assert {c: getattr(row, c) for c in columns} == {c: getattr(slow[key], c) for c in columns}
    assert fast[(rule.pk, 1)].cooldown_until == until and fast[(rule.pk, 2)].cooldown_until is None
    assert fast[(rule.pk, 1)].snooze_reason == "why 1"  # deferred: read from the row
    # Columns read through a converter (jsonb) or every column keep the ORM's mapping.
    assert not _plain_columns(Escalation, ("id", "evidence"))
    assert not _plain_columns(SubjectState, ("*",))
    assert _plain_columns(Escalation, ("id", "rule_id", "subject_id", "fire_count"))


@pytest.mark.django_db
def test_a_matched_decision_reads_its_facts_from_its_row():
    """The batch's match instances leave the facts deferred (no snapshot dict per subject): asked for,
    they are the stored row's, the facts the decision was made on."""
    fresh_streams()
    co = risky_change_order()
    rules_import(text=rule_yaml(), actor="system:test")
    seen = []
    real = services.decisions_record

    def spy(*args, **kwargs):
        recorded = real(*args, **kwargs)
        seen.extend(recorded.matched)
        return recorded

    with mock.patch.object(pipeline, "decisions_record", spy):
        evaluate_subjects(subject_type="change_order", ids=[co.pk])
    [decision] = seen
    assert "facts" in decision.get_deferred_fields()
    assert decision.facts["project.margin_pct"]["value"] == "9.0000"
    assert decision.facts == Decision.objects.get(pk=decision.pk).facts
    assert decision.explanation["summary"] == decision.summary
