"""Data-quality scans: every check is one set-based statement that upserts its open findings.

Checks (ANCHORS "Connectors and sync" 11):

* ``freshness``: a stream's last success older than 2× (warn) or 4× (error) its connection's schedule
  interval; a stream that never succeeded is an error;
* ``missing_field``: a project without client (error) or contract value, a client without an owner in the
  CRM, a pending or approved change order of zero amount, a milestone without due date, and a record
  quarantined for a missing or invalid field (a change order without amount) that no valid version has
  replaced since (error);
* ``orphan``: a record whose parent is not present (a change order, milestone or submittal whose project
  reference names no project; money charged to a job the accounting crosswalk does not hold; a job whose
  customer is missing; a client whose CRM owner is missing);
* ``conflict``: a project's contract value (PM) and its estimates' total (accounting) differing by more than
  ``FULCRUM["QUALITY_CONFLICT_PCT"]`` percent (warn; error beyond three times that);
* ``volume_drop``: the live records of an entity from a connection falling more than
  ``FULCRUM["QUALITY_VOLUME_DROP_PCT"]`` percent below the last accepted count (:class:`VolumeBaseline`).

A scan inserts findings it sees for the first time, moves ``last_seen`` (and severity, detail) of those it
sees again, and resolves open ones of the scanned kinds that it no longer sees.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery.schedules import crontab
from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from apps.audit.services import Actor, audit_record
from apps.connectors.models import Connection, StreamState
from apps.connectors.ratelimit import redis_client

from .models import Finding, VolumeBaseline

Kind = Finding.Kind


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, "FULCRUM", {}).get(name, default))


@functools.lru_cache(maxsize=256)
def schedule_interval(cron: str) -> dt.timedelta | None:
    """The longest gap between two runs of a five-field cron schedule (None if it cannot be parsed).

    Enumerates the runs of eight days minute by minute (11,520 steps, cached per schedule); a schedule
    running less than twice in that window is taken as monthly.
    """
    fields = cron.split()
    if len(fields) != 5:
        return None
    try:
        # celery's argument order is not cron's (day of week comes third); its field sets are untyped.
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        spec: Any = crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    except (ValueError, TypeError):
        return None
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a Monday; the gaps do not depend on which week
    runs: list[dt.datetime] = []
    for step in range(8 * 24 * 60):
        t = start + dt.timedelta(minutes=step)
        if (
            t.minute in spec.minute
            and t.hour in spec.hour
            and (t.isoweekday() % 7) in spec.day_of_week
            and t.day in spec.day_of_month
            and t.month in spec.month_of_year
        ):
            runs.append(t)
    if len(runs) < 2:
        return dt.timedelta(days=31)
    return max(b - a for a, b in itertools.pairwise(runs))


# (kind, check name, subject type, SELECT subject_id, connection_id, stream, severity, detail).
_LIVE_PROJECT = "deleted_at IS NULL AND merged_into_id IS NULL"
_SQL_CHECKS: list[tuple[str, str, str, str]] = [
    (
        Kind.MISSING_FIELD,
        "project.client",
        "project",
        f"""SELECT id, source_id, '', 'error', jsonb_build_object('number', number, 'name', name)
            FROM entities_project WHERE {_LIVE_PROJECT} AND client_id IS NULL""",  # noqa: S608 - constants
    ),
    (
        Kind.MISSING_FIELD,
        "project.contract_value",
        "project",
        f"""SELECT id, source_id, '', 'warn', jsonb_build_object('number', number, 'name', name)
            FROM entities_project WHERE {_LIVE_PROJECT} AND contract_value IS NULL""",  # noqa: S608
    ),
    (
        Kind.MISSING_FIELD,
        "client.owner",
        "client",
        """SELECT id, source_id, '', 'warn', jsonb_build_object('name', name)
           FROM entities_client
           WHERE deleted_at IS NULL AND merged_into_id IS NULL AND owner_id IS NULL AND owner_ref = ''""",
    ),
    (
        Kind.MISSING_FIELD,
        "change_order.amount",
        "change_order",
        """SELECT id, source_id, '', 'warn', jsonb_build_object('number', number, 'status', status)
           FROM entities_changeorder
           WHERE deleted_at IS NULL AND amount = 0 AND status IN ('pending', 'approved')""",
    ),
    (
        Kind.MISSING_FIELD,
        "milestone.due_date",
        "milestone",
        """SELECT id, source_id, '', 'warn', jsonb_build_object('name', name)
           FROM entities_milestone WHERE deleted_at IS NULL AND due_date IS NULL""",
    ),
    *[
        (
            Kind.ORPHAN,
            f"{subject}.project",
            subject,
            f"""SELECT id, source_id, '', 'error', jsonb_build_object('project_ref', project_ref)
                FROM {table} WHERE deleted_at IS NULL AND project_id IS NULL""",  # noqa: S608 - fixed names
        )
        for subject, table in (
            ("change_order", "entities_changeorder"),
            ("milestone", "entities_milestone"),
            ("submittal", "entities_submittal"),
        )
    ],
    (
        Kind.ORPHAN,
        "financial_line.job",
        "financial_line",
        """SELECT f.id, f.source_id, '', 'warn', jsonb_build_object('job_ref', f.job_ref, 'kind', f.kind)
           FROM entities_financialline f
           WHERE f.deleted_at IS NULL AND f.job_ref <> '' AND NOT EXISTS (
               SELECT 1 FROM entities_sourceobject so
               WHERE so.connection_id = f.source_id AND so.external_id = f.job_ref
                 AND so.deleted_at IS NULL)""",
    ),
    (
        Kind.ORPHAN,
        "job.customer",
        "source_object",
        """SELECT j.id, j.connection_id, '', 'warn',
                  jsonb_build_object('name', j.name, 'parent_ref', j.parent_ref)
           FROM entities_sourceobject j
           WHERE j.object_type = 'job' AND j.deleted_at IS NULL AND NOT EXISTS (
               SELECT 1 FROM entities_sourceobject c
               WHERE c.connection_id = j.connection_id AND c.external_id = j.parent_ref
                 AND c.object_type = 'customer' AND c.deleted_at IS NULL)""",
    ),
    (
        Kind.ORPHAN,
        "client.owner_ref",
        "client",
        """SELECT id, source_id, '', 'warn', jsonb_build_object('owner_ref', owner_ref)
           FROM entities_client
           WHERE deleted_at IS NULL AND merged_into_id IS NULL AND owner_ref <> '' AND owner_id IS NULL""",
    ),
    (
        Kind.CONFLICT,
        "project.contract_value_vs_estimates",
        "project",
        f"""SELECT p.id, p.source_id, '',
                   CASE WHEN abs(p.contract_value - e.total) > 3 * %(pct)s / 100.0
                             * greatest(abs(p.contract_value), abs(e.total)) THEN 'error' ELSE 'warn' END,
                   jsonb_build_object('contract_value', p.contract_value::text, 'estimates', e.total::text,
                                      'estimate_lines', e.lines)
            FROM entities_project p
            JOIN (SELECT project_id, sum(amount) AS total, count(*) AS lines FROM entities_financialline
                  WHERE kind = 'estimate' AND deleted_at IS NULL AND project_id IS NOT NULL
                  GROUP BY project_id) e ON e.project_id = p.id
            WHERE p.{_LIVE_PROJECT.replace(" AND ", " AND p.")} AND p.contract_value IS NOT NULL
              AND abs(p.contract_value - e.total)
                  > %(pct)s / 100.0 * greatest(abs(p.contract_value), abs(e.total))""",  # noqa: S608
    ),
]

_UPSERT = """
    INSERT INTO quality_finding (key, kind, check_name, subject_type, subject_id, connection_id, stream,
                                 severity, detail, first_seen, last_seen)
    SELECT %(kind)s || ':' || %(check)s || ':' || %(subject_type)s || ':' || COALESCE(s.subject_id::text, '')
               || ':' || COALESCE(s.connection_id::text, '') || ':' || s.stream,
           %(kind)s, %(check)s, %(subject_type)s, s.subject_id, s.connection_id, s.stream,
           s.severity, s.detail, %(now)s, %(now)s
    FROM ({select}) AS s(subject_id, connection_id, stream, severity, detail)
    ON CONFLICT (key) WHERE resolved_at IS NULL DO UPDATE
        SET last_seen = EXCLUDED.last_seen, severity = EXCLUDED.severity, detail = EXCLUDED.detail
    RETURNING (xmax = 0)
"""
_ROWS = """SELECT * FROM unnest(%(subject_ids)s::bigint[], %(connection_ids)s::bigint[], %(streams)s::text[],
                                %(severities)s::text[], %(details)s::jsonb[])"""


@dataclass(frozen=True)
class Row:
    """One finding computed in Python (freshness, volume): what the SQL checks' SELECTs return."""

    subject_id: int | None
    connection_id: int | None
    stream: str
    severity: str
    detail: dict[str, Any]


def _upsert(kind: str, check: str, subject_type: str, select: str, params: dict[str, Any]) -> tuple[int, int]:
    """(new findings, findings seen) for one check."""
    with db.cursor() as cursor:
        cursor.execute(
            _UPSERT.replace("{select}", select),
            {**params, "kind": kind, "check": check, "subject_type": subject_type},
        )
        inserted = [row[0] for row in cursor.fetchall()]
    return sum(inserted), len(inserted)


def _upsert_rows(
    kind: str, check: str, subject_type: str, rows: Sequence[Row], now: dt.datetime
) -> tuple[int, int]:
    if not rows:
        return 0, 0
    params = {
        "now": now,
        "subject_ids": [r.subject_id for r in rows],
        "connection_ids": [r.connection_id for r in rows],
        "streams": [r.stream for r in rows],
        "severities": [r.severity for r in rows],
        "details": [json.dumps(r.detail, sort_keys=True) for r in rows],
    }
    return _upsert(kind, check, subject_type, _ROWS, params)


def freshness_rows(now: dt.datetime) -> list[Row]:
    """Streams of enabled, scheduled connections whose last success is older than 2× / 4× the interval."""
    rows = []
    states = StreamState.objects.filter(connection__enabled=True).exclude(connection__schedule="")
    for state in states.select_related("connection").order_by("pk"):
        interval = schedule_interval(state.connection.schedule)
        if interval is None:
            continue
        detail: dict[str, Any] = {
            "schedule": state.connection.schedule,
            "interval_seconds": int(interval.total_seconds()),
            "last_success_at": state.last_success_at.isoformat() if state.last_success_at else None,
        }
        if state.last_success_at is None:
            severity = Finding.Severity.ERROR
        else:
            age = now - state.last_success_at
            detail["age_seconds"] = int(age.total_seconds())
            if age > 4 * interval:
                severity = Finding.Severity.ERROR
            elif age > 2 * interval:
                severity = Finding.Severity.WARN
            else:
                continue
        rows.append(Row(None, state.connection_id, state.stream, severity, detail))
    return rows


_QUARANTINED = """
    SELECT DISTINCT ON (q.external_id) q.id, q.connection_id, q.stream, 'error',
           jsonb_build_object('external_id', q.external_id, 'reason', q.reason, 'at', q.created_at)
    FROM connectors_quarantinedrecord q
    WHERE q.connection_id = %(connection)s AND q.stream = %(stream)s AND q.external_id <> ''
      AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{source} = q.connection_id
                      AND t.external_id = q.external_id AND t.synced_at >= q.created_at)
    ORDER BY q.external_id, q.created_at DESC
"""


def _quarantine_checks(now: dt.datetime) -> tuple[int, int]:
    """Records refused by validation (a change order without amount) that no valid version has replaced
    since: missing from Fulcrum altogether. One statement per (connection, stream) that has any."""
    from apps.connectors.kinds import UnknownKind, UnknownStream, get_kind
    from apps.connectors.models import QuarantinedRecord
    from apps.entities.loaders import source_column

    new = seen = 0
    pairs = QuarantinedRecord.objects.values_list("connection", "stream").distinct().order_by()
    connections = Connection.objects.in_bulk({c for c, _ in pairs})
    for connection_id, stream in pairs:
        try:
            model = get_kind(connections[connection_id]).stream(stream).model
        except (UnknownKind, UnknownStream):
            continue
        select = _QUARANTINED.replace("{table}", model._meta.db_table).replace(
            "{source}", source_column(model)
        )
        params = {"now": now, "connection": connection_id, "stream": stream}
        n, s = _upsert(Kind.MISSING_FIELD, "record.quarantined", "quarantined_record", select, params)
        new, seen = new + n, seen + s
    return new, seen


# Entity tables whose live rows are counted per connection for volume drops.
VOLUME_TABLES: dict[str, tuple[str, str]] = {
    "client": ("entities_client", "source_id"),
    "crm_owner": ("entities_crmowner", "source_id"),
    "project": ("entities_project", "source_id"),
    "vendor": ("entities_vendor", "source_id"),
    "milestone": ("entities_milestone", "source_id"),
    "change_order": ("entities_changeorder", "source_id"),
    "submittal": ("entities_submittal", "source_id"),
    "financial_line": ("entities_financialline", "source_id"),
    "source_object": ("entities_sourceobject", "connection_id"),
}


def live_counts() -> dict[tuple[int, str], int]:
    """Live records per (connection id, entity), in one statement."""
    union = " UNION ALL ".join(
        f"SELECT {col}, '{entity}', count(*) FROM {table} WHERE deleted_at IS NULL GROUP BY {col}"  # noqa: S608
        for entity, (table, col) in VOLUME_TABLES.items()
    )
    with db.cursor() as cursor:
        cursor.execute(union)
        return {(conn, entity): n for conn, entity, n in cursor.fetchall()}


def volume_rows(now: dt.datetime) -> list[Row]:
    """Counts that fell more than the threshold below their baseline; other baselines move to the count."""
    drop = _setting("QUALITY_VOLUME_DROP_PCT", 30.0) / 100
    counts = live_counts()
    baselines = {(b.connection_id, b.entity): b for b in VolumeBaseline.objects.all()}
    rows, moved, new = [], [], []
    for key in counts.keys() | baselines.keys():
        count = counts.get(key, 0)
        baseline = baselines.get(key)
        if baseline is None:
            new.append(VolumeBaseline(connection_id=key[0], entity=key[1], count=count, measured_at=now))
        elif baseline.count > 0 and count < baseline.count * (1 - drop):
            severity = (
                Finding.Severity.ERROR if count < baseline.count * (1 - 2 * drop) else Finding.Severity.WARN
            )
            detail = {"entity": key[1], "baseline": baseline.count, "count": count}
            detail["drop_pct"] = round(100 * (baseline.count - count) / baseline.count, 1)
            rows.append(Row(None, key[0], key[1], severity, detail))
        elif baseline.count != count:
            baseline.count, baseline.measured_at = count, now
            moved.append(baseline)
    VolumeBaseline.objects.bulk_create(new, ignore_conflicts=True)
    VolumeBaseline.objects.bulk_update(moved, ["count", "measured_at"])
    return rows


@transaction.atomic
def quality_scan(
    *, now: dt.datetime | None = None, kinds: Iterable[str] | None = None
) -> dict[str, dict[str, int]]:
    """Run the checks of ``kinds`` (all by default); return per kind how many findings were new, seen,
    and resolved."""
    now = now or timezone.now()
    wanted = set(kinds) if kinds is not None else set(Kind.values)
    totals: dict[str, dict[str, int]] = {k: {"new": 0, "seen": 0, "resolved": 0} for k in sorted(wanted)}

    def add(kind: str, result: tuple[int, int]) -> None:
        totals[kind]["new"] += result[0]
        totals[kind]["seen"] += result[1]

    params = {"now": now, "pct": _setting("QUALITY_CONFLICT_PCT", 10.0)}
    for kind, check, subject_type, select in _SQL_CHECKS:
        if kind in wanted:
            add(kind, _upsert(kind, check, subject_type, select, params))
    if Kind.MISSING_FIELD in wanted:
        add(Kind.MISSING_FIELD, _quarantine_checks(now))
    if Kind.FRESHNESS in wanted:
        add(
            Kind.FRESHNESS,
            _upsert_rows(Kind.FRESHNESS, "stream.freshness", "stream", freshness_rows(now), now),
        )
    if Kind.VOLUME_DROP in wanted:
        add(Kind.VOLUME_DROP, _upsert_rows(Kind.VOLUME_DROP, "entity.count", "stream", volume_rows(now), now))
    with db.cursor() as cursor:
        cursor.execute(
            """UPDATE quality_finding SET resolved_at = %s
               WHERE resolved_at IS NULL AND last_seen < %s AND kind = ANY(%s) RETURNING kind""",
            [now, now, sorted(wanted)],
        )
        for (kind,) in cursor.fetchall():
            totals[kind]["resolved"] += 1
    return totals


def findings_prune(*, now: dt.datetime | None = None) -> int:
    """Delete findings resolved more than ``FULCRUM["QUALITY_RETENTION_DAYS"]`` (default 90) days ago."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=_setting("QUALITY_RETENTION_DAYS", 90))
    deleted, _ = Finding.objects.filter(resolved_at__lt=cutoff).delete()
    return deleted


@transaction.atomic
def finding_accept(*, finding: Finding, actor: Actor) -> None:
    """A person accepts a finding as it is (a real drop in volume): resolved, the baseline moved, audited."""
    now = timezone.now()
    if finding.kind == Kind.VOLUME_DROP and finding.connection_id:
        count = live_counts().get((finding.connection_id, finding.stream), 0)
        VolumeBaseline.objects.filter(connection_id=finding.connection_id, entity=finding.stream).update(
            count=count, measured_at=now
        )
    Finding.objects.filter(pk=finding.pk, resolved_at__isnull=True).update(resolved_at=now)
    audit_record(
        action="quality.finding_accepted",
        actor=actor,
        object_type="quality.finding",
        object_id=finding.pk,
        data={"key": finding.key, "severity": finding.severity},
    )


def summary() -> dict[str, Any]:
    """Open findings by kind and severity and by check, and every stream's freshness, for the admin's
    summary page (three queries)."""
    from django.db.models import Count

    open_findings = Finding.objects.filter(resolved_at__isnull=True)
    by_kind: dict[str, dict[str, int]] = {k: {"warn": 0, "error": 0} for k in Kind.values}
    for row in open_findings.values("kind", "severity").annotate(n=Count("id")).order_by():
        by_kind[row["kind"]][row["severity"]] = row["n"]
    by_check = list(
        open_findings.values("kind", "check_name", "severity")
        .annotate(n=Count("id"))
        .order_by("-n", "check_name")
    )
    now = timezone.now()
    streams = []
    for state in StreamState.objects.select_related("connection").order_by("connection__slug", "stream"):
        interval = schedule_interval(state.connection.schedule) if state.connection.schedule else None
        age = now - state.last_success_at if state.last_success_at else None
        status = "unscheduled" if interval is None else "never" if age is None else "ok"
        if interval is not None and age is not None:
            status = "error" if age > 4 * interval else "warn" if age > 2 * interval else "ok"
        streams.append({"state": state, "interval": interval, "age": age, "status": status})
    return {"by_kind": by_kind, "by_check": by_check, "streams": streams}


# --- before the pipeline decides ---------------------------------------------------------------------

# Set (after commit) when entities changed; taken by the pipeline, which scans before it decides.
_SCAN_DUE = "fulcrum:quality:scan-due"


def entities_changed_receive(sender: object, **_: object) -> None:
    """Subscribed to ``apps.entities.changes.entities_changed`` in ``QualityConfig.ready()``: findings
    are due again before the next decision. Set after commit, so the scan sees the change."""
    transaction.on_commit(_scan_due_set)


def _redis() -> Any:
    return redis_client(settings.CELERY_BROKER_URL)


def _scan_due_set() -> None:
    # Without Redis, scan_due_take answers yes: the scan runs anyway.
    with contextlib.suppress(RedisError):
        _redis().set(_SCAN_DUE, "1")


def scan_due_take() -> bool:
    """Whether entities changed since the last pipeline scan (and clear it). Without Redis: yes."""
    try:
        return bool(_redis().getdel(_SCAN_DUE))
    except RedisError:
        return True


_OPEN_ERRORS = """SELECT key, subject_type, subject_id FROM quality_finding
                   WHERE resolved_at IS NULL AND severity = 'error'"""


def findings_refresh(*, now: dt.datetime | None = None) -> dict[str, set[int]]:
    """Scan every check; return the subjects whose open error findings changed (opened, resolved, or
    moved to or from error), ``{subject type: ids}``: what ``data_quality_errors`` facts count."""

    def open_errors() -> set[tuple[str, str, int | None]]:
        with db.cursor() as cursor:
            cursor.execute(_OPEN_ERRORS)
            return set(cursor.fetchall())

    before = open_errors()
    quality_scan(now=now)
    changed: dict[str, set[int]] = {}
    for _key, subject_type, subject_id in before ^ open_errors():
        if subject_id is not None:
            changed.setdefault(subject_type, set()).add(subject_id)
    return changed
