"""Writing and verifying the audit chain."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEntry, canonical_json

GENESIS = "0" * 64
# One chain means one writer at a time: a transaction-scoped advisory lock orders appends.
_CHAIN_LOCK = 0x46554C43  # "FULC"

Actor = AbstractBaseUser | AnonymousUser | str | None


def _actor_fields(actor: Actor) -> tuple[str, int | None]:
    if actor is None:
        return "system", None
    if isinstance(actor, str):
        return actor if ":" in actor else f"system:{actor}", None
    if not actor.is_authenticated:
        return "anonymous", None
    return f"user:{actor.get_username()}", actor.pk


def _redact(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            k: ("[redacted]" if any(s in k.lower() for s in ("secret", "token", "password", "credential")) else _redact(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_redact(v) for v in data]
    return data


@transaction.atomic
def audit_record(
    *, action: str, actor: Actor = None, object_type: str = "", object_id: Any = "", data: dict[str, Any] | None = None
) -> AuditEntry:
    """Append one entry to the chain, in the caller's transaction."""
    return audit_record_many(
        [{"action": action, "object_type": object_type, "object_id": object_id, "data": data or {}}], actor=actor
    )[0]


@transaction.atomic
def audit_record_many(items: Iterable[dict[str, Any]], *, actor: Actor = None) -> list[AuditEntry]:
    """Append several entries at once (batch evaluation, bulk links) with one lock and one INSERT."""
    items = list(items)
    if not items:
        return []
    actor_name, actor_id = _actor_fields(actor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])
    last = AuditEntry.objects.order_by("-id").values_list("hash", flat=True).first()
    prev = last or GENESIS
    now = timezone.now()
    entries = []
    for item in items:
        # Round-trip through JSON so the hashed content equals what PostgreSQL stores and returns.
        data = json.loads(canonical_json(_redact(item.get("data") or {})))
        entry = AuditEntry(
            created_at=now,
            actor=actor_name,
            actor_user_id=actor_id,
            action=item["action"],
            object_type=item.get("object_type", ""),
            object_id=str(item.get("object_id", "")),
            data=data,
            prev_hash=prev,
        )
        entry.hash = entry.compute_hash()
        prev = entry.hash
        entries.append(entry)
    return AuditEntry.objects.bulk_create(entries)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""


def audit_verify(*, batch_size: int = 5000) -> ChainReport:
    """Walk the chain in id order, recomputing every hash."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        batch = list(AuditEntry.objects.filter(id__gt=last_id).order_by("id")[:batch_size])
        if not batch:
            return ChainReport(ok=True, checked=checked)
        for entry in batch:
            if entry.prev_hash != prev:
                return ChainReport(False, checked, entry.pk, "previous hash does not match the entry before it")
            if entry.compute_hash() != entry.hash:
                return ChainReport(False, checked, entry.pk, "content does not match its hash")
            prev = entry.hash
            checked += 1
            last_id = entry.pk
