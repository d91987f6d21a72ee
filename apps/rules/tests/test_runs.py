"""Bulk evaluation runs: what they trace, what they summarise, and the contexts they keep for backtests."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.entities.models import ChangeOrder
from apps.learning.models import LearningSettings
from apps.learning.retention import decisions_prune
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.evaluation.backtest import context_from_snapshot, stored_contexts
from apps.rules.evaluation.facts import compute_contexts
from apps.rules.evaluation.services import rules_import
from apps.rules.models import ContextSnapshot, Decision, EvaluationRun, SubjectState

from .test_services import fresh_streams, risky_change_order, rule_yaml

pytestmark = pytest.mark.django_db


def bulk_runs():
    """The runs these tests make (publishing also queues one per published version; no worker runs it
    here, and apps/rules/tests/test_publishing.py tests it)."""
    return EvaluationRun.objects.exclude(trigger="publish")


@pytest.fixture
def three():
    """A match, a non-match and an undecidable change order (null margin), and the rule."""
    fresh_streams()
    cos = {
        "match": risky_change_order(amount="60000"),
        "quiet": risky_change_order(amount="100"),
        "unknown": risky_change_order(income="0", cost="5000"),
    }
    rules_import(text=rule_yaml(), actor="system:test")
    return cos


def full_run():
    return evaluate_subjects(subject_type="change_order", trigger="schedule")


def test_a_run_records_its_subjects_counts_and_ages(three):
    full_run()
    run = bulk_runs().get()
    assert run.subject_ids == sorted(c.pk for c in three.values()) and run.subjects == 3
    assert run.trigger == "schedule" and run.completed_at >= run.evaluated_at
    [counts] = run.outcomes
    assert (counts["rule"], counts["version"]) == ("big-co", 1)
    assert (counts["matched"], counts["not_matched"], counts["insufficient_data"]) == (1, 1, 1)
    assert counts["decisions"] == 2  # the match and the change from never-decided to undecidable
    assert 0 < run.ages["change_order.amount"] < 3600


def test_states_are_kept_only_for_pairs_decided_otherwise_than_not_matched(three):
    full_run()
    states = dict(SubjectState.objects.values_list("subject_id", "last_outcome"))
    assert states == {three["match"].pk: "matched", three["unknown"].pk: "insufficient_data"}
    full_run()
    # The repeat traces the match again and nothing else; the undecidable one stays quiet.
    assert bulk_runs().order_by("-id").first().outcomes[0]["decisions"] == 1
    assert Decision.objects.filter(subject_id=three["unknown"].pk).count() == 1


def test_a_change_back_to_not_matched_is_traced_and_recorded(three):
    full_run()
    ChangeOrder.objects.filter(pk=three["match"].pk).update(amount=Decimal("10"))
    full_run()
    latest = Decision.objects.filter(subject_id=three["match"].pk).order_by("-id").first()
    assert latest.outcome == "not_matched" and latest.facts and latest.explanation
    assert SubjectState.objects.get(subject_id=three["match"].pk).last_outcome == "not_matched"


def test_a_subject_gone_from_the_run_is_not_judged(three):
    full_run()
    ChangeOrder.objects.filter(pk=three["match"].pk).update(deleted_at=timezone.now())
    full_run()
    run = bulk_runs().order_by("-id").first()
    assert three["match"].pk not in run.subject_ids and run.outcomes[0]["decisions"] == 0
    assert SubjectState.objects.get(subject_id=three["match"].pk).last_outcome == "matched"


def test_a_failed_trace_leaves_the_run_incomplete_and_the_next_run_traces_again(three, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr("apps.orchestration.pipeline.batch_run", broken)
    with pytest.raises(RuntimeError):
        full_run()
    assert bulk_runs().get().completed_at is None
    assert not SubjectState.objects.exists() and not Decision.objects.exists()
    monkeypatch.undo()
    full_run()
    assert bulk_runs().order_by("-id").first().outcomes[0]["decisions"] == 2
    assert Decision.objects.filter(outcome="matched").count() == 1


def test_every_subject_gets_one_snapshot_equal_to_its_context(three):
    full_run()
    full_run()
    assert ContextSnapshot.objects.count() == 3
    contexts = {c.subject_id: c for c in compute_contexts("change_order")}
    snapshot = ContextSnapshot.objects.get(subject_id=three["quiet"].pk)
    stored = dict(stored_contexts("change_order"))
    values, ages = context_from_snapshot(stored[three["quiet"].pk])
    assert values == contexts[three["quiet"].pk].values  # Decimals and dates come back exact
    assert isinstance(values["change_order.amount"], Decimal)
    assert ages == {name: snapshot.run.ages[name] for name in values}


def test_backtests_take_the_newest_context_a_traced_decision_over_an_older_snapshot(three):
    full_run()
    stored = dict(stored_contexts("change_order"))
    # The match's decision of the same run wins over its snapshot: it has the sources too.
    assert stored[three["match"].pk]["change_order.amount"]["source"] == "pm"
    assert "source" not in stored[three["quiet"].pk]["change_order.amount"]
    assert len(stored) == 3


def test_retention_empties_old_runs_subject_lists_and_keeps_their_counts(three):
    full_run()
    LearningSettings.objects.update_or_create(pk=1, defaults={"retention_days": 30})
    decisions_prune(now=timezone.now() + dt.timedelta(days=31))
    run = bulk_runs().get()
    assert run.subject_ids == [] and run.outcomes[0]["matched"] == 1


def test_small_evaluations_are_not_runs(three):
    evaluate_subjects(subject_type="change_order", ids=[three["quiet"].pk])
    assert not bulk_runs().exists()
    assert Decision.objects.get().facts is None  # a never-decided pair that did not match: slim


def test_a_partial_run_stores_the_snapshots_of_its_own_subjects_only(three, monkeypatch):
    monkeypatch.setattr("apps.orchestration.pipeline.BULK_THRESHOLD", 1)
    evaluate_subjects(subject_type="change_order", ids=[three["quiet"].pk])
    assert list(ContextSnapshot.objects.values_list("subject_id", flat=True)) == [three["quiet"].pk]
    evaluate_subjects(subject_type="change_order", ids=[three["quiet"].pk, three["match"].pk])
    snapshots = ContextSnapshot.objects.order_by("id").values_list("subject_id", "run_id")
    first, second = bulk_runs().order_by("id").values_list("id", flat=True)
    assert list(snapshots) == [(three["quiet"].pk, first), (three["match"].pk, second)]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_snapshots_are_written_beside_the_traces(three, monkeypatch):
    """A run started outside any transaction stores its snapshots on a second connection (a thread)
    while it traces; it is complete once both are done."""
    from apps.rules.evaluation import runs

    writers = []
    store = runs.store_snapshots

    def recording(*args, **kwargs):
        writers.append(threading.current_thread().name)
        return store(*args, **kwargs)

    monkeypatch.setattr(runs, "store_snapshots", recording)
    full_run()
    run = bulk_runs().get()
    assert writers == [f"snapshots-run-{run.pk}"]
    assert ContextSnapshot.objects.filter(run=run).count() == 3 and run.completed_at is not None
    assert Decision.objects.count() == 2


def _pending_pages_cleaned() -> int:
    """Merge the runs' subject index's pending list into the index; how many pending pages it held."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT gin_clean_pending_list('rules_evalrun_subjects_gin'::regclass)")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_run_leaves_its_subjects_merged_into_the_subject_index_beside_the_traces(three):
    """A 100k-subject run adds 100k entries to the GIN index on ``subject_ids``: its INSERT only appends
    them to the index's pending list (room for a run of millions), and the snapshots' connection merges
    them while the run traces. Merging was the INSERT's own work once the list passed 4 MB: every second
    full run's INSERT took 0.47 s merging the previous run's entries with its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'rules_evalrun_subjects_gin'")
        assert "gin_pending_list_limit=65536" in cursor.fetchone()[0]
    _pending_pages_cleaned()
    full_run()
    assert bulk_runs().get().completed_at is not None
    assert _pending_pages_cleaned() == 0


@pytest.mark.django_db(transaction=True)
def test_failed_snapshots_fail_the_run_leave_it_incomplete_and_the_next_run_stores_them(three, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("apps.rules.evaluation.runs.store_snapshots", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        full_run()
    assert bulk_runs().get().completed_at is None
    assert Decision.objects.count() == 2  # the traces committed batch by batch
    monkeypatch.undo()
    full_run()
    latest = bulk_runs().order_by("-id").first()
    assert latest.completed_at is not None and ContextSnapshot.objects.filter(run=latest).count() == 3


def test_inside_a_transaction_snapshots_are_written_in_it(three):
    with transaction.atomic():
        full_run()
        assert ContextSnapshot.objects.count() == 3  # visible before commit: the same connection
        transaction.set_rollback(True)
    assert not ContextSnapshot.objects.exists() and not bulk_runs().exists()


def test_snapshots_hold_the_values_in_the_order_of_the_runs_sorted_fact_names_and_old_objects_still_read(
    three,
):
    full_run()
    run = bulk_runs().get()
    snapshot = ContextSnapshot.objects.get(subject_id=three["quiet"].pk)
    context = next(c for c in compute_contexts("change_order") if c.subject_id == three["quiet"].pk)
    assert len(snapshot.values) == len(run.ages) == len(context.values)
    assert dict(zip(sorted(run.ages), snapshot.values, strict=True))["change_order.amount"] == 100
    # A snapshot from before (a {fact: value} object) reads the same.
    as_object = dict(zip(sorted(run.ages), snapshot.values, strict=True))
    ContextSnapshot.objects.filter(pk=snapshot.pk).update(values=as_object)
    values, _ages = context_from_snapshot(dict(stored_contexts("change_order"))[three["quiet"].pk])
    assert values == context.values
