"""Bulk evaluation runs: every live rule over many subjects at once, tracing only what needs a trace.

A nightly run evaluates 50 rules × 100k subjects = 5 million (rule, subject) pairs, and nearly all of
them repeat the outcome they had. Only a match or a change of outcome needs a decision with its full
trace (ANCHORS, Rules 6); the rest are summarised in one :class:`EvaluationRun` row. So a run is:

1. one query over the facts that evaluates every rule in SQL and returns, per rule, the subjects it
   matched and those it could not decide (arrays: the "did not match" rest never crosses the wire);
2. the prior outcome of every pair that had one other than ``not_matched`` (states are sparse: a pair
   without one was never decided otherwise);
3. the pairs to trace: every match, and every pair whose outcome differs from its prior;
4. the run row (subjects, per-rule counts, fact ages), then a context snapshot for each subject that has
   none yet (backtests replay it), built in the database.

The caller evaluates the traced pairs in Python, where decisions, escalations and the audit are written,
while the snapshots are written beside it on a second connection (:func:`snapshots_start`); the run is
complete (``completed_at``) when both are done. SQL and the evaluator are proven equal by property tests.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connection, transaction

from apps.bulk import array_literal
from apps.rules.engine.catalogue import facts_for
from apps.rules.engine.evaluator import Verdict
from apps.rules.evaluation.facts import fact_ages
from apps.rules.evaluation.sql import _facts_subquery, facts_params, outcome_sets_many
from apps.rules.models import EvaluationRun, RuleVersion

if TYPE_CHECKING:
    from apps.rules.evaluation.services import EvaluationReport

logger = logging.getLogger(__name__)

MATCHED = Verdict.MATCHED.value
NOT_MATCHED = Verdict.NOT_MATCHED.value
UNKNOWN = Verdict.INSUFFICIENT_DATA.value

_PRIORS = """
    SELECT rule_id, subject_id, last_outcome FROM rules_subjectstate
     WHERE rule_id = ANY(%(rules)s) AND subject_type = %(subject_type)s AND last_outcome <> %(default)s
"""


_INSERT_RUN = """
    INSERT INTO rules_evaluationrun (subject_type, trigger, evaluated_at, subjects, subject_ids, ages,
                                     outcomes, progress, error)
    VALUES (%(subject_type)s, %(trigger)s, %(evaluated_at)s, %(subjects)s, %(subject_ids)s::bigint[],
            %(ages)s::jsonb, %(outcomes)s::jsonb, '{}'::jsonb, '')
    RETURNING id
"""

# A run publishing queued: its row exists from the publish on (admin shows it queued), and is filled in.
_UPDATE_RUN = """
    UPDATE rules_evaluationrun
       SET subject_type = %(subject_type)s, trigger = %(trigger)s, evaluated_at = %(evaluated_at)s,
           subjects = %(subjects)s, subject_ids = %(subject_ids)s::bigint[], ages = %(ages)s::jsonb,
           outcomes = %(outcomes)s::jsonb
     WHERE id = %(id)s
"""


def _run_columns(run: EvaluationRun) -> dict[str, Any]:
    return {
        "subject_type": run.subject_type,
        "trigger": run.trigger,
        "evaluated_at": run.evaluated_at,
        "subjects": run.subjects,
        "subject_ids": array_literal(run.subject_ids),
        "ages": json.dumps(run.ages),
        "outcomes": json.dumps(run.outcomes),
    }


def prior_outcomes(
    subject_type: str, rule_ids: Sequence[int], ids: Sequence[int] | None
) -> dict[int, dict[int, str]]:
    """``{rule id: {subject id: last outcome}}`` for the pairs whose last outcome is not ``not_matched``."""
    sql = _PRIORS + (" AND subject_id = ANY(%(ids)s)" if ids is not None else "")
    priors: dict[int, dict[int, str]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "rules": list(rule_ids),
                "subject_type": subject_type,
                "default": NOT_MATCHED,
                "ids": None if ids is None else list(ids),
            },
        )
        for rule_id, subject_id, outcome in cursor.fetchall():
            priors[rule_id][subject_id] = outcome
    return priors


def store_snapshots(
    run: EvaluationRun, subject_ids: Sequence[int], now: dt.datetime, *, every_subject: bool
) -> int:
    """Store the context of each of these subjects that has none yet (its facts, with the run's ages);
    returns how many. Built in the database from the facts query: a first run writes 100k of them.

    ``every_subject``: the run evaluated every live subject, so all the stored ids are read and compared
    here (a NOT EXISTS probe per id of a 100k-element array cost 1.6 s on a run where every subject had
    its snapshot); a partial run (a sync's few hundred subjects) looks up only its own."""
    query = "SELECT subject_id FROM rules_contextsnapshot WHERE subject_type = %s"
    params: list[Any] = [run.subject_type]
    if not every_subject:
        query += " AND subject_id = ANY(%s)"
        params.append(list(subject_ids))
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        stored = {row[0] for row in cursor.fetchall()}
        missing = [subject_id for subject_id in subject_ids if subject_id not in stored]
        if not missing:
            return 0
        insert = {**facts_params(now, missing), "run": run.pk, "subject_type": run.subject_type}
        # The values only, in the order of the run's fact names, sorted (ContextSnapshot.values): a third
        # of the size of {fact: value} objects, and cheaper to build, store and log (100k of them).
        # The facts query's own columns are the fact names (identifiers from the catalogue).
        values = ", ".join(f"f.{connection.ops.quote_name(name)}" for name in sorted(run.ages))
        cursor.execute(
            'INSERT INTO rules_contextsnapshot (run_id, subject_type, subject_id, "values") '  # noqa: S608
            f"SELECT %(run)s, %(subject_type)s, f.subject_id, jsonb_build_array({values}) "
            f"FROM ({_facts_subquery(run.subject_type, True)}) f "
            "ON CONFLICT (subject_type, subject_id) DO NOTHING",
            insert,
        )
        return cursor.rowcount


def subject_index_merge() -> None:
    """Merge the pending entries of the runs' subject index (GIN on ``subject_ids``) into the index.

    A run's INSERT appends its subjects to the index's pending list (``gin_pending_list_limit``, 64 MB);
    merging them here, on the snapshots' connection while the run traces, keeps it off the run's own
    path (every second 100k-subject run's INSERT merged 200k entries, 0.47 s). A role that does not own
    the index may not merge: then the next INSERT past the limit, or vacuum, does, as before."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT gin_clean_pending_list('rules_evalrun_subjects_gin'::regclass)")
    except DatabaseError as exc:
        logger.warning("runs' subject index not merged: %s", exc)


def snapshots_start(
    run: EvaluationRun, subject_ids: Sequence[int], now: dt.datetime, *, every_subject: bool
) -> Callable[[], None]:
    """Start storing the run's snapshots (:func:`store_snapshots`); returns the function that waits for
    them and raises what storing them raised.

    Outside a transaction they are written on a second connection, in a thread, while the caller traces
    the run's pairs: PostgreSQL builds them on the other core (1.4 s of a first run over 100k subjects,
    otherwise spent waiting); the same connection then merges the run's subjects into their index
    (:func:`subject_index_merge`). Inside the caller's transaction they are written here and now: another
    connection would not see its uncommitted rows, nor would a rollback take the snapshots back.
    """
    if connection.in_atomic_block:
        store_snapshots(run, subject_ids, now, every_subject=every_subject)
        return lambda: None
    failed: list[BaseException] = []

    def store() -> None:
        try:
            store_snapshots(run, subject_ids, now, every_subject=every_subject)
            subject_index_merge()
        except BaseException as exc:  # handed to the waiting caller, which raises it
            failed.append(exc)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=store, name=f"snapshots-run-{run.pk}", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


@transaction.atomic
def run_start(
    subject_type: str,
    versions: list[RuleVersion],
    ids: Sequence[int] | None,
    trigger: str,
    now: dt.datetime,
    *,
    run: EvaluationRun | None = None,
) -> tuple[EvaluationRun, dict[int, frozenset[int]]]:
    """Evaluate every live rule on the subjects (all when ``ids`` is None) in SQL and record the run
    (in ``run``'s row when publishing queued one).

    Returns the run and the pairs left to trace, as ``{subject id: rule ids}``. The run is complete
    (``completed_at``) once the caller has traced them and stored the snapshots.
    """
    ages = fact_ages(now)
    sets = outcome_sets_many(versions, subject_type, ids, now, ages=ages)
    priors = prior_outcomes(subject_type, [v.rule_id for v in versions], ids)
    evaluated = frozenset(sets.subject_ids)
    traced: dict[int, set[int]] = defaultdict(set)
    summary = []
    for version, matched, unknown in zip(versions, sets.matched, sets.unknown, strict=True):
        prior = priors.get(version.rule_id, {})
        pairs = set(matched)
        pairs.update(s for s in unknown if prior.get(s) != UNKNOWN)
        # Decided otherwise last time and not matched now (a subject gone from the run is not judged).
        pairs.update(s for s in prior if s in evaluated and s not in matched and s not in unknown)
        for subject_id in pairs:
            traced[subject_id].add(version.rule_id)
        summary.append(
            {
                "rule": version.rule.key,
                "version": version.number,
                "rule_version_id": version.pk,
                MATCHED: len(matched),
                NOT_MATCHED: len(evaluated) - len(matched) - len(unknown),
                UNKNOWN: len(unknown),
                "decisions": len(pairs),
            }
        )
    queued = run
    run = queued or EvaluationRun()
    run.subject_type = subject_type
    run.trigger = trigger
    run.evaluated_at = now
    run.subjects = len(evaluated)
    run.ages = {fact.name: ages.get(fact.name) for fact in facts_for(subject_type)}
    run.outcomes = summary
    run.subject_ids = sets.subject_ids
    # One statement with the ids as one array parameter: through the model field they cost 0.9 s for
    # 100k (each element prepared on its own).
    with connection.cursor() as cursor:
        if queued is not None:
            cursor.execute(_UPDATE_RUN, {**_run_columns(run), "id": run.pk})
        else:
            cursor.execute(_INSERT_RUN, _run_columns(run))
            run.pk = cursor.fetchone()[0]
            run._state.adding, run._state.db = False, connection.alias
    return run, {subject_id: frozenset(rules) for subject_id, rules in traced.items()}


def _progress(report: EvaluationReport, traced: int, to_trace: int) -> dict[str, int]:
    return {
        "traced": traced,
        "to_trace": to_trace,
        "opened": report.escalations_opened,
        "refired": report.escalations_refired,
        "suppressed": report.suppressed,
        "auto_resolved": report.auto_resolved,
    }


def run_progress(run: EvaluationRun, report: EvaluationReport, *, traced: int, to_trace: int) -> None:
    """After each committed batch: how far the tracing is and what it did (admin's run page polls it)."""
    run.progress = _progress(report, traced, to_trace)
    EvaluationRun.objects.filter(pk=run.pk).update(progress=run.progress)


def run_complete(
    run: EvaluationRun, now: dt.datetime, report: EvaluationReport | None = None, *, to_trace: int = 0
) -> None:
    run.completed_at = now
    if report is None:
        EvaluationRun.objects.filter(pk=run.pk).update(completed_at=now)
        return
    run.progress = _progress(report, to_trace, to_trace)
    EvaluationRun.objects.filter(pk=run.pk).update(completed_at=now, progress=run.progress)
