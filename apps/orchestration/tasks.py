"""The pipeline's Celery tasks.

Their names predate the pipeline (they were ``apps.rules.tasks``): queued tasks, django-celery-beat rows
and the ``apps.rules.*`` route to the evaluation queue carry them, so each keeps its name with ``name=``.
The rules find the two they queue by name in the app's registry (``triggers.EVALUATE_PENDING_TASK``,
``EVALUATE_RUN_TASK``); a test checks they resolve here.
"""

import logging

from celery import shared_task
from celery.signals import worker_ready

from apps.rules.authoring.publishing import publish_runs_requeue
from apps.rules.evaluation.triggers import (
    EVALUATE_PENDING_TASK,
    EVALUATE_RUN_TASK,
    SUBJECTS,
    flush_scheduled_clear,
)

from . import pipeline

logger = logging.getLogger(__name__)


@shared_task(
    name="apps.rules.tasks.evaluate_subjects_task",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_retries=5,
)
def evaluate_subjects_task(subject_type: str, ids: list[int] | None, trigger: str = "sync") -> str:
    """Evaluate live rules on some subjects (safe to repeat: escalations dedupe in the database)."""
    return str(pipeline.evaluate_subjects(subject_type=subject_type, ids=ids, trigger=trigger))


@shared_task(
    name=EVALUATE_RUN_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_retries=5,
)
def evaluate_run_task(run_id: int) -> str:
    """A run publishing queued: every subject of the published rule's type (safe to repeat)."""
    return pipeline.publish_run_perform(run_id=run_id)


@shared_task(name="apps.rules.tasks.evaluate_all", ignore_result=True)
def evaluate_all(trigger: str = "schedule") -> str:
    """Nightly: time-based facts (renewal countdowns, ageing) change without any sync."""
    return "; ".join(
        f"{st}: {pipeline.evaluate_subjects(subject_type=st, ids=None, trigger=trigger)}" for st in SUBJECTS
    )


@shared_task(name=EVALUATE_PENDING_TASK, acks_late=True, ignore_result=True)
def evaluate_pending() -> str:
    """Evaluate the subjects marked since the last flush (queued at the end of a coalescing window, and by
    beat every minute for anything a lost task left behind); data quality is scanned first."""
    flush_scheduled_clear()
    done = pipeline.flush_pending()
    if requeued := publish_runs_requeue():
        done["publish runs re-sent"] = requeued
    return ", ".join(f"{k} {v}" for k, v in sorted(done.items())) or "nothing pending"


@worker_ready.connect
def sweep_after_worker_start(**_: object) -> None:
    """A worker (re)started: queue the evaluation flush and the outbox sweep at once.

    Countdown messages (a scheduled flush, an outbox row's retry) sit in the worker that reserved them; one
    SIGKILLed takes them along, and Redis gives them back only after the visibility timeout (an hour). The
    rows are safe (pending evaluations, due outbox rows), but without this they wait for beat (a flush every
    minute, the outbox every 30 s): the soak saw two decisions 8.5 s late after a kill. A worker restarted
    after a crash is the moment to look; with nothing waiting both tasks do nothing. No database access here:
    this runs in the worker's main process, whose forked pool must not share its connection.

    An outbox row the killed worker had claimed is due again only when its claim lapses: a pool task
    reads when the current claims lapse and queues an outbox sweep for each moment
    (``deliver_when_claims_lapse``)."""
    from apps.escalations.tasks import deliver_due, deliver_when_claims_lapse

    for task in (evaluate_pending, deliver_due, deliver_when_claims_lapse):
        try:
            task.apply_async()
        except Exception:  # the broker is down: beat's schedules find the rows later
            logger.warning("could not queue %s after the worker started", task.name, exc_info=True)
