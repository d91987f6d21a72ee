from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from .fields import JSONTextField


def canonical_json(data: Any) -> str:
    """The one serialisation that hashes are computed over (sorted keys, no whitespace)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class AuditEntry(models.Model):
    """One append-only, hash-chained record of a state change.

    Each entry's ``hash`` covers its content and the previous entry's hash, so editing or deleting
    any entry breaks the chain at that point (``manage.py verify_audit``). PostgreSQL refuses UPDATE,
    DELETE and TRUNCATE on this table (trigger in migration 0002); entries are written in the same
    transaction as the change they describe.

    ``data`` is stored as the canonical JSON text that the hash covers (``JSONTextField``), so
    verification hashes the column as it is read.

    Indexes, each for a reader (every one is paid on every append, the hot path of batch evaluation):
    the primary key (chain order, verification, the chain head, the admin's list); ``action`` (the
    admin's filter, entries of one kind); ``object_type, object_id`` (one object's history); a BRIN on
    ``created_at`` (export by date range, the admin's dates: entries are appended in time order, so a
    few bytes per 128 pages do). Nothing looks entries up by hash or by ``actor_user``.
    """

    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="user:<username> or system:<job>")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
    )
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    data = JSONTextField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["action"], name="audit_entry_action"),
            models.Index(fields=["object_type", "object_id"]),
            BrinIndex(fields=["created_at"], name="audit_entry_created_brin"),
        ]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.object_type}:{self.object_id}"

    def content(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "data": self.data,
        }

    def compute_hash(self) -> str:
        payload = self.prev_hash + canonical_json(self.content())
        return hashlib.sha256(payload.encode()).hexdigest()
