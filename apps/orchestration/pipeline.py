"""The pipeline: entity changes → pending evaluations → data quality → decide → act → one audit batch.

This module owns the flow and its transactions; the stages are the apps' own and know nothing of
each other:

1. **entity changes** — a writer calls ``apps.entities.changes.entities_changed_publish``; the rules mark
   the dependent subjects pending (``rules_pendingevaluation``, in the writer's transaction) and queue a
   flush; data quality notes that a scan is due. Entities import neither.
2. **pending evaluations** — :func:`flush_pending` (the ``evaluate_pending`` task) first brings data
   quality up to date (:func:`quality_before_deciding`): the scan runs and the subjects whose open error
   findings changed are marked too, so a guard such as ``project.data_quality_errors eq 0`` decides on
   this change's findings. Then the pending subjects are claimed and evaluated, group by group.
3. **decide** — ``apps.rules.evaluation.services.decide``: pure evaluation of every live rule and the
   rules' own decision (route inhibition, snoozes); ``decisions_record`` stores the decisions. Nothing in
   rules knows what acting means.
4. **act** — ``apps.escalations``: re-fire the open escalations (``refire``), open new ones with their
   outbox rows through the noise controls (``opening``), auto-resolve those whose rule stopped matching.
5. **audit** — every stage returns its audit entries; the batch appends them once, last.

Lock order (one batch, one transaction; every evaluation takes its locks in this order, each set in key
order, so concurrent batches and flushes cannot deadlock):

    subject states (rules' claim) → open escalations of acting matches → decisions (new rows)
    → escalations claimed by opening → open escalations being auto-resolved → the audit chain (last;
    held until commit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import audit_append_many
from apps.bulk import fewer_collections, reserve_ids
from apps.escalations.models import Escalation
from apps.escalations.opening import escalations_open
from apps.escalations.refire import REFIRED, open_escalations, refires_write
from apps.escalations.services import escalation_auto_resolve
from apps.quality.services import findings_refresh, scan_due_take
from apps.rules.authoring.publishing import stale_after
from apps.rules.evaluation import triggers
from apps.rules.evaluation.custom import refresh
from apps.rules.evaluation.facts import Context, compute_contexts
from apps.rules.evaluation.runs import run_complete, run_progress, run_start, snapshots_start
from apps.rules.evaluation.services import EvaluationReport, decide, decisions_record, live_versions
from apps.rules.models import Decision, EvaluationRun, RuleVersion

# From this many subjects on, the evaluation is a bulk run (:mod:`apps.rules.evaluation.runs`): outcomes are
# computed in SQL first and only the pairs that need a trace (a match, a change of outcome) take the
# per-subject path; the rest are summarised in the run.
BULK_THRESHOLD = 200

ACTOR = "system:rules"


def evaluate_subjects(
    *,
    subject_type: str,
    ids: Sequence[int] | None = None,
    trigger: str = Decision.Trigger.MANUAL,
    now: dt.datetime | None = None,
    batch_size: int = 2000,
    run: EvaluationRun | None = None,
) -> EvaluationReport:
    """Decide and act on every live rule of ``subject_type`` for the given subjects (all when ``ids`` is
    None).

    Each batch of ``batch_size`` subjects is one transaction holding its subjects' states until it
    commits (about half a second for 2,000 traced subjects); fewer, larger batches cost fewer round
    trips and commits. ``run``: a queued run (publishing) that this evaluation fills in, instead of a
    new one; a bulk run's ``progress`` is updated after every batch.
    """
    now = now or timezone.now()
    refresh()  # the current version of every operator-defined fact, for the whole evaluation
    report = EvaluationReport()
    versions = live_versions(subject_type)
    if not versions or (ids is not None and not ids):
        if run is not None:
            run_complete(run, timezone.now(), report)  # nothing live to evaluate: done at once
        return report
    if ids is not None and len(ids) < BULK_THRESHOLD and run is None:
        contexts = compute_contexts(subject_type, ids, now=now)
        _batches(contexts, versions, trigger, now, report, None, batch_size)
        return report
    with fewer_collections():
        run, pairs = run_start(subject_type, versions, ids, trigger, now, run=run)
        snapshots_stored = snapshots_start(run, run.subject_ids, now, every_subject=ids is None)
        report.subjects = run.subjects
        for counts in run.outcomes:
            report.outcomes.update({o: n for o, n in counts.items() if o in Decision.Verdict.values and n})
        try:
            if pairs:
                contexts = compute_contexts(subject_type, sorted(pairs), now=now)
                done = 0

                def batch_done(subjects: int) -> None:
                    nonlocal done
                    done += subjects
                    run_progress(run, report, traced=done, to_trace=len(pairs))

                _batches(contexts, versions, trigger, now, report, pairs, batch_size, batch_done)
        finally:
            snapshots_stored()  # waits even when tracing failed: no thread outlives the run
    run_complete(run, timezone.now(), report, to_trace=len(pairs))
    return report


def _batches(
    contexts: Iterable[Context],
    versions: list[RuleVersion],
    trigger: str,
    now: dt.datetime,
    report: EvaluationReport,
    pairs: dict[int, frozenset[int]] | None = None,
    batch_size: int = 2000,
    batch_done: Callable[[int], None] | None = None,
) -> None:
    """The contexts batch by batch, each batch its own transaction (or savepoint); ``batch_done(subjects)``
    after each one.

    Two batches at once, each on its own connection, were tried (docs/PERFORMANCE.md, session 5): a
    cold run got faster, a warm one slower, both used more CPU, and concurrent batches would each pass
    the hourly email cap on their own. So batches run one after another.
    """
    batch: list[Context] = []
    for context in contexts:
        batch.append(context)
        if len(batch) >= batch_size:
            batch_run(batch, versions, trigger, now, report, pairs)
            if batch_done is not None:
                batch_done(len(batch))
            batch = []
    if batch:
        batch_run(batch, versions, trigger, now, report, pairs)
        if batch_done is not None:
            batch_done(len(batch))


@transaction.atomic
def batch_run(
    contexts: list[Context],
    versions: list[RuleVersion],
    trigger: str,
    now: dt.datetime,
    report: EvaluationReport,
    pairs: dict[int, frozenset[int]] | None = None,
) -> None:
    """Decide, act and audit one batch of subjects in one transaction, taking the locks in the order the
    module's docstring gives."""
    # Decide: evaluate, claim (lock) the subject states, say which matches act.
    decided = decide(contexts, versions, now, report, pairs)
    subject_type = decided.subject_type
    # The open escalations the acting matches re-fire are locked before any decision is written, so
    # every decision, matches included, streams into one COPY pointing at its escalation.
    open_now = open_escalations(subject_type, decided.acting, lock=True)
    # The other acting matches are to open escalations: their ids are drawn now, in the order opening
    # claims them, so their decisions go into the same COPY pointing at them (the foreign key is checked
    # at commit) instead of being updated once the escalations exist. Opening corrects the few it does
    # not open under that id (a cooldown, a claim another transaction won).
    to_open = [key for key in dict.fromkeys(decided.acting) if key not in open_now]
    reserved = dict(zip(to_open, reserve_ids(Escalation._meta.db_table, len(to_open)), strict=True))
    recorded = decisions_record(
        decided,
        trigger=trigger,
        now=now,
        report=report,
        links={key: (escalation.pk, REFIRED) for key, escalation in open_now.items()},
        opening=reserved,
        pairs=pairs,
    )
    # Act: re-fire (the decisions are stored now), open, auto-resolve.
    refired = [(open_now[key], decision) for key, decision in recorded.linked.items()]
    refires_write(refired, now)
    report.escalations_refired += len(refired)
    audit = recorded.audit
    if recorded.unlinked:
        results, entries = escalations_open(
            subject_type=subject_type, fired=recorded.unlinked, now=now, reserved=reserved
        )
        audit += entries
        for result in results:
            if result == "opened":
                report.escalations_opened += 1
            elif result == "refired":
                report.escalations_refired += 1
            else:
                report.suppressed += 1
    for rule_id, subject_ids in recorded.not_matched.items():
        resolved, entries = escalation_auto_resolve(
            rule_id=rule_id, subject_type=subject_type, subject_ids=subject_ids, now=now
        )
        report.auto_resolved += resolved
        audit += entries
    # Audit last: the chain's lock is held until commit, so taking it before a row lock whose holder
    # waits for the chain would deadlock.
    audit_append_many(audit, actor=ACTOR)


# --- pending evaluations ----------------------------------------------------------------------------


def quality_before_deciding() -> dict[str, set[int]]:
    """If entities changed since the last scan, scan now and mark the subjects whose ``data quality``
    facts the new or resolved findings move (a subject already pending keeps its trigger)."""
    if not scan_due_take():
        return {}
    changed = findings_refresh()
    # A finding on a change order, milestone or submittal counts towards its project's errors.
    affected = triggers.affected_subjects(changed) if changed else {}
    if any(affected.values()):
        with transaction.atomic():
            triggers.pending_add(affected, Decision.Trigger.SYNC, keep=True)
    return affected


def flush_pending(*, limit: int = 5_000) -> dict[str, int]:
    """Data quality first, then every pending subject decided and acted on (the ``evaluate_pending`` task;
    see :func:`apps.rules.evaluation.triggers.pending_flush` for claims, leases and retries)."""
    quality_before_deciding()
    return triggers.pending_flush(evaluate=lambda **kw: evaluate_subjects(**kw), limit=limit)


# --- publish runs -----------------------------------------------------------------------------------


def publish_run_perform(*, run_id: int) -> str:
    """Evaluate a queued publish run (the worker's side). Safe to run twice: the second finds it claimed."""
    now = timezone.now()
    claimed = (
        EvaluationRun.objects.filter(pk=run_id, completed_at__isnull=True, error="")
        .filter(Q(started_at__isnull=True) | Q(started_at__lt=now - stale_after()))
        .update(started_at=now, evaluated_at=now)
    )
    if not claimed:
        return f"run {run_id}: already taken or finished"
    run = EvaluationRun.objects.get(pk=run_id)
    try:
        report = evaluate_subjects(
            subject_type=run.subject_type, ids=None, trigger=Decision.Trigger.PUBLISH, now=now, run=run
        )
    except ConnectionError:
        # The task retries these (broker or database blips): let the retry claim the run again.
        EvaluationRun.objects.filter(pk=run_id).update(started_at=None)
        raise
    except Exception as exc:
        EvaluationRun.objects.filter(pk=run_id).update(error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return f"run {run_id}: {report}"
