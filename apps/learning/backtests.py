"""Backtests from admin: a rule (live) or its draft over a period, inline when small, on a worker when not.

The replay is ``apps.rules.evaluation.backtest`` (the live evaluator over the stored contexts as of each
decision, precision and recall on the period's cases); this module decides where it runs, keeps the
figures as JSON for the page, and draws the matches over time with the dashboard's SVG charts.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Final

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.audit.services import Actor, audit_record
from apps.dashboard import charts
from apps.rules.engine.ruleset import rule_from_dict
from apps.rules.evaluation.backtest import BacktestResult, backtest
from apps.rules.models import ContextSnapshot, Decision, Rule

from .models import BacktestRun

logger = logging.getLogger(__name__)

# Past this many stored contexts in the period the backtest goes to a worker (≈ 2 µs per condition per
# context, plus JSON decoding: a few seconds inline at most).
INLINE_LIMIT: Final = 20_000


def expected_contexts(subject_type: str, since: dt.datetime | None, until: dt.datetime | None) -> int:
    """How many stored contexts the period holds (an upper bound: one per decision and snapshot)."""
    window = Q()
    if since is not None:
        window &= Q(evaluated_at__gte=since)
    if until is not None:
        window &= Q(evaluated_at__lt=until)
    decisions = Decision.objects.filter(window, subject_type=subject_type, facts__isnull=False).count()
    run_window = Q()
    if since is not None:
        run_window &= Q(run__evaluated_at__gte=since)
    if until is not None:
        run_window &= Q(run__evaluated_at__lt=until)
    return decisions + ContextSnapshot.objects.filter(run_window, subject_type=subject_type).count()


def as_json(result: BacktestResult) -> dict[str, Any]:
    """The figures the page shows, JSON-safe (dates as ISO text, values as text)."""
    return {
        "rule": result.candidate.key,
        "label": result.candidate.label,
        "subject_type": result.candidate.subject_type,
        "is_draft": result.is_draft,
        "live_version": result.live.version if result.live else None,
        "replayed": result.replayed,
        "limited": result.limited,
        "outcomes": dict(result.outcomes),
        "live_outcomes": dict(result.live_outcomes),
        "timeline": [[day.isoformat(), c, live] for day, (c, live) in sorted(result.timeline.items())],
        "precision": [result.precision.positive, result.precision.negative],
        "live_precision": [result.live_precision.positive, result.live_precision.negative],
        "recall": result.recall,
        "live_recall": result.live_recall,
        "recall_text": result.recall_text(),
        "cases": result.cases,
        "newly_matching": result.newly_matching,
        "no_longer_matching": result.no_longer_matching,
        "newly_matching_count": result.newly_matching_count,
        "no_longer_matching_count": result.no_longer_matching_count,
        "positives_lost": result.positives_lost,
        "examples": [
            [subject_id, at.isoformat(), {k: None if v is None else str(v) for k, v in values.items()}]
            for subject_id, at, values in result.examples
        ],
        "text": str(result),
    }


def _run(rule: Rule, *, use_draft: bool, draft: dict[str, Any] | None, **kwargs: Any) -> BacktestResult:
    spec = rule_from_dict(draft or rule.draft) if use_draft else None
    return backtest(rule.key, draft=spec, file_name="the rule's draft", **kwargs)


def backtest_start(
    *,
    rule: Rule,
    use_draft: bool,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actor: Actor,
) -> tuple[dict[str, Any] | None, BacktestRun | None]:
    """Run a small backtest now (its figures), or queue a large one (its run row)."""
    expected = expected_contexts(rule.subject_type, since, until)
    if expected <= INLINE_LIMIT:
        return as_json(_run(rule, use_draft=use_draft, draft=None, since=since, until=until)), None
    with transaction.atomic():
        run = BacktestRun.objects.create(
            rule_key=rule.key,
            use_draft=use_draft,
            draft=rule.draft if use_draft else None,
            since=since,
            until=until,
            expected=expected,
            created_at=timezone.now(),
            created_by=actor if getattr(actor, "is_authenticated", False) else None,  # type: ignore[misc]
        )
        audit_record(
            action="backtest.queued",
            actor=actor,
            object_type="backtest_run",
            object_id=run.pk,
            data={"rule": rule.key, "draft": use_draft, "expected": expected},
        )
        transaction.on_commit(lambda: _send(run.pk))
    return None, run


def _send(run_id: int) -> None:
    """Send a queued run's task; when it cannot be sent (the broker down), the run fails saying so
    rather than waiting as queued for a task that will never come."""
    from .tasks import run_backtest

    try:
        run_backtest.delay(run_id)
    except Exception as exc:  # kombu's OperationalError, or what Celery refuses to send
        logger.warning("backtest run %s could not be queued: %s", run_id, exc)
        BacktestRun.objects.filter(pk=run_id, status=BacktestRun.Status.QUEUED).update(
            status=BacktestRun.Status.FAILED,
            error=f"It could not be queued for a worker: {exc}. Try again when the broker is back.",
            finished_at=timezone.now(),
        )


def backtest_run_execute(*, run_id: int) -> str:
    """Replay a queued run, writing progress as it goes; safe to repeat (only a queued run starts)."""
    claimed = BacktestRun.objects.filter(pk=run_id, status=BacktestRun.Status.QUEUED).update(
        status=BacktestRun.Status.RUNNING
    )
    if not claimed:
        return "not queued"
    run = BacktestRun.objects.get(pk=run_id)
    rule = Rule.objects.select_related("live_version").get(key=run.rule_key)

    def progress(done: int) -> None:
        BacktestRun.objects.filter(pk=run_id).update(progress=done)

    try:
        result = _run(
            rule,
            use_draft=run.use_draft,
            draft=run.draft,
            since=run.since,
            until=run.until,
            progress=progress,
        )
    except Exception as exc:
        BacktestRun.objects.filter(pk=run_id).update(
            status=BacktestRun.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        raise
    BacktestRun.objects.filter(pk=run_id).update(
        status=BacktestRun.Status.DONE,
        progress=result.replayed,
        result=as_json(result),
        finished_at=timezone.now(),
    )
    return f"replayed {result.replayed}"


def timeline_chart(figures: dict[str, Any]) -> SafeString:
    """Matches per day, the candidate beside the live version."""
    rows = figures["timeline"]
    days = [dt.date.fromisoformat(day) for day, _, _ in rows]
    series = [charts.Series("this backtest" if figures["is_draft"] else "live", [c for _, c, _ in rows])]
    if figures["is_draft"] and figures["live_version"] is not None:
        series.append(charts.Series(f"live v{figures['live_version']}", [live for _, _, live in rows]))
    return charts.line_chart(
        chart_id="chart-backtest",
        title=f"Matches per day, {figures['rule']}",
        labels=charts.day_labels(days),
        series=series,
        unit="matches",
    )
