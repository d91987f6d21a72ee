from celery import shared_task

from apps.rules.evaluation.services import evaluate_subjects
from apps.rules.evaluation.triggers import SUBJECTS, flush_scheduled_clear, pending_flush


@shared_task(
    acks_late=True, ignore_result=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5
)
def evaluate_subjects_task(subject_type: str, ids: list[int] | None, trigger: str = "sync") -> str:
    """Evaluate live rules on some subjects (safe to repeat: escalations dedupe in the database)."""
    return str(evaluate_subjects(subject_type=subject_type, ids=ids, trigger=trigger))


@shared_task(
    acks_late=True, ignore_result=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5
)
def evaluate_run_task(run_id: int) -> str:
    """A run publishing queued: every subject of the published rule's type (safe to repeat)."""
    from apps.rules.authoring.publishing import publish_run_perform

    return publish_run_perform(run_id=run_id)


@shared_task(ignore_result=True)
def evaluate_all(trigger: str = "schedule") -> str:
    """Nightly: time-based facts (renewal countdowns, ageing) change without any sync."""
    return "; ".join(
        f"{st}: {evaluate_subjects(subject_type=st, ids=None, trigger=trigger)}" for st in SUBJECTS
    )


@shared_task(acks_late=True, ignore_result=True)
def evaluate_pending() -> str:
    """Evaluate the subjects marked since the last flush (queued at the end of a coalescing window, and by
    beat every minute for anything a lost task left behind)."""
    from apps.rules.authoring.publishing import publish_runs_requeue

    flush_scheduled_clear()
    done = pending_flush()
    if requeued := publish_runs_requeue():
        done["publish runs re-sent"] = requeued
    return ", ".join(f"{k} {v}" for k, v in sorted(done.items())) or "nothing pending"
