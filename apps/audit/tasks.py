"""Celery tasks of the audit trail (beat: ``anchor_chain`` every 10 minutes)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .anchor import anchor_write


@shared_task(name="apps.audit.tasks.anchor_chain", ignore_result=True)
def anchor_chain() -> dict[str, Any]:
    """Pin the chain's current head outside the database (anchor file + log line)."""
    return anchor_write().as_dict()
