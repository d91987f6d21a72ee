"""Publishing acts (SPEC "Outcomes — Publishing"): a published version is evaluated over every subject of
its type at once, by a worker, without waiting for a sync, in a run admin shows as it goes.

Before this, ``rule_publish`` only froze the version: nothing evaluated it until something else marked
subjects (a sync evaluates only the subjects whose data changed; the nightly run is at 02:00), so a rule
whose preview promised 61 matches opened 0 escalations for minutes, then one per changed subject.

The run's row is written in the publishing transaction (queued), and its task is sent on commit: a
worker never looks for a version that is not committed yet, and a rolled-back publish queues nothing.
A run evaluates every live rule of the subject type, as a sync does, so priorities and routes suppress
across rules exactly as they would on the next change; matches of the other rules that already have
an open escalation re-fire it (a counter, no new page).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.rules.models import Decision, EvaluationRun, RuleVersion, SubjectState


def publish_runs_queue(
    *, versions: Iterable[RuleVersion], now: dt.datetime | None = None
) -> list[EvaluationRun]:
    """Queue one run per subject type of these newly published versions (the caller's transaction
    holds them; the tasks go on commit). Versions of disabled rules are not evaluated."""
    from apps.rules.tasks import evaluate_run_task

    now = now or timezone.now()
    by_type: dict[str, list[RuleVersion]] = {}
    for version in versions:
        if version.rule.enabled:
            by_type.setdefault(str(version.spec["subject"]), []).append(version)
    runs = []
    for subject_type, published in sorted(by_type.items()):
        run = EvaluationRun.objects.create(
            subject_type=subject_type, trigger=Decision.Trigger.PUBLISH, evaluated_at=now, queued_at=now
        )
        run.published_versions.set(published)
        transaction.on_commit(partial(evaluate_run_task.delay, run.pk))
        runs.append(run)
    return runs


def publish_runs_requeue(
    *, now: dt.datetime | None = None, after: dt.timedelta = dt.timedelta(seconds=60)
) -> int:
    """Send again the task of each run still queued ``after`` its publish (a worker or the broker lost it,
    or the process died between commit and send). Beat calls this every minute; a run is claimed once."""
    from apps.rules.tasks import evaluate_run_task

    now = now or timezone.now()
    waiting = list(
        EvaluationRun.objects.filter(
            queued_at__lt=now - after, started_at__isnull=True, completed_at__isnull=True, error=""
        ).values_list("pk", flat=True)
    )
    for run_id in waiting:
        evaluate_run_task.delay(run_id)
    return len(waiting)


def stale_after() -> dt.timedelta:
    # A run started longer ago than a task may live was lost with its worker (acks_late re-delivers the
    # task): it may be claimed again. Re-running is safe: escalations dedupe in the database.
    return dt.timedelta(seconds=int(settings.CELERY_TASK_TIME_LIMIT) + 60)


def publish_run_perform(*, run_id: int) -> str:
    """Evaluate a queued run (the worker's side). Safe to run twice: the second finds it claimed."""
    from apps.rules.evaluation.services import evaluate_subjects

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


# --- what publishing will do (the preview's sentence) ---------------------------------------------


@dataclass(frozen=True)
class PublishEstimate:
    """What publishing the draft now would do: evaluate ``subjects`` and open about ``opens``
    escalations; the other matches re-fire an open one, wait out a cooldown or snooze, or yield to a
    higher route."""

    subjects: int
    matches: int
    opens: int
    already_open: int = 0
    cooling_down: int = 0
    snoozed: int = 0
    higher_route: int = 0
    enabled: bool = True

    def sentence(self, subject_type: str) -> str:
        noun = subject_type.replace("_", " ") + ("" if self.subjects == 1 else "s")
        if not self.enabled:
            return (
                "The rule is disabled: publishing makes this version live but evaluates nothing until "
                "the rule is enabled."
            )
        text = (
            f"Publishing will evaluate {self.subjects:,} {noun} now and open about {self.opens:,} "
            f"escalation{'' if self.opens == 1 else 's'}"
        )
        held = [
            (self.already_open, "already open (re-fired, no new email)"),
            (self.cooling_down, "in cooldown"),
            (self.snoozed, "snoozed"),
            (self.higher_route, "left to a higher-route rule"),
        ]
        others = [f"{n:,} {why}" for n, why in held if n]
        if others:
            text += f"; of its {self.matches:,} matches, " + ", ".join(others)
        return text + "."


def publish_estimate(
    *,
    rule_id: int | None,
    enabled: bool,
    subject_type: str,
    subjects: int,
    matched: Sequence[int],
    higher_matched: Iterable[int] = (),
    now: dt.datetime,
) -> PublishEstimate:
    """Count what would hold back each of the draft's ``matched`` subjects from opening an escalation:
    an open one of the rule (re-fired), a cooldown, a snooze, a match of a higher-route rule that runs
    first (``higher_matched``); the rest open one."""
    from apps.escalations.models import Escalation

    remaining = set(matched)
    higher = remaining & set(higher_matched)
    remaining -= higher
    already: set[int] = set()
    cooling: set[int] = set()
    snoozed: set[int] = set()
    if rule_id is not None and remaining:
        already = set(
            Escalation.objects.filter(
                rule_id=rule_id,
                subject_type=subject_type,
                subject_id__in=remaining,
                status__in=[Escalation.Status.OPEN, Escalation.Status.ACKNOWLEDGED],
            ).values_list("subject_id", flat=True)
        )
        remaining -= already
        states = SubjectState.objects.filter(
            rule_id=rule_id, subject_type=subject_type, subject_id__in=remaining
        )
        snoozed = set(states.filter(snoozed_until__gt=now).values_list("subject_id", flat=True))
        remaining -= snoozed
        cooling = set(states.filter(cooldown_until__gt=now).values_list("subject_id", flat=True)) & remaining
        remaining -= cooling
    return PublishEstimate(
        subjects=subjects,
        matches=len(matched),
        opens=len(remaining),
        already_open=len(already),
        cooling_down=len(cooling),
        snoozed=len(snoozed),
        higher_route=len(higher),
        enabled=enabled,
    )
