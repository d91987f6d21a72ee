"""Noise end to end: 217 escalations opened at once reach an executive as one digest email, through the
real Celery worker (bulk evaluation, opening, outbox) and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.accounts.models import NotificationSettings
from apps.accounts.roles import EXECUTIVES
from apps.escalations.models import Delivery, Escalation
from apps.escalations.tasks import deliver_due
from apps.rules.evaluation.services import rules_import
from apps.rules.tasks import evaluate_subjects_task
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    FinancialLineFactory,
    ProjectFactory,
    UserFactory,
)

from .conftest import wait_for
from .test_delivery_faults import _fresh_streams, _rule

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

COUNT = 217


def test_217_escalations_reach_an_executive_as_one_digest_email(smtp_server, celery_worker):
    executive = UserFactory(username="elena", email="elena.exec@fulcrum-demo.test")
    executive.groups.add(Group.objects.get(name=EXECUTIVES))
    # Her digest closes every minute (the default is an hour), so the test waits a minute, not an hour.
    NotificationSettings.objects.create(user=executive, digest_minutes=1)
    ids = []
    for i in range(COUNT):
        project = ProjectFactory(client=ClientFactory(name=f"Client {i:03}"))
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000000"))
        FinancialLineFactory(project=project, kind="bill", amount=Decimal("910000"))
        ids.append(ChangeOrderFactory(project=project, amount=Decimal("60000")).pk)
    rules_import(text=_rule(["email_executives"]), actor="system:test")
    _fresh_streams()

    evaluate_subjects_task.delay("change_order", ids, "sync")
    wait_for(lambda: Escalation.objects.count() == COUNT, timeout=180, message=f"{COUNT} escalations")
    [digest] = wait_for(lambda: list(Delivery.objects.filter(action="digest")), message="the digest row")
    assert not Delivery.objects.filter(action="email_executives").exists()
    assert digest.target == executive.email and digest.digest_items.count() == COUNT
    assert smtp_server.to(executive.email) == []  # nothing before the digest closes

    wait_for(lambda: timezone.now() >= digest.next_attempt_at, timeout=75, message="the digest to close")
    deliver_due.delay()  # beat's sweeper, once
    [message] = wait_for(lambda: smtp_server.to(executive.email), timeout=60, message="the digest email")
    assert message["Subject"] == f"[Fulcrum] Digest: {COUNT} new escalations"
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert body.count("http://fulcrum.test/escalations/") == COUNT
    assert "Margin 9.0% is below 12%" in body
    # Nothing else reached her, and the digest is recorded as delivered once.
    wait_for(lambda: Delivery.objects.get(pk=digest.pk).state == "delivered", timeout=15, message="delivered")
    assert len(smtp_server.to(executive.email)) == 1
    assert digest.next_attempt_at - digest.created_at <= dt.timedelta(minutes=1)
