"""Nightly learning work (beat, after the nightly evaluation): each task calls one service.

A task allowed longer than ``CELERY_TASK_TIME_LIMIT`` (30 minutes) sets its hard limit too: Celery refuses to
send a task whose soft limit exceeds its hard one (``apply_async`` raises, and beat only logs it)."""

from __future__ import annotations

from celery import shared_task

from apps.rules.models import Rule

from .ranking import risk_model_train, risk_scores_refresh
from .retention import decisions_prune
from .sampling import sampled_subject_types, shadow_sample_take, shadow_samples_label
from .thresholds import suggestions_generate


@shared_task(ignore_result=True, soft_time_limit=1800)
def shadow_nightly() -> str:
    """Label the samples whose answer is now known, then draw tonight's (a rerun adds a few rows more)."""
    positive, negative = shadow_samples_label()
    drawn = {st: len(shadow_sample_take(subject_type=st)) for st in sampled_subject_types()}
    return f"labelled {positive} positive, {negative} negative; sampled {drawn}"


@shared_task(ignore_result=True, soft_time_limit=3600, time_limit=3660)
def suggest_thresholds() -> str:
    """Sweep every enabled live rule; each run supersedes the previous open suggestions (safe to repeat)."""
    made = 0
    for rule in Rule.objects.filter(enabled=True, live_version__isnull=False).select_related("live_version"):
        made += len(suggestions_generate(rule=rule))
    return f"{made} suggestions"


@shared_task(ignore_result=True, soft_time_limit=1800)
def train_risk_model() -> str:
    """Retrain (a new version each night once enough labels exist) and rescore flagged projects."""
    model = risk_model_train()
    scored = risk_scores_refresh()
    return f"model {model.version if model else 'not trained (too few labels)'}; {scored} projects scored"


@shared_task(ignore_result=True, soft_time_limit=600)
def rescore_projects() -> str:
    """Hourly: score projects flagged since the nightly run with the current model (no retraining)."""
    return f"{risk_scores_refresh()} projects scored"


@shared_task(ignore_result=True, soft_time_limit=3600, time_limit=3660)
def prune_decisions() -> str:
    """Retention: null old decision payloads in batches (idempotent)."""
    return f"{decisions_prune()} decisions pruned"


@shared_task(ignore_result=True, soft_time_limit=3600, time_limit=3660, acks_late=True)
def run_backtest(run_id: int) -> str:
    """A backtest from admin too large for the request; only a queued run starts (safe to repeat)."""
    from .backtests import backtest_run_execute

    return backtest_run_execute(run_id=run_id)
