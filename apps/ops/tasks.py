"""Beat tasks of operations: the metrics snapshot (15 s) and the scheduled audit verification (hourly)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="apps.ops.tasks.metrics_snapshot", ignore_result=True, expires=30)
def metrics_snapshot() -> str:
    from .snapshot import metrics_snapshot_take

    snapshot = metrics_snapshot_take()
    return f"{len(snapshot.data)} metrics"


@shared_task(name="apps.ops.tasks.verify_audit", ignore_result=True, expires=3000)
def verify_audit() -> str:
    """``verify_audit`` with the configured anchors; its outcome feeds ``fulcrum_audit_verify_ok``."""
    from apps.audit.anchor import audit_verify_with_anchor

    from .snapshot import audit_verification_record

    report = audit_verify_with_anchor()
    audit_verification_record(ok=report.ok, reason=report.reason)
    return "intact" if report.ok else f"BROKEN: {report.reason}"
