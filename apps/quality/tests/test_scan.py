"""Data-quality scans: each kind of finding is detected on a small fixture and resolved once fixed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection, StreamState
from apps.entities.models import Project, SourceObject
from apps.quality.models import Finding, VolumeBaseline
from apps.quality.services import finding_accept, quality_scan, schedule_interval
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    FinancialLineFactory,
    ProjectFactory,
)

Kind = Finding.Kind


def open_findings(kind: str) -> dict[tuple[str, int | None, str], str]:
    """{(check, subject id, stream): severity} of the open findings of one kind."""
    rows = Finding.objects.filter(kind=kind, resolved_at__isnull=True)
    return {(f.check_name, f.subject_id, f.stream): f.severity for f in rows}


def scan(kind: str, now: dt.datetime | None = None) -> dict[str, int]:
    return quality_scan(kinds=[kind], now=now or timezone.now())[kind]


@pytest.mark.parametrize(
    ("cron", "interval"),
    [
        ("*/15 * * * *", dt.timedelta(minutes=15)),
        ("0 2 * * *", dt.timedelta(days=1)),
        ("0 9 * * 1-5", dt.timedelta(days=3)),  # Friday to Monday
        ("0 */6 * * *", dt.timedelta(hours=6)),
        ("not a cron", None),
    ],
)
def test_schedule_interval_is_the_longest_gap_between_runs(cron: str, interval: dt.timedelta | None) -> None:
    assert schedule_interval(cron) == interval


def test_missing_fields_found_and_resolved_when_fixed(db: None) -> None:
    orphaned = ProjectFactory(client=None)
    no_value = ProjectFactory(contract_value=None)
    zero = ChangeOrderFactory(amount=Decimal(0))
    ChangeOrderFactory(amount=Decimal(0), status="void")  # a void zero is fine

    counts = scan(Kind.MISSING_FIELD)

    found = open_findings(Kind.MISSING_FIELD)
    assert found[("project.client", orphaned.pk, "")] == "error"
    assert found[("project.contract_value", no_value.pk, "")] == "warn"
    assert found[("change_order.amount", zero.pk, "")] == "warn"
    assert not any(key[0] == "change_order.amount" and key[1] != zero.pk for key in found)
    assert counts["new"] == len(found) and counts["resolved"] == 0

    # Seen again: nothing new, last_seen moves, first_seen stays.
    first = Finding.objects.get(check_name="project.client", subject_id=orphaned.pk)
    again = scan(Kind.MISSING_FIELD)
    first_again = Finding.objects.get(pk=first.pk)
    assert again["new"] == 0 and again["seen"] == counts["seen"]
    assert first_again.first_seen == first.first_seen and first_again.last_seen > first.last_seen

    Project.objects.filter(pk=orphaned.pk).update(client=ClientFactory())
    Project.objects.filter(pk=no_value.pk).update(contract_value=Decimal(5))
    fixed = scan(Kind.MISSING_FIELD)

    assert fixed["resolved"] == 2
    assert ("project.client", orphaned.pk, "") not in open_findings(Kind.MISSING_FIELD)
    assert Finding.objects.get(pk=first.pk).resolved_at is not None


def test_orphans_found_and_resolved_when_the_parent_arrives(db: None) -> None:
    accounting = ConnectionFactory(slug="accounting", kind="quickbooks")
    change_order = ChangeOrderFactory(project=None, project_ref="404")
    line = FinancialLineFactory(source=accounting, job_ref="j9")
    overhead = FinancialLineFactory(source=accounting, job_ref="c1")
    now = timezone.now()
    SourceObject.objects.create(
        connection=accounting,
        object_type="customer",
        external_id="c1",
        name="Acme",
        source_updated_at=now,
        content_hash="",
        synced_at=now,
    )

    scan(Kind.ORPHAN)

    found = open_findings(Kind.ORPHAN)
    assert found[("change_order.project", change_order.pk, "")] == "error"
    assert found[("financial_line.job", line.pk, "")] == "warn"
    assert ("financial_line.job", overhead.pk, "") not in found  # charged to a customer that exists

    project = ProjectFactory(external_id="404")
    change_order.project = project
    change_order.save()
    SourceObject.objects.create(
        connection=accounting,
        object_type="job",
        external_id="j9",
        name="P-9",
        parent_ref="c1",
        source_updated_at=now,
        content_hash="",
        synced_at=now,
    )
    assert scan(Kind.ORPHAN)["resolved"] == 2
    assert open_findings(Kind.ORPHAN) == {}


def test_contract_value_conflicting_with_estimates(db: None) -> None:
    accounting = ConnectionFactory(slug="accounting", kind="quickbooks")
    close = ProjectFactory(contract_value=Decimal(1000))
    off = ProjectFactory(contract_value=Decimal(1000))
    far = ProjectFactory(contract_value=Decimal(1000))
    for project, amount in ((close, 950), (off, 800), (far, 500)):
        FinancialLineFactory(source=accounting, project=project, kind="estimate", amount=Decimal(amount))
    FinancialLineFactory(source=accounting, project=close, kind="invoice", amount=Decimal(9000))

    scan(Kind.CONFLICT)

    check = "project.contract_value_vs_estimates"
    assert open_findings(Kind.CONFLICT) == {(check, off.pk, ""): "warn", (check, far.pk, ""): "error"}
    detail = Finding.objects.get(subject_id=far.pk).detail
    assert (Decimal(detail["contract_value"]), Decimal(detail["estimates"])) == (1000, 500)

    Project.objects.filter(pk__in=[off.pk, far.pk]).update(contract_value=Decimal(820))
    scan(Kind.CONFLICT)
    # 820 vs 800 agrees; 820 vs 500 is still 39% apart: still open, its severity re-computed.
    assert open_findings(Kind.CONFLICT) == {(check, far.pk, ""): "error"}


def test_freshness_warns_at_twice_and_errs_at_four_times_the_schedule(db: None) -> None:
    pm = ConnectionFactory(slug="pm", schedule="*/15 * * * *")
    ConnectionFactory(slug="manual", schedule="")  # no schedule: no expectation
    now = timezone.now()
    state = StreamState.objects.create(connection=pm, stream="projects", last_success_at=now)
    never = StreamState.objects.create(connection=pm, stream="vendors", last_success_at=None)

    scan(Kind.FRESHNESS, now + dt.timedelta(minutes=29))
    assert open_findings(Kind.FRESHNESS) == {("stream.freshness", None, "vendors"): "error"}

    scan(Kind.FRESHNESS, now + dt.timedelta(minutes=31))
    assert open_findings(Kind.FRESHNESS)[("stream.freshness", None, "projects")] == "warn"
    scan(Kind.FRESHNESS, now + dt.timedelta(minutes=61))
    assert open_findings(Kind.FRESHNESS)[("stream.freshness", None, "projects")] == "error"
    finding = Finding.objects.get(stream="projects", resolved_at__isnull=True)
    assert finding.connection == pm and finding.detail["interval_seconds"] == 900

    later = now + dt.timedelta(minutes=62)
    StreamState.objects.filter(pk__in=[state.pk, never.pk]).update(last_success_at=later)
    assert scan(Kind.FRESHNESS, later)["resolved"] == 2
    assert open_findings(Kind.FRESHNESS) == {}


def test_volume_drop_against_the_accepted_baseline(db: None, administrator: Any) -> None:
    projects = ProjectFactory.create_batch(10)
    pm = projects[0].source
    scan(Kind.VOLUME_DROP)  # first scan sets the baselines
    assert VolumeBaseline.objects.get(connection=pm, entity="project").count == 10

    Project.objects.filter(pk__in=[p.pk for p in projects[:2]]).update(deleted_at=timezone.now())
    scan(Kind.VOLUME_DROP)
    assert open_findings(Kind.VOLUME_DROP) == {}  # 20%: within the threshold, baseline moves to 8
    Project.objects.filter(pk__in=[p.pk for p in projects[2:5]]).update(deleted_at=timezone.now())
    scan(Kind.VOLUME_DROP)
    assert open_findings(Kind.VOLUME_DROP) == {("entity.count", None, "project"): "warn"}  # 8 → 5
    scan(Kind.VOLUME_DROP)
    assert open_findings(Kind.VOLUME_DROP) != {}  # the baseline holds while the drop is open

    Project.objects.filter(pk__in=[p.pk for p in projects[2:5]]).update(deleted_at=None)
    assert scan(Kind.VOLUME_DROP)["resolved"] == 1

    Project.objects.filter(pk__in=[p.pk for p in projects[:7]]).update(deleted_at=timezone.now())
    scan(Kind.VOLUME_DROP)
    finding = Finding.objects.get(kind=Kind.VOLUME_DROP, resolved_at__isnull=True)
    assert finding.severity == "error" and finding.detail["drop_pct"] == 62.5  # 8 → 3
    finding_accept(finding=finding, actor=administrator)
    scan(Kind.VOLUME_DROP)
    assert open_findings(Kind.VOLUME_DROP) == {}  # accepted: 3 is the new baseline
    assert AuditEntry.objects.filter(action="quality.finding_accepted").count() == 1


def test_data_quality_admin_pages_in_bounded_queries(
    db: None, administrator: Any, client: Any, django_assert_max_num_queries: Any
) -> None:
    ProjectFactory.create_batch(25, client=None)
    pm = ConnectionFactory(slug="pm")
    Connection.objects.filter(pk=pm.pk).update(schedule="*/15 * * * *")  # the factory gets, not sets
    for i, minutes in enumerate((0, 20, 40, 55, 80)):
        ago = timezone.now() - dt.timedelta(minutes=minutes)
        StreamState.objects.create(connection=pm, stream=f"stream{i}", last_success_at=ago)
    quality_scan()
    client.force_login(administrator)
    url = reverse("admin:quality_finding_changelist")

    with django_assert_max_num_queries(12):
        response = client.get(url, {"open": "yes", "kind": "missing_field", "severity": "error"})
    assert response.status_code == 200 and response.content.count(b"project.client") >= 25
    some = Finding.objects.filter(check_name="project.client").first()
    assert reverse("admin:entities_project_change", args=[some.subject_id]).encode() in response.content

    with django_assert_max_num_queries(8):
        response = client.get(reverse("admin:quality_finding_summary"))
    assert response.status_code == 200 and b"project.client" in response.content
    statuses = [row["status"] for row in response.context["summary"]["streams"]]
    assert statuses == ["ok", "ok", "warn", "warn", "error"]  # at */15: warn after 30 min, error after 60

    client.post(url, {"action": "accept_selected", "_selected_action": [Finding.objects.first().pk]})
    assert Finding.objects.filter(resolved_at__isnull=False).count() == 1


def test_a_burst_of_syncs_queues_one_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.cache import cache

    from apps.connectors.tasks import sync_connection_task
    from apps.quality import tasks

    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.quality_scan_task, "apply_async", lambda **kw: queued.append(kw))
    cache.delete(tasks._QUEUED)
    for _ in range(3):
        tasks._after_sync(sender=sync_connection_task)
    tasks._after_sync(sender=tasks.quality_scan_task)  # any other task: nothing
    assert queued == [{"countdown": tasks.AFTER_SYNC_DELAY}]
    cache.delete(tasks._QUEUED)


def test_a_quarantined_change_order_is_missing_until_a_valid_version_arrives(db: None) -> None:
    from apps.connectors.models import QuarantinedRecord

    pm = ConnectionFactory(slug="pm", kind="procore")
    for reason in ("not an amount: 'x'", "missing amount"):  # quarantined twice: the latest counts
        QuarantinedRecord.objects.create(
            connection=pm, stream="change_orders", external_id="77", payload={"id": 77}, reason=reason
        )
    QuarantinedRecord.objects.create(
        connection=pm, stream="no_such_stream", external_id="1", payload={}, reason="?"
    )

    scan(Kind.MISSING_FIELD)

    finding = Finding.objects.get(check_name="record.quarantined", resolved_at__isnull=True)
    assert (finding.severity, finding.stream, finding.connection) == ("error", "change_orders", pm)
    assert finding.detail["external_id"] == "77" and finding.detail["reason"] == "missing amount"

    ChangeOrderFactory(source=pm, external_id="77", synced_at=timezone.now())
    assert scan(Kind.MISSING_FIELD)["resolved"] == 1
    assert not Finding.objects.filter(check_name="record.quarantined", resolved_at__isnull=True).exists()


def test_resolved_findings_are_pruned_after_the_retention(db: None) -> None:
    from apps.quality.services import findings_prune

    project = ProjectFactory(client=None)
    long_ago = timezone.now() - dt.timedelta(days=100)
    scan(Kind.MISSING_FIELD, long_ago)
    Project.objects.filter(pk=project.pk).update(client=ClientFactory())
    scan(Kind.MISSING_FIELD, long_ago + dt.timedelta(days=1))  # resolved 99 days ago
    ProjectFactory(client=None)
    scan(Kind.MISSING_FIELD)  # open now

    assert findings_prune() == 1
    remaining = Finding.objects.filter(check_name="project.client")
    assert list(remaining.values_list("resolved_at", flat=True)) == [None]


def test_scan_and_resolve_commands(db: None) -> None:
    from io import StringIO

    from django.core.management import call_command

    ProjectFactory(client=None)
    out = StringIO()
    call_command("quality_scan", "--kind", "missing_field", stdout=out)
    assert out.getvalue() == "missing_field: 1 new, 1 seen, 0 resolved\n"  # the project without client
    out = StringIO()
    call_command("resolve_entities", stdout=out)
    assert out.getvalue() == "auto-linked 0, queued 0 for review, 0 new client(s)\n"
