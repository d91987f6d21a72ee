"""A data-quality scan at 10k projects and 100k change orders: a measurement, run on demand
(FULCRUM_BENCH_QUALITY=1). Prints the seconds of a first scan (every finding new), a repeat (all seen
again) and one after fixing most (resolutions)."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.entities.models import ChangeOrder, Client, Project
from apps.quality.models import Finding
from apps.quality.services import quality_scan
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.skipif(
    not os.environ.get("FULCRUM_BENCH_QUALITY"), reason="measurement: set FULCRUM_BENCH_QUALITY=1"
)


def test_scan_at_10k_projects(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    crm = ConnectionFactory(slug="crm", kind="hubspot")
    pm = ConnectionFactory(slug="pm", kind="procore")
    now = timezone.now()
    common = {"source_updated_at": now, "content_hash": "", "synced_at": now}
    clients = Client.objects.bulk_create(
        Client(source=crm, external_id=str(i), name=f"Client {i}", owner_ref="o", **common)
        for i in range(1000)
    )
    projects = Project.objects.bulk_create(
        Project(
            source=pm, external_id=str(i), name=f"Project {i}", number=f"P-{i}",
            client=None if i % 10 == 0 else clients[i % 1000], contract_value=Decimal(1000), **common,
        )
        for i in range(10_000)
    )  # fmt: skip
    ChangeOrder.objects.bulk_create(
        (
            ChangeOrder(
                source=pm, external_id=str(i), project=None if i % 20 == 0 else projects[i % 10_000],
                project_ref=str(i % 10_000), status="pending", amount=Decimal(5), created_upstream_at=now,
                **common,
            )
            for i in range(100_000)
        ),
        batch_size=5000,
    )  # fmt: skip

    timings = []
    for label in ("first", "repeat"):
        started = time.perf_counter()
        totals = quality_scan()
        timings.append((label, time.perf_counter() - started, sum(t["new"] for t in totals.values())))
    open_before = Finding.objects.filter(resolved_at__isnull=True).count()
    Project.objects.filter(client__isnull=True).update(client=clients[0])
    started = time.perf_counter()
    totals = quality_scan()
    timings.append(
        ("after fixing", time.perf_counter() - started, sum(t["resolved"] for t in totals.values()))
    )

    with capsys.disabled():
        print(
            "\nquality_scan at 1k clients, 10k projects, 100k change orders: "
            + "; ".join(f"{label} {seconds:.2f} s ({n})" for label, seconds, n in timings)
        )
    # 1,000 projects without client, 5,000 orphaned change orders, 1,000 clients without owner (ref set):
    assert open_before == 1000 + 5000 + 1000
    assert timings[1][2] == 0 and timings[2][2] == 1000
